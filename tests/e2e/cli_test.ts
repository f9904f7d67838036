/** The CLI against a running server, with the start task's permission flags; the admin port split. */
import assert from "node:assert/strict";
import { freePort, runMain, startServer } from "../helpers.ts";

const TOKEN = "cli-token-5150";
const ADMIN = "cli-admin-7f7f";

const cli = runMain;

Deno.test("e2e walk-through: start, simulate a call, watch it in calls and events, see the metrics", async () => {
  const adminPort = freePort();
  const s = await startServer({
    RINGHOOK_VERIFICATION_TOKEN: TOKEN,
    RINGHOOK_ADMIN_TOKEN: ADMIN,
    RINGHOOK_ADMIN_PORT: String(adminPort),
  });
  const env = { RINGHOOK_DATA_DIR: s.dataDir, RINGHOOK_VERIFICATION_TOKEN: TOKEN };
  const admin = `http://127.0.0.1:${adminPort}`;
  try {
    const sim = await cli(["simulate", "--url", s.url, "--call", "answered"], env);
    assert.equal(sim.code, 0, sim.stdout + sim.stderr);
    const tsid = sim.stdout.match(/telephonySessionId (s-[0-9a-f]+)/)![1];
    const missed = await cli(["simulate", "--url", s.url, "--call", "missed"], env);
    assert.equal(missed.code, 0);

    // The call tracker runs right after the acks; give it a moment, then read remotely.
    let calls;
    for (let i = 0; i < 50; i++) {
      calls = await cli(["calls", "--url", admin, "--admin-token", ADMIN, "--json"], env);
      if (calls.stdout.trim().split("\n").length === 2) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(calls!.code, 0, calls!.stderr);
    const rows = calls!.stdout.trim().split("\n").map((l) => JSON.parse(l));
    assert.deepEqual(rows.map((r) => r.result).sort(), ["answered", "missed"]);
    const answered = rows.find((r) => r.telephonySessionId === tsid);
    assert.equal(answered.direction, "inbound");
    assert.equal(answered.durations.talkMs, 45_100);

    // The table, read from the local database (no --url), says the same.
    const table = await cli(["calls"], env);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /^STARTED\s+STATE\s+RESULT/);
    assert.match(
      table.stdout,
      new RegExp(
        `ended\\s+answered\\s+inbound\\s+WIRELESS CALLER\\s+Alice Example\\s+6s\\s+45s\\s+0s\\s+${tsid}`,
      ),
    );
    assert.equal(
      (await cli(["calls", "--active"], env)).stdout.trim(),
      "STARTED  STATE  RESULT  DIRECTION  FROM  TO  RING  TALK  HOLD  SESSION\n(none)",
    );
    const one = await cli(["calls", "--id", tsid, "--json"], env);
    assert.equal(JSON.parse(one.stdout).record.timeline[0].type, "started");

    const events = await cli([
      "events",
      "--url",
      admin,
      "--admin-token",
      ADMIN,
      "--event",
      "telephony",
      "--json",
      "--limit",
      "100",
    ], env);
    assert.equal(events.stdout.trim().split("\n").length, 12);
    const since = await cli(["events", "--since", "1h", "--limit", "2"], env);
    assert.equal(since.code, 0);
    assert.equal(since.stdout.trim().split("\n").length, 3, since.stdout);

    // Metrics and the admin API live on the admin port only.
    const metrics = await fetch(`${admin}/metrics`).then((r) => r.text());
    assert.match(metrics, /ringhook_calls_ended_total\{result="answered"\} 1/);
    const pub = await fetch(`${s.url}/metrics`);
    assert.equal(pub.status, 404);
    await pub.body?.cancel();
    const pubApi = await fetch(`${s.url}/api/v1/status`, {
      headers: { Authorization: `Bearer ${ADMIN}` },
    });
    assert.equal(pubApi.status, 404);
    await pubApi.body?.cancel();
    const hook = await fetch(`${admin}/webhook`, { method: "POST" });
    assert.equal(hook.status, 404);
    await hook.body?.cancel();

    // Wrong admin token: a clear error and exit 1.
    const denied = await cli(["calls", "--url", admin, "--admin-token", "nope"], env);
    assert.equal(denied.code, 1);
    assert.match(denied.stderr, /401 unauthorized/);

    const token = await cli(["token"], env);
    assert.equal(token.stdout.trim(), TOKEN);
    const doctor = await cli(["doctor"], {
      ...env,
      RINGHOOK_PUBLIC_URL: `${s.url}/webhook?auth_token=SECRET-IN-URL-42`,
    });
    assert.equal(doctor.code, 0, doctor.stdout);
    assert.match(
      doctor.stdout,
      /PASS public-url\s+http:\/\/127\.0\.0\.1:\d+\/webhook\?auth_token=\*\*\* answers/,
    );
    assert.ok(!doctor.stdout.includes("SECRET-IN-URL-42"), "no secret from the URL in the output");
    assert.match(doctor.stdout, /SKIP ringcentral/);
  } finally {
    assert.equal((await s.stop()).code, 0);
    await Deno.remove(s.dataDir, { recursive: true });
  }
});

