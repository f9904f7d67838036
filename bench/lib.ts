/**
 * Shared machinery for bench.ts and soak.ts: starting and stopping ringhook and the
 * bare baseline as child processes, driving them with wrk (or autocannon from npm when
 * wrk is missing), counting stored events, and reading CPU and memory from /proc.
 *
 * Everything listens on and talks to 127.0.0.1 only; every child started here is
 * registered and stopped by stopAll() (also on Ctrl-C).
 */
import { DatabaseSync } from "node:sqlite";

/** The repository root (bench/..). */
export const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
/** The realistic ~1 KB notification every event scenario sends. */
export const FIXTURE =
  `${ROOT}/tests/fixtures/telephony-inbound-answered-02-alice-party-setup.json`;
/** The autocannon release used when wrk is missing. */
export const AUTOCANNON = "npm:autocannon@8.0.0";
/** The Verification-Token and HMAC secret the benchmarked servers are started with. */
export const TOKEN = "vt_bench_9f1c0f6c2b7e4a7d8e5f0011";
/** The HMAC secret for the signed scenario. */
export const HMAC_SECRET = "bench-hmac-secret-5d41402abc4b2a76b9719d911017c592";
/** The permission flags of `deno task start` (see deno.json). */
export const SERVER_FLAGS = ["--allow-net", "--allow-env", "--allow-read", "--allow-write"];

/** A child server process started by this module. */
export interface Server {
  name: string;
  pid: number;
  port: number;
  url: string;
  /** The file that receives the child's stdout and stderr. */
  logFile: string;
  /** Where ringhook keeps its database (undefined for the bare server). */
  dbPath?: string;
  /** Stops the child: SIGTERM, then SIGKILL after `graceMs`; resolves with its exit code. */
  stop(graceMs?: number): Promise<number>;
  /** Resolves when the child exits by itself or is stopped. */
  exited: Promise<Deno.CommandStatus>;
}

/** What one load run measured, the same for wrk and autocannon. */
export interface LoadResult {
  tool: "wrk" | "autocannon";
  seconds: number;
  /** Completed responses. */
  requests: number;
  rps: number;
  latencyMs: { mean: number; p50: number; p90: number; p99: number; max: number };
  /** Socket errors and timeouts. */
  errors: number;
  /** Requests written (built by the generator). */
  sent: number;
  /** 200 answers with "received", 200 with "duplicate", other 200s, and non-200 answers. */
  received: number;
  duplicate: number;
  other200: number;
  non200: number;
}

/** What a load run sends. */
export interface LoadSpec {
  url: string;
  mode: "handshake" | "static" | "unique" | "hmac";
  seconds: number;
  connections: number;
  threads: number;
  /** Body template file with the @@UUID@@ marker. */
  template?: string;
  /** 19 characters `xxxxxxxx-xxxx-4xxx-` that start each fresh uuid. */
  prefix?: string;
  token?: string;
  secret?: string;
  header?: string;
  /** The fixed uuid for mode=static. */
  uuid?: string;
}

const children = new Set<Server>();
const loads = new Set<Deno.ChildProcess>();

/** Stops every child started here (servers and load generators). */
export async function stopAll(): Promise<void> {
  for (const p of loads) {
    try {
      p.kill("SIGKILL");
    } catch { /* already gone */ }
  }
  await Promise.all([...children].map((s) => s.stop(5000)));
}

let signalsHooked = false;
/** Makes Ctrl-C and SIGTERM stop every child before the bench exits. */
export function stopAllOnSignal(): void {
  if (signalsHooked) return;
  signalsHooked = true;
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(sig, () => {
      console.error(`\n${sig}: stopping the servers and load generators`);
      stopAll().finally(() => Deno.exit(130));
    });
  }
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** A random uuid start `xxxxxxxx-xxxx-4xxx-`, distinct for each load run. */
export function uuidPrefix(): string {
  return crypto.randomUUID().slice(0, 19);
}

