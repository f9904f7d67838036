/**
 * The subscription end to end: real ringhook processes (the start task's flags) against the fake
 * RingCentral API in ../fake_ringcentral.ts. RingCentral's validation POSTs, reminders and
 * notifications reach ringhook over real sockets; the journal is read from the SQLite file.
 */
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { type Child, runMain, startServer } from "../helpers.ts";
import { FAKE_ACCOUNT_ID, FakeRingCentral } from "../fake_ringcentral.ts";
import { GENERATED_TOKEN_KEY } from "../../src/app.ts";
import { SUBSCRIPTION_ID_SETTING } from "../../src/ringcentral/keeper.ts";

const SUB_PATH = "/restapi/v1.0/subscription";
const REMINDER = "/restapi/v1.0/subscription/~?threshold=86400&interval=3600";
const TELEPHONY = `/restapi/v1.0/account/${FAKE_ACCOUNT_ID}/telephony/sessions`;
const TEN_YEARS = 315_360_000;

/** A port nobody listens on right now (the public URL must be known before ringhook starts). */
function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** The RingCentral part of ringhook's environment, pointing at the fake. */
function rcEnv(fake: FakeRingCentral, publicUrl: string): Record<string, string> {
  return {
    RINGHOOK_RC_SERVER: fake.url,
    RINGHOOK_RC_CLIENT_ID: fake.clientId,
    RINGHOOK_RC_CLIENT_SECRET: fake.clientSecret,
    RINGHOOK_RC_JWT: fake.jwt,
    RINGHOOK_PUBLIC_URL: publicUrl,
    RINGHOOK_RC_CHECK_SECONDS: "1",
  };
}

/** Runs `fn` on the data directory's database, opened read-only. */
function readDb<T>(dataDir: string, fn: (db: DatabaseSync) => T): T {
  const db = new DatabaseSync(`${dataDir}/ringhook.db`, { readOnly: true });
  try {
    return fn(db);
  } finally {
    db.close();
  }
}

function setting(dataDir: string, key: string): string | undefined {
  return readDb(dataDir, (db) =>
    (db.prepare("SELECT value FROM settings WHERE key = ?").get(key) as
      | { value: string }
      | undefined)?.value);
}

function journaled(dataDir: string, subscriptionId: string, event: string): number {
  return readDb(dataDir, (db) =>
    Number(
      (db.prepare("SELECT count(*) AS n FROM events WHERE subscription_id = ? AND event = ?")
        .get(subscriptionId, event) as { n: number }).n,
    ));
}