Deno.test("e2e: token prints the generated token; doctor explains failures; usage errors exit 2", async () => {
  const s = await startServer({});
  const env = { RINGHOOK_DATA_DIR: s.dataDir };
  try {
    const token = await cli(["token"], env);
    assert.equal(token.code, 0);
    assert.match(token.stdout.trim(), /^rh_[A-Za-z0-9_-]{32}$/);
    // The simulator finds that token by itself.
    const sim = await cli(["simulate", "--url", s.url, "--only", "sms,bad-token"], env);
    assert.equal(sim.code, 0, sim.stdout);

    const doctor = await cli(["doctor", "--json"], {
      ...env,
      RINGHOOK_PUBLIC_URL: `${s.url}/nowhere`,
    });
    assert.equal(doctor.code, 1);
    const checks = doctor.stdout.trim().split("\n").map((l) => JSON.parse(l));
    const pub = checks.find((c) => c.name === "public-url");
    assert.equal(pub.status, "fail");
    assert.match(pub.detail, /answered 404 without echoing Validation-Token/);

    const bad = await cli(["doctor"], { RINGHOOK_PORT: "x" });
    assert.equal(bad.code, 1);
    assert.match(bad.stdout, /FAIL config\s+RINGHOOK_PORT/);

    for (
      const args of [
        ["calls", "--limit", "x"],
        ["events", "--since", "never"],
        ["nope"],
        ["simulate"],
        ["--port", "9000"],
      ]
    ) {
      const r = await cli(args, env);
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    }
    const version = await cli(["--version"], env);
    assert.equal(version.code, 0);
    assert.match(version.stdout, /^ringhook \d+\.\d+\.\d+$/m);
    for (const cmd of ["serve", "simulate", "events", "calls", "doctor", "token"]) {
      const r = await cli([cmd, "--help"], env);
      assert.equal(r.code, 0, cmd);
      assert.match(r.stdout, /Usage: ringhook/);
    }
  } finally {
    await s.stop();
    await Deno.remove(s.dataDir, { recursive: true });
  }
});

Deno.test("e2e: simulate and doctor do not follow redirects (the token stays at the origin)", async () => {
  const seen: string[] = [];
  const target = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, (req) => {
    seen.push(req.headers.get("verification-token") ?? "");
    return new Response("{}", { headers: { "Validation-Token": "x" } });
  });
  const redirector = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    () =>
      new Response(null, {
        status: 307,
        headers: { Location: `http://127.0.0.1:${target.addr.port}/webhook` },
      }),
  );
  const dataDir = await Deno.makeTempDir();
  try {
    const url = `http://127.0.0.1:${redirector.addr.port}`;
    const sim = await cli([
      "simulate",
      "--url",
      url,
      "--token",
      "tok-STAYS-HOME-77",
      "--only",
      "sms",
    ]);
    assert.equal(sim.code, 1);
    const doctor = await cli(["doctor", "--json"], {
      RINGHOOK_DATA_DIR: dataDir,
      RINGHOOK_PUBLIC_URL: `${url}/webhook`,
    });
    const pub = doctor.stdout.trim().split("\n").map((l) => JSON.parse(l)).find((c) =>
      c.name === "public-url"
    );
    assert.equal(pub.status, "fail");
    assert.match(pub.detail, /answered 307 \(a redirect\)/);
    assert.deepEqual(seen, [], "nothing reached the redirect's target");
  } finally {
    await redirector.shutdown();
    await target.shutdown();
    await Deno.remove(dataDir, { recursive: true });
  }
});
