/** The admin API: auth, every route, pagination, the OpenAPI document, and the metrics exposition. */
import assert from "node:assert/strict";
import { fixture, fixtureNames, testApp, webhookPost } from "./helpers.ts";
import { adminRoutes } from "../src/admin/api.ts";
import openapi from "../src/admin/openapi.json" with { type: "json" };

const ADMIN = "admin-token-abc";
const bearer = (t = ADMIN) => ({ Authorization: `Bearer ${t}` });

async function get(
  app: { handler: (r: Request) => Promise<Response> },
  path: string,
  token = ADMIN,
) {
  const res = await app.handler(new Request(`http://x${path}`, { headers: bearer(token) }));
  return { status: res.status, body: await res.json(), headers: res.headers };
}

Deno.test("admin auth: off without a token (403, never open), 401 on wrong or missing, 200 on right", async () => {
  const off = await testApp();
  try {
    const r = await off.handler(new Request("http://x/api/v1/events", { headers: bearer() }));
    assert.equal(r.status, 403);
    assert.equal((await r.json()).error, "admin_disabled");
  } finally {
    await off.dispose();
  }
  const app = await testApp({ RINGHOOK_ADMIN_TOKEN: `${ADMIN},second-admin-token` });
  try {
    const none = await app.handler(new Request("http://x/api/v1/events"));
    assert.equal(none.status, 401);
    assert.match(none.headers.get("www-authenticate")!, /^Bearer/);
    await none.body?.cancel();
    assert.equal((await get(app, "/api/v1/events", "wrong")).status, 401);
    assert.equal((await get(app, "/api/v1/events")).status, 200);
    assert.equal((await get(app, "/api/v1/events", "second-admin-token")).status, 200);
    const basic = await app.handler(
      new Request("http://x/api/v1/events", { headers: { Authorization: `Basic ${btoa("a:b")}` } }),
    );
    assert.equal(basic.status, 401);
    await basic.body?.cancel();
  } finally {
    await app.dispose();
  }
});

