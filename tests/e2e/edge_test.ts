/** The edge over a real socket: a ringhook child process started with the start task's flags. */
import assert from "node:assert/strict";
import { fixture, ROOT, serveFlags, startServer } from "../helpers.ts";
import { hmacHex } from "../../src/verify.ts";

const TOKEN = "e2e-token-4f9a1c";
const event = fixture("telephony-inbound-answered-03-alice-ringing-proceeding.json");

/** Sends raw bytes over TCP and returns the whole raw response. */
async function rawHttp(port: number, request: string): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(new TextEncoder().encode(request));
    const chunks: Uint8Array[] = [];
    const buf = new Uint8Array(4096);
    while (true) {
      const n = await conn.read(buf);
      if (n === null) break;
      chunks.push(buf.slice(0, n));
      const text = new TextDecoder().decode(chunks.reduce((a, b) => new Uint8Array([...a, ...b])));
      const end = text.indexOf("\r\n\r\n");
      const len = Number(text.match(/content-length: (\d+)/i)?.[1] ?? -1);
      if (end >= 0 && len >= 0 && text.length >= end + 4 + len) return text;
    }
    return new TextDecoder().decode(chunks.reduce((a, b) => new Uint8Array([...a, ...b])));
  } finally {
    conn.close();
  }
}

Deno.test("e2e: every /webhook rule over a real socket", async (t) => {
  const s = await startServer({
    RINGHOOK_VERIFICATION_TOKEN: TOKEN,
    RINGHOOK_MAX_BODY_BYTES: "65536",
  });
  const url = `${s.url}/webhook`;
  try {
    await t.step("handshake: whole raw response well under 1024 bytes", async () => {
      const raw = await rawHttp(
        s.port,
        "POST /webhook HTTP/1.1\r\nHost: x\r\nValidation-Token: 3f2b8a4e-0c1d-4e5f-9a8b-7c6d5e4f3a2b\r\n" +
          "Content-Type: application/json\r\nContent-Length: 0\r\n\r\n",
      );
      assert.match(raw, /^HTTP\/1\.1 200 OK\r\n/);
      assert.match(raw, /\r\nvalidation-token: 3f2b8a4e-0c1d-4e5f-9a8b-7c6d5e4f3a2b\r\n/i);
      assert.match(raw, /\r\ncontent-type: application\/json\r\n/i);
      assert.ok(new TextEncoder().encode(raw).length < 512, `response is ${raw.length} bytes`);
    });
    await t.step("empty POST", async () => {
      const res = await fetch(url, { method: "POST" });
      assert.equal(res.status, 200);
      assert.deepEqual(await res.json(), { status: "ok" });
    });
    await t.step("notification stored, duplicate answered 200 duplicate", async () => {
      const headers = { "Verification-Token": TOKEN };
      const res = await fetch(url, { method: "POST", headers, body: JSON.stringify(event) });
      assert.deepEqual([res.status, await res.json()], [200, {
        status: "received",
        uuid: event.uuid,
      }]);
      const dup = await fetch(url, { method: "POST", headers, body: JSON.stringify(event) });
      assert.deepEqual([dup.status, await dup.json()], [200, {
        status: "duplicate",
        uuid: event.uuid,
      }]);
    });
    await t.step("bad token 401, invalid JSON 400, not an envelope 400", async () => {
      const bad = await fetch(url, {
        method: "POST",
        headers: { "Verification-Token": "nope" },
        body: JSON.stringify(event),
      });
      assert.equal(bad.status, 401);
      await bad.body?.cancel();
      const inv = await fetch(url, {
        method: "POST",
        headers: { "Verification-Token": TOKEN },
        body: "{not json",
      });
      assert.equal(inv.status, 400);
      assert.equal((await inv.json()).error, "invalid_json");
      const env = await fetch(url, {
        method: "POST",
        headers: { "Verification-Token": TOKEN },
        body: '{"uuid":"x"}',
      });
      assert.equal(env.status, 400);
      assert.equal((await env.json()).error, "bad_envelope");
    });
    await t.step("oversized body: 413 from Content-Length and from a chunked stream", async () => {
      const big = new Uint8Array(70_000).fill(0x20);
      const res = await fetch(url, {
        method: "POST",
        headers: { "Verification-Token": TOKEN },
        body: big,
      });
      assert.equal(res.status, 413);
      await res.body?.cancel();
      const raw = await rawHttp(
        s.port,
        "POST /webhook HTTP/1.1\r\nHost: x\r\nVerification-Token: " + TOKEN +
          "\r\nTransfer-Encoding: chunked\r\n\r\n" +
          ("8000\r\n" + " ".repeat(0x8000) + "\r\n").repeat(3) + "0\r\n\r\n",
      );
      assert.match(raw, /^HTTP\/1\.1 413 /);
    });
    await t.step("GET hub.challenge, GET without, 405, health, 404", async () => {
      const ch = await fetch(`${url}?hub.challenge=hello-flask`);
      assert.equal(ch.status, 200);
      assert.equal(await ch.text(), "hello-flask");
      const no = await fetch(url);
      assert.equal(no.status, 400);
      await no.body?.cancel();
      const put = await fetch(url, { method: "PUT", body: "x" });
      assert.equal(put.status, 405);
      assert.equal(put.headers.get("allow"), "GET, HEAD, POST, OPTIONS");
      await put.body?.cancel();
      assert.equal((await fetch(`${s.url}/healthz`).then((r) => r.json())).status, "alive");
      assert.equal((await fetch(`${s.url}/readyz`).then((r) => r.json())).status, "ready");
      const nf = await fetch(`${s.url}/other`);
      assert.equal(nf.status, 404);
      await nf.body?.cancel();
    });
    await t.step("one structured log line per request with uuid and event", () => {
      const lines = s.lines.filter((l) => l.includes('"logger":"ringhook.http"')).map((l) =>
        JSON.parse(l)
      );
      const stored = lines.find((l) => l.uuid === event.uuid && l.kind === "event");
      assert.ok(stored, "a line for the stored event");
      assert.equal(stored.method, "POST");
      assert.equal(stored.path, "/webhook");
      assert.equal(stored.status, 200);
      assert.equal(typeof stored.durationMs, "number");
      assert.equal(stored.event, event.event);
      assert.ok(lines.some((l) => l.kind === "handshake"));
    });
  } finally {
    assert.equal((await s.stop()).code, 0);
    await Deno.remove(s.dataDir, { recursive: true });
  }
});

