/** The handler called without a socket: every /webhook rule, health, routing. */
import assert from "node:assert/strict";
import { fixture, testApp, webhookPost } from "./helpers.ts";
import { hmacHex } from "../src/verify.ts";

const event = fixture("telephony-inbound-answered-02-alice-party-setup.json");

Deno.test("handshake echoes Validation-Token with application/json and no body parsing", async () => {
  const app = await testApp();
  try {
    const res = await app.handler(
      new Request("http://x/webhook", {
        method: "POST",
        headers: { "Validation-Token": "3f2b8a4e-0c1d", "Content-Type": "application/json" },
      }),
    );
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("validation-token"), "3f2b8a4e-0c1d");
    assert.equal(res.headers.get("content-type"), "application/json");
    assert.equal(await res.text(), "");
    assert.equal(app.metrics.value("ringhook_handshakes_total"), 1);
  } finally {
    await app.dispose();
  }
});

Deno.test("handshake with a wrong Verification-Token is refused when tokens are configured", async () => {
  const app = await testApp();
  try {
    const res = await app.handler(
      new Request("http://x/webhook", {
        method: "POST",
        headers: { "Validation-Token": "abc", "Verification-Token": "nope" },
      }),
    );
    assert.equal(res.status, 401);
    assert.equal(res.headers.get("validation-token"), null);
    const ok = await app.handler(
      new Request("http://x/webhook", {
        method: "POST",
        headers: { "Validation-Token": "abc", "Verification-Token": "test-token-123" },
      }),
    );
    assert.equal(ok.status, 200);
    assert.equal(ok.headers.get("validation-token"), "abc");
  } finally {
    await app.dispose();
  }
});

Deno.test("empty POST answers 200 ok and stores nothing", async () => {
  const app = await testApp();
  try {
    const res = await app.handler(webhookPost(null));
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { status: "ok" });
    // The Flask server answered any empty POST with 200, token or not.
    const res2 = await app.handler(new Request("http://x/webhook", { method: "POST" }));
    assert.equal(res2.status, 200);
    const wrong = await app.handler(webhookPost(null, { "Verification-Token": "wrong" }));
    assert.equal(wrong.status, 401);
    assert.equal((await app.store.stats()).events, 0);
  } finally {
    await app.dispose();
  }
});

Deno.test("a valid notification is stored, then answered as duplicate", async () => {
  const app = await testApp();
  try {
    const res = await app.handler(webhookPost(event));
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { status: "received", uuid: event.uuid });
    const again = await app.handler(webhookPost(event));
    assert.equal(again.status, 200);
    assert.deepEqual(await again.json(), { status: "duplicate", uuid: event.uuid });
    const [entry] = await app.store.readAfter(0, 10);
    assert.equal(entry.uuid, event.uuid);
    assert.equal(entry.event, event.event);
    assert.equal(entry.subscriptionId, event.subscriptionId);
    assert.equal(entry.ownerId, event.ownerId);
    assert.deepEqual(JSON.parse(new TextDecoder().decode(entry.raw)), event);
    assert.equal(entry.headers["verification-token"], undefined, "secrets are not stored");
    assert.equal((await app.store.stats()).events, 1);
  } finally {
    await app.dispose();
  }
});

Deno.test("raw bytes are stored exactly as received (whitespace, key order, unicode)", async () => {
  const app = await testApp();
  try {
    const raw =
      `{ "body":{"telephonySessionId":"s-1","x":"caf\\u00e9 ☎"},  "event":"/e","uuid":"u-raw" }`;
    const res = await app.handler(webhookPost(raw));
    assert.equal(res.status, 200);
    const [entry] = await app.store.readAfter(0, 10);
    assert.equal(new TextDecoder().decode(entry.raw), raw);
  } finally {
    await app.dispose();
  }
});

Deno.test("verification: missing or wrong token is 401 and nothing is stored", async () => {
  const app = await testApp({ RINGHOOK_VERIFICATION_TOKEN: "old-token-1,new-token-2" });
  try {
    const missing = await app.handler(
      new Request("http://x/webhook", { method: "POST", body: JSON.stringify(event) }),
    );
    assert.equal(missing.status, 401);
    assert.match((await missing.json()).message, /missing/);
    const wrong = await app.handler(webhookPost(event, { "Verification-Token": "new-token-3" }));
    assert.equal(wrong.status, 401);
    assert.equal((await app.store.stats()).events, 0);
    // Both rotated tokens work.
    const a = await app.handler(webhookPost(event, { "Verification-Token": "old-token-1" }));
    assert.equal(a.status, 200);
    const b = await app.handler(
      webhookPost({ ...event, uuid: "other" }, { "Verification-Token": "new-token-2" }),
    );
    assert.equal(b.status, 200);
    assert.equal(app.metrics.value("ringhook_verification_failures_total", { reason: "token" }), 1);
  } finally {
    await app.dispose();
  }
});