async function waitUntil(what: string, cond: () => boolean, ms = 8000): Promise<void> {
  const until = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out after ${ms} ms waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The only subscription the fake holds. */
function onlySub(fake: FakeRingCentral) {
  assert.equal(fake.subscriptions.size, 1, "the fake should hold exactly one subscription");
  return [...fake.subscriptions.values()][0];
}

/** Fails if a secret the fake knows, or ringhook's token, shows up in `text`. */
function assertNoSecrets(fake: FakeRingCentral, text: string, extra: string[] = []): void {
  for (const s of [fake.clientSecret, fake.jwt, ...fake.issuedTokens, ...extra]) {
    assert.ok(!text.includes(s), `a secret leaked into the output: ${s.slice(0, 12)}...`);
  }
}

/** Keeper transitions of `kind` a ringhook logged. */
function logged(child: Child, kind: string): number {
  return child.lines.filter((l) => l.includes(`"kind":"${kind}"`)).length;
}

const cli = runMain;

Deno.test("e2e subscription: ringhook creates, renews, recreates it and rides out a 429", async (t) => {
  // Short-lived access tokens: the client must refresh them while the keeper works.
  const fake = new FakeRingCentral({ tokenTtlSec: 4 }).start();
  const port = freePort();
  const publicUrl = `http://127.0.0.1:${port}/webhook`;
  let s: Child | undefined;
  try {
    s = await startServer({ ...rcEnv(fake, publicUrl), RINGHOOK_PORT: String(port) });
    const server = s;
    const dir = server.dataDir;
    let token = "";
    let id = "";

    await t.step("(a) create: the validation POST reached ringhook and was echoed", async () => {
      await waitUntil("the subscription exists", () => fake.subscriptions.size === 1);
      const sub = onlySub(fake);
      id = sub.id;
      assert.equal(fake.validations.length, 1);
      assert.equal(fake.validations[0].outcome, "ok");
      assert.equal(fake.validations[0].address, publicUrl);
      // The token ringhook generated was stored before the create call and sent with it.
      token = setting(dir, GENERATED_TOKEN_KEY) ?? "";
      assert.match(token, /^rh_/);
      assert.equal(fake.validations[0].verificationToken, token);
      await waitUntil("the id is stored", () => setting(dir, SUBSCRIPTION_ID_SETTING) === id);
      const body = JSON.parse(fake.requestsTo("POST", SUB_PATH)[0].body);
      assert.equal(body.expiresIn, TEN_YEARS, "expiresIn must be top-level");
      assert.equal(body.deliveryMode.expiresIn, undefined);
      assert.ok(body.eventFilters.includes(REMINDER));
      assert.equal(sub.address, publicUrl);
      await server.waitFor(/"kind":"created"/);
    });

    await t.step("(c) renews on the reminder, which went through the journal", async () => {
      const renewals = () => fake.requestsTo("POST", `${SUB_PATH}/${id}/renew`).length;
      assert.equal(renewals(), 0);
      assert.equal(await fake.sendRenewalReminder(id), 200);
      await waitUntil("the reminder renewed it", () => renewals() === 1);
      assert.equal(journaled(dir, id, REMINDER), 1);
      await server.waitFor(/"reason":"renewal reminder"/);
    });

    await t.step("(c) renews on schedule when less than the margin is left, once", async () => {
      const renewals = () => fake.requestsTo("POST", `${SUB_PATH}/${id}/renew`).length;
      await sleep(1500); // ten years left: the checks must not renew
      assert.equal(renewals(), 1);
      fake.subscriptions.get(id)!.expiresAt = Date.now() + 3 * 86_400_000; // 3 days < 7 days
      await waitUntil("the schedule renewed it", () => renewals() === 2, 4000);
      assert.ok(fake.subscriptions.get(id)!.expiresAt > Date.now() + 9 * 365 * 86_400_000);
      await sleep(1500);
      assert.equal(renewals(), 2, "renewed again although ten years are left");
      await server.waitFor(/"reason":"scheduled: less than the renewal margin left"/);
    });

    await t.step(
      "(d) blacklisted: recreated at the same address and token; events flow",
      async () => {
        const reason = "Webhook responses with code: [404], reason: [Not Found]";
        fake.blacklist(id, reason);
        await waitUntil(
          "it was recreated",
          () => fake.subscriptions.size === 1 && !fake.subscriptions.has(id),
        );
        const fresh = onlySub(fake);
        assert.equal(fake.requestsTo("DELETE", `${SUB_PATH}/${id}`).length, 1);
        assert.equal(fake.requestsTo("POST", SUB_PATH).length, 2);
        assert.equal(fresh.address, publicUrl);
        assert.equal(fresh.verificationToken, token);
        assert.equal(fake.validations.at(-1)?.outcome, "ok");
        await waitUntil(
          "the new id is stored",
          () => setting(dir, SUBSCRIPTION_ID_SETTING) === fresh.id,
        );
        await server.waitFor(/"kind":"blacklisted"/);
        assert.ok(
          server.lines.some((l) => l.includes(reason)),
          "the blacklist reason is logged",
        );

        const status = await fake.notify(fresh.id, TELEPHONY, {
          sequence: 2,
          telephonySessionId: "s-e2e-1",
        });
        assert.equal(status, 200);
        assert.equal(journaled(dir, fresh.id, TELEPHONY), 1);
        id = fresh.id;
      },
    );

    await t.step(
      "(e) a 429 storm: nothing sent inside the penalty, then checks resume",
      async () => {
        fake.startRateLimitStorm({ triggers: 1, penaltyMs: 2000 });
        await waitUntil("a request hit the 429", () => fake.penaltyStartedAt > 0, 3000);
        const until = fake.penaltyUntil;
        await waitUntil(
          "a check succeeded after the penalty",
          () => fake.requests.some((r) => r.at >= until && r.status === 200),
          6000,
        );
        assert.equal(fake.requestsInPenalty, 0, "a request restarted the penalty");
        assert.equal(fake.requests.filter((r) => r.status === 429).length, 1);
        const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
        assert.match(metrics, /^ringhook_rc_rate_limited_total 1$/m);
        assert.match(
          metrics,
          /^ringhook_rc_subscription_transitions_total\{kind="recreated"\} 1$/m,
        );
        assert.match(metrics, /^ringhook_rc_subscription_expires_seconds \d+/m);
      },
    );

    await t.step(
      "(f) access tokens refreshed before they expire: no 401, one JWT login",
      async () => {
        await waitUntil("two refreshes", () => fake.refreshes >= 2, 6000);
        assert.equal(fake.logins, 1, "the JWT was presented again instead of refreshing");
        assert.equal(fake.requests.filter((r) => r.status === 401).length, 0);
      },
    );

    assertNoSecrets(fake, server.lines.join("\n"), [token]);
  } finally {
    await s?.stop();
    await fake.close();
    if (s) await Deno.remove(s.dataDir, { recursive: true });
  }
});

Deno.test("e2e subscription: two ringhooks on one database never both recreate", async () => {
  const fake = new FakeRingCentral().start();
  const dataDir = await Deno.makeTempDir({ prefix: "ringhook-e2e-" });
  // A load balancer in front of both: RingCentral calls one public URL. It holds validation POSTs
  // for 1.2 s, so a create outlasts a check interval and the other instance's next check surely
  // falls inside it: without the lease both would see the blacklisted subscription and recreate.
  const backends: string[] = [];
  const lb = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, async (req) => {
    const u = new URL(req.url);
    const body = await req.arrayBuffer();
    if (req.headers.has("validation-token")) await sleep(1200);
    for (const b of [...backends].sort(() => Math.random() - 0.5)) {
      try {
        const headers = new Headers(req.headers);
        headers.delete("host");
        return await fetch(b + u.pathname + u.search, {
          method: req.method,
          headers,
          body: req.method === "GET" ? undefined : body,
        });
      } catch {
        // that instance is down: try the next
      }
    }
    return new Response("no backend", { status: 502 });
  });
  const publicUrl = `http://127.0.0.1:${lb.addr.port}/webhook`;
  const env = rcEnv(fake, publicUrl);
  const children: Child[] = [];
  try {
    // One after the other: both read the same generated token (see the report on concurrent starts).
    const a = await startServer(env, { dataDir });
    children.push(a);
    backends.push(a.url);
    await waitUntil("a created it", () => fake.subscriptions.size === 1);
    const b = await startServer(env, { dataDir });
    children.push(b);
    backends.push(b.url);
    await sleep(1500); // both check every second; only the lease holder acts
    assert.equal(fake.requestsTo("POST", SUB_PATH).length, 1);

    const first = onlySub(fake).id;
    fake.blacklist(first);
    await waitUntil(
      "recreated",
      () => !fake.subscriptions.has(first) && fake.subscriptions.size === 1,
    );
    await sleep(2500); // a second recreate would show up here
    assert.equal(fake.requestsTo("POST", SUB_PATH).length, 2);
    assert.equal(fake.requestsTo("DELETE", /^\/restapi\/v1\.0\/subscription\//).length, 1);
    assert.equal(fake.subscriptions.size, 1);
    assert.equal(logged(a, "recreated") + logged(b, "recreated"), 1);
    assert.ok(logged(a, "lease_acquired") >= 1);
    assert.equal(logged(b, "lease_acquired"), 0, "b acted while a held the lease");

    // The leader stops and releases the lease: the other takes over without recreating...
    backends.splice(backends.indexOf(a.url), 1);
    await a.stop();
    await b.waitFor(/"kind":"lease_acquired"/, 5000);
    await sleep(1200);
    assert.equal(fake.requestsTo("POST", SUB_PATH).length, 2);
    // ...and recreates on the next blacklisting, with the token both instances share.
    const second = onlySub(fake);
    fake.blacklist(second.id);
    await waitUntil(
      "b recreated it",
      () => !fake.subscriptions.has(second.id) && fake.subscriptions.size === 1,
    );
    assert.equal(fake.requestsTo("POST", SUB_PATH).length, 3);
    await b.waitFor(/"kind":"recreated"/, 3000);
    assert.equal(logged(b, "recreated"), 1);
    assert.equal(onlySub(fake).verificationToken, second.verificationToken);
    assert.equal(fake.validations.at(-1)?.outcome, "ok");
  } finally {
    for (const c of children) await c.stop();
    await lb.shutdown();
    await fake.close();
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("e2e subscription: the subscribe, subscriptions and unsubscribe commands", async (t) => {
  const fake = new FakeRingCentral().start();
  // The server has no RingCentral credentials (no keeper): the CLI manages the subscription and
  // the server answers RingCentral with the token both read from the shared database.
  const s = await startServer({});
  const publicUrl = `${s.url}/webhook`;
  const base = { RINGHOOK_DATA_DIR: s.dataDir };
  const env: Record<string, string> = { ...base, ...rcEnv(fake, publicUrl) };
  const outputs: string[] = [];
  const run = async (args: string[], e: Record<string, string> = env) => {
    const r = await cli(args, e);
    outputs.push(r.stdout, r.stderr);
    return r;
  };
  // A receiver that answers 200 but does not echo the Validation-Token.
  const mute = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen: () => {} },
    () => new Response(null, { status: 200 }),
  );
  try {
    await t.step("missing credentials or public URL: one line, exit 2", async () => {
      const noCreds = await run(["subscribe"], base);
      assert.equal(noCreds.code, 2, noCreds.stderr);
      assert.match(
        noCreds.stderr,
        /^error: RingCentral credentials are missing: .*RINGHOOK_RC_JWT/,
      );
      assert.equal(noCreds.stderr.trim().split("\n").length, 1);
      const { RINGHOOK_PUBLIC_URL: _, ...noUrl } = env;
      const r = await run(["subscribe"], noUrl);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /^error: RINGHOOK_PUBLIC_URL is not set/);
      assert.equal((await run(["subscriptions"], base)).code, 2);
      assert.equal((await run(["subscribe", "--bogus"])).code, 2);
    });

    await t.step(
      "(b) a failed handshake fails the create with RingCentral's code, exit 1",
      async () => {
        const cases: Array<[string, string]> = [
          [`http://127.0.0.1:${freePort()}/webhook`, "CMN-101"], // nobody listens
          [`http://127.0.0.1:${mute.addr.port}/webhook`, "SUB-520"], // no echo
          [`${s.url}/not-the-webhook`, "SUB-525"], // ringhook's 404
        ];
        for (const [url, code] of cases) {
          const r = await run(["subscribe"], { ...env, RINGHOOK_PUBLIC_URL: url });
          assert.equal(r.code, 1, `${code}: ${r.stdout}${r.stderr}`);
          assert.match(r.stderr, new RegExp(`^error: RingCentral ${code}: `));
          assert.match(r.stderr, /could not validate/);
          assert.equal(fake.validations.at(-1)?.outcome, code);
        }
        assert.equal(fake.subscriptions.size, 0);
        assert.ok(!setting(s.dataDir, SUBSCRIPTION_ID_SETTING), "no id stored after a failure");
      },
    );

    let id = "";
    await t.step("subscribe creates it; the server answered with the shared token", async () => {
      const r = await run(["subscribe"]);
      assert.equal(r.code, 0, r.stderr);
      const sub = onlySub(fake);
      id = sub.id;
      assert.match(r.stdout, new RegExp(`^created subscription ${id}\n`));
      assert.match(r.stdout, /status: {3}Active/);
      assert.match(
        r.stdout,
        /\n {2}filters: {2}\/restapi\/v1\.0\/account\/\d+\/telephony\/sessions\n/,
      );
      assert.ok(r.stdout.includes(`\n            ${REMINDER}\n`), "the reminder filter is listed");
      assert.equal(setting(s.dataDir, SUBSCRIPTION_ID_SETTING), id);
      assert.equal(fake.validations.at(-1)?.outcome, "ok");
      assert.equal(sub.verificationToken, setting(s.dataDir, GENERATED_TOKEN_KEY));
      // The server accepts what RingCentral will send with that token.
      assert.equal(await fake.notify(id, TELEPHONY, { sequence: 2 }), 200);
      assert.equal(journaled(s.dataDir, id, TELEPHONY), 1);

      const again = await run(["subscribe", "--json"]);
      assert.equal(again.code, 0, again.stderr);
      const j = JSON.parse(again.stdout);
      assert.equal(j.action, "unchanged");
      assert.equal(j.subscription.id, id);
      assert.equal(fake.requestsTo("POST", SUB_PATH).length, 4); // 3 failed + 1
    });

    await t.step("a running keeper's lease is respected unless --force", async () => {
      const db = new DatabaseSync(`${s.dataDir}/ringhook.db`);
      try {
        db.prepare("INSERT INTO leases (name, holder, expires_at) VALUES ('rc.keeper', 'srv', ?)")
          .run(Date.now() + 60_000);
        const r = await run(["subscribe"]);
        assert.equal(r.code, 1);
        assert.match(r.stderr, /holds the keeper lease/);
        const forced = await run(["subscribe", "--force"]);
        assert.equal(forced.code, 0, forced.stderr);
        assert.match(forced.stdout, /^unchanged subscription /);
      } finally {
        db.prepare("DELETE FROM leases WHERE name = 'rc.keeper'").run();
        db.close();
      }
    });

    await t.step(
      "subscriptions --json marks ringhook's and shows the blacklist reason",
      async () => {
        const reason = "I/O operation is failed. Details: [Read timed out]";
        fake.blacklist(id, reason);
        const r = await run(["subscriptions", "--json"]);
        assert.equal(r.code, 0, r.stderr);
        const j = JSON.parse(r.stdout);
        assert.equal(j.storedId, id);
        assert.equal(j.subscriptions.length, 1);
        const row = j.subscriptions[0];
        assert.deepEqual(
          [row.id, row.ringhook, row.status, row.address, row.atPublicUrl, row.blacklistedReason],
          [id, true, "Blacklisted", publicUrl, true, reason],
        );
        assert.ok(Date.parse(row.expirationTime) > Date.now());
        const text = await run(["subscriptions"]);
        assert.match(
          text.stdout,
          new RegExp(
            `^${id} {2}\\(ringhook's\\)\n {2}status: {3}Blacklisted since .*Read timed out`,
          ),
        );
      },
    );

    await t.step("subscribe recreates the blacklisted one", async () => {
      const r = await run(["subscribe"]);
      assert.equal(r.code, 0, r.stderr);
      const fresh = onlySub(fake);
      assert.notEqual(fresh.id, id);
      assert.match(r.stdout, new RegExp(`^recreated subscription ${fresh.id}\n`));
      assert.match(r.stdout, /step: {5}blacklisted .*Read timed out/);
      assert.equal(setting(s.dataDir, SUBSCRIPTION_ID_SETTING), fresh.id);
      id = fresh.id;
    });

    await t.step("unsubscribe deletes it and clears the stored id", async () => {
      const r = await run(["unsubscribe"]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`^deleted subscription ${id}\n`));
      assert.equal(fake.subscriptions.size, 0);
      assert.equal(fake.requestsTo("DELETE", `${SUB_PATH}/${id}`).length, 1);
      assert.ok(!setting(s.dataDir, SUBSCRIPTION_ID_SETTING));
      const again = await run(["unsubscribe"]);
      assert.equal(again.code, 1);
      assert.match(again.stderr, /no stored subscription id/);
      const byId = await run(["unsubscribe", "--id", id, "--json"]);
      assert.equal(byId.code, 0, byId.stderr);
      assert.deepEqual(JSON.parse(byId.stdout), {
        id,
        deleted: false,
        alreadyGone: true,
        clearedStoredId: false,
      });
    });

    assertNoSecrets(fake, outputs.join("\n") + s.lines.join("\n"), [
      setting(s.dataDir, GENERATED_TOKEN_KEY)!,
    ]);
  } finally {
    await mute.shutdown();
    await s.stop();
    await fake.close();
    await Deno.remove(s.dataDir, { recursive: true });
  }
});
