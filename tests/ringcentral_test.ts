/**
 * The RingCentral client and the subscription keeper against the fake API in fake_ringcentral.ts.
 * Validation POSTs and notifications go to a tiny stand-in receiver, not ringhook's handler.
 */
import assert from "node:assert/strict";
import { resetLogging, setupLogging } from "../src/log.ts";
import { Registry } from "../src/metrics.ts";
import {
  isNotFound,
  RingCentralClient,
  type RingCentralClientOptions,
  RingCentralError,
} from "../src/ringcentral/client.ts";
import {
  desiredFilters,
  ensureSubscription,
  filtersMatch,
  Keeper,
  type KeeperStore,
  SUBSCRIPTION_ID_SETTING,
  type SubscriptionSpec,
  type Transition,
} from "../src/ringcentral/keeper.ts";
import { FakeRingCentral, resolveFilter } from "./fake_ringcentral.ts";

const FILTERS = [
  "/restapi/v1.0/account/~/telephony/sessions",
  "/restapi/v1.0/account/~/extension/~/message-store/instant?type=SMS",
];
const TOKEN = "vt_test_verification_token_0123456789";

/** A clock that only moves when someone sleeps: sleeps return at once and are recorded. */
class FakeTime {
  t = 1_800_000_000_000;
  sleeps: number[] = [];
  now = () => this.t;
  sleep = async (ms: number, signal?: AbortSignal) => {
    if (signal?.aborted) throw signal.reason;
    this.sleeps.push(ms);
    this.t += ms;
    await new Promise((r) => setTimeout(r, 0));
  };
}

/** Only what the keeper uses of the Store: lease, getSetting, setSetting (+ releaseLease). */
class MemoryStore implements KeeperStore {
  settings = new Map<string, string>();
  leases = new Map<string, { holder: string; until: number }>();
  async lease(name: string, holder: string, ttlMs: number): Promise<boolean> {
    await new Promise((r) => setTimeout(r, 1)); // let concurrent callers interleave
    const now = Date.now();
    const l = this.leases.get(name);
    if (l && l.holder !== holder && l.until > now) return false;
    this.leases.set(name, { holder, until: now + ttlMs });
    return true;
  }
  releaseLease(name: string, holder: string): Promise<void> {
    if (this.leases.get(name)?.holder === holder) this.leases.delete(name);
    return Promise.resolve();
  }
  getSetting(key: string): Promise<string | undefined> {
    return Promise.resolve(this.settings.get(key));
  }
  setSetting(key: string, value: string): Promise<void> {
    this.settings.set(key, value);
    return Promise.resolve();
  }
}

interface Received {
  headers: Headers;
  body: string;
}

