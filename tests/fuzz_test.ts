/** Property/fuzz test: 10,000 generated bad requests, zero 5xx, zero unhandled rejections. */
import assert from "node:assert/strict";
import { fixture, rng, testApp } from "./helpers.ts";

const base = fixture("telephony-inbound-answered-04-alice-answered.json");

/** Builds one hostile request from a seeded generator. */
function badRequest(r: () => number, i: number): Request {
  const pick = <T>(xs: T[]): T => xs[Math.floor(r() * xs.length)];
  const bytes = (n: number) => Uint8Array.from({ length: n }, () => Math.floor(r() * 256));
  const headers = new Headers({ "Verification-Token": r() < 0.8 ? "test-token-123" : "x" + i });
  let body: BodyInit | null = null;
  let method = "POST";
  let path = "/webhook";
  switch (i % 12) {
    case 0:
      body = bytes(Math.floor(r() * 2048));
      break;
    case 1: {
      const text = JSON.stringify({ ...base, uuid: `fz-${i}` });
      body = text.slice(0, Math.floor(r() * text.length));
      break;
    }
    case 2: {
      const depth = Math.floor(r() * 200_000);
      body = pick(["[", '{"a":'])
        .repeat(depth) + "1" + (r() < 0.5 ? "]".repeat(depth) : "");
      break;
    }
    case 3:
      body = new Uint8Array([0x7b, 0x22, 0x75, 0x22, 0x3a, 0x22, 0xc3, 0x28, 0x22, 0x7d]);
      break;
    case 4: {
      const wrong = [null, 1, 1.5, true, [], {}, "", "x".repeat(5000), -0, 1e308];
      body = JSON.stringify({
        ...base,
        uuid: r() < 0.5 ? pick(wrong) : `fz-${i}`,
        event: r() < 0.5 ? pick(wrong) : base.event,
        body: r() < 0.5 ? pick(wrong) : base.body,
        subscriptionId: pick(wrong),
        ownerId: pick(wrong),
        timestamp: pick(wrong),
      });
      break;
    }
    case 5:
      headers.set("X-Huge", "h".repeat(Math.floor(r() * 16_000)));
      headers.set("Validation-Token", "v".repeat(Math.floor(r() * 2000)));
      body = r() < 0.5 ? null : JSON.stringify({ ...base, uuid: `fz-${i}` });
      break;
    case 6:
      method = pick(["GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"]);
      path = pick([
        "/webhook?hub.challenge=" + "c".repeat(Math.floor(r() * 3000)),
        "/webhook?hub.challenge=",
        "/webhook?%zz",
        "/%00",
        "/api/v1/../../etc/passwd",
        "/webhook/",
      ]);
      body = method === "GET" || method === "HEAD" ? null : bytes(10);
      break;
    case 7:
      body = JSON.stringify(pick([[], "str", 42, null, true, { uuid: {} }, { __proto__: null }]));
      break;
    case 8:
      headers.set("Content-Length", String(Math.floor(r() * 1e12)));
      body = null;
      break;
    case 9:
      body = '{"uuid":"' + "\\ud800".repeat(50) + '","event":"/e","body":{}}';
      break;
    case 10: {
      const s = JSON.stringify({ ...base, uuid: `fz-${i}` });
      const b = new TextEncoder().encode(s);
      for (let k = 0; k < 5; k++) b[Math.floor(r() * b.length)] = Math.floor(r() * 256);
      body = b;
      break;
    }
    default:
      headers.set("X-Hub-Signature-256", "sha256=" + "g".repeat(Math.floor(r() * 100)));
      body = JSON.stringify({ uuid: `fz-${i}`, event: "/e", body: { parties: "x".repeat(10) } });
  }
  if (body !== null && (method === "GET" || method === "HEAD")) body = null;
  return new Request(`http://fuzz.test${path}`, { method, headers, body });
}

Deno.test("fuzz: 10,000 hostile requests give no 5xx and no unhandled rejection", async () => {
  const app = await testApp({ RINGHOOK_MAX_BODY_BYTES: String(4 * 1024 * 1024) });
  let unhandled = 0;
  const onUnhandled = (e: PromiseRejectionEvent) => {
    unhandled++;
    e.preventDefault();
  };
  globalThis.addEventListener("unhandledrejection", onUnhandled);
  const statuses = new Map<number, number>();
  try {
    const r = rng(20261204);
    const N = 10_000;
    for (let i = 0; i < N; i += 50) {
      const batch = [];
      for (let k = i; k < Math.min(N, i + 50); k++) {
        let req: Request;
        try {
          req = badRequest(r, k);
        } catch {
          continue; // a header the Request constructor itself refuses never reaches a server
        }
        batch.push(
          app.handler(req).then(async (res) => {
            await res.body?.cancel();
            statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
          }),
        );
      }
      await Promise.all(batch);
    }
    await new Promise((res) => setTimeout(res, 50));
    const total = [...statuses.values()].reduce((a, b) => a + b, 0);
    assert.ok(total >= 9_900, `only ${total} requests were made`);
    const fivexx = [...statuses].filter(([s]) => s >= 500);
    assert.deepEqual(fivexx, [], `5xx answers: ${JSON.stringify([...statuses])}`);
    assert.equal(unhandled, 0);
    // The mix really exercised the refusals, and some mutated events still got in.
    for (const s of [400, 401, 405, 413]) assert.ok((statuses.get(s) ?? 0) > 0, `no ${s} seen`);
    assert.ok((statuses.get(200) ?? 0) > 0);
  } finally {
    globalThis.removeEventListener("unhandledrejection", onUnhandled);
    await app.dispose();
  }
});
