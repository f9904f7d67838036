/** The call tracker as a consumer: stale sweep under its lease, and damaged input skipped. */
import assert from "node:assert/strict";
import { createApp } from "../src/app.ts";
import { openSqliteStore } from "../src/journal/remote.ts";
import { fixture, testConfig, webhookPost } from "./helpers.ts";

async function appWithClock() {
  const dir = await Deno.makeTempDir({ prefix: "ringhook-calls-" });
  let clock = Date.now();
  const config = testConfig({ RINGHOOK_DATA_DIR: dir, RINGHOOK_CALL_STALE_SECONDS: "60" });
  const store = await openSqliteStore(`${dir}/ringhook.db`, "full");
  const app = await createApp(config, store, { now: () => clock });
  return {
    app,
    advance: (ms: number) => void (clock += ms),
    dispose: async () => {
      await app.close();
      await store.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

Deno.test("a silent call is closed as stale once the tracker has caught up, with one call.ended", async () => {
  const { app, advance, dispose } = await appWithClock();
  try {
    for (
      const n of ["01-caller-party-setup", "02-alice-party-setup", "03-alice-ringing-proceeding"]
    ) {
      const res = await app.handler(webhookPost(fixture(`telephony-inbound-answered-${n}.json`)));
      assert.equal(res.status, 200);
    }
    await app.calls.consumer.reached(await app.store.lastSeq());
    assert.equal(await app.calls.sweep(), 0, "not silent yet");
    advance(61_000);
    assert.equal(await app.calls.sweep(), 1);
    const [row] = await app.store.queryCalls({ limit: 10 });
    assert.equal(row.state, "stale");
    const ended = (await app.store.readTopic("calls", 0, 100)).filter((t) =>
      t.type === "call.ended"
    );
    assert.equal(ended.length, 1);
    assert.equal(JSON.parse(ended[0].payload).data.state, "stale");
    assert.equal(await app.calls.sweep(), 0, "closed once");
  } finally {
    await dispose();
  }
});

Deno.test("the sweep does nothing where this instance does not hold the tracker's lease", async () => {
  const { app, advance, dispose } = await appWithClock();
  try {
    const res = await app.handler(
      webhookPost(fixture("telephony-inbound-answered-03-alice-ringing-proceeding.json")),
    );
    assert.equal(res.status, 200);
    await app.calls.consumer.reached(await app.store.lastSeq());
    await app.calls.consumer.stop(); // gives the lease up
    assert.ok(await app.store.lease("consumer:calls", "another-instance", 60_000));
    advance(61_000);
    assert.equal(await app.calls.sweep(), 0);
    assert.equal((await app.store.queryCalls({ limit: 1 }))[0].state, "active");
  } finally {
    await dispose();
  }
});

Deno.test("an unreadable telephony event is skipped and counted; the calls behind it go on", async () => {
  const { app, dispose } = await appWithClock();
  try {
    const good = fixture("telephony-inbound-answered-02-alice-party-setup.json");
    const bad = {
      ...good,
      uuid: "bad-sequence",
      body: { ...(good.body as object), telephonySessionId: "s-bad", sequence: "not a number" },
    };
    assert.equal((await app.handler(webhookPost(bad))).status, 200);
    assert.equal((await app.handler(webhookPost(good))).status, 200);
    await app.calls.consumer.reached(await app.store.lastSeq());
    const calls = await app.store.queryCalls({ limit: 10 });
    assert.deepEqual(calls.map((c) => c.telephonySessionId), [
      (good.body as { telephonySessionId: string }).telephonySessionId,
    ]);
    assert.equal(app.metrics.value("ringhook_calls_skipped_events_total"), 1);
  } finally {
    await dispose();
  }
});