/** A stand-in webhook receiver: echoes Validation-Token (or misbehaves) and records requests. */
function startReceiver(
  o: {
    echo?: boolean;
    delayMs?: number;
    bigBody?: boolean;
    onNotification?: (n: { event: string; subscriptionId?: string }) => unknown;
  } = {},
) {
  const received: Received[] = [];
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, async (req) => {
    const body = await req.text();
    received.push({ headers: req.headers, body });
    if (o.delayMs) await new Promise((r) => setTimeout(r, o.delayMs));
    const vt = req.headers.get("validation-token");
    if (vt !== null) {
      const headers: Record<string, string> = { "Content-Type": "application/json" };
      if (o.echo !== false) headers["Validation-Token"] = vt;
      return new Response(o.bigBody ? "x".repeat(2000) : null, { status: 200, headers });
    }
    const n = JSON.parse(body);
    await o.onNotification?.(n);
    return new Response(null, { status: 200 });
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}/webhook`,
    received,
    close: () => server.shutdown(),
  };
}

function clientFor(fake: FakeRingCentral, extra: Partial<RingCentralClientOptions> = {}) {
  return new RingCentralClient({
    server: fake.url,
    clientId: fake.clientId,
    clientSecret: fake.clientSecret,
    jwt: fake.jwt,
    ...extra,
  });
}

function spec(publicUrl: string, over: Partial<SubscriptionSpec> = {}): SubscriptionSpec {
  return {
    publicUrl,
    verificationToken: TOKEN,
    eventFilters: FILTERS,
    expiresIn: 3600,
    reminderThreshold: 600,
    reminderInterval: 60,
    ...over,
  };
}

async function waitFor(cond: () => boolean, ms = 3000): Promise<void> {
  const until = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > until) throw new Error("timed out waiting for a condition");
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Runs `fn` with a started fake and receiver, closing both afterwards. */
async function withFake(
  fn: (fake: FakeRingCentral, rx: ReturnType<typeof startReceiver>) => Promise<void>,
  fakeOptions: ConstructorParameters<typeof FakeRingCentral>[0] = {},
  rxOptions: Parameters<typeof startReceiver>[0] = {},
): Promise<void> {
  const fake = new FakeRingCentral(fakeOptions).start();
  const rx = startReceiver(rxOptions);
  try {
    await fn(fake, rx);
  } finally {
    await fake.close();
    await rx.close();
  }
}

// ---------------------------------------------------------------------------------------------
// The client: authentication

Deno.test("client: one JWT login (Basic auth, form body) serves many concurrent calls", async () => {
  await withFake(async (fake) => {
    const client = clientFor(fake);
    const results = await Promise.all(
      Array.from({ length: 10 }, () => client.listSubscriptions()),
    );
    assert.equal(results.length, 10);
    assert.equal(fake.logins, 1);
    const tokenRequests = fake.requestsTo("POST", "/restapi/oauth/token");
    assert.equal(tokenRequests.length, 1);
    const form = new URLSearchParams(tokenRequests[0].body);
    assert.equal(form.get("grant_type"), "urn:ietf:params:oauth:grant-type:jwt-bearer");
    assert.equal(form.get("assertion"), fake.jwt);
    assert.equal(fake.requestsTo("GET", "/restapi/v1.0/subscription").length, 10);

    // the latest X-Rate-Limit-* values are kept per group
    const rl = client.rateLimitState();
    const light = rl.byGroup.find((g) => g.group === "light");
    const auth = rl.byGroup.find((g) => g.group === "auth");
    assert.equal(light?.limit, 50);
    assert.equal(light?.windowSec, 60);
    assert.ok(light?.remaining !== undefined && light.remaining >= 40 && light.remaining < 50);
    assert.equal(auth?.remaining, 4);
    assert.equal(client.stats().logins, 1);
  });
});

Deno.test("client: wrong client credentials fail once with OAU-123, no retry", async () => {
  await withFake(async (fake) => {
    const client = clientFor(fake, { clientSecret: "wrong-secret" });
    await assert.rejects(client.listSubscriptions(), (e: unknown) => {
      assert.ok(e instanceof RingCentralError);
      assert.equal(e.status, 401);
      assert.equal(e.errorCode, "OAU-123");
      return true;
    });
    assert.equal(fake.requests.length, 1);
  });
});

Deno.test("client: refreshes the token a margin before it expires, not after", async () => {
  await withFake(async (fake) => {
    const time = new FakeTime();
    // 4 s tokens; the 60 s margin is capped at half the lifetime: refresh after 2 s
    const client = clientFor(fake, { now: time.now, sleep: time.sleep, refreshMarginMs: 60_000 });
    await client.listSubscriptions();
    time.t += 1500;
    await client.listSubscriptions();
    assert.equal(fake.logins + fake.refreshes, 1, "no refresh while well inside the lifetime");
    time.t += 1000; // 2.5 s: inside the margin, still valid on the server
    await Promise.all([client.listSubscriptions(), client.listSubscriptions()]);
    assert.equal(fake.logins, 1);
    assert.equal(fake.refreshes, 1, "one refresh-token grant for both callers");
    assert.equal(fake.requests.filter((r) => r.status === 401).length, 0, "never waited for 401");
  }, { tokenTtlSec: 4 });
});

Deno.test("client: re-presents the JWT when the refresh token is refused", async () => {
  await withFake(async (fake) => {
    const time = new FakeTime();
    const client = clientFor(fake, { now: time.now, sleep: time.sleep });
    await client.listSubscriptions();
    fake.revokeRefreshTokens();
    time.t += 3000; // inside the refresh margin: the refresh grant is refused (OAU-211)
    await client.listSubscriptions();
    const grants = fake.requestsTo("POST", "/restapi/oauth/token").map((r) =>
      new URLSearchParams(r.body).get("grant_type")
    );
    assert.deepEqual(grants, [
      "urn:ietf:params:oauth:grant-type:jwt-bearer",
      "refresh_token",
      "urn:ietf:params:oauth:grant-type:jwt-bearer",
    ]);
    assert.equal(fake.logins, 2);
    assert.equal(fake.requests.filter((r) => r.status === 400).length, 1);
  }, { tokenTtlSec: 4 });
});

Deno.test("client: a 401 OAU-128 logs in again once for all callers and retries", async () => {
  await withFake(async (fake) => {
    const client = clientFor(fake);
    await client.listSubscriptions();
    fake.expireAccessTokens();
    await Promise.all(Array.from({ length: 5 }, () => client.listSubscriptions()));
    assert.equal(fake.logins, 2);
    const expired = fake.requests.filter((r) => r.status === 401);
    assert.equal(expired.length, 5);
    assert.ok(expired.every((r) => r.method === "GET" && r.path === "/restapi/v1.0/subscription"));
  });
});

// ---------------------------------------------------------------------------------------------
// The client: rate limits and backoff

Deno.test("client: rides out a 429 storm with zero requests inside the penalty window", async () => {
  await withFake(async (fake) => {
    const client = clientFor(fake);
    await client.login();
    // two penalties of 1 s (Retry-After: 1), the second one hit by the first request after the first
    fake.startRateLimitStorm({ triggers: 2, penaltyMs: 1000 });
    const started = Date.now();
    const a = client.listSubscriptions().catch((e) => e);
    await waitFor(() => fake.penaltyUntil > 0);
    await new Promise((r) => setTimeout(r, 200));
    // these arrive while the penalty runs: they must wait instead of sending
    const b = client.getSubscription("missing").catch((e) => e);
    const c = client.listSubscriptions().catch((e) => e);
    const [ra, rb, rc] = await Promise.all([a, b, c]);
    assert.deepEqual(ra, []);
    assert.ok(rb instanceof RingCentralError && rb.errorCode === "CMN-102");
    assert.deepEqual(rc, []);

    assert.equal(fake.requestsInPenalty, 0, "a request arrived inside a penalty window");
    const limited = fake.requests.filter((r) => r.status === 429);
    assert.equal(limited.length, 2);
    for (const l of limited) {
      const after = fake.requests.slice(fake.requests.indexOf(l) + 1);
      const inside = after.filter((r) => r.at < l.at + 1000);
      assert.deepEqual(inside, [], "nothing may be sent during the second after a 429");
    }
    assert.ok(Date.now() - started >= 2000);
    assert.equal(client.stats().rateLimited, 2);
    assert.ok(client.rateLimitState().penaltyUntil > started);
  });
});

Deno.test("client: a 429 without Retry-After stops every caller for at least 30 s", async () => {
  await withFake(async (fake) => {
    const time = new FakeTime();
    const client = clientFor(fake, { now: time.now, sleep: time.sleep });
    await client.login();
    fake.startRateLimitStorm({ triggers: 1, penaltyMs: 0, sendRetryAfter: false });
    const [a, b] = await Promise.all([client.listSubscriptions(), client.listSubscriptions()]);
    assert.deepEqual([a, b], [[], []]);
    assert.ok(time.sleeps.length >= 1);
    assert.ok(time.sleeps.every((ms) => ms >= 30_000), `slept ${time.sleeps}`);
    assert.equal(fake.requests.filter((r) => r.status === 429).length, 1);
  });
});

Deno.test("client: a token gone stale while waiting out a 429 is refreshed before the retry", async () => {
  await withFake(async (fake) => {
    const time = new FakeTime();
    // 4 s tokens (refresh after 2 s); the 429 has no Retry-After, so the call waits 60 s
    const client = clientFor(fake, { now: time.now, sleep: time.sleep });
    await client.login();
    fake.startRateLimitStorm({ triggers: 1, penaltyMs: 0, sendRetryAfter: false });
    assert.deepEqual(await client.listSubscriptions(), []);
    assert.deepEqual(time.sleeps, [60_000]);
    const seen = fake.requests.map((r) =>
      `${r.status} ${r.method} ${r.path} ${new URLSearchParams(r.body).get("grant_type") ?? ""}`
        .trim()
    );
    assert.deepEqual(seen, [
      "200 POST /restapi/oauth/token urn:ietf:params:oauth:grant-type:jwt-bearer",
      "429 GET /restapi/v1.0/subscription",
      "200 POST /restapi/oauth/token refresh_token",
      "200 GET /restapi/v1.0/subscription",
    ]);
  }, { tokenTtlSec: 4 });
});

Deno.test("client: too many 429s give up with a typed CMN-301 error", async () => {
  await withFake(async (fake) => {
    const time = new FakeTime();
    const client = clientFor(fake, { now: time.now, sleep: time.sleep, maxRateLimitRetries: 2 });
    await client.login();
    fake.startRateLimitStorm({ triggers: 10, penaltyMs: 0 });
    await assert.rejects(client.listSubscriptions(), (e: unknown) => {
      assert.ok(e instanceof RingCentralError);
      assert.equal(e.status, 429);
      assert.equal(e.errorCode, "CMN-301");
      assert.equal(e.message, "Request rate exceeded");
      assert.equal(e.retryAfterMs, 1000);
      return true;
    });
    assert.equal(fake.requests.filter((r) => r.status === 429).length, 3);
  });
});

Deno.test("client: backs off 2, 3, 5 s on 5xx, and gives up after the schedule", async () => {
  await withFake(async (fake) => {
    const time = new FakeTime();
    const client = clientFor(fake, { now: time.now, sleep: time.sleep });
    await client.login();
    fake.failNext(3, 503);
    assert.deepEqual(await client.listSubscriptions(), []);
    assert.deepEqual(time.sleeps, [2000, 3000, 5000]);

    time.sleeps = [];
    fake.failNext(20, 500);
    const before = fake.requests.length;
    await assert.rejects(client.listSubscriptions(), (e: unknown) => {
      assert.ok(e instanceof RingCentralError);
      assert.equal(e.status, 500);
      assert.equal(e.errorCode, "CMN-211");
      return true;
    });
    assert.deepEqual(time.sleeps, [2000, 3000, 5000, 8000, 13000, 21000, 30000]);
    assert.equal(fake.requests.length - before, 8);
  });
});

Deno.test("client: network errors back off too and end as status 0 NETWORK", async () => {
  const closed = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen: () => {} },
    () => new Response(),
  );
  const port = closed.addr.port;
  await closed.shutdown();
  const time = new FakeTime();
  const client = new RingCentralClient({
    server: `http://127.0.0.1:${port}`,
    clientId: "id",
    clientSecret: "secret",
    jwt: "jwt",
    now: time.now,
    sleep: time.sleep,
    retryScheduleSec: [2, 3],
  });
  await assert.rejects(client.login(), (e: unknown) => {
    assert.ok(e instanceof RingCentralError);
    assert.equal(e.status, 0);
    assert.equal(e.errorCode, "NETWORK");
    return true;
  });
  assert.deepEqual(time.sleeps, [2000, 3000]);
});

