/**
 * The journal: group commit in front of a Store (requests that arrive together
 * share one transaction), deduplication by uuid, health, retention, and
 * consumers that read from a stored cursor and are woken when events land.
 */
import type { Logger } from "../log.ts";
import type { Registry } from "../metrics.ts";
import type { Notification } from "../notification.ts";
import {
  type AcceptResult,
  type JournalEntry,
  JournalUnavailable,
  type ProcessorCommit,
  type Store,
  toRow,
} from "./types.ts";
import { traced } from "../trace.ts";

/** Group commit and housekeeping settings. */
export interface JournalOptions {
  batchMax: number;
  batchDelayMs: number;
  retentionDays: number;
  metrics: Registry;
  log: Logger;
  now?: () => number;
  /** This instance's name in consumer leases (several instances may share one database). */
  instanceId?: string;
  /**
   * How long a group commit may take before its events are answered 503 (the database is
   * stalled) and the journal turns not-ready; below RingCentral's 3 s deadline.
   */
  commitTimeoutMs?: number;
}

/**
 * How long a consumer's lease lasts without renewal: after a crash (no release), another
 * or the restarted instance takes the consumer over within this time.
 */
const CONSUMER_LEASE_MS = 10_000;

interface Pending {
  n: Notification;
  resolve: (r: AcceptResult) => void;
  reject: (e: Error) => void;
}

/** What a consumer's handler returns: the rest of its commit (calls, topic events). */
export type ConsumerResult = Omit<ProcessorCommit, "consumer" | "cursor"> | void;

/** A running consumer. */
export interface Consumer {
  /** Stops after the batch in hand; resolves when stopped. */
  stop(): Promise<void>;
  /** The last seq it committed. */
  position(): number;
  /** Resolves once the consumer has committed `seq` or beyond. */
  reached(seq: number): Promise<void>;
  /** True while this instance holds the consumer's lease. */
  leader(): boolean;
  /** The lease that fences this consumer's commits (for writes it makes outside a batch). */
  lease: { name: string; holder: string };
}

