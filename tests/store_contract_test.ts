/**
 * One behavioural suite for every storage engine: `contract(name, open)` runs the
 * same tests against SQLite and PostgreSQL, so "one model, two engines" is checked,
 * not assumed. PostgreSQL comes from RINGHOOK_TEST_DATABASE_URL (default: the local
 * `test` database), one fresh schema per test, dropped afterwards. An unreachable
 * PostgreSQL fails these tests unless RINGHOOK_TEST_SKIP_PG=1 says to skip them.
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { openSqliteStore } from "../src/journal/remote.ts";
import { openPostgresStore } from "../src/journal/postgres.ts";
import { openStore, storeLocation } from "../src/journal/open.ts";
import { Journal } from "../src/journal/journal.ts";
import {
  type AppendRow,
  type CallRow,
  LeaseLost,
  type Store,
  type TopicEntry,
} from "../src/journal/types.ts";
import { loadConfig, secretsOf } from "../src/config.ts";
import { logger } from "../src/log.ts";
import { Registry } from "../src/metrics.ts";
import { testConfig } from "./helpers.ts";
import { freshName, PG_URL, pgAdmin, SKIP_PG } from "./pg.ts";

/** An open engine for one test, plus a second handle on the same database (another instance). */
interface Opened {
  store: Store;
  another(): Promise<Store>;
  dispose(): Promise<void>;
}

// ---- the engines ------------------------------------------------------------------------------