// ---------------------------------------------------------------------------------------------
// The client: subscription endpoints

Deno.test("client: create, get, list, update, renew, delete with RingCentral's shapes", async () => {
  await withFake(async (fake, rx) => {
    const client = clientFor(fake);
    const filters = [...FILTERS, "/restapi/v1.0/subscription/~?threshold=600&interval=60"];
    const created = await client.createSubscription({
      eventFilters: filters,
      deliveryMode: { transportType: "WebHook", address: rx.url, verificationToken: TOKEN },
      expiresIn: 3600,
    });
    // what was sent: expiresIn at the top level
    const sent = JSON.parse(fake.requestsTo("POST", "/restapi/v1.0/subscription")[0].body);
    assert.equal(sent.expiresIn, 3600);
    assert.equal(sent.deliveryMode.expiresIn, undefined);
    assert.deepEqual(sent.deliveryMode, {
      transportType: "WebHook",
      address: rx.url,
      verificationToken: TOKEN,
    });
    // the validation POST: empty body, Validation-Token echoed, Verification-Token present
    assert.equal(rx.received.length, 1);
    assert.equal(rx.received[0].body, "");
    assert.ok(rx.received[0].headers.get("validation-token"));
    assert.equal(rx.received[0].headers.get("verification-token"), TOKEN);
    assert.equal(fake.validations[0].outcome, "ok");
    // what came back: SubscriptionInfo
    assert.match(created.id, /^[0-9a-f-]{36}$/);
    assert.equal(created.status, "Active");
    assert.deepEqual(created.eventFilters, filters.map(resolveFilter));
    assert.equal(created.deliveryMode.address, rx.url);
    assert.equal(created.deliveryMode.transportType, "WebHook");
    assert.ok(created.expiresIn !== undefined && created.expiresIn > 3590);
    assert.ok(Date.parse(created.expirationTime ?? "") > Date.now());

    const got = await client.getSubscription(created.id);
    assert.equal(got.id, created.id);
    const list = await client.listSubscriptions();
    assert.deepEqual(list.map((s) => s.id), [created.id]);

    const updated = await client.updateSubscription(created.id, { eventFilters: [FILTERS[0]] });
    assert.deepEqual(updated.eventFilters, [resolveFilter(FILTERS[0])]);
    const put = fake.requestsTo("PUT", `/restapi/v1.0/subscription/${created.id}`);
    assert.deepEqual(JSON.parse(put[0].body), { eventFilters: [FILTERS[0]] });

    const renewed = await client.renewSubscription(created.id);
    assert.equal(renewed.id, created.id);
    const renew = fake.requestsTo("POST", `/restapi/v1.0/subscription/${created.id}/renew`);
    assert.equal(renew.length, 1);
    assert.equal(renew[0].body, "");

    await client.deleteSubscription(created.id);
    assert.equal(fake.subscriptions.size, 0);
    await assert.rejects(client.getSubscription(created.id), (e: unknown) => {
      assert.ok(e instanceof RingCentralError);
      assert.equal(e.status, 404);
      assert.equal(e.errorCode, "CMN-102");
      assert.equal(e.errors[0].parameterName, "subscriptionId");
      assert.ok(isNotFound(e));
      return true;
    });
  });
});