Deno.test("verification: a Validation-Token header on an event is taken as the token (doc error)", async () => {
  const app = await testApp();
  try {
    const body = JSON.stringify(event);
    const res = await app.handler(
      new Request("http://x/webhook", {
        method: "POST",
        headers: { "Validation-Token": "test-token-123" },
        body,
      }),
    );
    assert.equal(res.status, 200);
    assert.equal((await res.json()).status, "received");
  } finally {
    await app.dispose();
  }
});

Deno.test("verification: HMAC over the raw bytes, hex or base64, with or without sha256=", async () => {
  const app = await testApp({
    RINGHOOK_VERIFICATION_TOKEN: "",
    RINGHOOK_HMAC_SECRET: "s3cret-one,s3cret-two",
    RINGHOOK_HMAC_HEADER: "X-Signature",
  });
  try {
    const send = (body: string, sig?: string) =>
      app.handler(
        new Request("http://x/webhook", {
          method: "POST",
          headers: sig === undefined ? {} : { "X-Signature": sig },
          body,
        }),
      );
    const bytes = (s: string) => new TextEncoder().encode(s);
    const b64 = (hex: string) =>
      btoa(String.fromCharCode(...hex.match(/../g)!.map((h) => parseInt(h, 16))));
    const mk = (uuid: string) => JSON.stringify({ ...event, uuid });

    const b1 = mk("h1");
    assert.equal((await send(b1, "sha256=" + await hmacHex("s3cret-one", bytes(b1)))).status, 200);
    const b2 = mk("h2");
    assert.equal((await send(b2, await hmacHex("s3cret-two", bytes(b2)))).status, 200);
    const b3 = mk("h3");
    assert.equal(
      (await send(b3, "sha256=" + b64(await hmacHex("s3cret-one", bytes(b3))))).status,
      200,
    );
    const b4 = mk("h4");
    const urlSafe = b64(await hmacHex("s3cret-two", bytes(b4))).replace(/\+/g, "-").replace(
      /\//g,
      "_",
    )
      .replace(/=+$/, "");
    assert.equal((await send(b4, urlSafe)).status, 200);

    // Wrong secret, missing header, signature over other bytes (re-serialised JSON).
    const b5 = mk("h5");
    assert.equal((await send(b5, await hmacHex("wrong", bytes(b5)))).status, 401);
    assert.equal((await send(b5)).status, 401);
    const reserialised = JSON.stringify(JSON.parse(b5), null, 2);
    assert.equal((await send(b5, await hmacHex("s3cret-one", bytes(reserialised)))).status, 401);
    assert.equal((await send(b5, "sha256=zz")).status, 401);
    assert.equal((await app.store.stats()).events, 4);
  } finally {
    await app.dispose();
  }
});

Deno.test("token and HMAC both configured: both must pass", async () => {
  const app = await testApp({ RINGHOOK_HMAC_SECRET: "k-secret" });
  try {
    const body = JSON.stringify(event);
    const sig = "sha256=" + await hmacHex("k-secret", new TextEncoder().encode(body));
    assert.equal(
      (await app.handler(webhookPost(body, { "X-Hub-Signature-256": sig }))).status,
      200,
    );
    const noToken = new Request("http://x/webhook", {
      method: "POST",
      headers: { "X-Hub-Signature-256": sig },
      body,
    });
    assert.equal((await app.handler(noToken)).status, 401);
    assert.equal((await app.handler(webhookPost(body))).status, 401);
  } finally {
    await app.dispose();
  }
});

Deno.test("no token and no HMAC: a generated token guards the edge; ALLOW_UNVERIFIED opens it", async () => {
  const app = await testApp({ RINGHOOK_VERIFICATION_TOKEN: "" });
  try {
    assert.equal(app.auth().tokens.length, 1);
    const generated = app.auth().tokens[0];
    assert.match(generated, /^rh_[A-Za-z0-9_-]{32}$/);
    assert.equal((await app.handler(webhookPost(event))).status, 401);
    assert.equal(
      (await app.handler(webhookPost(event, { "Verification-Token": generated }))).status,
      200,
    );
  } finally {
    await app.dispose();
  }
  const open = await testApp({
    RINGHOOK_VERIFICATION_TOKEN: "",
    RINGHOOK_ALLOW_UNVERIFIED: "true",
  });
  try {
    const res = await open.handler(
      new Request("http://x/webhook", { method: "POST", body: JSON.stringify(event) }),
    );
    assert.equal(res.status, 200);
  } finally {
    await open.dispose();
  }
});

