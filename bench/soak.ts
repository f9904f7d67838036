/**
 * `deno task soak`: the memory check. Runs ringhook (fresh data dir, loopback only) under a
 * steady load of new events (wrk, 50 connections, a fresh uuid per request) for a while,
 * samples the server's RSS (VmRSS from /proc/<pid>/status) every few seconds, and passes
 * when the largest RSS after warm-up stays within 20% of the RSS at the end of warm-up.
 * It also checks, like bench.ts, that every 200 "received" answer is in the database.
 * Prints a table and writes bench/results/soak.json.
 *
 * Flags: --minutes 5 (total, warm-up included) --events N (stop once N events were answered;
 *        0 = no limit) --warmup-seconds (default 10% of the run, 10..30 s) --sample-seconds 5
 *        --connections 50 --threads 2 --tolerance 0.2 --env KEY=VALUE (repeatable)
 *        --out bench/results/soak.json --keep
 */
import {
  countEvents,
  cpuSeconds,
  haveWrk,
  type LoadResult,
  parseFlags,
  ROOT,
  rssKib,
  runLoad,
  runScript,
  startRinghook,
  stopAll,
  stopAllOnSignal,
  storedSoFar,
  table,
  TOKEN,
  uuidPrefix,
  writeTemplate,
  WRK_HINT,
} from "./lib.ts";

/** One RSS sample. */
export interface Sample {
  /** Seconds since the load started. */
  t: number;
  rssKib: number;
  /** Events stored so far (from /metrics; else those answered by the finished load chunks). */
  events: number;
  /** CPU seconds the server used so far. */
  cpu: number;
}

/** The soak verdict from the samples: baseline after warm-up, max and final after it. */
export function verdict(
  samples: Sample[],
  warmupEnd: number,
  tolerance: number,
): { baselineKib: number; maxKib: number; finalKib: number; growth: number; pass: boolean } {
  const after = samples.filter((s) => s.t >= warmupEnd);
  const baselineKib = after[0]?.rssKib ?? NaN;
  const maxKib = Math.max(...after.map((s) => s.rssKib));
  const finalKib = after.at(-1)?.rssKib ?? NaN;
  const growth = maxKib / baselineKib - 1;
  return { baselineKib, maxKib, finalKib, growth, pass: after.length >= 2 && growth <= tolerance };
}