async function createError(
  fake: FakeRingCentral,
  address: string,
): Promise<RingCentralError> {
  const client = clientFor(fake);
  try {
    await client.createSubscription({
      eventFilters: FILTERS,
      deliveryMode: { transportType: "WebHook", address },
      expiresIn: 3600,
    });
  } catch (e) {
    assert.ok(e instanceof RingCentralError);
    return e;
  }
  throw new Error("create succeeded");
}

Deno.test("client: create fails with SUB-520 when the receiver does not echo the token", async () => {
  await withFake(
    async (fake, rx) => {
      const e = await createError(fake, rx.url);
      assert.equal(e.status, 400);
      assert.equal(e.errorCode, "SUB-520");
      assert.equal(e.message, "Validation Token is not returned");
      assert.equal(fake.subscriptions.size, 0);
    },
    {},
    { echo: false },
  );
});

Deno.test("client: create fails with CMN-101 when the receiver is too slow", async () => {
  await withFake(
    async (fake, rx) => {
      const e = await createError(fake, rx.url);
      assert.equal(e.errorCode, "CMN-101");
      assert.equal(e.message, "Parameter [deliveryMode.address] value is invalid");
    },
    { validationTimeoutMs: 150 },
    { delayMs: 400 },
  );
});

Deno.test("client: create fails with SUB-525 when the validation response exceeds 1 KB", async () => {
  await withFake(
    async (fake, rx) => {
      const e = await createError(fake, rx.url);
      assert.equal(e.errorCode, "SUB-525");
      assert.equal(e.message, "WebHook server response is invalid");
      assert.ok((fake.validations[0].responseBytes ?? 0) > 1024);
    },
    {},
    { bigBody: true },
  );
});