Deno.test("admin routes: events, event by uuid, calls, call by id, call events, status, subscription; pagination", async () => {
  const app = await testApp({ RINGHOOK_ADMIN_TOKEN: ADMIN });
  try {
    const names = fixtureNames("telephony-inbound-answered-");
    for (const n of names) assert.equal((await app.handler(webhookPost(fixture(n)))).status, 200);
    const sms = fixture("sms-instant-message-inbound.json");
    assert.equal((await app.handler(webhookPost(sms))).status, 200);
    await app.calls.consumer.reached(await app.store.lastSeq());

    // Events, newest first, paged by cursor until the end.
    const seen: string[] = [];
    let cursor: string | null = "";
    let pages = 0;
    while (cursor !== null) {
      const r = await get(app, `/api/v1/events?limit=3${cursor ? `&cursor=${cursor}` : ""}`);
      assert.equal(r.status, 200);
      seen.push(...r.body.items.map((i: { uuid: string }) => i.uuid));
      cursor = r.body.nextCursor;
      pages++;
    }
    assert.equal(seen.length, names.length + 1);
    assert.equal(new Set(seen).size, seen.length);
    assert.equal(seen[0], sms.uuid, "newest first");
    assert.equal(pages, 3);

    const filtered = await get(app, "/api/v1/events?event=message-store");
    assert.deepEqual(filtered.body.items.map((i: { uuid: string }) => i.uuid), [sms.uuid]);
    const byUuid = await get(app, `/api/v1/events?uuid=${sms.uuid}`);
    assert.equal(byUuid.body.items.length, 1);
    const future = await get(
      app,
      `/api/v1/events?since=${new Date(Date.now() + 60_000).toISOString()}`,
    );
    assert.deepEqual(future.body.items, []);

    const one = await get(app, `/api/v1/events/${sms.uuid}`);
    assert.equal(one.status, 200);
    assert.deepEqual(one.body.notification, sms);
    assert.equal(one.body.headers["verification-token"], undefined);
    assert.equal((await get(app, "/api/v1/events/nope")).status, 404);

    const tsid = (fixture(names[0]).body as { telephonySessionId: string }).telephonySessionId;
    const calls = await get(app, "/api/v1/calls");
    assert.equal(calls.body.items.length, 1);
    assert.equal(calls.body.items[0].telephonySessionId, tsid);
    assert.equal(calls.body.items[0].result, "answered");
    assert.equal(calls.body.nextCursor, null);
    assert.deepEqual((await get(app, "/api/v1/calls?active=true")).body.items, []);
    const call = await get(app, `/api/v1/calls/${tsid}`);
    assert.equal(call.status, 200);
    assert.equal(call.body.record.parties.length, 2);
    assert.equal((await get(app, "/api/v1/calls/s-unknown")).status, 404);

    const ev = await get(app, "/api/v1/call-events");
    assert.deepEqual(
      ev.body.items.map((i: { type: string }) => i.type),
      ["call.ringing", "call.answered", "call.ended"],
    );
    const after = await get(app, `/api/v1/call-events?after=${ev.body.items[1].seq}`);
    assert.deepEqual(after.body.items.map((i: { type: string }) => i.type), ["call.ended"]);

    const status = await get(app, "/api/v1/status");
    assert.equal(status.body.readiness.ready, true);
    assert.equal(status.body.journal.events, names.length + 1);
    assert.equal(status.body.consumers.calls.lag, 0);
    const sub = await get(app, "/api/v1/subscription");
    assert.equal(sub.body.managed, false);
    const doc = await get(app, "/api/v1/openapi.json");
    assert.deepEqual(doc.body, openapi, "the API serves its own OpenAPI document");

    // Bad queries are 400, unknown admin paths 404, other methods 405.
    assert.equal((await get(app, "/api/v1/events?limit=0")).status, 400);
    assert.equal((await get(app, "/api/v1/events?limit=abc")).status, 400);
    assert.equal((await get(app, "/api/v1/events?cursor=x")).status, 400);
    assert.equal((await get(app, "/api/v1/events?since=yesterday")).status, 400);
    assert.equal((await get(app, "/api/v1/calls?active=maybe")).status, 400);
    assert.equal((await get(app, "/api/v1/calls?cursor=bad")).status, 400);
    assert.equal((await get(app, "/api/v1/events/%E0%A4%A")).status, 400);
    assert.equal((await get(app, "/api/v1/nothing")).status, 404);
    const del = await app.handler(
      new Request("http://x/api/v1/events", { method: "DELETE", headers: bearer() }),
    );
    assert.equal(del.status, 405);
    await del.body?.cancel();
  } finally {
    await app.dispose();
  }
});

Deno.test("admin calls pagination walks every call exactly once", async () => {
  const app = await testApp({ RINGHOOK_ADMIN_TOKEN: ADMIN });
  try {
    const base = fixture("telephony-inbound-answered-02-alice-party-setup.json");
    const body = base.body as Record<string, unknown>;
    for (let i = 0; i < 7; i++) {
      const n = {
        ...base,
        uuid: `call-${i}`,
        body: { ...body, telephonySessionId: `s-page-${i}` },
      };
      assert.equal((await app.handler(webhookPost(n))).status, 200);
    }
    await app.calls.consumer.reached(await app.store.lastSeq());
    const ids: string[] = [];
    let cursor: string | null = "";
    while (cursor !== null) {
      const r = await get(
        app,
        `/api/v1/calls?limit=2${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`,
      );
      ids.push(...r.body.items.map((i: { telephonySessionId: string }) => i.telephonySessionId));
      cursor = r.body.nextCursor;
    }
    assert.deepEqual(ids.sort(), Array.from({ length: 7 }, (_, i) => `s-page-${i}`));
  } finally {
    await app.dispose();
  }
});

Deno.test("the OpenAPI document lists exactly the routes the admin API serves", async () => {
  const app = await testApp({ RINGHOOK_ADMIN_TOKEN: ADMIN });
  try {
    const served = adminRoutes({
      tokens: () => [],
      store: app.store,
      readiness: () => ({ ready: true }),
      consumers: () => ({}),
      version: "t",
    }).map((r) => `${r.method} ${r.path}`).sort();
    const documented = Object.entries(openapi.paths).flatMap(([path, ops]) =>
      Object.keys(ops).map((m) => `${m.toUpperCase()} ${path}`)
    ).sort();
    assert.deepEqual(documented, served);
    // Each documented route answers (not 404-for-route) with the right token.
    for (const path of Object.keys(openapi.paths)) {
      const concrete = path.replace(/\{[^}]+\}/g, "none");
      const r = await get(app, concrete);
      assert.ok(
        r.status === 200 || (r.status === 404 && r.body.error === "not_found" &&
          !String(r.body.message).startsWith("no admin route")),
        `${path}: ${r.status}`,
      );
    }
  } finally {
    await app.dispose();
  }
});