async function main(): Promise<number> {
  const f = parseFlags(Deno.args);
  const one = (k: string, d: string) => f.get(k)?.at(-1) ?? d;
  const num = (k: string, d: number) => {
    const v = Number(one(k, String(d)));
    if (!Number.isFinite(v) || v < 0) throw new Error(`--${k} must be a number ≥ 0`);
    return v;
  };
  const seconds = num("minutes", 5) * 60;
  const maxEvents = num("events", 0);
  const warmup = num("warmup-seconds", Math.min(30, Math.max(10, seconds * 0.1)));
  const every = Math.max(1, num("sample-seconds", 5));
  const connections = num("connections", 50);
  const threads = num("threads", 2);
  const tolerance = num("tolerance", 0.2);
  const out = one("out", `${ROOT}/bench/results/soak.json`);
  const keep = one("keep", "false") === "true";
  const env: Record<string, string> = {
    RINGHOOK_LOG_LEVEL: "warning",
    RINGHOOK_VERIFICATION_TOKEN: TOKEN,
  };
  for (const kv of f.get("env") ?? []) {
    const i = kv.indexOf("=");
    if (i <= 0) throw new Error(`--env expects KEY=VALUE, got ${kv}`);
    env[kv.slice(0, i)] = kv.slice(i + 1);
  }
  if (seconds <= warmup) throw new Error("the run must be longer than the warm-up");
  if (!(await haveWrk())) {
    console.error(WRK_HINT.split("\n")[1] + "\n(the soak needs wrk)");
    return 2;
  }
  stopAllOnSignal();
  const tmp = await Deno.makeTempDir({ prefix: "ringhook-soak-" });
  const samples: Sample[] = [];
  const chunks: LoadResult[] = [];
  let sampler: ReturnType<typeof setInterval> | undefined;
  let received = 0;
  let stored = 0;
  let serverExit = -1;
  let elapsed = 0;
  let warmupAt: number | undefined;
  try {
    const tpl = await writeTemplate(tmp);
    const server = await startRinghook(tmp, env);
    console.log(
      `ringhook soak: ${seconds / 60} min (${warmup} s warm-up)` +
        (maxEvents ? ` or ${maxEvents} events` : "") +
        `, ${connections} connections, RSS every ${every} s; server pid ${server.pid}; temp ${tmp}`,
    );
    const t0 = performance.now();
    const sample = () => {
      const s = {
        t: Math.round((performance.now() - t0) / 100) / 10,
        rssKib: rssKib(server.pid),
        events: received,
        cpu: cpuSeconds(server.pid),
      };
      samples.push(s);
      // The live count arrives a moment later; the RSS is read first, before the scrape.
      storedSoFar(server.url).then((n) => void (n !== undefined && (s.events = n)));
      return s;
    };
    sample();
    sampler = setInterval(sample, every * 1000);
    let lastReport = 0;
    while (true) {
      elapsed = (performance.now() - t0) / 1000;
      const left = seconds - elapsed;
      if (left < 1 || (maxEvents > 0 && received >= maxEvents)) break;
      // The first chunk is the warm-up; then chunks of up to 30 s (shorter near an event cap).
      let chunk = chunks.length === 0 ? warmup : Math.min(30, left);
      if (maxEvents > 0 && chunks.length > 0) {
        const rate = received / elapsed;
        chunk = Math.min(chunk, Math.max(1, (maxEvents - received) / rate + 0.5));
      }
      const r = await runLoad("wrk", {
        url: server.url,
        mode: "unique",
        seconds: Math.max(1, Math.round(chunk)),
        connections,
        threads,
        template: tpl.path,
        token: TOKEN,
        prefix: uuidPrefix(),
      });
      chunks.push(r);
      received += r.received;
      if (chunks.length === 1) {
        const s = sample();
        warmupAt = s.t;
        console.log(`  warm-up done at ${s.t} s: RSS ${(s.rssKib / 1024).toFixed(1)} MiB`);
      }
      elapsed = (performance.now() - t0) / 1000;
      if (elapsed - lastReport >= 30) {
        lastReport = elapsed;
        const s = samples.at(-1)!;
        console.log(
          `  ${elapsed.toFixed(0)} s: ${received} events (${(received / elapsed).toFixed(0)}/s), ` +
            `RSS ${(s.rssKib / 1024).toFixed(1)} MiB`,
        );
      }
    }
    clearInterval(sampler);
    sample();
    serverExit = await server.stop();
    stored = countEvents(server.dbPath!);
  } finally {
    clearInterval(sampler);
    await stopAll();
    if (!keep) await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }

  const warmupEnd = warmupAt ?? warmup;
  const v = verdict(samples, warmupEnd, tolerance);
  const sum = (k: keyof LoadResult) => chunks.reduce((a, r) => a + (r[k] as number), 0);
  const unanswered = sum("sent") - sum("requests");
  const wrong = sum("non200") + sum("other200") + sum("duplicate");
  const storageOk = stored >= received && stored <= received + unanswered && wrong === 0;
  const step = Math.max(1, Math.ceil(samples.length / 15));
  const shown = samples.filter((_, i) => i % step === 0 || i === samples.length - 1);
  const mib = (k: number) => (k / 1024).toFixed(1);
  console.log(
    "\n" + table([
      ["t (s)", "RSS MiB", "events", "server cpu s"],
      ...shown.map((s) => [s.t.toFixed(1), mib(s.rssKib), String(s.events), s.cpu.toFixed(1)]),
    ]),
  );
  const latency = chunks.slice(1);
  const p99 = Math.max(...latency.map((r) => r.latencyMs.p99));
  console.log(
    "\n" + table([
      ["", "value"],
      ['events answered "received"', String(received)],
      ["events stored", `${stored} (${storageOk ? "ok" : "MISMATCH"}; ${unanswered} unanswered)`],
      ["rate", `${(received / elapsed).toFixed(0)} events/s over ${elapsed.toFixed(0)} s`],
      ["worst chunk p99 after warm-up", `${p99.toFixed(2)} ms`],
      ["RSS after warm-up", `${mib(v.baselineKib)} MiB`],
      ["RSS max after warm-up", `${mib(v.maxKib)} MiB (${(v.growth * 100).toFixed(1)}%)`],
      ["RSS final", `${mib(v.finalKib)} MiB`],
      ["verdict", `${v.pass ? "PASS" : "FAIL"} (max within ${tolerance * 100}% of after-warm-up)`],
    ]),
  );
  if (maxEvents === 0 && seconds >= 300 && received < 1_000_000) {
    console.log(`note: fewer than 1M events (${received}); the machine did not allow more.`);
  }
  const results = {
    startedAt: new Date(Date.now() - elapsed * 1000).toISOString(),
    seconds: elapsed,
    warmupSeconds: warmupEnd,
    connections,
    env,
    received,
    stored,
    unanswered,
    storageOk,
    serverExit,
    eventsPerSecond: received / elapsed,
    worstChunkP99Ms: p99,
    ...v,
    tolerance,
    samples,
    chunks,
  };
  await Deno.mkdir(out.replace(/\/[^/]*$/, ""), { recursive: true });
  await Deno.writeTextFile(out, JSON.stringify(results, null, 2) + "\n");
  console.log(`Results: ${out}`);
  return v.pass && storageOk ? 0 : 1;
}

if (import.meta.main) await runScript("soak", main);
