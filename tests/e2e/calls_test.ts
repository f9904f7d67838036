/** Call flows through the real edge into call records; a killed process replays to the same records. */
import assert from "node:assert/strict";
import { fixture, fixtureNames, reduceAll, rng, startServer } from "../helpers.ts";
import { withoutBookkeeping } from "../../src/calls/tracker.ts";
import { inboundCall, type Payload } from "../../src/cli/payloads.ts";

const TOKEN = "calls-e2e-token";
const ADMIN = "calls-e2e-admin";

const FAMILIES: Record<string, { result: string; direction: string }> = {
  "telephony-inbound-answered-": { result: "answered", direction: "inbound" },
  "telephony-missed-call-": { result: "missed", direction: "inbound" },
  "telephony-voicemail-0": { result: "voicemail", direction: "inbound" },
  "telephony-outbound-": { result: "answered", direction: "outbound" },
  "telephony-blind-transfer-": { result: "transferred", direction: "inbound" },
  "telephony-attended-transfer-": { result: "transferred", direction: "internal" },
};

async function send(url: string, n: Payload): Promise<number> {
  const res = await fetch(`${url}/webhook`, {
    method: "POST",
    headers: { "Verification-Token": TOKEN },
    body: JSON.stringify(n),
  });
  await res.body?.cancel();
  return res.status;
}

async function call(url: string, id: string) {
  const res = await fetch(`${url}/api/v1/calls/${encodeURIComponent(id)}`, {
    headers: { Authorization: `Bearer ${ADMIN}` },
  });
  return { status: res.status, body: await res.json() };
}

/** Waits until the call tracker has processed everything (after a crash its lease must expire first). */
async function settled(url: string) {
  for (let i = 0; i < 600; i++) {
    const s = await fetch(`${url}/api/v1/status`, {
      headers: { Authorization: `Bearer ${ADMIN}` },
    }).then((r) => r.json());
    if (s.consumers.calls.lag === 0) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error("the call tracker did not catch up");
}

Deno.test("every call-flow family through the real edge gives the right record, in order and shuffled", async () => {
  const s = await startServer({ RINGHOOK_VERIFICATION_TOKEN: TOKEN, RINGHOOK_ADMIN_TOKEN: ADMIN });
  try {
    const random = rng(42);
    for (const [prefix, want] of Object.entries(FAMILIES)) {
      const notes = fixtureNames(prefix).map((n) => fixture<Payload>(n)).filter((n) =>
        typeof n.body.telephonySessionId === "string"
      );
      // In order, then again shuffled with duplicates: the record must not change.
      for (const n of notes) assert.equal(await send(s.url, n), 200);
      const shuffled = [...notes, ...notes.slice(0, 3)].sort(() => random() - 0.5);
      for (const n of shuffled) assert.equal(await send(s.url, n), 200);
      await settled(s.url);
      for (const [id, state] of reduceAll(notes)) {
        const got = await call(s.url, id);
        assert.equal(got.status, 200, `${prefix}: no record for ${id}`);
        assert.deepEqual(
          withoutBookkeeping(got.body.record),
          withoutBookkeeping(state),
          `${prefix}: the stored record equals the reducer's, field by field`,
        );
      }
      const main = (notes[0].body as { telephonySessionId: string }).telephonySessionId;
      const rec = (await call(s.url, main)).body;
      assert.equal(rec.result, want.result, `${prefix} result`);
      assert.equal(rec.direction, want.direction, `${prefix} direction`);
      if (prefix !== "telephony-attended-transfer-") assert.equal(rec.state, "ended", prefix);
      for (const k of ["ringMs", "talkMs", "holdMs"]) assert.ok(rec.durations[k] >= 0);
    }
    // The outbound flow has a hold: its hold time is the span between Hold and un-hold.
    const out = fixtureNames("telephony-outbound-").map((n) => fixture<Payload>(n));
    const hold = Date.parse(String(out[5].body.eventTime));
    const unhold = Date.parse(String(out[6].body.eventTime));
    const id = String(out[0].body.telephonySessionId);
    assert.equal((await call(s.url, id)).body.durations.holdMs, unhold - hold);
  } finally {
    await s.stop();
    await Deno.remove(s.dataDir, { recursive: true });
  }
});

Deno.test("killing the process mid-replay and restarting gives the same records and no call event twice", async () => {
  const env = { RINGHOOK_VERIFICATION_TOKEN: TOKEN, RINGHOOK_ADMIN_TOKEN: ADMIN };
  const first = await startServer(env);
  const dataDir = first.dataDir;
  const outcomes = ["answered", "missed", "voicemail"] as const;
  const calls = Array.from({ length: 60 }, (_, i) => inboundCall(outcomes[i % 3]));
  const notes = calls.flat();
  const acked: Payload[] = [];
  let killed = false;
  try {
    let next = 0;
    await Promise.all(Array.from({ length: 8 }, async () => {
      while (next < notes.length) {
        const n = notes[next++];
        try {
          if ((await send(first.url, n)) === 200) acked.push(n);
        } catch {
          // the server is gone
        }
        if (!killed && acked.length >= notes.length / 2) {
          killed = true;
          first.proc.kill("SIGKILL");
        }
      }
    }));
  } finally {
    await first.stop();
  }
  const second = await startServer(env, { dataDir });
  try {
    // The client resends what was not acked (a duplicate answer is fine).
    const ackedSet = new Set(acked.map((n) => n.uuid));
    for (const n of notes) if (!ackedSet.has(n.uuid)) assert.equal(await send(second.url, n), 200);
    await settled(second.url);
    const want = reduceAll(notes);
    assert.equal(want.size, 60);
    for (const [id, state] of want) {
      const got = await call(second.url, id);
      assert.deepEqual(withoutBookkeeping(got.body.record), withoutBookkeeping(state), id);
    }
    const events = await fetch(`${second.url}/api/v1/call-events?limit=1000`, {
      headers: { Authorization: `Bearer ${ADMIN}` },
    }).then((r) => r.json());
    const ids = events.items.map((e: { id: string }) => e.id);
    assert.equal(new Set(ids).size, ids.length, "no call event emitted twice");
    assert.equal(ids.filter((i: string) => i.startsWith("call.ended:")).length, 60);
  } finally {
    await second.stop();
    await Deno.remove(dataDir, { recursive: true });
  }
});
