/**
 * The call tracker as a journal consumer: reads telephony events in journal
 * order, reduces them into call records, and commits records, call.* topic
 * events and its cursor in one transaction (so a crash replays, never skips).
 * A sweep closes calls that went silent as `stale`.
 */
import type { Consumer, Journal } from "../journal/journal.ts";
import type { CallRow, JournalEntry, Store } from "../journal/types.ts";
import type { Logger } from "../log.ts";
import type { Registry } from "../metrics.ts";
import { isTelephony } from "../notification.ts";
import type { CallEvent } from "./events.ts";
import { toTopicEvent } from "./events.ts";
import { traced } from "../trace.ts";
import { serializer } from "../serial.ts";
import {
  type CallState,
  closeStale,
  parseCallState,
  parseTelephonyEvent,
  reduceCall,
  type TelephonyEvent,
  toCallRow,
} from "./tracker.ts";

/** The consumer name (its cursor) and the topic the call events go to. */
export const CALLS_CONSUMER = "calls";
export const CALLS_TOPIC = "calls";

/** Options for the tracker. */
export interface CallTrackerOptions {
  staleSeconds: number;
  metrics: Registry;
  log: Logger;
  now?: () => number;
}

/** A running call tracker. */
export interface CallTracker {
  consumer: Consumer;
  /** Closes silent calls now (the sweep also runs on a timer). */
  sweep(): Promise<number>;
  stop(): Promise<void>;
}

/** Starts the call tracker on a journal. */
export function startCallTracker(journal: Journal, opts: CallTrackerOptions): CallTracker {
  const store = journal.store;
  const now = opts.now ?? Date.now;
  const ended = opts.metrics.counter("ringhook_calls_ended_total", "Calls ended, by result");
  const emittedCount = opts.metrics.counter("ringhook_call_events_total", "call.* events emitted");
  const lag = opts.metrics.histogram(
    "ringhook_call_event_lag_seconds",
    "From receiving the notification to its call.* event committed, by type",
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5],
  );
  // Emitted in the batch being committed: observed once the commit lands.
  let pendingLag: Array<{ type: string; receivedAt: number }> = [];
  const skipped = opts.metrics.counter(
    "ringhook_calls_skipped_events_total",
    "Telephony notifications the tracker could not read",
  );
  // The consumer and the sweep both write call rows: run them one at a time.
  const serial = serializer();
  const count = (emitted: CallEvent[]) => {
    for (const e of emitted) {
      emittedCount.inc({ type: e.type });
      if (e.type === "call.ended") ended.inc({ result: String(e.data.result) });
    }
  };

  const consumer = journal.consume(
    CALLS_CONSUMER,
    (entries) =>
      serial(() =>
        traced("ringhook.calls.track", { "ringhook.entries": entries.length }, async () => {
          pendingLag = []; // a failed attempt's observations are dropped with it
          const receivedAt = new Map<string, number>();
          const events = entries.flatMap((e) => {
            const ev = telephonyEvent(e);
            if (ev === null) skipped.inc();
            if (ev) receivedAt.set(ev.uuid, e.receivedAt);
            return ev ? [ev] : [];
          });
          if (events.length === 0) return;
          const states = await loadStates(store, [
            ...new Set(events.map((e) => e.telephonySessionId)),
          ]);
          const changed = new Map<string, CallState>();
          const emitted: CallEvent[] = [];
          for (const ev of events) {
            let r;
            try {
              r = reduceCall(states.get(ev.telephonySessionId), ev);
            } catch (e) {
              // One unreadable event or damaged record must not stop every call behind it.
              skipped.inc();
              opts.log.error("Call tracker skipped event {uuid}: {error}", {
                uuid: ev.uuid,
                error: e,
              });
              continue;
            }
            if (r.state !== states.get(ev.telephonySessionId)) {
              states.set(ev.telephonySessionId, r.state);
              changed.set(ev.telephonySessionId, r.state);
            }
            emitted.push(...r.emitted);
            for (const e of r.emitted) {
              pendingLag.push({ type: e.type, receivedAt: receivedAt.get(ev.uuid) ?? now() });
            }
          }
          const at = now();
          count(emitted);
          return {
            calls: [...changed.values()].map((s) => toCallRow(s, at)),
            topicEvents: emitted.map((e) => toTopicEvent(e, CALLS_TOPIC, at)),
          };
        })
      ),
    {
      log: opts.log,
      batch: 500,
      // Fewer, larger batches keep the tracker's commits from crowding the ack path's; the
      // call.ringing latency budget (50 ms at p99) has room for it.
      minIntervalMs: 10,
      committed: () => {
        const t = now();
        for (const p of pendingLag) lag.observe((t - p.receivedAt) / 1000, { type: p.type });
        pendingLag = [];
      },
    },
  );

  // The sweep writes call records too, so it runs only where the tracker runs (the lease
  // holder), only once the tracker has caught up (a lagging tracker is not a silent call),
  // and its commit is fenced by the same lease.
  const sweep = () =>
    serial(async () => {
      if (!consumer.leader() || consumer.position() < await store.lastSeq()) return 0;
      const cutoff = now() - opts.staleSeconds * 1000;
      const rows = await store.staleCalls(cutoff, 500);
      const calls: CallRow[] = [];
      const emitted: CallEvent[] = [];
      for (const row of rows) {
        const state = parseCallState(row.data);
        if (!state) continue;
        const r = closeStale(state, now());
        calls.push(toCallRow(r.state, now()));
        emitted.push(...r.emitted);
      }
      if (calls.length === 0) return 0;
      count(emitted);
      await store.commit({
        calls,
        topicEvents: emitted.map((e) => toTopicEvent(e, CALLS_TOPIC, now())),
        lease: consumer.lease,
      });
      opts.log.info("Closed {count} silent call(s) as stale", { count: calls.length });
      return calls.length;
    });
  const interval = Math.max(1000, Math.min(60_000, (opts.staleSeconds * 1000) / 4));
  const timer = setInterval(() => {
    sweep().catch((e) => opts.log.warn("Stale-call sweep failed: {error}", { error: e }));
  }, interval);

  return {
    consumer,
    sweep,
    async stop() {
      clearInterval(timer);
      await consumer.stop();
      await serial(() => Promise.resolve());
    },
  };
}

/** The telephony event in a journal entry; undefined for other events, null when unreadable. */
function telephonyEvent(e: JournalEntry): TelephonyEvent | undefined | null {
  let envelope;
  try {
    envelope = JSON.parse(new TextDecoder().decode(e.raw));
  } catch {
    return null;
  }
  if (!isTelephony({ event: e.event, body: envelope.body ?? {} })) return undefined;
  return parseTelephonyEvent({ ...envelope, uuid: e.uuid, event: e.event }) ?? null;
}

async function loadStates(store: Store, ids: string[]): Promise<Map<string, CallState>> {
  const out = new Map<string, CallState>();
  for (const row of await store.getCalls(ids)) {
    const s = parseCallState(row.data);
    if (s) out.set(row.telephonySessionId, s);
  }
  return out;
}
