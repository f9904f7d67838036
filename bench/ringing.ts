/**
 * `deno task bench:ringing`: how soon after the Proceeding event's ack the
 * call.ringing event is committed (issue 4's target: p99 ≤ 50 ms), measured
 * from the database: the Proceeding row's received_at against the call.ringing
 * topic row's created_at, for every call, under concurrent call traffic.
 *
 * Flags: --calls N (default 600), --concurrency C (default 20).
 */
import { DatabaseSync } from "node:sqlite";
import { inboundCall, type Payload } from "../src/cli/payloads.ts";
import { parseFlags, startRinghook, stopAll, stopAllOnSignal, table, TOKEN } from "./lib.ts";

const flags = parseFlags(Deno.args);
const CALLS = Number(flags.get("calls")?.[0] ?? 600);
const CONCURRENCY = Number(flags.get("concurrency")?.[0] ?? 20);

/** The q-quantile of sorted numbers. */
function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

async function main() {
  stopAllOnSignal();
  const dir = await Deno.makeTempDir({ prefix: "ringhook-ringing-" });
  const server = await startRinghook(dir, {
    RINGHOOK_VERIFICATION_TOKEN: TOKEN,
    RINGHOOK_LOG_LEVEL: "warning",
  });
  try {
    const calls = Array.from(
      { length: CALLS },
      (_, i) => inboundCall(i % 3 === 0 ? "missed" : "answered"),
    );
    const proceeding = new Map<string, string>(); // session -> Proceeding uuid
    for (const flow of calls) {
      const p = flow.find((n) =>
        (n.body.parties as Array<{ status: { code: string } }>)[0].status.code === "Proceeding"
      )!;
      proceeding.set(String(p.body.telephonySessionId), p.uuid);
    }
    // Each worker plays whole calls, event after event, like RingCentral does for one session.
    let next = 0;
    const send = async (n: Payload) => {
      const res = await fetch(`${server.url}/webhook`, {
        method: "POST",
        headers: { "Verification-Token": TOKEN },
        body: JSON.stringify(n),
      });
      await res.body?.cancel();
      if (res.status !== 200) throw new Error(`status ${res.status}`);
    };
    const t0 = performance.now();
    await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
      while (next < calls.length) for (const n of calls[next++]) await send(n);
    }));
    const seconds = (performance.now() - t0) / 1000;
    // Let the tracker finish, then read the two timestamps for every call.
    await new Promise((r) => setTimeout(r, 1000));
    const metrics = await fetch(`${server.url}/metrics`).then((r) => r.text());
    await server.stop();
    const db = new DatabaseSync(`${dir}/ringhook.db`, { readOnly: true });
    const received = db.prepare("SELECT received_at FROM events WHERE uuid = ?");
    const ringing = db.prepare(
      "SELECT created_at FROM topic_events WHERE topic = 'calls' AND key = ?",
    );
    const lags: number[] = [];
    for (const [session, uuid] of proceeding) {
      const r = received.get(uuid) as { received_at: number } | undefined;
      const t = ringing.get(`call.ringing:${session}`) as { created_at: number } | undefined;
      if (r && t) lags.push(Number(t.created_at) - Number(r.received_at));
    }
    db.close();
    lags.sort((a, b) => a - b);
    const events = calls.flat().length;
    const p50 = quantile(lags, 0.5);
    const p99 = quantile(lags, 0.99);
    console.log(table([
      ["calls", "events", "events/s", "ringing seen", "p50 ms", "p99 ms", "max ms", "target"],
      [
        String(CALLS),
        String(events),
        (events / seconds).toFixed(0),
        String(lags.length),
        String(p50),
        String(p99),
        String(lags[lags.length - 1]),
        p99 <= 50 ? "p99 ≤ 50 ms: met" : "p99 ≤ 50 ms: MISSED",
      ],
    ]));
    const hist = metrics.split("\n").filter((l) =>
      l.startsWith('ringhook_call_event_lag_seconds_bucket{le="0.05",type="call.ringing"}') ||
      l.startsWith('ringhook_call_event_lag_seconds_count{type="call.ringing"}')
    );
    console.log(hist.join("\n"));
    await Deno.mkdir("bench/results", { recursive: true });
    await Deno.writeTextFile(
      "bench/results/ringing.json",
      JSON.stringify(
        {
          at: new Date().toISOString(),
          calls: CALLS,
          concurrency: CONCURRENCY,
          events,
          eventsPerSecond: events / seconds,
          ringingSeen: lags.length,
          p50Ms: p50,
          p99Ms: p99,
          maxMs: lags[lags.length - 1],
        },
        null,
        2,
      ) + "\n",
    );
    if (lags.length !== CALLS) throw new Error(`only ${lags.length} of ${CALLS} ringing events`);
  } finally {
    await stopAll();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) await main();