Deno.test("e2e: the simulator passes against a live ringhook, and fails on a wrong token", async () => {
  const s = await startServer({ RINGHOOK_VERIFICATION_TOKEN: TOKEN });
  try {
    const run = async (token: string) => {
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", `${ROOT}main.ts`, "simulate", "--url", s.url, "--token", token],
        stdout: "piped",
        stderr: "piped",
      }).output();
      return { code: out.code, text: new TextDecoder().decode(out.stdout) };
    };
    const good = await run(TOKEN);
    assert.equal(good.code, 0, good.text);
    assert.match(good.text, /^16 passed, 0 failed$/m);
    const bad = await run("not-the-token");
    assert.equal(bad.code, 1);
    assert.match(bad.text, /FAIL call-inbound-answered/);
  } finally {
    await s.stop();
    await Deno.remove(s.dataDir, { recursive: true });
  }
});

Deno.test("e2e: no secret reaches the log output, even at debug level", async () => {
  const hmacSecret = "hmac-secret-d41d8cd98f";
  const s = await startServer({
    RINGHOOK_VERIFICATION_TOKEN: `${TOKEN},rotated-token-77aa`,
    RINGHOOK_HMAC_SECRET: hmacSecret,
    RINGHOOK_LOG_LEVEL: "debug",
  });
  const presentedWrong = "wrong-token-looks-secret-99";
  let sigSeen = "";
  try {
    const body = JSON.stringify(event);
    const sig = "sha256=" + await hmacHex(hmacSecret, new TextEncoder().encode(body));
    sigSeen = sig.slice(7);
    const headers = {
      "Verification-Token": TOKEN,
      "X-Hub-Signature-256": sig,
      "Authorization": "Bearer bearer-value-abc123",
      "Cookie": "session=cookie-value-xyz789",
    };
    const ok = await fetch(`${s.url}/webhook`, { method: "POST", headers, body });
    assert.equal(ok.status, 200);
    await ok.body?.cancel();
    const wrong = await fetch(`${s.url}/webhook`, {
      method: "POST",
      headers: { ...headers, "Verification-Token": presentedWrong },
      body,
    });
    assert.equal(wrong.status, 401);
    await wrong.body?.cancel();
    const hs = await fetch(`${s.url}/webhook`, {
      method: "POST",
      headers: { "Validation-Token": "validation-value-5e5e", "Verification-Token": TOKEN },
    });
    assert.equal(hs.status, 200);
    await fetch(`${s.url}/webhook`, { method: "POST", headers, body: "{broken json" }).then((r) =>
      r.body?.cancel()
    );
  } finally {
    await s.stop();
    await Deno.remove(s.dataDir, { recursive: true });
  }
  const output = s.lines.join("\n");
  assert.match(output, /Notification received/, "debug lines were written");
  assert.match(output, /\[redacted\]/, "headers were logged, redacted");
  for (
    const secret of [
      TOKEN,
      "rotated-token-77aa",
      hmacSecret,
      presentedWrong,
      sigSeen,
      "bearer-value-abc123",
      "cookie-value-xyz789",
      "validation-value-5e5e",
    ]
  ) {
    assert.ok(!output.includes(secret), `the log contains ${secret}`);
  }
});