Deno.test("bad bodies get 400 with a reason that says which", async () => {
  const app = await testApp();
  try {
    const cases: Array<[string | Uint8Array, string, RegExp]> = [
      [new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]), "not_utf8", /UTF-8/],
      ['{"uuid": "x",', "invalid_json", /JSON/],
      ["[1,2,3]", "not_object", /array/],
      ['"a string"', "not_object", /string/],
      ["null", "not_object", /null/],
      ['{"event":"/e","body":{}}', "bad_envelope", /"uuid"/],
      ['{"uuid":5,"event":"/e","body":{}}', "bad_envelope", /"uuid".*number/],
      ['{"uuid":"u","body":{}}', "bad_envelope", /"event"/],
      ['{"uuid":"u","event":"/e"}', "bad_envelope", /"body"/],
      ['{"uuid":"u","event":"/e","body":[]}', "bad_envelope", /"body".*array/],
      [`{"uuid":"${"u".repeat(300)}","event":"/e","body":{}}`, "bad_envelope", /longer/],
      ['{"uuid":"evt-\\ud800","event":"/e","body":{}}', "bad_envelope", /"uuid".*UTF-16/],
      ['{"uuid":"a\\u0000b","event":"/e","body":{}}', "bad_envelope", /"uuid" contains control/],
      ['{"uuid":"u","event":"/e\\u0000","body":{}}', "bad_envelope", /"event" contains/],
      ['{"uuid":"u","event":"/e","ownerId":"1\\n2","body":{}}', "bad_envelope", /"ownerId"/],
    ];
    for (const [body, code, message] of cases) {
      const res = await app.handler(webhookPost(body));
      assert.equal(res.status, 400, `status for ${code}`);
      const j = await res.json();
      assert.equal(j.error, code);
      assert.match(j.message, message);
    }
    assert.equal((await app.store.stats()).events, 0);
  } finally {
    await app.dispose();
  }
});

Deno.test("no Content-Type is fine", async () => {
  const app = await testApp();
  try {
    const req = new Request("http://x/webhook", {
      method: "POST",
      headers: { "Verification-Token": "test-token-123" },
      body: new TextEncoder().encode(JSON.stringify(event)),
    });
    assert.equal(req.headers.get("content-type"), null);
    const res = await app.handler(req);
    assert.equal(res.status, 200);
  } finally {
    await app.dispose();
  }
});

Deno.test("body over the limit: 413 by Content-Length, and by counting a streamed body", async () => {
  const app = await testApp({ RINGHOOK_MAX_BODY_BYTES: "2048" });
  try {
    const big = JSON.stringify({ ...event, pad: "x".repeat(4000) });
    const res = await app.handler(webhookPost(big));
    assert.equal(res.status, 413);
    // A streamed body with no Content-Length: the reader stops past the limit.
    let pulled = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(c) {
        pulled++;
        if (pulled > 1000) return c.close();
        c.enqueue(new Uint8Array(1024).fill(0x20));
      },
    });
    const req = new Request("http://x/webhook", {
      method: "POST",
      headers: { "Verification-Token": "test-token-123" },
      body: stream,
    });
    const res2 = await app.handler(req);
    assert.equal(res2.status, 413);
    assert.ok(pulled < 10, `read ${pulled} chunks; it must stop early`);
  } finally {
    await app.dispose();
  }
});

Deno.test("GET hub.challenge echo; GET without it is 400; other methods 405 with Allow", async () => {
  const app = await testApp();
  try {
    const res = await app.handler(new Request("http://x/webhook?hub.challenge=abc123"));
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type")!, /^text\/plain/);
    assert.equal(await res.text(), "abc123");
    const bad = await app.handler(new Request("http://x/webhook"));
    assert.equal(bad.status, 400);
    assert.equal((await bad.json()).error, "missing_challenge");
    const head = await app.handler(
      new Request("http://x/webhook?hub.challenge=z", { method: "HEAD" }),
    );
    assert.equal(head.status, 200);
    assert.equal(await head.text(), "");
    const opt = await app.handler(new Request("http://x/webhook", { method: "OPTIONS" }));
    assert.equal(opt.status, 204);
    assert.match(opt.headers.get("allow")!, /POST/);
    for (const method of ["PUT", "DELETE", "PATCH"]) {
      const r = await app.handler(new Request("http://x/webhook", { method, body: "x" }));
      assert.equal(r.status, 405);
      assert.equal(r.headers.get("allow"), "GET, HEAD, POST, OPTIONS");
      assert.equal((await r.json()).error, "method_not_allowed");
    }
  } finally {
    await app.dispose();
  }
});

Deno.test("health, readiness, metrics and 404", async () => {
  const app = await testApp();
  try {
    assert.deepEqual(await (await app.handler(new Request("http://x/healthz"))).json(), {
      status: "alive",
    });
    assert.deepEqual(await (await app.handler(new Request("http://x/readyz"))).json(), {
      status: "ready",
    });
    const m = await app.handler(new Request("http://x/metrics"));
    assert.equal(m.status, 200);
    assert.match(await m.text(), /ringhook_http_requests_total\{route="readyz",status="200"\} 1/);
    const nf = await app.handler(new Request("http://x/nope"));
    assert.equal(nf.status, 404);
    assert.equal((await nf.json()).error, "not_found");
    assert.equal(
      (await app.handler(new Request("http://x/healthz", { method: "POST" }))).status,
      405,
    );
  } finally {
    await app.dispose();
  }
});
