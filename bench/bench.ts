/**
 * `deno task bench`: ringhook against a bare Deno.serve under the same load.
 *
 * For each scenario it starts ringhook (fresh data dir, loopback only), drives it and the
 * bare baseline (bench/bare.ts) with wrk (or autocannon from npm) at 50 connections after a
 * short warm-up, prints requests/s, p50 and p99 of both and their ratio, writes
 * bench/results/latest.json, and then proves nothing was lost: the events stored in SQLite
 * must equal the 200 "received" answers (plus at most the requests still in flight when the
 * load generator stopped, whose answers it never read).
 *
 * Scenarios:
 *   handshake  POST, empty body, Validation-Token
 *   event      a new event with Verification-Token, a fresh uuid every request
 *   duplicate  the same uuid every time (stored once first)
 *   hmac       a new event signed with X-Hub-Signature-256 (server has RINGHOOK_HMAC_SECRET);
 *              wrk signs each body itself (SHA-256 in LuaJIT, see bench/wrk.lua)
 *
 * Flags: --seconds 10 --warmup 2 --connections 50 --threads 2
 *        --scenarios handshake,event,duplicate,hmac --info-scenarios event (also run these with
 *        RINGHOOK_LOG_LEVEL=info; "none" to skip) --tool auto|wrk|autocannon
 *        --env KEY=VALUE (repeatable, passed to ringhook) --out bench/results/latest.json
 *        --strict (exit 1 when a target is missed) --keep (keep the temp dir and logs)
 */
import {
  countEvents,
  cpuSeconds,
  fillTemplate,
  haveWrk,
  HMAC_SECRET,
  journalMetrics,
  type LoadResult,
  type LoadSpec,
  machineJiffies,
  parseFlags,
  ROOT,
  runLoad,
  runScript,
  type Server,
  startBare,
  startRinghook,
  stopAll,
  stopAllOnSignal,
  table,
  threadCpuSeconds,
  TOKEN,
  uuidPrefix,
  writeTemplate,
  WRK_HINT,
} from "./lib.ts";

/** The scenarios bench.ts knows. */
export type Scenario = "handshake" | "event" | "duplicate" | "hmac";

/** The settings of one bench run. */
export interface BenchOptions {
  seconds: number;
  warmup: number;
  connections: number;
  threads: number;
  scenarios: Scenario[];
  infoScenarios: Scenario[];
  /** "auto" until main() has looked for wrk. */
  tool: "auto" | "wrk" | "autocannon";
  env: Record<string, string>;
  out: string;
  strict: boolean;
  keep: boolean;
}

/** One side (ringhook or bare) of a measured scenario. */
export interface Side extends LoadResult {
  /** Cores the server process used during the measured run. */
  serverCores: number;
  /** The busiest threads of the server (cores), ringhook only. */
  threadCores?: Record<string, number>;
  /** How busy the whole machine was (0..1 of all cores) during the measured run. */
  machineBusy: number;
  /** Group commits during the measured run (ringhook only): count, mean batch, mean ms. */
  commits?: { count: number; meanBatch: number; meanMs: number };
  warmup: LoadResult;
}

/** One row of the results. */
export interface Row {
  scenario: Scenario;
  logLevel: string;
  env: Record<string, string>;
  ringhook: Side;
  bare: Side;
  ratio: number;
  target?: { minRatio: number; maxP99Ms?: number; met: boolean };
  storage: {
    stored: number;
    expectedMin: number;
    expectedMax: number;
    ok: boolean;
    note: string;
  };
  serverExit: number;
}

const ALL: Scenario[] = ["handshake", "event", "duplicate", "hmac"];
const DUP_UUID = "bench-duplicate-0000-0000-000000000001";