/** Writes the fixture as a body template with the uuid moved last, as @@UUID@@. */
export async function writeTemplate(dir: string): Promise<{ path: string; bytes: number }> {
  const n = JSON.parse(await Deno.readTextFile(FIXTURE));
  delete n.uuid;
  // The uuid goes last so that the Lua HMAC reuses the hash state of the bytes before it.
  const text = JSON.stringify({ ...n, uuid: "@@UUID@@" }, null, 2);
  const path = `${dir}/body-template.json`;
  await Deno.writeTextFile(path, text);
  return {
    path,
    bytes: new TextEncoder().encode(text.replace("@@UUID@@", crypto.randomUUID())).length,
  };
}

/** Fills a template with one uuid. */
export function fillTemplate(template: string, uuid: string): string {
  return template.replace("@@UUID@@", uuid);
}

/** The environment of the bench without ringhook's variables, so only ours reach children. */
function baseEnv(): Record<string, string> {
  const env = Deno.env.toObject();
  for (const k of Object.keys(env)) {
    if (
      k.startsWith("RINGHOOK_") || k === "PORT" || k === "STATE_DIRECTORY" ||
      k === "CREDENTIALS_DIRECTORY"
    ) delete env[k];
  }
  return env;
}

async function spawnServer(
  name: string,
  args: string[],
  env: Record<string, string>,
  port: number,
  logFile: string,
  dbPath?: string,
): Promise<Server> {
  // sh execs deno with stdout/stderr in a file: the pid is deno's, and no pipe can fill up.
  const child = new Deno.Command("sh", {
    args: ["-c", 'exec "$@" >"$0" 2>&1', logFile, Deno.execPath(), ...args],
    env: { ...baseEnv(), ...env },
    clearEnv: true,
    cwd: ROOT,
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  let stopped: Promise<number> | undefined;
  const exited = child.status;
  const server: Server = {
    name,
    pid: child.pid,
    port,
    url: `http://127.0.0.1:${port}`,
    logFile,
    dbPath,
    exited,
    stop(graceMs = 15_000) {
      stopped ??= (async () => {
        try {
          child.kill("SIGTERM");
        } catch { /* already gone */ }
        let timer: ReturnType<typeof setTimeout> | undefined;
        const killed = new Promise<void>((resolve) => {
          timer = setTimeout(() => {
            try {
              child.kill("SIGKILL");
            } catch { /* already gone */ }
            resolve();
          }, graceMs);
        });
        await Promise.race([exited, killed]);
        const status = await exited;
        clearTimeout(timer);
        children.delete(server);
        return status.code;
      })();
      return stopped;
    },
  };
  children.add(server);
  // Ready when /healthz answers; fail fast when the child dies first.
  const deadline = Date.now() + 30_000;
  let dead = false;
  exited.then(() => (dead = true));
  while (true) {
    if (dead) {
      const log = await Deno.readTextFile(logFile).catch(() => "");
      await server.stop();
      throw new Error(`${name} exited before listening:\n${log.slice(-2000)}`);
    }
    try {
      const r = await fetch(`${server.url}/healthz`);
      await r.body?.cancel();
      if (r.status === 200) return server;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) {
      await server.stop();
      throw new Error(`${name} did not answer /healthz within 30 s (log: ${logFile})`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Starts ringhook (`main.ts serve`) on a free port with a fresh data dir and the given env. */
export function startRinghook(
  dataDir: string,
  env: Record<string, string>,
  extraDenoFlags: string[] = [],
): Promise<Server> {
  const port = freePort();
  return spawnServer(
    "ringhook",
    ["run", ...SERVER_FLAGS, ...extraDenoFlags, "main.ts", "serve"],
    {
      RINGHOOK_PORT: String(port),
      RINGHOOK_HOSTNAME: "127.0.0.1",
      RINGHOOK_DATA_DIR: dataDir,
      RINGHOOK_RETENTION_DAYS: "0",
      ...env,
    },
    port,
    `${dataDir}/server.log`,
    `${dataDir}/ringhook.db`,
  );
}

/** Starts the bare Deno.serve baseline (bench/bare.ts). */
export function startBare(dir: string): Promise<Server> {
  const port = freePort();
  return spawnServer(
    "bare",
    ["run", "--allow-net=127.0.0.1", "--allow-env=BARE_PORT", "bench/bare.ts"],
    { BARE_PORT: String(port) },
    port,
    `${dir}/bare.log`,
  );
}

/** Counts the events stored in a ringhook database (the server should be stopped). */
export function countEvents(dbPath: string): number {
  const db = new DatabaseSync(dbPath, { readOnly: true });
  try {
    const row = db.prepare("SELECT count(*) AS n FROM events").get() as { n: number };
    return Number(row.n);
  } finally {
    db.close();
  }
}

/** Sums and counts of ringhook's journal histograms from /metrics (empty when not served). */
export async function journalMetrics(url: string): Promise<Record<string, number>> {
  try {
    const r = await fetch(`${url}/metrics`);
    const text = await r.text();
    if (r.status !== 200) return {};
    const out: Record<string, number> = {};
    for (const m of text.matchAll(/^(ringhook_journal_\w+_(?:sum|count)) (\S+)$/gm)) {
      out[m[1]] = Number(m[2]);
    }
    return out;
  } catch {
    return {};
  }
}

/** Events ringhook has stored so far (ringhook_events_total{outcome="stored"}), or undefined. */
export async function storedSoFar(url: string): Promise<number | undefined> {
  try {
    const r = await fetch(`${url}/metrics`);
    const text = await r.text();
    const m = text.match(/^ringhook_events_total\{outcome="stored"\} (\S+)$/m);
    return r.status === 200 && m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** True when wrk is on the PATH. */
export async function haveWrk(): Promise<boolean> {
  try {
    await new Deno.Command("wrk", { args: ["--version"], stdout: "null", stderr: "null" })
      .output();
    return true;
  } catch {
    return false;
  }
}

/** How to install wrk, printed when it is missing. */
export const WRK_HINT =
  "wrk is not installed; using autocannon from npm instead (slower: it runs in JavaScript).\n" +
  "  Install wrk for better numbers: apt-get install -y wrk  (Debian/Ubuntu), brew install wrk" +
  " (macOS), dnf install wrk (Fedora).";

/** Runs one load with wrk or autocannon and returns what it measured. */
export function runLoad(tool: "wrk" | "autocannon", spec: LoadSpec): Promise<LoadResult> {
  return tool === "wrk" ? runWrk(spec) : runAutocannon(spec);
}

function loadArgs(spec: LoadSpec): string[] {
  const kv: Record<string, string | undefined> = {
    mode: spec.mode,
    template: spec.template,
    prefix: spec.prefix,
    token: spec.token,
    secret: spec.secret,
    header: spec.header,
    uuid: spec.uuid,
  };
  return Object.entries(kv).filter(([, v]) => v !== undefined).map(([k, v]) => `${k}=${v}`);
}

async function runChild(cmd: Deno.Command, marker: string): Promise<Record<string, unknown>> {
  const child = cmd.spawn();
  loads.add(child);
  try {
    const out = await child.output();
    const stdout = new TextDecoder().decode(out.stdout);
    const line = stdout.split("\n").find((l) => l.startsWith(marker + " "));
    if (!out.success || !line) {
      const stderr = new TextDecoder().decode(out.stderr);
      throw new Error(`load generator failed (exit ${out.code}):\n${stdout}\n${stderr}`.trim());
    }
    return JSON.parse(line.slice(marker.length + 1));
  } finally {
    loads.delete(child);
  }
}

async function runWrk(spec: LoadSpec): Promise<LoadResult> {
  const threads = Math.max(1, Math.min(spec.threads, spec.connections));
  const r = await runChild(
    new Deno.Command("wrk", {
      args: [
        "-t",
        String(threads),
        "-c",
        String(spec.connections),
        "-d",
        `${spec.seconds}s`,
        "--timeout",
        "10s",
        "-s",
        `${ROOT}/bench/wrk.lua`,
        `${spec.url}/webhook`,
        "--",
        ...loadArgs(spec),
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }),
    "WRKJSON",
  ) as {
    durationUs: number;
    requests: number;
    errors: Record<string, number>;
    latencyUs: Record<string, number>;
    sent: number;
    received: number;
    duplicate: number;
    other200: number;
    non200: number;
  };
  const seconds = r.durationUs / 1e6;
  const ms = (us: number) => Math.round(us) / 1000;
  const e = r.errors;
  return {
    tool: "wrk",
    seconds,
    requests: r.requests,
    rps: r.requests / seconds,
    latencyMs: {
      mean: ms(r.latencyUs.mean),
      p50: ms(r.latencyUs.p50),
      p90: ms(r.latencyUs.p90),
      p99: ms(r.latencyUs.p99),
      max: ms(r.latencyUs.max),
    },
    errors: e.connect + e.read + e.write + e.timeout,
    sent: r.sent,
    received: r.received,
    duplicate: r.duplicate,
    other200: r.other200,
    non200: r.non200,
  };
}

async function runAutocannon(spec: LoadSpec): Promise<LoadResult> {
  const r = await runChild(
    new Deno.Command(Deno.execPath(), {
      // No lock file and no local node_modules: the bench leaves the project's files alone.
      args: [
        "run",
        "-A",
        "--no-lock",
        "--node-modules-dir=none",
        `${ROOT}/bench/autocannon_runner.ts`,
        JSON.stringify({ ...spec, package: AUTOCANNON }),
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }),
    "ACJSON",
  );
  return r as unknown as LoadResult;
}

/** CPU seconds (user + system) a process has used, from /proc/<pid>/stat. */
export function cpuSeconds(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
}

/** CPU seconds per thread of a process, keyed by "name/tid". */
export function threadCpuSeconds(pid: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const e of Deno.readDirSync(`/proc/${pid}/task`)) {
    try {
      const stat = Deno.readTextFileSync(`/proc/${pid}/task/${e.name}/stat`);
      const name = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      out[`${name}/${e.name}`] = (Number(f[11]) + Number(f[12])) / 100;
    } catch { /* the thread ended */ }
  }
  return out;
}

/** Busy and total jiffies of the whole machine, from /proc/stat. */
export function machineJiffies(): { busy: number; total: number } {
  const line = Deno.readTextFileSync("/proc/stat").split("\n")[0];
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const total = v.reduce((a, b) => a + b, 0);
  const idle = v[3] + (v[4] ?? 0);
  return { busy: total - idle, total };
}

/** The resident set size of a process in KiB (VmRSS in /proc/<pid>/status). */
export function rssKib(pid: number): number {
  const m = Deno.readTextFileSync(`/proc/${pid}/status`).match(/^VmRSS:\s+(\d+)\s+kB/m);
  return m ? Number(m[1]) : NaN;
}

/** Parses `--name=value` and `--name value` flags; bare `--flag` is "true". */
export function parseFlags(argv: string[]): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith("--")) throw new Error(`unexpected argument ${a}`);
    const eq = a.indexOf("=");
    let name: string;
    let value: string;
    if (eq > 0) {
      name = a.slice(2, eq);
      value = a.slice(eq + 1);
    } else {
      name = a.slice(2);
      value = i + 1 < argv.length && !argv[i + 1].startsWith("--") ? argv[++i] : "true";
    }
    out.set(name, [...(out.get(name) ?? []), value]);
  }
  return out;
}

/** Formats rows as an aligned text table (first row = header). */
export function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  const line = (r: string[]) =>
    r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ");
  return [line(rows[0]), widths.map((w) => "-".repeat(w)).join("  "), ...rows.slice(1).map(line)]
    .join("\n");
}

/** The entry of a bench script: runs `main`, stops every child on failure, exits with its code. */
export async function runScript(name: string, main: () => Promise<number>): Promise<never> {
  let code = 1;
  try {
    code = await main();
  } catch (e) {
    console.error(`${name} failed: ${(e as Error).stack ?? e}`);
    await stopAll();
  }
  Deno.exit(code);
}