Deno.test("e2e: SIGTERM finishes the in-flight request, then exits 0", async () => {
  const s = await startServer({ RINGHOOK_VERIFICATION_TOKEN: TOKEN });
  try {
    const body = new TextEncoder().encode(JSON.stringify({ ...event, uuid: "inflight-1" }));
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: s.port });
    await conn.write(
      new TextEncoder().encode(
        `POST /webhook HTTP/1.1\r\nHost: x\r\nVerification-Token: ${TOKEN}\r\nContent-Length: ${body.length}\r\n\r\n`,
      ),
    );
    await conn.write(body.subarray(0, 100));
    await new Promise((r) => setTimeout(r, 200));
    s.proc.kill("SIGTERM");
    await s.waitFor(/draining/);
    await conn.write(body.subarray(100));
    const buf = new Uint8Array(2048);
    const n = await conn.read(buf);
    conn.close();
    const text = new TextDecoder().decode(buf.subarray(0, n ?? 0));
    assert.match(text, /^HTTP\/1\.1 200 OK/);
    assert.match(text, /"status":"received","uuid":"inflight-1"/);
    const status = await s.proc.status; // no second signal: that one means "exit now"
    await s.stop();
    assert.equal(status.code, 0);
    assert.ok(s.lines.some((l) => l.includes("Stopped cleanly")));
    // Not accepting any more.
    await assert.rejects(fetch(`${s.url}/healthz`));
  } finally {
    await Deno.remove(s.dataDir, { recursive: true });
  }
});

Deno.test("e2e: bad configuration prints one line per problem and exits 2", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...serveFlags(), `${ROOT}main.ts`, "serve"],
    clearEnv: true,
    env: {
      PATH: Deno.env.get("PATH") ?? "",
      HOME: Deno.env.get("HOME") ?? "/tmp",
      RINGHOOK_PORT: "eighty",
      RINGHOOK_LOG_FORMAT: "yaml",
      RINGHOOK_HMAC_SECRET_FILE: "/nonexistent/secret",
    },
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 2);
  const err = new TextDecoder().decode(out.stderr).trim().split("\n");
  assert.equal(err.length, 3, err.join("\n"));
  assert.match(err.join("\n"), /RINGHOOK_PORT: expected a whole number/);
  assert.match(err.join("\n"), /RINGHOOK_LOG_FORMAT: expected json or pretty/);
  assert.match(err.join("\n"), /RINGHOOK_HMAC_SECRET_FILE: cannot read/);
});

Deno.test("e2e: a generated token is scrubbed from the log like a configured one", async () => {
  const s = await startServer({ RINGHOOK_LOG_LEVEL: "debug" });
  try {
    const { DatabaseSync } = await import("node:sqlite");
    const db = new DatabaseSync(`${s.dataDir}/ringhook.db`, { readOnly: true });
    const token = String(
      (db.prepare("SELECT value FROM settings WHERE key = ?").get(
        "edge.generated_verification_token",
      ) as { value: string }).value,
    );
    db.close();
    // The body echoes the token (as a careless upstream might); debug logs the body's first bytes.
    const res = await fetch(`${s.url}/webhook`, {
      method: "POST",
      headers: { "Verification-Token": token },
      body: JSON.stringify({ uuid: `echo-${token}`, event: "/e", body: { note: token } }),
    });
    assert.equal(res.status, 200);
    await res.body?.cancel();
  } finally {
    await s.stop();
    await Deno.remove(s.dataDir, { recursive: true });
  }
  const out = s.lines.join("\n");
  assert.match(out, /Notification received/);
  assert.match(out, /echo-\[redacted\]/, "the line was written, with the token scrubbed");
  assert.ok(!/rh_[A-Za-z0-9_-]{32}/.test(out), "no generated token in the log");
});

Deno.test("e2e: a second SIGTERM during a drain exits at once with code 1", async () => {
  const s = await startServer({ RINGHOOK_VERIFICATION_TOKEN: TOKEN });
  try {
    // An in-flight request that never finishes keeps the drain waiting.
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: s.port });
    await conn.write(
      new TextEncoder().encode(
        `POST /webhook HTTP/1.1\r\nHost: x\r\nVerification-Token: ${TOKEN}\r\nContent-Length: 500\r\n\r\n{`,
      ),
    );
    await new Promise((r) => setTimeout(r, 200));
    s.proc.kill("SIGTERM");
    await s.waitFor(/draining 1 in-flight/);
    const t0 = performance.now();
    s.proc.kill("SIGTERM");
    const status = await s.proc.status;
    assert.equal(status.code, 1);
    assert.ok(performance.now() - t0 < 3000);
    assert.ok(s.lines.some((l) => l.includes("again: exiting now")));
    conn.close();
  } finally {
    await s.stop();
    await Deno.remove(s.dataDir, { recursive: true });
  }
});
