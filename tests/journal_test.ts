/** The journal on a real SQLite file: group commit, dedupe, consumers, retention, failure and recovery. */
import assert from "node:assert/strict";
import { Journal } from "../src/journal/journal.ts";
import { openSqliteStore } from "../src/journal/remote.ts";
import { DatabaseSync } from "node:sqlite";
import type { Notification } from "../src/notification.ts";
import { logger } from "../src/log.ts";
import { Registry } from "../src/metrics.ts";
import type { JournalEntry } from "../src/journal/types.ts";

function note(uuid: string, receivedAt = Date.now()): Notification {
  const body = { telephonySessionId: "s-1", sequence: 1 };
  const raw = new TextEncoder().encode(JSON.stringify({ uuid, event: "/e", body }));
  return { uuid, event: "/e", body, raw, headers: { "user-agent": "t" }, receivedAt };
}

async function withJournal(
  fn: (j: Journal, dir: string) => Promise<void>,
  opts: { batchMax?: number; batchDelayMs?: number; retentionDays?: number } = {},
) {
  const dir = await Deno.makeTempDir({ prefix: "ringhook-journal-" });
  const store = await openSqliteStore(`${dir}/ringhook.db`, "full", 200);
  const j = new Journal(store, {
    batchMax: opts.batchMax ?? 256,
    batchDelayMs: opts.batchDelayMs ?? 2,
    retentionDays: opts.retentionDays ?? 30,
    metrics: new Registry(),
    log: logger("test"),
  });
  try {
    await fn(j, dir);
  } finally {
    await j.close();
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("group commit: concurrent accepts share transactions; seqs are increasing and unique", async () => {
  await withJournal(async (j) => {
    const results = await Promise.all(
      Array.from({ length: 300 }, (_, i) => j.accept(note(`gc-${i}`))),
    );
    const seqs = results.map((r) => (r.status === "stored" ? r.seq : -1));
    assert.ok(seqs.every((s) => s > 0));
    assert.equal(new Set(seqs).size, 300);
    // Arrival order is kept: the i-th accept got a smaller seq than the (i+1)-th.
    for (let i = 1; i < seqs.length; i++) assert.ok(seqs[i] > seqs[i - 1]);
    const entries = await j.store.readAfter(0, 1000);
    assert.equal(entries.length, 300);
    assert.equal(await j.store.lastSeq(), seqs[seqs.length - 1]);
  });
});

Deno.test("group commit: 300 concurrent events take far fewer than 300 transactions", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ringhook-journal-" });
  const store = await openSqliteStore(`${dir}/ringhook.db`, "full");
  const metrics = new Registry();
  const j = new Journal(store, {
    batchMax: 128,
    batchDelayMs: 5,
    retentionDays: 0,
    metrics,
    log: logger("test"),
  });
  try {
    await Promise.all(Array.from({ length: 300 }, (_, i) => j.accept(note(`b-${i}`))));
    const text = await metrics.render();
    const commits = Number(text.match(/ringhook_journal_batch_size_count (\d+)/)![1]);
    assert.ok(commits >= 3 && commits <= 10, `${commits} transactions`);
    assert.match(text, /ringhook_journal_batch_size_bucket\{le="1"\} 0/);
  } finally {
    await j.close();
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("dedupe: 50 concurrent accepts of one uuid store one event", async () => {
  await withJournal(async (j) => {
    const results = await Promise.all(Array.from({ length: 50 }, () => j.accept(note("same"))));
    assert.equal(results.filter((r) => r.status === "stored").length, 1);
    assert.equal(results.filter((r) => r.status === "duplicate").length, 49);
    assert.equal((await j.store.stats()).events, 1);
    // ...and later, across transactions, too.
    assert.deepEqual(await j.accept(note("same")), { status: "duplicate" });
  });
});

Deno.test("consumer: in order from its cursor, woken without polling, resumes after restart", async () => {
  await withJournal(async (j) => {
    const seen: string[] = [];
    let woke = 0;
    const c = j.consume("test", (entries: JournalEntry[]) => {
      seen.push(...entries.map((e) => e.uuid));
      return Promise.resolve();
    });
    await new Promise((r) => setTimeout(r, 100)); // it is now asleep on an empty journal
    const t0 = performance.now();
    const r = await j.accept(note("c-1"));
    assert.equal(r.status, "stored");
    await c.reached((r as { seq: number }).seq);
    woke = performance.now() - t0;
    assert.ok(woke < 1000, `woken after ${woke} ms (the fallback poll is 5 s)`);
    await Promise.all([j.accept(note("c-2")), j.accept(note("c-3"))]);
    await c.reached(await j.store.lastSeq());
    await c.stop();
    assert.deepEqual(seen, ["c-1", "c-2", "c-3"]);
    assert.equal(await j.store.getCursor("test"), await j.store.lastSeq());

    // A new consumer with the same name resumes after the cursor; another name starts at 0.
    await j.accept(note("c-4"));
    const again: string[] = [];
    const c2 = j.consume("test", (e) => (again.push(...e.map((x) => x.uuid)), Promise.resolve()));
    const other: string[] = [];
    const c3 = j.consume("other", (e) => (other.push(...e.map((x) => x.uuid)), Promise.resolve()));
    await c2.reached(await j.store.lastSeq());
    await c3.reached(await j.store.lastSeq());
    await c2.stop();
    await c3.stop();
    assert.deepEqual(again, ["c-4"]);
    assert.deepEqual(other, ["c-1", "c-2", "c-3", "c-4"]);
  });
});

Deno.test("consumer: a failing handler does not advance the cursor (at-least-once)", async () => {
  await withJournal(async (j) => {
    let calls = 0;
    const got: string[] = [];
    const c = j.consume("flaky", (entries) => {
      calls++;
      if (calls === 1) return Promise.reject(new Error("boom"));
      got.push(...entries.map((e) => e.uuid));
      return Promise.resolve();
    });
    await j.accept(note("f-1"));
    await c.reached(await j.store.lastSeq());
    await c.stop();
    assert.ok(calls >= 2);
    assert.deepEqual(got, ["f-1"]);
  });
});

Deno.test("retention prunes old events in bounded rounds while acks go on", async () => {
  await withJournal(async (j) => {
    const old = Date.now() - 40 * 86_400_000;
    await Promise.all(Array.from({ length: 2500 }, (_, i) => j.accept(note(`old-${i}`, old))));
    await j.accept(note("fresh"));
    const pruning = j.pruneOnce();
    const during = await j.accept(note("during"));
    assert.equal(during.status, "stored");
    assert.equal(await pruning, 2500);
    const left = await j.store.queryEvents({ limit: 10 });
    assert.deepEqual(left.map((e) => e.uuid), ["fresh", "during"]);
    // Seqs never go back after a prune.
    const next = await j.accept(note("after"));
    assert.ok(next.status === "stored" && next.seq > (during as { seq: number }).seq);
  }, { retentionDays: 30 });
});

Deno.test("locked database: 503-worthy failure, not-ready, then recovers by itself", async () => {
  await withJournal(async (j, dir) => {
    assert.equal((await j.accept(note("before"))).status, "stored");
    // Another process (here: another connection) holds the write lock.
    const raw = new DatabaseSync(`${dir}/ringhook.db`);
    raw.exec("BEGIN EXCLUSIVE");
    raw.exec("INSERT INTO settings (key, value) VALUES ('lock', 'held')");
    await assert.rejects(j.accept(note("while-locked")), { name: "JournalUnavailable" });
    assert.equal(j.readiness().ready, false);
    assert.match(j.readiness().reason!, /locked|busy/i);
    raw.exec("COMMIT");
    raw.close();
    // The background probe turns it ready again without any event arriving.
    const t0 = Date.now();
    while (!j.readiness().ready && Date.now() - t0 < 5000) {
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(j.readiness().ready, true);
    assert.equal((await j.accept(note("after"))).status, "stored");
    const uuids = (await j.store.queryEvents({ limit: 10 })).map((e) => e.uuid);
    assert.deepEqual(uuids, ["before", "after"], "the refused event was not stored");
  });
});

Deno.test("two instances on one database: one runs a consumer at a time; commits are fenced", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ringhook-journal-" });
  const path = `${dir}/ringhook.db`;
  const mk = async (id: string) => {
    const store = await openSqliteStore(path, "full", 2000);
    return new Journal(store, {
      batchMax: 64,
      batchDelayMs: 1,
      retentionDays: 0,
      metrics: new Registry(),
      log: logger("test"),
      instanceId: id,
    });
  };
  const a = await mk("instance-a");
  const b = await mk("instance-b");
  const seenA: string[] = [];
  const seenB: string[] = [];
  try {
    const ca = a.consume("shared", (e) => (seenA.push(...e.map((x) => x.uuid)), Promise.resolve()));
    await a.accept(note("t-1"));
    await ca.reached(await a.store.lastSeq());
    const cb = b.consume("shared", (e) => (seenB.push(...e.map((x) => x.uuid)), Promise.resolve()));
    await b.accept(note("t-2"));
    await a.accept(note("t-3"));
    await new Promise((r) => setTimeout(r, 300));
    await ca.reached(await a.store.lastSeq());
    assert.deepEqual(seenA, ["t-1", "t-2", "t-3"]);
    assert.deepEqual(seenB, [], "the second instance waits for the lease");
    // The first instance stops: the second takes over from the stored cursor.
    await ca.stop();
    await b.accept(note("t-4"));
    await cb.reached(await b.store.lastSeq());
    assert.deepEqual(seenB, ["t-4"]);
    await cb.stop();
    // A commit under a lease someone else holds is refused.
    assert.equal(await a.store.lease("consumer:fenced", "instance-b", 10_000), true);
    await assert.rejects(
      a.store.commit({
        consumer: "fenced",
        cursor: 4,
        lease: { name: "consumer:fenced", holder: "instance-a" },
      }),
      /held by another instance/,
    );
    assert.equal(await a.store.getCursor("fenced"), 0);
  } finally {
    await a.close();
    await b.close();
    await a.store.close();
    await b.store.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a stalled database: 503 within the commit deadline, fail fast, ready again when it answers", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ringhook-journal-" });
  const real = await openSqliteStore(`${dir}/ringhook.db`, "full");
  let release: (() => void) | undefined;
  let stalls = 1;
  const store = {
    ...real,
    append: async (rows: Parameters<typeof real.append>[0]) => {
      if (stalls > 0 && rows.some((r) => r.uuid.startsWith("stall"))) {
        stalls--;
        await new Promise<void>((r) => (release = r));
      }
      return real.append(rows);
    },
  };
  const j = new Journal(store, {
    batchMax: 64,
    batchDelayMs: 1,
    retentionDays: 0,
    metrics: new Registry(),
    log: logger("test"),
    commitTimeoutMs: 300,
  });
  try {
    const t0 = performance.now();
    await assert.rejects(j.accept(note("stall-1")), { name: "JournalUnavailable" });
    const waited = performance.now() - t0;
    assert.ok(waited >= 290 && waited < 1500, `answered after ${waited} ms`);
    assert.equal(j.readiness().ready, false);
    assert.match(j.readiness().reason!, /has not finished in 300 ms/);
    // While the commit hangs, new events fail at once instead of queueing behind it.
    const t1 = performance.now();
    await assert.rejects(j.accept(note("meanwhile")), /stopped answering/);
    assert.ok(performance.now() - t1 < 100);
    // The database answers again: the late commit lands, the journal is ready, events flow.
    release!();
    const t2 = Date.now();
    while (!j.readiness().ready && Date.now() - t2 < 5000) {
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(j.readiness().ready, true);
    assert.equal((await j.accept(note("after"))).status, "stored");
    // The stalled event was stored after all; a retry by its sender is a duplicate.
    assert.deepEqual(await j.accept(note("stall-1")), { status: "duplicate" });
  } finally {
    await j.close();
    await real.close();
    await Deno.remove(dir, { recursive: true });
  }
});