Deno.test("client: create fails with SUB-505 beyond the subscription limit", async () => {
  await withFake(async (fake, rx) => {
    const client = clientFor(fake);
    await client.createSubscription({
      eventFilters: FILTERS,
      deliveryMode: { transportType: "WebHook", address: rx.url },
    });
    const e = await createError(fake, rx.url);
    assert.equal(e.errorCode, "SUB-505");
    assert.equal(e.message, "Subscriptions limit exceeded");
  }, { maxSubscriptions: 1 });
});

Deno.test("client: no secret or token ever reaches a log line", async () => {
  const lines: string[] = [];
  await setupLogging({ level: "trace", format: "json", secrets: [], write: (l) => lines.push(l) });
  try {
    await withFake(
      async (fake, rx) => {
        const time = new FakeTime();
        const client = clientFor(fake, { now: time.now, sleep: time.sleep });
        await client.login();
        fake.failNext(1, 503);
        fake.startRateLimitStorm({ triggers: 1, penaltyMs: 0 });
        await client.listSubscriptions();
        fake.expireAccessTokens();
        await client.listSubscriptions();
        time.t += 7200_000; // past expiry: refresh grant
        await client.listSubscriptions();
        await createError(fake, rx.url);
        const secrets = [fake.clientSecret, fake.jwt, ...fake.issuedTokens];
        secrets.push(btoa(`${fake.clientId}:${fake.clientSecret}`));
        assert.ok(lines.length >= 5, `expected log lines, got ${lines.length}`);
        for (const line of lines) {
          for (const s of secrets) assert.ok(!line.includes(s), `secret in log: ${line}`);
        }
      },
      {},
      { echo: false },
    );
  } finally {
    await resetLogging();
  }
});

// ---------------------------------------------------------------------------------------------
// The keeper

Deno.test("filtersMatch: ~ matches resolved ids, the reminder filter matches literally", () => {
  const wanted = desiredFilters(spec("http://x/webhook"));
  assert.ok(filtersMatch(wanted, wanted.map(resolveFilter)));
  assert.ok(!filtersMatch(wanted, wanted.slice(1).map(resolveFilter)));
  assert.ok(!filtersMatch(wanted, [...wanted.map(resolveFilter), "/restapi/v1.0/account/1/x"]));
  assert.ok(
    !filtersMatch(
      ["/restapi/v1.0/account/~/telephony/sessions"],
      ["/restapi/v1.0/account/1/extension/2/telephony/sessions"],
    ),
  );
  assert.deepEqual(desiredFilters(spec("u", { reminderThreshold: 0 })), FILTERS);
});