Deno.test("metrics: valid Prometheus exposition with the metrics operators need", async () => {
  const app = await testApp();
  try {
    const n = fixture("telephony-missed-call-04-alice-disconnected-missed.json");
    await app.handler(webhookPost(n));
    await app.handler(webhookPost(n));
    await app.handler(webhookPost(n, { "Verification-Token": "bad" }));
    await app.handler(
      new Request("http://x/webhook", { method: "POST", headers: { "Validation-Token": "v" } }),
    );
    await app.calls.consumer.reached(await app.store.lastSeq());
    const res = await app.handler(new Request("http://x/metrics"));
    assert.match(res.headers.get("content-type")!, /^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    const families = parseExposition(text);
    for (
      const name of [
        "ringhook_http_requests_total",
        "ringhook_ack_seconds",
        "ringhook_handshakes_total",
        "ringhook_verification_failures_total",
        "ringhook_events_total",
        "ringhook_journal_batch_size",
        "ringhook_journal_commit_seconds",
        "ringhook_consumer_lag_events",
        "ringhook_calls_active",
        "ringhook_calls_ended_total",
        "ringhook_journal_ready",
      ]
    ) assert.ok(families.has(name), `missing ${name}`);
    assert.equal(families.get("ringhook_handshakes_total")!.type, "counter");
    assert.equal(families.get("ringhook_ack_seconds")!.type, "histogram");
    const sample = (s: string) => {
      const name = s.split("{")[0].replace(/_(count|sum|bucket)$/, "");
      return families.get(families.has(name) ? name : s.split("{")[0])!.samples.get(s);
    };
    assert.equal(sample('ringhook_events_total{outcome="duplicate"}'), 1);
    assert.equal(sample('ringhook_events_total{outcome="stored"}'), 1);
    assert.equal(sample('ringhook_verification_failures_total{reason="token"}'), 1);
    assert.equal(sample("ringhook_handshakes_total"), 1);
    assert.equal(sample('ringhook_consumer_lag_events{consumer="calls"}'), 0);
    assert.equal(sample("ringhook_ack_seconds_count"), 2);
    // Histogram buckets are cumulative and end in +Inf = count.
    const buckets = [...families.get("ringhook_ack_seconds")!.samples].filter(([k]) =>
      k.startsWith("ringhook_ack_seconds_bucket")
    ).map(([, v]) => v);
    for (let i = 1; i < buckets.length; i++) assert.ok(buckets[i] >= buckets[i - 1]);
    assert.equal(buckets[buckets.length - 1], 2);
  } finally {
    await app.dispose();
  }
});

/** A strict-enough parser of the Prometheus text format: every line must be HELP, TYPE or a sample. */
function parseExposition(text: string) {
  const families = new Map<string, { type: string; samples: Map<string, number> }>();
  let current = "";
  assert.ok(text.endsWith("\n"));
  for (const line of text.trimEnd().split("\n")) {
    let m;
    if ((m = line.match(/^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) .+$/))) {
      current = m[1];
      families.set(current, { type: "", samples: new Map() });
    } else if ((m = line.match(/^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram)$/))) {
      assert.equal(m[1], current, "TYPE follows its HELP");
      families.get(current)!.type = m[2];
    } else if (
      (m = line.match(
        /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (-?[0-9.e+-]+|NaN|\+Inf|-Inf)$/,
      ))
    ) {
      assert.ok(m[1].startsWith(current), `${m[1]} outside its family ${current}`);
      families.get(current)!.samples.set(m[1] + (m[2] ?? ""), Number(m[3]));
    } else {
      assert.fail(`not exposition format: ${line}`);
    }
  }
  return families;
}