async function openSqlite(): Promise<Opened> {
  const dir = await Deno.makeTempDir({ prefix: "ringhook-contract-" });
  const path = `${dir}/ringhook.db`;
  const stores: Store[] = [await openSqliteStore(path, "full", 2000)];
  return {
    store: stores[0],
    another: async () => {
      const s = await openSqliteStore(path, "full", 2000);
      stores.push(s);
      return s;
    },
    dispose: async () => {
      for (const s of stores) await s.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

const freshSchema = () => freshName("rh_test");

async function openPg(): Promise<Opened & { schema: string }> {
  const admin = await pgAdmin();
  const schema = freshSchema();
  const stores: Store[] = [];
  try {
    stores.push(await openPostgresStore(PG_URL, { schema, max: 4 }));
  } catch (e) {
    await admin.end();
    throw e;
  }
  return {
    schema,
    store: stores[0],
    another: async () => {
      const s = await openPostgresStore(PG_URL, { schema, max: 4 });
      stores.push(s);
      return s;
    },
    dispose: async () => {
      try {
        for (const s of stores) await s.close();
      } finally {
        await admin.unsafe(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
        await admin.end();
      }
    },
  };
}

// ---- fixtures ---------------------------------------------------------------------------------

const enc = new TextEncoder();
const T0 = 1_700_000_000_000;

function row(uuid: string, over: Partial<AppendRow> = {}): AppendRow {
  return {
    uuid,
    event: "/restapi/v1.0/account/1/telephony/sessions",
    subscriptionId: "sub-1",
    ownerId: "owner-1",
    receivedAt: T0,
    raw: enc.encode(JSON.stringify({ uuid, body: { n: 1 } })),
    headers: JSON.stringify({ "content-type": "application/json" }),
    ...over,
  };
}

function call(id: string, over: Partial<CallRow> = {}): CallRow {
  return {
    telephonySessionId: id,
    state: "active",
    result: null,
    direction: "inbound",
    startedAt: T0,
    endedAt: null,
    updatedAt: T0,
    data: JSON.stringify({ telephonySessionId: id }),
    ...over,
  };
}

function topic(key: string, over: Partial<Omit<TopicEntry, "seq">> = {}): Omit<TopicEntry, "seq"> {
  return {
    topic: "calls",
    type: "call.ringing",
    key,
    createdAt: T0,
    payload: `{"k":"${key}"}`,
    ...over,
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---- the contract -----------------------------------------------------------------------------

function contract(name: string, open: () => Promise<Opened>, ignore = false): void {
  const test = (title: string, fn: (o: Opened) => Promise<void>) =>
    Deno.test({
      name: `${name}: ${title}`,
      ignore,
      fn: async () => {
        const o = await open();
        try {
          await fn(o);
        } finally {
          await o.dispose();
        }
      },
    });

  test("append stores each uuid once, within a batch and across batches", async ({ store }) => {
    const binary = new Uint8Array([0, 255, 92, 34, 39, 10, 0x7b, 0x80]);
    const first = await store.append([
      row("a"),
      row("b", { subscriptionId: null, ownerId: null, raw: binary }),
      row("a", { event: "/other" }),
      row("c"),
    ]);
    assert.equal(first.length, 4);
    assert.equal(first[2], 0, "the second 'a' of a batch is a duplicate");
    assert.ok(first[0] > 0 && first[1] > first[0] && first[3] > first[1], String(first));
    const second = await store.append([row("c"), row("d"), row("d"), row("b")]);
    assert.equal(second[0], 0);
    assert.ok(second[1] > first[3]);
    assert.deepEqual([second[2], second[3]], [0, 0]);
    assert.deepEqual(await store.append([row("a")]), [0]);
    assert.deepEqual(await store.append([]), []);

    const all = await store.readAfter(0, 100);
    assert.deepEqual(all.map((e) => e.uuid), ["a", "b", "c", "d"]);
    assert.deepEqual(all.map((e) => e.seq), [first[0], first[1], first[3], second[1]]);
    assert.equal(all[0].event, "/restapi/v1.0/account/1/telephony/sessions", "first 'a' kept");
    const b = all[1];
    assert.equal(b.subscriptionId, null);
    assert.equal(b.ownerId, null);
    assert.equal(b.receivedAt, T0);
    assert.ok(b.raw instanceof Uint8Array);
    assert.deepEqual([...b.raw], [...binary], "raw bytes round-trip exactly");
    assert.deepEqual(b.headers, { "content-type": "application/json" });
    assert.equal(all[0].subscriptionId, "sub-1");
    assert.equal(all[0].ownerId, "owner-1");
    assert.equal(
      new TextDecoder().decode(all[0].raw),
      JSON.stringify({ uuid: "a", body: { n: 1 } }),
    );
  });

  test("seqs only grow (gaps allowed); lastSeq is the newest; readAfter pages in order", async ({ store }) => {
    assert.equal(await store.lastSeq(), 0);
    const seqs: number[] = await store.append([row("s-0")]);
    for (let i = 1; i <= 10; i++) {
      // Every batch repeats a uuid of the one before: duplicates may burn seqs, never reuse them.
      const out = await store.append([row(`s-${i}`), row(`s-${i - 1}`), row(`t-${i}`)]);
      seqs.push(...out.filter((s) => s > 0));
    }
    assert.equal(seqs.length, 21);
    for (let i = 1; i < seqs.length; i++) assert.ok(seqs[i] > seqs[i - 1], String(seqs));
    assert.equal(await store.lastSeq(), seqs[20]);
    const pages: number[] = [];
    let after = 0;
    for (;;) {
      const page = await store.readAfter(after, 3);
      if (page.length === 0) break;
      assert.ok(page.length <= 3);
      pages.push(...page.map((e) => e.seq));
      after = page[page.length - 1].seq;
    }
    assert.deepEqual(pages, seqs);
    assert.deepEqual((await store.readAfter(seqs[4], 2)).map((e) => e.seq), [seqs[5], seqs[6]]);
    assert.deepEqual(await store.readAfter(seqs[20], 10), []);
  });

  test("queryEvents: filters and descending paging", async ({ store }) => {
    await store.append([
      row("q-1", { receivedAt: T0 + 1000, event: "/restapi/v1.0/account/1/telephony/sessions" }),
      row("q-2", {
        receivedAt: T0 + 2000,
        event: "/restapi/v1.0/account/1/extension/2/message-store",
      }),
      row("q-3", { receivedAt: T0 + 3000, event: "/restapi/v1.0/account/1/telephony/sessions" }),
      row("q-4", { receivedAt: T0 + 4000, event: "/restapi/v1.0/account/1/extension/2/voicemail" }),
      row("q-5", { receivedAt: T0 + 5000, event: "/restapi/v1.0/account/1/telephony/sessions" }),
    ]);
    const uuids = async (q: Parameters<Store["queryEvents"]>[0]) =>
      (await store.queryEvents(q)).map((e) => e.uuid);
    assert.deepEqual(await uuids({ limit: 10 }), ["q-1", "q-2", "q-3", "q-4", "q-5"]);
    assert.deepEqual(await uuids({ limit: 2 }), ["q-1", "q-2"]);
    assert.deepEqual(await uuids({ limit: 10, descending: true }), [
      "q-5",
      "q-4",
      "q-3",
      "q-2",
      "q-1",
    ]);
    assert.deepEqual(await uuids({ limit: 10, uuid: "q-3" }), ["q-3"]);
    assert.deepEqual(await uuids({ limit: 10, uuid: "nope" }), []);
    assert.deepEqual(await uuids({ limit: 10, eventContains: "telephony" }), ["q-1", "q-3", "q-5"]);
    assert.deepEqual(
      await uuids({ limit: 10, eventContains: "%" }),
      [],
      "a literal, not a pattern",
    );
    assert.deepEqual(await uuids({ limit: 10, since: T0 + 2000, until: T0 + 4000 }), [
      "q-2",
      "q-3",
    ]);
    assert.deepEqual(
      await uuids({ limit: 10, since: T0 + 2000, eventContains: "sessions", descending: true }),
      ["q-5", "q-3"],
    );
    // Paging newest first: afterSeq is the last seq of the previous page.
    const pages: string[][] = [];
    let afterSeq: number | undefined;
    for (;;) {
      const page = await store.queryEvents({ limit: 2, descending: true, afterSeq });
      if (page.length === 0) break;
      pages.push(page.map((e) => e.uuid));
      afterSeq = page[page.length - 1].seq;
    }
    assert.deepEqual(pages, [["q-5", "q-4"], ["q-3", "q-2"], ["q-1"]]);
    const q2 = (await store.queryEvents({ limit: 1, uuid: "q-2" }))[0];
    assert.deepEqual(await uuids({ limit: 10, afterSeq: q2.seq }), ["q-3", "q-4", "q-5"]);
  });

  test("cursors: 0 when unknown, only move forward (max of old and new)", async ({ store }) => {
    assert.equal(await store.getCursor("c"), 0);
    await store.commit({ consumer: "c", cursor: 5 });
    assert.equal(await store.getCursor("c"), 5);
    await store.commit({ consumer: "c", cursor: 3 });
    assert.equal(await store.getCursor("c"), 5, "a late commit of an older batch does not rewind");
    await store.commit({ consumer: "c", cursor: 9 });
    assert.equal(await store.getCursor("c"), 9);
    assert.equal(await store.getCursor("other"), 0);
    await store.commit({ calls: [call("no-consumer")] });
    assert.equal(await store.getCursor("c"), 9);
    assert.equal((await store.getCall("no-consumer"))?.telephonySessionId, "no-consumer");
  });

  test("commit is atomic: a fenced commit that loses its lease leaves nothing behind", async ({ store }) => {
    assert.equal(await store.lease("consumer:calls", "instance-b", 10_000), true);
    const attempt = {
      consumer: "calls",
      cursor: 7,
      calls: [call("fenced-1"), call("fenced-2")],
      topicEvents: [topic("fenced-1:ringing")],
    };
    for (const holder of ["instance-a", "nobody"]) {
      await assert.rejects(
        store.commit({ ...attempt, lease: { name: "consumer:calls", holder } }),
        (e: Error) =>
          e instanceof LeaseLost || e.name === "LeaseLost" || /held by another/.test(e.message),
      );
    }
    await assert.rejects(
      store.commit({ ...attempt, lease: { name: "consumer:never-taken", holder: "instance-a" } }),
      /held by another instance/,
    );
    assert.equal(await store.getCursor("calls"), 0);
    assert.equal(await store.getCall("fenced-1"), undefined);
    assert.deepEqual(await store.getCalls(["fenced-1", "fenced-2"]), []);
    assert.deepEqual(await store.readTopic("calls", 0, 10), []);
    // The holder's commit goes through, all of it.
    await store.commit({ ...attempt, lease: { name: "consumer:calls", holder: "instance-b" } });
    assert.equal(await store.getCursor("calls"), 7);
    assert.equal((await store.getCalls(["fenced-1", "fenced-2"])).length, 2);
    assert.equal((await store.readTopic("calls", 0, 10)).length, 1);
  });

  test("topic events: one per (topic, key), in commit order", async ({ store }) => {
    await store.commit({
      topicEvents: [
        topic("k1"),
        topic("k2", { type: "call.answered" }),
        topic("k1", { payload: '{"again":true}' }),
      ],
    });
    await store.commit({
      topicEvents: [topic("k2"), topic("k3"), topic("k1", { topic: "other" })],
    });
    const calls = await store.readTopic("calls", 0, 10);
    assert.deepEqual(calls.map((t) => t.key), ["k1", "k2", "k3"]);
    assert.equal(calls[0].payload, '{"k":"k1"}', "the first of a key is kept");
    assert.equal(calls[1].type, "call.answered");
    assert.equal(calls[0].createdAt, T0);
    assert.ok(calls[0].seq < calls[1].seq && calls[1].seq < calls[2].seq);
    assert.deepEqual((await store.readTopic("calls", calls[0].seq, 10)).map((t) => t.key), [
      "k2",
      "k3",
    ]);
    assert.deepEqual((await store.readTopic("calls", 0, 1)).map((t) => t.key), ["k1"]);
    assert.deepEqual((await store.readTopic("other", 0, 10)).map((t) => t.key), ["k1"]);
  });

  test("calls: upsert, getCall(s), queryCalls paging newest first, staleCalls", async ({ store }) => {
    await store.commit({
      calls: [
        call("a-1", { startedAt: T0 + 3000, updatedAt: T0 + 3500 }),
        call("B-1", { startedAt: T0 + 3000, updatedAt: T0 + 100 }),
        call("b-1", { startedAt: T0 + 3000, updatedAt: T0 + 200 }),
        call("nostart", { startedAt: null, updatedAt: T0 + 2000 }),
        call("old", { startedAt: T0 + 1000, updatedAt: T0 + 1000 }),
        call("newest", { startedAt: T0 + 9000, updatedAt: T0 + 9000, state: "ended" }),
      ],
    });
    // Upsert: the later row replaces every column.
    await store.commit({
      calls: [call("old", {
        state: "ended",
        result: "missed",
        direction: "outbound",
        startedAt: T0 + 1000,
        endedAt: T0 + 1500,
        updatedAt: T0 + 1500,
        data: '{"v":2}',
      })],
    });
    assert.deepEqual(await store.getCall("old"), {
      telephonySessionId: "old",
      state: "ended",
      result: "missed",
      direction: "outbound",
      startedAt: T0 + 1000,
      endedAt: T0 + 1500,
      updatedAt: T0 + 1500,
      data: '{"v":2}',
    });
    assert.equal((await store.getCall("nostart"))?.startedAt, null);
    assert.equal(await store.getCall("missing"), undefined);
    assert.deepEqual(
      (await store.getCalls(["a-1", "missing", "old"])).map((c) => c.telephonySessionId).sort(),
      ["a-1", "old"],
    );
    assert.deepEqual(await store.getCalls([]), []);

    // Newest first by coalesce(startedAt, updatedAt), ties by id in byte order.
    const expected = ["newest", "B-1", "a-1", "b-1", "nostart", "old"];
    const ids = async (q: Parameters<Store["queryCalls"]>[0]) =>
      (await store.queryCalls(q)).map((c) => c.telephonySessionId);
    assert.deepEqual(await ids({ limit: 10 }), expected);
    const paged: string[] = [];
    let after: { at: number; id: string } | undefined;
    for (;;) {
      const page = await store.queryCalls({ limit: 2, after });
      if (page.length === 0) break;
      paged.push(...page.map((c) => c.telephonySessionId));
      const last = page[page.length - 1];
      after = { at: last.startedAt ?? last.updatedAt, id: last.telephonySessionId };
    }
    assert.deepEqual(paged, expected, "paging with `after` visits every call once, in order");
    assert.deepEqual(await ids({ limit: 10, active: true }), ["B-1", "a-1", "b-1", "nostart"]);
    assert.deepEqual(await ids({ limit: 10, since: T0 + 2000 }), expected.slice(0, 5));
    assert.deepEqual(await ids({ limit: 2, active: true, after: { at: T0 + 3000, id: "B-1" } }), [
      "a-1",
      "b-1",
    ]);

    // Stale: active and not updated since the cutoff, oldest update first.
    assert.deepEqual((await store.staleCalls(T0 + 2500, 10)).map((c) => c.telephonySessionId), [
      "B-1",
      "b-1",
      "nostart",
    ]);
    assert.deepEqual((await store.staleCalls(T0 + 2500, 1)).map((c) => c.telephonySessionId), [
      "B-1",
    ]);
    assert.deepEqual(await store.staleCalls(T0, 10), []);
  });

  test("leases: renew, exclusive until expiry, takeover after it, release, fencing", async ({ store }) => {
    assert.equal(await store.lease("l", "a", 10_000), true);
    assert.equal(await store.lease("l", "b", 10_000), false, "held by a");
    assert.equal(await store.lease("l", "a", 10_000), true, "a renews");
    await store.releaseLease("l", "b"); // not b's to release
    assert.equal(await store.lease("l", "b", 10_000), false);
    await store.releaseLease("l", "a");
    assert.equal(await store.lease("l", "b", 10_000), true, "free after release");
    assert.equal(await store.lease("l", "a", 10_000), false);

    // Expiry: a short lease lapses, another holder takes it, the old holder is fenced off.
    assert.equal(await store.lease("short", "a", 200), true);
    assert.equal(await store.lease("short", "b", 200), false);
    await store.commit({ consumer: "x", cursor: 1, lease: { name: "short", holder: "a" } });
    await sleep(450);
    await assert.rejects(
      store.commit({ consumer: "x", cursor: 2, lease: { name: "short", holder: "a" } }),
      /held by another instance/,
      "an expired lease fences its holder even before anyone takes it",
    );
    assert.equal(await store.lease("short", "b", 10_000), true, "taken over after expiry");
    await assert.rejects(
      store.commit({ consumer: "x", cursor: 3, lease: { name: "short", holder: "a" } }),
      /held by another instance/,
    );
    assert.equal(await store.getCursor("x"), 1);
    assert.equal(await store.lease("short", "a", 10_000), false);
  });

  test("settings: absent, set, overwrite; initSetting keeps the first value", async ({ store }) => {
    assert.equal(await store.getSetting("k"), undefined);
    await store.setSetting("k", "v1");
    assert.equal(await store.getSetting("k"), "v1");
    await store.setSetting("k", "v2");
    assert.equal(await store.getSetting("k"), "v2");
    assert.equal(await store.initSetting("token", "first"), "first");
    assert.equal(await store.initSetting("token", "second"), "first");
    assert.equal(await store.getSetting("token"), "first");
  });

  test("prune: bounded rounds of the oldest; lastSeq and later seqs are unaffected", async ({ store }) => {
    const old = Array.from({ length: 25 }, (_, i) => row(`old-${i}`, { receivedAt: T0 + i }));
    await store.append(old);
    const fresh = await store.append([
      row("fresh-1", { receivedAt: T0 + 10_000 }),
      row("fresh-2", { receivedAt: T0 + 10_001 }),
    ]);
    const last = await store.lastSeq();
    assert.equal(last, fresh[1]);
    const rounds: number[] = [];
    for (;;) {
      const n = await store.prune(T0 + 5000, 10);
      rounds.push(n);
      if (n < 10) break;
    }
    assert.deepEqual(rounds, [10, 10, 5]);
    assert.equal(await store.prune(T0 + 5000, 10), 0);
    assert.deepEqual((await store.readAfter(0, 100)).map((e) => e.uuid), ["fresh-1", "fresh-2"]);
    assert.equal(await store.lastSeq(), last);
    assert.equal((await store.stats()).events, 2);
    // Oldest first: a bounded round keeps the newer of the old ones.
    await store.append([row("p-1", { receivedAt: T0 }), row("p-2", { receivedAt: T0 + 1 })]);
    assert.equal(await store.prune(T0 + 5000, 1), 1);
    assert.deepEqual((await store.queryEvents({ limit: 10, uuid: "p-2" })).length, 1);
    const [next] = await store.append([row("after-prune", { receivedAt: T0 + 20_000 })]);
    assert.ok(next > last, "seqs never go back after a prune");
  });

  test("stats and probe", async ({ store }) => {
    assert.deepEqual(await store.stats(), { events: 0, lastSeq: 0, calls: 0, activeCalls: 0 });
    const seqs = await store.append([row("s-1"), row("s-2"), row("s-1")]);
    await store.commit({
      calls: [call("c-1"), call("c-2", { state: "ended" }), call("c-3", { state: "stale" })],
    });
    assert.deepEqual(await store.stats(), {
      events: 2,
      lastSeq: seqs[1],
      calls: 3,
      activeCalls: 1,
    });
    await store.probe();
    await store.probe();
  });

  test("two instances on one database: appends interleave without loss or duplication", async (o) => {
    const b = await o.another();
    const shared = Array.from({ length: 5 }, (_, i) => `shared-${i}`);
    const results = await Promise.all(
      [o.store, b].flatMap((s, si) =>
        Array.from({ length: 4 }, async (_, w) => {
          const out: Array<[string, number]> = [];
          for (let i = 0; i < 10; i++) {
            const mine = [row(`i${si}-w${w}-${i}-x`), row(`i${si}-w${w}-${i}-y`)];
            const rows = [...mine, row(shared[(i + w) % shared.length])];
            const seqs = await s.append(rows);
            rows.forEach((r, k) => out.push([r.uuid, seqs[k]]));
          }
          return out;
        })
      ),
    );
    const stored = results.flat().filter(([, s]) => s > 0);
    assert.equal(new Set(stored.map(([, s]) => s)).size, stored.length, "no seq handed out twice");
    const uuids = stored.map(([u]) => u);
    assert.equal(new Set(uuids).size, uuids.length, "no uuid stored twice");
    const all = await b.readAfter(0, 1000);
    assert.equal(all.length, 2 * 4 * 10 * 2 + shared.length);
    assert.deepEqual(all.map((e) => e.uuid).sort(), uuids.sort());
    assert.equal(await o.store.lastSeq(), Math.max(...stored.map(([, s]) => s)));
    // Settings and leases are shared, too.
    await o.store.setSetting("sub", "s-1");
    assert.equal(await b.getSetting("sub"), "s-1");
    assert.equal(await o.store.lease("consumer:calls", "A", 10_000), true);
    assert.equal(await b.lease("consumer:calls", "B", 10_000), false);
  });

  test("seq order is commit order: a reader following `seq > cursor` misses nothing", async (o) => {
    // The journal's consumers read `seq > cursor`. If a row could commit after a row with a
    // higher seq, a reader between the two commits would move past it forever.
    const b = await o.another();
    const writers = 4;
    const batches = 40;
    let done = false;
    let cursor = 0;
    const seen = new Set<string>();
    const reader = (async () => {
      for (;;) {
        const finished = done;
        const rows = await o.store.readAfter(cursor, 1000);
        for (const r of rows) {
          assert.ok(r.seq > cursor);
          seen.add(r.uuid);
          cursor = r.seq;
        }
        if (finished && rows.length === 0) return;
      }
    })();
    await Promise.all(
      [o.store, b].flatMap((s, si) =>
        Array.from({ length: writers }, async (_, w) => {
          for (let i = 0; i < batches; i++) {
            await s.append([0, 1, 2].map((k) => row(`co-${si}-${w}-${i}-${k}`)));
          }
        })
      ),
    );
    done = true;
    await reader;
    assert.equal(seen.size, 2 * writers * batches * 3, "the reader saw every committed row");
  });
}

contract("sqlite", openSqlite);
contract("postgres", openPg, SKIP_PG);

// ---- PostgreSQL only: cross-instance wake-ups ---------------------------------------------------

Deno.test({
  name: "postgres: watch() reports another instance's appends (not our own, not duplicates)",
  ignore: SKIP_PG,
  fn: async () => {
    const o = await openPg();
    try {
      const b = await o.another();
      assert.ok(b.watch, "the PostgreSQL store can watch");
      let woke = 0;
      const stop = b.watch!(() => woke++);
      await sleep(300); // LISTEN is in place
      await b.append([row("own")]);
      await sleep(300);
      assert.equal(woke, 0, "our own appends already woke our consumers");
      await o.store.append([row("theirs")]);
      await waitUntil(() => woke === 1, 3000, "another instance's append wakes us");
      await o.store.append([row("theirs")]);
      await sleep(300);
      assert.equal(woke, 1, "a batch of duplicates stores nothing and wakes nobody");
      stop();
      await o.store.append([row("after-stop")]);
      await sleep(300);
      assert.equal(woke, 1);
    } finally {
      await o.dispose();
    }
  },
});

Deno.test({
  name: "postgres: the LISTEN connection comes back after it is killed",
  ignore: SKIP_PG,
  fn: async () => {
    const o = await openPg();
    const admin = await pgAdmin();
    try {
      const app = `rh-watch-${crypto.randomUUID().slice(0, 8)}`;
      // A second instance whose connections carry a name we can find in pg_stat_activity.
      const url = new URL(PG_URL);
      url.searchParams.set("application_name", app);
      const named = await openPostgresStore(url.toString(), { schema: o.schema, max: 2 });
      try {
        let woke = 0;
        named.watch!(() => woke++);
        await waitUntil(
          async () => (await listeners(admin, app)) === 1,
          3000,
          "the watcher LISTENs",
        );
        const killed = await admin`
          SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE application_name = ${app} AND query LIKE 'LISTEN%'`;
        assert.equal(killed.length, 1);
        // Back by itself; it wakes its listeners once (appends made meanwhile are not lost).
        await waitUntil(() => woke >= 1, 5000, "a wake-up after reconnecting");
        await waitUntil(
          async () => (await listeners(admin, app)) === 1,
          5000,
          "LISTEN is back",
        );
        const before = woke;
        await o.store.append([row("after-reconnect")]);
        await waitUntil(() => woke > before, 3000, "notifications flow again");
      } finally {
        await named.close();
      }
    } finally {
      await admin.end();
      await o.dispose();
    }
  },
});

Deno.test({
  name: "postgres: a consumer on instance B wakes when instance A stores an event",
  ignore: SKIP_PG,
  fn: async () => {
    const o = await openPg();
    const mk = (store: Store, id: string) =>
      new Journal(store, {
        batchMax: 64,
        batchDelayMs: 1,
        retentionDays: 0,
        metrics: new Registry(),
        log: logger("test"),
        instanceId: id,
      });
    const a = mk(o.store, "instance-a");
    const b = mk(await o.another(), "instance-b");
    try {
      const seen: string[] = [];
      const c = b.consume("wake", (e) => (seen.push(...e.map((x) => x.uuid)), Promise.resolve()));
      await sleep(400); // B holds the lease and sleeps on an empty journal
      const t0 = performance.now();
      const r = await a.accept({
        uuid: "from-a",
        event: "/e",
        body: {},
        raw: enc.encode("{}"),
        headers: {},
        receivedAt: Date.now(),
      });
      assert.equal(r.status, "stored");
      await c.reached((r as { seq: number }).seq);
      const ms = performance.now() - t0;
      assert.ok(ms < 1500, `woken after ${Math.round(ms)} ms (the fallback poll is 5 s)`);
      assert.deepEqual(seen, ["from-a"]);
      await c.stop();
    } finally {
      await a.close();
      await b.close();
      await o.dispose();
    }
  },
});

// ---- choosing the engine ----------------------------------------------------------------------

Deno.test({
  name:
    "openStore: PostgreSQL when RINGHOOK_DATABASE_URL is set (schema from ?schema=), else SQLite",
  ignore: SKIP_PG,
  fn: async () => {
    const admin = await pgAdmin();
    const dir = await Deno.makeTempDir({ prefix: "ringhook-open-" });
    const schema = freshSchema();
    try {
      const url = new URL(PG_URL);
      url.searchParams.set("schema", schema);
      const pgConfig = testConfig({
        RINGHOOK_DATA_DIR: dir,
        RINGHOOK_DATABASE_URL: url.toString(),
      });
      const pg = await openStore(pgConfig);
      try {
        await pg.setSetting("engine", "postgres");
      } finally {
        await pg.close();
      }
      const rows = await admin.unsafe(
        `SELECT value FROM "${schema}".settings WHERE key = 'engine'`,
      );
      assert.equal(rows[0]?.value, "postgres");
      assert.equal(await exists(`${dir}/ringhook.db`), false, "no SQLite file with a database URL");

      const lite = await openStore(testConfig({ RINGHOOK_DATA_DIR: dir }));
      try {
        assert.equal(await lite.getSetting("engine"), undefined);
      } finally {
        await lite.close();
      }
      assert.equal(await exists(`${dir}/ringhook.db`), true);
      assert.equal(storeLocation(testConfig({ RINGHOOK_DATA_DIR: dir })), `${dir}/ringhook.db`);
    } finally {
      await admin.unsafe(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await admin.end();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("RINGHOOK_DATABASE_URL: validated, a secret (from _FILE too), never printed", () => {
  const url = "postgresql://ringhook:s3cr%40t-pw@db.internal:5432/ringhook?schema=rh";
  const ok = loadConfig({ RINGHOOK_DATABASE_URL: url }, () => "");
  assert.ok(ok.ok);
  assert.equal(ok.config.databaseUrl, url);
  const secrets = secretsOf(ok.config);
  assert.ok(
    secrets.includes(url) && secrets.includes("s3cr@t-pw") && secrets.includes("s3cr%40t-pw"),
  );
  const shown = storeLocation(ok.config);
  assert.ok(!shown.includes("s3cr"), shown);
  assert.match(
    shown,
    /^postgresql:\/\/ringhook:\*\*\*@db\.internal:5432\/ringhook\?schema=\*\*\*$/,
  );

  const file = loadConfig(
    { RINGHOOK_DATABASE_URL_FILE: "/run/secrets/db" },
    (p) => p === "/run/secrets/db" ? `${url}\n` : "",
  );
  assert.ok(file.ok);
  assert.equal(file.config.databaseUrl, url);

  for (const bad of ["mysql://u:hunter22@h/db", "not a url hunter22", "postgres://"]) {
    const r = loadConfig({ RINGHOOK_DATABASE_URL: bad }, () => "");
    assert.equal(r.ok, false, bad);
    const errors = r.ok ? [] : r.errors;
    assert.ok(errors.some((e) => e.startsWith("RINGHOOK_DATABASE_URL:")), errors.join("; "));
    assert.ok(!errors.join(" ").includes("hunter22"), "the value is not echoed");
  }
  const none = loadConfig({}, () => "");
  assert.ok(none.ok);
  assert.equal(none.config.databaseUrl, undefined);
});

// ---- helpers ----------------------------------------------------------------------------------

async function waitUntil(
  cond: () => boolean | Promise<boolean>,
  timeoutMs: number,
  what: string,
): Promise<void> {
  const t0 = Date.now();
  while (!(await cond())) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out: ${what}`);
    await sleep(25);
  }
}

async function listeners(admin: ReturnType<typeof postgres>, app: string): Promise<number> {
  const [r] = await admin`
    SELECT count(*)::int AS n FROM pg_stat_activity
    WHERE application_name = ${app} AND query LIKE 'LISTEN%'`;
  return r.n as number;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}