/** The durable journal behind the edge's accept() seam. */
export class Journal {
  readonly store: Store;
  readonly instanceId: string;
  #opts: JournalOptions;
  #now: () => number;
  #pending: Pending[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;
  #inflight: Promise<void> | undefined;
  #listeners = new Set<() => void>();
  /** Unsubscribes from the store's cross-instance wake-ups (while anyone listens). */
  #unwatch: (() => void) | undefined;
  #failure: { reason: string; since: number } | undefined;
  #probeTimer: ReturnType<typeof setInterval> | undefined;
  #retentionTimer: ReturnType<typeof setInterval> | undefined;
  #firstPrune: ReturnType<typeof setTimeout> | undefined;
  /** Set while a group commit is past its deadline: accepts fail fast until it settles. */
  #stalled = false;
  #closed = false;
  #m: {
    batch: ReturnType<Registry["histogram"]>;
    commit: ReturnType<Registry["histogram"]>;
    failures: ReturnType<Registry["counter"]>;
    pruned: ReturnType<Registry["counter"]>;
  };

  /** Wraps a store; call start() to begin housekeeping. */
  constructor(store: Store, opts: JournalOptions) {
    this.store = store;
    this.instanceId = opts.instanceId ?? crypto.randomUUID();
    this.#opts = opts;
    this.#now = opts.now ?? Date.now;
    const m = opts.metrics;
    this.#m = {
      batch: m.histogram("ringhook_journal_batch_size", "Events per group commit", [
        1,
        2,
        5,
        10,
        25,
        50,
        100,
        250,
        500,
        1000,
      ]),
      commit: m.histogram(
        "ringhook_journal_commit_seconds",
        "Time for one group commit including fsync",
        [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1],
      ),
      failures: m.counter("ringhook_journal_failures_total", "Group commits that failed"),
      pruned: m.counter("ringhook_journal_pruned_total", "Events removed by retention"),
    };
    m.collect("ringhook_journal_ready", "1 when the journal takes writes", () => [{
      value: this.#failure ? 0 : 1,
    }]);
  }

  /** Starts retention in the background. */
  start(): void {
    if (this.#opts.retentionDays > 0) {
      const run = () => void this.pruneOnce().catch(() => {});
      this.#retentionTimer = setInterval(run, 3600_000);
      this.#firstPrune = setTimeout(run, 1000);
    }
  }

  /** The accept() seam: resolves once the event is durable (or known), rejects with JournalUnavailable. */
  accept = (n: Notification): Promise<AcceptResult> => {
    if (this.#closed) return Promise.reject(new JournalUnavailable("the journal is shutting down"));
    if (this.#stalled) {
      return Promise.reject(new JournalUnavailable("the database has stopped answering"));
    }
    return new Promise<AcceptResult>((resolve, reject) => {
      this.#pending.push({ n, resolve, reject });
      if (this.#inflight) return; // the batch in flight will take these when it lands
      if (this.#pending.length >= this.#opts.batchMax || this.#opts.batchDelayMs === 0) {
        this.#flushSoon(0);
      } else {
        this.#flushSoon(this.#opts.batchDelayMs);
      }
    });
  };

  /** Ready means the last write succeeded. */
  readiness(): { ready: boolean; reason?: string } {
    return this.#failure ? { ready: false, reason: this.#failure.reason } : { ready: true };
  }

  /**
   * Registers a wake-up for new events, ours and (where the store reports them) those
   * another instance appended to a shared database; returns the unsubscribe function.
   */
  onAppend(listener: () => void): () => void {
    this.#listeners.add(listener);
    if (this.store.watch && !this.#unwatch) {
      this.#unwatch = this.store.watch(() => {
        for (const l of this.#listeners) l();
      });
    }
    return () => {
      this.#listeners.delete(listener);
      if (this.#listeners.size === 0) {
        this.#unwatch?.();
        this.#unwatch = undefined;
      }
    };
  }

  /**
   * Runs a consumer: reads entries after its cursor in order, hands them to `handle`,
   * and commits the cursor with what `handle` returns (at-least-once; handlers are
   * idempotent). Sleeps until woken by new events; never polls in a tight loop.
   * Where several instances share the database, a lease lets one of them run each
   * consumer at a time, and every commit is fenced by that lease.
   */
  consume(
    name: string,
    handle: (entries: JournalEntry[]) => Promise<ConsumerResult>,
    opts: {
      batch?: number;
      log?: Logger;
      committed?: () => void;
      /** Let events gather for at least this long between batches (fewer, larger commits). */
      minIntervalMs?: number;
    } = {},
  ): Consumer {
    const batch = opts.batch ?? 500;
    let stopping = false;
    let position = 0;
    let dirty = false;
    const waiters: Array<{ seq: number; resolve: () => void }> = [];
    const unsubscribe = this.onAppend(() => {
      dirty = true;
      sleeper.wake();
    });
    const settle = () => {
      for (let i = waiters.length - 1; i >= 0; i--) {
        if (waiters[i].seq <= position) waiters.splice(i, 1)[0].resolve();
      }
    };
    // Waiting for events: an append or stop() cuts it short. A pause (letting events gather)
    // only ends early on stop(): new events are what it waits for.
    const sleeper = wakeableSleep(() => stopping);
    const pauser = wakeableSleep(() => stopping);
    const sleep = sleeper.sleep;
    const pause = pauser.sleep;
    let lastBatchAt = -Infinity;
    const lease = { name: `consumer:${name}`, holder: this.instanceId };
    // Lease timing uses the monotonic clock: a wall-clock step must not stall a consumer.
    let leaseRenewedAt = -Infinity;
    const renew = () => this.store.lease(lease.name, lease.holder, CONSUMER_LEASE_MS);
    const loop = (async () => {
      let failures = 0;
      while (!stopping) {
        try {
          if (performance.now() - leaseRenewedAt > CONSUMER_LEASE_MS / 3) {
            const held = await renew();
            if (!held) {
              leaseRenewedAt = -Infinity;
              await sleep(1000);
              continue;
            }
            if (leaseRenewedAt === -Infinity) {
              // Newly leader: another instance may have moved the cursor meanwhile.
              position = await this.store.getCursor(name);
              settle();
            }
            leaseRenewedAt = performance.now();
          }
          const since = performance.now() - lastBatchAt;
          if (opts.minIntervalMs && since < opts.minIntervalMs) {
            await pause(Math.min(opts.minIntervalMs, opts.minIntervalMs - since));
          }
          lastBatchAt = performance.now();
          dirty = false;
          const entries = await this.store.readAfter(position, batch);
          if (entries.length === 0) {
            if (!dirty) await sleep(5000);
            continue;
          }
          // Keep the lease while a slow batch runs (a keeper riding out RingCentral's backoff).
          const heartbeat = setInterval(() => {
            renew().then((held) => {
              if (held) leaseRenewedAt = performance.now();
            }, () => {});
          }, CONSUMER_LEASE_MS / 3);
          let result;
          try {
            result = await handle(entries);
            const cursor = entries[entries.length - 1].seq;
            await this.store.commit({ consumer: name, cursor, lease, ...(result ?? {}) });
            position = cursor;
          } finally {
            clearInterval(heartbeat);
          }
          failures = 0;
          opts.committed?.();
          settle();
        } catch (e) {
          failures++;
          leaseRenewedAt = -Infinity; // re-check the lease and re-read the cursor
          opts.log?.error("Consumer {name} failed; retrying: {error}", { name, error: e });
          await sleep(Math.min(30_000, 100 * 2 ** Math.min(failures, 9)));
        }
      }
    })();
    return {
      stop: async () => {
        stopping = true;
        unsubscribe();
        sleeper.wake();
        pauser.wake();
        await loop;
        leaseRenewedAt = -Infinity;
        await this.store.releaseLease(lease.name, lease.holder).catch(() => {});
      },
      position: () => position,
      leader: () => performance.now() - leaseRenewedAt < CONSUMER_LEASE_MS,
      lease,
      reached: (seq) =>
        seq <= position
          ? Promise.resolve()
          : new Promise<void>((resolve) => waiters.push({ seq, resolve })),
    };
  }

  /** Deletes one round of events older than the retention period; returns how many. */
  async pruneOnce(): Promise<number> {
    const before = this.#now() - this.#opts.retentionDays * 86_400_000;
    let total = 0;
    while (!this.#closed) {
      const n = await this.store.prune(before, 1000);
      total += n;
      if (n < 1000) break;
      // Let group commits in between: retention must never stall the ack path.
      await new Promise((r) => setTimeout(r, 10));
    }
    if (total > 0) {
      this.#m.pruned.inc({}, total);
      this.#opts.log.info("Retention removed {count} events", { count: total });
    }
    return total;
  }

  /** Flushes pending events, stops timers; the store stays open for the caller to close. */
  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#retentionTimer);
    clearTimeout(this.#firstPrune);
    clearInterval(this.#probeTimer);
    while (this.#pending.length > 0 || this.#inflight) {
      if (!this.#inflight) this.#flush();
      await this.#inflight;
    }
    clearTimeout(this.#timer);
  }

  #flushSoon(ms: number) {
    // A batch that is full flushes now; otherwise the first timer set stands (resetting it on
    // every arrival would starve the batch under steady load).
    if (ms === 0 && this.#pending.length >= this.#opts.batchMax) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
      this.#flush();
      return;
    }
    if (this.#timer === undefined) this.#timer = setTimeout(() => this.#flush(), ms);
  }

  #flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#inflight || this.#pending.length === 0) return;
    const batch = this.#pending.splice(0, this.#opts.batchMax);
    const started = performance.now();
    const rows = batch.map((p) => toRow(p.n));
    // A stalled database must not hold acks past RingCentral's deadline: after
    // commitTimeoutMs the waiters get 503 and new events fail fast until the commit settles
    // (if it lands later, those events are stored and a retry is answered "duplicate").
    const deadline = setTimeout(() => {
      this.#stalled = true;
      const reason = `a commit has not finished in ${this.#opts.commitTimeoutMs ?? 2000} ms`;
      this.#opts.log.error("Journal stalled: {reason}", { reason });
      this.#setFailure({ reason, since: this.#now() });
      const err = new JournalUnavailable(reason);
      for (const p of batch.splice(0)) p.reject(err);
      for (const p of this.#pending.splice(0)) p.reject(err);
    }, this.#opts.commitTimeoutMs ?? 2000);
    this.#inflight = traced(
      "ringhook.journal.write",
      { "ringhook.batch.size": rows.length },
      () => this.store.append(rows),
    ).finally(() => {
      clearTimeout(deadline);
      this.#stalled = false;
    }).then(
      (seqs) => {
        this.#m.commit.observe((performance.now() - started) / 1000);
        this.#m.batch.observe(rows.length);
        if (this.#failure) {
          this.#opts.log.info("Journal recovered after: {reason}", this.#failure);
          this.#setFailure(undefined);
        }
        // (After a stall the waiters were already answered and `batch` is empty.)
        batch.forEach((p, i) => {
          p.resolve(seqs[i] > 0 ? { status: "stored", seq: seqs[i] } : { status: "duplicate" });
        });
        if (seqs.some((seq) => seq > 0)) { for (const l of this.#listeners) l(); }
      },
      (e: Error) => {
        this.#m.failures.inc();
        const reason = describe(e);
        if (!this.#failure) this.#opts.log.error("Journal write failed: {reason}", { reason });
        this.#setFailure({ reason, since: this.#now() });
        const err = new JournalUnavailable(reason, { cause: e });
        for (const p of batch) p.reject(err);
      },
    ).finally(() => {
      this.#inflight = undefined;
      if (this.#pending.length > 0) this.#flush();
    });
  }

  #setFailure(f: { reason: string; since: number } | undefined) {
    this.#failure = f;
    if (f && !this.#probeTimer) {
      // Recover by ourselves when the cause goes away, even with no traffic.
      this.#probeTimer = setInterval(() => {
        this.store.probe().then(() => {
          if (this.#failure) {
            this.#opts.log.info("Journal takes writes again");
            this.#setFailure(undefined);
          }
        }, () => {});
      }, 1000);
    } else if (!f && this.#probeTimer) {
      clearInterval(this.#probeTimer);
      this.#probeTimer = undefined;
    }
  }
}

/** A sleep that `wake()` ends early; resolves at once while `skip()` is true. */
function wakeableSleep(
  skip: () => boolean,
): { sleep: (ms: number) => Promise<void>; wake: () => void } {
  let wake: (() => void) | undefined;
  return {
    sleep: (ms) =>
      skip() ? Promise.resolve() : new Promise<void>((resolve) => {
        const t = setTimeout(done, ms);
        function done() {
          clearTimeout(t);
          wake = undefined;
          resolve();
        }
        wake = done;
      }),
    wake: () => wake?.(),
  };
}

function describe(e: Error): string {
  const code = (e as { code?: string }).code;
  const msg = e.message.split("\n")[0].slice(0, 200);
  return code && !msg.includes(code) ? `${code}: ${msg}` : msg;
}