Deno.test("ensureSubscription: creates, leaves alone, updates filters, recreates on a new address", async () => {
  await withFake(async (fake, rx) => {
    const store = new MemoryStore();
    const api = clientFor(fake);
    const transitions: Transition[] = [];
    const onTransition = (t: Transition) => transitions.push(t);

    const first = await ensureSubscription({ api, store, spec: spec(rx.url), onTransition });
    assert.equal(first.action, "created");
    assert.equal(store.settings.get(SUBSCRIPTION_ID_SETTING), first.subscription.id);
    const body = JSON.parse(fake.requestsTo("POST", "/restapi/v1.0/subscription")[0].body);
    assert.deepEqual(body, {
      eventFilters: [...FILTERS, "/restapi/v1.0/subscription/~?threshold=600&interval=60"],
      deliveryMode: { transportType: "WebHook", address: rx.url, verificationToken: TOKEN },
      expiresIn: 3600,
    });

    const second = await ensureSubscription({ api, store, spec: spec(rx.url), onTransition });
    assert.equal(second.action, "unchanged");
    assert.equal(fake.requestsTo("PUT", /subscription\//).length, 0);
    assert.equal(fake.requestsTo("POST", "/restapi/v1.0/subscription").length, 1);

    const moreFilters = [...FILTERS, "/restapi/v1.0/account/~/extension/~/voicemail"];
    const third = await ensureSubscription({
      api,
      store,
      spec: spec(rx.url, { eventFilters: moreFilters }),
      onTransition,
    });
    assert.equal(third.action, "updated");
    assert.equal(third.subscription.id, first.subscription.id);
    const put = JSON.parse(fake.requestsTo("PUT", /subscription\//)[0].body);
    assert.deepEqual(put.eventFilters, desiredFilters(spec(rx.url, { eventFilters: moreFilters })));

    const rx2 = startReceiver();
    try {
      const fourth = await ensureSubscription({ api, store, spec: spec(rx2.url), onTransition });
      assert.equal(fourth.action, "recreated");
      assert.notEqual(fourth.subscription.id, first.subscription.id);
      assert.equal(fourth.subscription.deliveryMode.address, rx2.url);
      assert.equal(fake.requestsTo("DELETE", /subscription\//).length, 1);
      assert.deepEqual([...fake.subscriptions.keys()], [fourth.subscription.id]);
      assert.equal(store.settings.get(SUBSCRIPTION_ID_SETTING), fourth.subscription.id);
    } finally {
      await rx2.close();
    }
    assert.deepEqual(transitions.map((t) => t.kind), [
      "created",
      "updated",
      "deleted",
      "recreated",
    ]);
  });
});

Deno.test("ensureSubscription: adopts this app's subscription at the public URL instead of a second", async () => {
  await withFake(async (fake, rx) => {
    const api = clientFor(fake);
    const rx2 = startReceiver();
    try {
      const make = (address: string, filters = desiredFilters(spec(address))) =>
        api.createSubscription({
          eventFilters: filters,
          deliveryMode: { transportType: "WebHook", address, verificationToken: TOKEN },
          expiresIn: 3600,
        });
      const elsewhere = await make(rx2.url);
      const blacklisted = await make(rx.url);
      fake.blacklist(blacklisted.id);
      const ours = await make(rx.url);
      const creates = () => fake.requestsTo("POST", "/restapi/v1.0/subscription").length;
      assert.equal(creates(), 3);

      // A fresh store (new data directory): the Active one at our address is taken over.
      const transitions: Transition[] = [];
      const store = new MemoryStore();
      const keeper = new Keeper({
        api,
        store,
        spec: spec(rx.url),
        instanceId: "a",
        onTransition: (t) => transitions.push(t),
      });
      assert.equal(await keeper.tick(), "adopted");
      assert.equal(store.settings.get(SUBSCRIPTION_ID_SETTING), ours.id);
      assert.equal(keeper.subscription?.id, ours.id);
      assert.equal(creates(), 3, "adopting must not create");
      assert.equal(fake.requestsTo("GET", "/restapi/v1.0/subscription").length, 1);
      assert.equal(transitions[1]?.kind, "adopted");
      assert.match(transitions[1]?.reason ?? "", /1 more at this address/);
      // From then on it is ours: checked by id, no more listing.
      assert.equal(await keeper.tick(), "unchanged");
      assert.equal(fake.requestsTo("GET", "/restapi/v1.0/subscription").length, 1);
      await keeper.stop();

      // Adopted with other filters: updated in place, not recreated.
      const store2 = new MemoryStore();
      const wider = [...FILTERS, "/restapi/v1.0/account/~/extension/~/voicemail"];
      const updated = await ensureSubscription({
        api,
        store: store2,
        spec: spec(rx.url, { eventFilters: wider }),
      });
      assert.deepEqual([updated.action, updated.adopted, updated.subscription.id], [
        "updated",
        true,
        ours.id,
      ]);
      assert.equal(creates(), 3);

      // The stored id is gone and only a blacklisted one is at our address: it is adopted,
      // then deleted and recreated (not left next to a new one).
      fake.expire(ours.id);
      const store3 = new MemoryStore();
      store3.settings.set(SUBSCRIPTION_ID_SETTING, ours.id);
      const r = await ensureSubscription({ api, store: store3, spec: spec(rx.url) });
      assert.equal(r.action, "recreated");
      assert.equal(creates(), 4);
      assert.equal(
        fake.requestsTo("DELETE", `/restapi/v1.0/subscription/${blacklisted.id}`).length,
        1,
      );
      assert.deepEqual(
        [...fake.subscriptions.values()].map((s) => s.address).sort(),
        [rx.url, rx2.url].sort(),
      );
      assert.equal(store3.settings.get(SUBSCRIPTION_ID_SETTING), r.subscription.id);
      assert.ok(fake.subscriptions.has(elsewhere.id), "another address is never touched");
    } finally {
      await rx2.close();
    }
  });
});

Deno.test("keeper: logs the filters RingCentral disabled, with its reason", async () => {
  await withFake(async (fake, rx) => {
    const lines: string[] = [];
    await setupLogging({ level: "info", format: "json", secrets: [], write: (l) => lines.push(l) });
    try {
      const client = clientFor(fake);
      const disabledFilters = [{
        filter: FILTERS[0],
        reason: "Forbidden",
        message: "[CallControl] permission required",
      }];
      const api = {
        getSubscription: client.getSubscription.bind(client),
        listSubscriptions: client.listSubscriptions.bind(client),
        renewSubscription: client.renewSubscription.bind(client),
        updateSubscription: client.updateSubscription.bind(client),
        deleteSubscription: client.deleteSubscription.bind(client),
        createSubscription: async (...a: Parameters<RingCentralClient["createSubscription"]>) => ({
          ...await client.createSubscription(...a),
          disabledFilters,
        }),
      };
      const keeper = new Keeper({
        api,
        store: new MemoryStore(),
        spec: spec(rx.url),
        instanceId: "a",
      });
      assert.equal(await keeper.tick(), "created");
      await keeper.stop();
      const line = lines.find((l) => l.includes("disabled 1 event filter"));
      assert.ok(line, lines.join("\n"));
      assert.match(line, /telephony\/sessions \(Forbidden: \[CallControl\] permission required\)/);
    } finally {
      await resetLogging();
    }
  });
});

Deno.test("keeper: renews on the renewal reminder for its own subscription only", async () => {
  let keeper: Keeper | undefined;
  const renewedByReminder: boolean[] = [];
  await withFake(
    async (fake, rx) => {
      const store = new MemoryStore();
      const transitions: Transition[] = [];
      keeper = new Keeper({
        api: clientFor(fake),
        store,
        spec: spec(rx.url),
        instanceId: "a",
        onTransition: (t) => transitions.push(t),
      });
      assert.equal(await keeper.tick(), "created");
      const id = store.settings.get(SUBSCRIPTION_ID_SETTING)!;
      const renewPath = `/restapi/v1.0/subscription/${id}/renew`;
      assert.equal(fake.requestsTo("POST", renewPath).length, 0);

      assert.equal(await fake.sendRenewalReminder(id), 200);
      await waitFor(() => renewedByReminder.length === 1);
      assert.deepEqual(renewedByReminder, [true]);
      assert.equal(fake.requestsTo("POST", renewPath).length, 1);
      const reminder = rx.received.at(-1)!;
      assert.equal(reminder.headers.get("verification-token"), TOKEN);
      assert.equal(
        JSON.parse(reminder.body).event,
        "/restapi/v1.0/subscription/~?threshold=600&interval=60",
      );
      assert.equal(transitions.at(-1)?.kind, "renewed");
      assert.equal(transitions.at(-1)?.reason, "renewal reminder");

      // not ours, or not a reminder: nothing happens
      const event = "/restapi/v1.0/subscription/~?threshold=600&interval=60";
      assert.equal(await keeper.onNotification({ event, subscriptionId: "someone-else" }), false);
      assert.equal(await keeper.onNotification({ event: FILTERS[0], subscriptionId: id }), false);
      assert.equal(fake.requestsTo("POST", renewPath).length, 1);
      await keeper.stop();
    },
    {},
    {
      onNotification: async (n) => renewedByReminder.push(await keeper!.onNotification(n)),
    },
  );
});

Deno.test("keeper: renews on schedule once less than the margin is left", async () => {
  await withFake(async (fake, rx) => {
    let skew = 0;
    const keeper = new Keeper({
      api: clientFor(fake),
      store: new MemoryStore(),
      spec: spec(rx.url, { expiresIn: 180 }),
      instanceId: "a",
      checkIntervalMs: 1000,
      now: () => Date.now() + skew,
    });
    assert.equal(await keeper.tick(), "created");
    assert.equal(await keeper.tick(), "unchanged"); // 180 s left, margin 90 s
    assert.equal(fake.requestsTo("POST", /\/renew$/).length, 0);
    skew = 100_000; // 80 s left
    assert.equal(await keeper.tick(), "renewed");
    assert.equal(fake.requestsTo("POST", /\/renew$/).length, 1);
    await keeper.stop();
  });
});

Deno.test("keeper: recreates a blacklisted subscription at the same address with the same token", async () => {
  await withFake(async (fake, rx) => {
    const store = new MemoryStore();
    const metrics = new Registry();
    const transitions: Transition[] = [];
    const keeper = new Keeper({
      api: clientFor(fake),
      store,
      spec: spec(rx.url),
      instanceId: "a",
      metrics,
      onTransition: (t) => transitions.push(t),
    });
    assert.equal(await keeper.tick(), "created");
    const oldId = store.settings.get(SUBSCRIPTION_ID_SETTING)!;
    const reason = "I/O operation is failed. Details: [Read timed out]";
    fake.blacklist(oldId, reason);

    assert.equal(await keeper.tick(), "recreated");
    const newId = store.settings.get(SUBSCRIPTION_ID_SETTING)!;
    assert.notEqual(newId, oldId);
    assert.equal(fake.requestsTo("DELETE", `/restapi/v1.0/subscription/${oldId}`).length, 1);
    assert.deepEqual([...fake.subscriptions.keys()], [newId]);
    assert.equal(fake.subscriptions.get(newId)?.address, rx.url);
    assert.equal(fake.validations.at(-1)?.verificationToken, TOKEN);
    const blacklisted = transitions.find((t) => t.kind === "blacklisted");
    assert.equal(blacklisted?.reason, reason);
    assert.equal(blacklisted?.subscriptionId, oldId);
    const kinds = "ringhook_rc_subscription_transitions_total";
    assert.equal(metrics.value(kinds, { kind: "blacklisted" }), 1);
    assert.equal(metrics.value(kinds, { kind: "recreated" }), 1);

    // gone (expired: 404 CMN-102) is recreated too, and the reason is RingCentral's
    fake.expire(newId);
    assert.equal(await keeper.tick(), "recreated");
    const gone = transitions.find((t) => t.kind === "gone");
    assert.match(gone?.reason ?? "", /^CMN-102 /);
    assert.equal(fake.subscriptions.size, 1);
    await keeper.stop();
  });
});

Deno.test("keeper: after setVerificationToken, the next recreate uses the new token", async () => {
  await withFake(async (fake, rx) => {
    const store = new MemoryStore();
    const keeper = new Keeper({ api: clientFor(fake), store, spec: spec(rx.url), instanceId: "a" });
    assert.equal(await keeper.tick(), "created");
    keeper.setVerificationToken("vt_rotated_token_9876543210");
    assert.equal(await keeper.tick(), "unchanged", "a new token alone does not recreate");
    fake.blacklist(store.settings.get(SUBSCRIPTION_ID_SETTING)!);
    assert.equal(await keeper.tick(), "recreated");
    assert.deepEqual(fake.validations.map((v) => v.verificationToken), [
      TOKEN,
      "vt_rotated_token_9876543210",
    ]);
    await keeper.stop();
  });
});

Deno.test("keeper: two keepers sharing one store never both create or recreate", async () => {
  await withFake(async (fake, rx) => {
    const store = new MemoryStore();
    const make = (instanceId: string) =>
      new Keeper({ api: clientFor(fake), store, spec: spec(rx.url), instanceId });
    const a = make("a");
    const b = make("b");
    const first = (await Promise.all([a.tick(), b.tick()])).sort();
    assert.deepEqual(first, ["created", "standby"]);
    assert.equal(fake.subscriptions.size, 1);

    fake.blacklist(store.settings.get(SUBSCRIPTION_ID_SETTING)!);
    const second = (await Promise.all([a.tick(), b.tick()])).sort();
    assert.deepEqual(second, ["recreated", "standby"]);
    assert.equal(fake.requestsTo("POST", "/restapi/v1.0/subscription").length, 2);
    assert.equal(fake.requestsTo("DELETE", /subscription\//).length, 1);
    assert.equal(fake.subscriptions.size, 1);

    // the leader stops and releases the lease: the other one takes over without recreating
    const leader = a.isLeader ? a : b;
    const other = leader === a ? b : a;
    await leader.stop();
    assert.equal(await other.tick(), "unchanged");
    assert.ok(other.isLeader);
    assert.equal(fake.requestsTo("POST", "/restapi/v1.0/subscription").length, 2);
    await other.stop();
  });
});

Deno.test("keeper: start() checks on its interval, stop() cancels timers and calls in flight", async () => {
  await withFake(async (fake, rx) => {
    const keeper = new Keeper({
      api: clientFor(fake),
      store: new MemoryStore(),
      spec: spec(rx.url),
      instanceId: "a",
      checkIntervalMs: 40,
    });
    keeper.start();
    await waitFor(() => fake.requestsTo("GET", /subscription\//).length >= 3);
    assert.equal(fake.subscriptions.size, 1);

    // a 60 s penalty holds the next check; stop() must not wait for it
    fake.startRateLimitStorm({ triggers: 1, penaltyMs: 60_000 });
    await waitFor(() => fake.penaltyUntil > 0);
    const t0 = Date.now();
    await keeper.stop();
    assert.ok(Date.now() - t0 < 1000, "stop() waited for the penalty");
    const count = fake.requests.length;
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(fake.requests.length, count, "requests after stop()");
    assert.equal(fake.requestsInPenalty, 0);
  });
});

Deno.test("ensureSubscription changes nothing at RingCentral once beforeChange says the lease is gone", async () => {
  const calls: string[] = [];
  const api = {
    getSubscription: () => Promise.reject(new Error("not used")),
    listSubscriptions: () => (calls.push("list"), Promise.resolve([])),
    createSubscription: () => (calls.push("create"), Promise.reject(new Error("must not run"))),
    renewSubscription: () => Promise.reject(new Error("not used")),
    updateSubscription: () => Promise.reject(new Error("not used")),
    deleteSubscription: () => Promise.reject(new Error("not used")),
  };
  const settings = new Map<string, string>();
  const store = {
    lease: () => Promise.resolve(true),
    getSetting: (k: string) => Promise.resolve(settings.get(k)),
    setSetting: (k: string, v: string) => Promise.resolve(void settings.set(k, v)),
  };
  await assert.rejects(
    ensureSubscription({
      api: api as unknown as Parameters<typeof ensureSubscription>[0]["api"],
      store,
      spec: {
        publicUrl: "https://hooks.example.com/webhook",
        eventFilters: ["/restapi/v1.0/account/~/telephony/sessions"],
        expiresIn: 315360000,
        reminderThreshold: 0,
        reminderInterval: 0,
      },
      beforeChange: () => Promise.resolve(false),
    }),
    { name: "LeaseLost" },
  );
  assert.deepEqual(calls, ["list"], "listed, then stopped before creating");
  assert.equal(settings.size, 0);
});