function options(argv: string[]): BenchOptions {
  const f = parseFlags(argv);
  const one = (k: string, d: string) => f.get(k)?.at(-1) ?? d;
  const num = (k: string, d: number) => {
    const v = Number(one(k, String(d)));
    if (!Number.isFinite(v) || v <= 0) throw new Error(`--${k} must be a positive number`);
    return v;
  };
  const scen = (k: string, d: string): Scenario[] => {
    const v = one(k, d);
    if (v === "none" || v === "") return [];
    const list = v.split(",").map((s) => s.trim()) as Scenario[];
    for (const s of list) if (!ALL.includes(s)) throw new Error(`unknown scenario ${s}`);
    return list;
  };
  const env: Record<string, string> = {};
  for (const kv of f.get("env") ?? []) {
    const i = kv.indexOf("=");
    if (i <= 0) throw new Error(`--env expects KEY=VALUE, got ${kv}`);
    env[kv.slice(0, i)] = kv.slice(i + 1);
  }
  const tool = one("tool", "auto");
  if (!["auto", "wrk", "autocannon"].includes(tool)) {
    throw new Error("--tool: auto, wrk or autocannon");
  }
  return {
    seconds: num("seconds", 10),
    warmup: num("warmup", 2),
    connections: num("connections", 50),
    threads: num("threads", 2),
    scenarios: scen("scenarios", ALL.join(",")),
    infoScenarios: scen("info-scenarios", "event"),
    tool: tool as BenchOptions["tool"],
    env,
    out: one("out", `${ROOT}/bench/results/latest.json`),
    strict: one("strict", "false") === "true",
    keep: one("keep", "false") === "true",
  };
}

/** Warms up, then measures one load against a server, with CPU use from /proc. */
export async function measure(
  o: BenchOptions,
  server: Server,
  spec: Omit<LoadSpec, "url" | "seconds" | "connections" | "threads">,
  isRinghook: boolean,
): Promise<Side> {
  const base = { ...spec, url: server.url, connections: o.connections, threads: o.threads };
  const tool = o.tool === "autocannon" ? "autocannon" : "wrk";
  const warmup = await runLoad(tool, { ...base, seconds: o.warmup, prefix: uuidPrefix() });
  const cpu0 = cpuSeconds(server.pid);
  const th0 = isRinghook ? threadCpuSeconds(server.pid) : {};
  const j0 = isRinghook ? await journalMetrics(server.url) : {};
  const m0 = machineJiffies();
  const t0 = performance.now();
  const r = await runLoad(tool, { ...base, seconds: o.seconds, prefix: uuidPrefix() });
  const wall = (performance.now() - t0) / 1000;
  const m1 = machineJiffies();
  const cpu1 = cpuSeconds(server.pid);
  const side: Side = {
    ...r,
    serverCores: round((cpu1 - cpu0) / wall, 2),
    machineBusy: round((m1.busy - m0.busy) / Math.max(1, m1.total - m0.total), 2),
    warmup,
  };
  if (isRinghook) {
    const j1 = await journalMetrics(server.url);
    const d = (k: string) => (j1[k] ?? 0) - (j0[k] ?? 0);
    const count = d("ringhook_journal_commit_seconds_count");
    if (count > 0) {
      side.commits = {
        count,
        meanBatch: round(d("ringhook_journal_batch_size_sum") / count, 1),
        meanMs: round(d("ringhook_journal_commit_seconds_sum") * 1000 / count, 2),
      };
    }
    const th1 = threadCpuSeconds(server.pid);
    const cores: Record<string, number> = {};
    for (const [k, v] of Object.entries(th1)) {
      const c = round((v - (th0[k] ?? 0)) / wall, 2);
      if (c >= 0.02) cores[k] = c;
    }
    side.threadCores = Object.fromEntries(Object.entries(cores).sort((a, b) => b[1] - a[1]));
  }
  return side;
}

function specFor(
  scenario: Scenario,
  template: string,
): Omit<LoadSpec, "url" | "seconds" | "connections" | "threads"> {
  switch (scenario) {
    case "handshake":
      return { mode: "handshake" };
    case "event":
      return { mode: "unique", template, token: TOKEN };
    case "duplicate":
      return { mode: "static", template, token: TOKEN, uuid: DUP_UUID };
    case "hmac":
      return { mode: "hmac", template, secret: HMAC_SECRET, header: "X-Hub-Signature-256" };
  }
}

/** Checks what the database holds against what the load generator was told. */
function checkStorage(
  scenario: Scenario,
  stored: number,
  runs: LoadResult[],
): Row["storage"] {
  const sum = (k: keyof LoadResult) => runs.reduce((a, r) => a + (r[k] as number), 0);
  const received = sum("received");
  const unanswered = sum("sent") - sum("requests");
  const wrong = sum("non200") + (scenario === "handshake" ? 0 : sum("other200"));
  let expectedMin = received;
  let expectedMax = received + unanswered;
  let note = `${received} answered "received" + ${unanswered} unanswered at the cut-off`;
  if (scenario === "handshake") {
    expectedMin = expectedMax = 0;
    note = "handshakes store nothing";
  } else if (scenario === "duplicate") {
    expectedMin = expectedMax = 1;
    note = `1 stored first; ${sum("duplicate")} answered "duplicate", ${received} "received"`;
  } else if (sum("duplicate") > 0) {
    note += `; ${sum("duplicate")} unexpected "duplicate" answers`;
  }
  const ok = stored >= expectedMin && stored <= expectedMax && wrong === 0 &&
    (scenario !== "duplicate" || received === 0) &&
    (scenario === "duplicate" || sum("duplicate") === 0);
  if (wrong > 0) note += `; ${wrong} unexpected answers (non-200 or wrong body)`;
  return { stored, expectedMin, expectedMax, ok, note };
}

async function runScenario(
  o: BenchOptions,
  tmp: string,
  template: { path: string; text: string },
  scenario: Scenario,
  bareSide: Side,
  logLevel: string,
  index: number,
): Promise<Row> {
  const dataDir = `${tmp}/ringhook-${index}-${scenario}-${logLevel}`;
  await Deno.mkdir(dataDir, { recursive: true });
  const env: Record<string, string> = { RINGHOOK_LOG_LEVEL: logLevel, ...o.env };
  if (scenario === "hmac") env.RINGHOOK_HMAC_SECRET = HMAC_SECRET;
  else env.RINGHOOK_VERIFICATION_TOKEN = TOKEN;
  const server = await startRinghook(dataDir, env);
  let side: Side;
  try {
    if (scenario === "duplicate") {
      const r = await fetch(`${server.url}/webhook`, {
        method: "POST",
        headers: { "Content-Type": "application/json", "Verification-Token": TOKEN },
        body: fillTemplate(template.text, DUP_UUID),
      });
      const text = await r.text();
      if (r.status !== 200 || !text.includes('"received"')) {
        throw new Error(`storing the duplicate's first copy failed: ${r.status} ${text}`);
      }
    }
    side = await measure(o, server, specFor(scenario, template.path), true);
  } catch (e) {
    await server.stop();
    throw e;
  }
  const serverExit = await server.stop();
  const stored = countEvents(server.dbPath!);
  const storage = checkStorage(scenario, stored, [side.warmup, side]);
  const ratio = side.rps / bareSide.rps;
  let target: Row["target"];
  if (scenario === "handshake") target = { minRatio: 0.8, met: ratio >= 0.8 };
  if (scenario === "event") {
    target = {
      minRatio: 0.5,
      maxP99Ms: 10,
      met: ratio >= 0.5 && side.latencyMs.p99 <= 10,
    };
  }
  return {
    scenario,
    logLevel,
    env: o.env,
    ringhook: side,
    bare: bareSide,
    ratio: round(ratio, 3),
    target,
    storage,
    serverExit,
  };
}

function round(n: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

/** Renders the results table. */
export function render(rows: Row[]): string {
  const head = [
    "scenario",
    "log",
    "ringhook req/s",
    "p50 ms",
    "p99 ms",
    "bare req/s",
    "p50 ms",
    "p99 ms",
    "ratio",
    "target",
    "met",
    "rh cpu",
    "bare cpu",
    "box busy",
    "commits/s",
    "batch",
    "commit ms",
    "stored check",
  ];
  const body = rows.map((r) => [
    r.scenario,
    r.logLevel,
    r.ringhook.rps.toFixed(0),
    r.ringhook.latencyMs.p50.toFixed(2),
    r.ringhook.latencyMs.p99.toFixed(2),
    r.bare.rps.toFixed(0),
    r.bare.latencyMs.p50.toFixed(2),
    r.bare.latencyMs.p99.toFixed(2),
    r.ratio.toFixed(2),
    r.target
      ? `≥${r.target.minRatio}×${r.target.maxP99Ms ? `, p99≤${r.target.maxP99Ms}` : ""}`
      : "-",
    r.target ? (r.target.met ? "yes" : "NO") : "-",
    r.ringhook.serverCores.toFixed(2),
    r.bare.serverCores.toFixed(2),
    `${Math.round(r.ringhook.machineBusy * 100)}%`,
    r.ringhook.commits ? (r.ringhook.commits.count / r.ringhook.seconds).toFixed(0) : "-",
    r.ringhook.commits ? r.ringhook.commits.meanBatch.toFixed(1) : "-",
    r.ringhook.commits ? r.ringhook.commits.meanMs.toFixed(2) : "-",
    `${r.storage.ok ? "ok" : "FAIL"} ${r.storage.stored}`,
  ]);
  return table([head, ...body]);
}

async function main(): Promise<number> {
  const o = options(Deno.args);
  stopAllOnSignal();
  if (o.tool === "auto") {
    if (await haveWrk()) o.tool = "wrk";
    else {
      console.error(WRK_HINT);
      o.tool = "autocannon";
    }
  } else if (o.tool === "wrk" && !(await haveWrk())) {
    console.error(WRK_HINT.split("\n")[1]);
    return 2;
  }
  const tmp = await Deno.makeTempDir({ prefix: "ringhook-bench-" });
  const tpl = await writeTemplate(tmp);
  const template = { path: tpl.path, text: await Deno.readTextFile(tpl.path) };
  const runs = o.scenarios.length + o.scenarios.filter((s) => o.infoScenarios.includes(s)).length +
    o.scenarios.length;
  console.log(
    `ringhook bench: ${o.tool}, ${o.connections} connections, ${o.threads} load threads, ` +
      `${o.warmup} s warm-up + ${o.seconds} s per run, ${runs} runs (~${
        Math.ceil(runs * (o.warmup + o.seconds + 1))
      } s); body ${tpl.bytes} bytes; ${navigator.hardwareConcurrency} cores; temp ${tmp}` +
      (Object.keys(o.env).length ? `; env ${JSON.stringify(o.env)}` : ""),
  );
  const rows: Row[] = [];
  let failed = false;
  try {
    const bare = await startBare(tmp);
    let index = 0;
    for (const scenario of o.scenarios) {
      const bareSide = await measure(o, bare, specFor(scenario, template.path), false);
      const levels = ["warning", ...(o.infoScenarios.includes(scenario) ? ["info"] : [])];
      for (const level of levels) {
        const row = await runScenario(o, tmp, template, scenario, bareSide, level, index++);
        rows.push(row);
        console.log(
          `  ${scenario} (${level}): ringhook ${row.ringhook.rps.toFixed(0)} req/s p99 ` +
            `${row.ringhook.latencyMs.p99} ms, bare ${bareSide.rps.toFixed(0)} req/s, ratio ` +
            `${row.ratio}; stored ${row.storage.stored} (${row.storage.ok ? "ok" : "FAIL"}: ` +
            `${row.storage.note})`,
        );
        if (!row.storage.ok) failed = true;
      }
    }
  } finally {
    await stopAll();
    if (!o.keep) await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
  console.log("\n" + render(rows));
  if (o.tool === "autocannon") {
    console.log(
      "\nnote: autocannon runs in JavaScript and saturates near the bare server's rate, so the " +
        "ratios are optimistic; install wrk for a fair baseline.",
    );
  }
  const missed = rows.filter((r) => r.target && !r.target.met);
  console.log(
    `\nTargets: event (token, durable ack) ≥ 0.5× bare with p99 ≤ 10 ms; handshake ≥ 0.8× bare. ` +
      (missed.length
        ? `MISSED: ${missed.map((r) => `${r.scenario}/${r.logLevel}`).join(", ")}`
        : "all met."),
  );
  console.log(
    failed
      ? "STORAGE CHECK FAILED: the database does not match the answers (see above)."
      : 'Storage check: every 200 "received" answer is in the database; nothing was lost.',
  );
  const results = {
    startedAt: new Date().toISOString(),
    tool: o.tool,
    connections: o.connections,
    loadThreads: o.threads,
    seconds: o.seconds,
    warmupSeconds: o.warmup,
    bodyBytes: tpl.bytes,
    cores: navigator.hardwareConcurrency,
    deno: Deno.version.deno,
    env: o.env,
    rows,
  };
  await Deno.mkdir(o.out.replace(/\/[^/]*$/, ""), { recursive: true });
  await Deno.writeTextFile(o.out, JSON.stringify(results, null, 2) + "\n");
  console.log(`Results: ${o.out}${o.keep ? `; logs and databases kept in ${tmp}` : ""}`);
  if (failed) return 1;
  return o.strict && missed.length ? 1 : 0;
}

if (import.meta.main) await runScript("bench", main);
