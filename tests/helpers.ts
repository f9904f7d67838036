/**
 * Test helpers: configs, an app on a real SQLite file, and a ringhook child
 * process started with exactly the permission flags of the `start` task.
 */
import assert from "node:assert/strict";
import { type Config, loadConfig } from "../src/config.ts";
import { type App, createApp } from "../src/app.ts";
import { openSqliteStore } from "../src/journal/remote.ts";
import { type CallState, parseTelephonyEvent, reduceCall } from "../src/calls/tracker.ts";
import type { Payload } from "../src/cli/payloads.ts";

/** The repository root. */
export const ROOT = new URL("../", import.meta.url).pathname;

/** A Config from env-style overrides (throws on config errors). */
export function testConfig(env: Record<string, string> = {}): Config {
  const r = loadConfig(
    { RINGHOOK_VERIFICATION_TOKEN: "test-token-123", RINGHOOK_BATCH_DELAY_MS: "1", ...env },
    (p) => Deno.readTextFileSync(p),
  );
  if (!r.ok) throw new Error(r.errors.join("; "));
  return r.config;
}

/** An app on a fresh SQLite file in a temp dir; `close()` removes everything. */
export async function testApp(
  env: Record<string, string> = {},
): Promise<App & { dir: string; dispose: () => Promise<void> }> {
  const dir = await Deno.makeTempDir({ prefix: "ringhook-test-" });
  const config = testConfig({ RINGHOOK_DATA_DIR: dir, ...env });
  const store = await openSqliteStore(`${dir}/ringhook.db`, config.durability);
  const app = await createApp(config, store);
  return {
    ...app,
    dir,
    dispose: async () => {
      await app.close();
      await store.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** Reads a fixture as text. */
export function fixtureText(name: string): string {
  return Deno.readTextFileSync(new URL(`./fixtures/${name}`, import.meta.url));
}

/** Reads a fixture as JSON. */
export function fixture<T = Record<string, unknown>>(name: string): T {
  return JSON.parse(fixtureText(name));
}

/** Lists fixtures whose names start with a prefix, sorted. */
export function fixtureNames(prefix: string): string[] {
  return [...Deno.readDirSync(new URL("./fixtures/", import.meta.url))]
    .map((e) => e.name)
    .filter((n) => n.startsWith(prefix) && n.endsWith(".json"))
    .sort();
}

/** A POST /webhook request. */
export function webhookPost(
  body: string | Uint8Array | Record<string, unknown> | null,
  headers: Record<string, string> = {},
  base = "http://ringhook.test",
): Request {
  const b = body === null
    ? null
    : typeof body === "string" || body instanceof Uint8Array
    ? body
    : JSON.stringify(body);
  return new Request(`${base}/webhook`, {
    method: "POST",
    headers: { "Verification-Token": "test-token-123", ...headers },
    body: b as BodyInit | null,
  });
}

/** The permission flags of the `start` task (which the compile task must share). */
export function serveFlags(): string[] {
  const deno = JSON.parse(Deno.readTextFileSync(`${ROOT}deno.json`));
  const start: string = deno.tasks.start;
  const m = start.match(/^deno run (.*) main\.ts serve$/);
  if (!m) throw new Error(`unexpected start task: ${start}`);
  return m[1].split(/\s+/);
}

/** The environment a child ringhook gets: nothing of ours but PATH, HOME and DENO_DIR. */
export function childEnv(env: Record<string, string> = {}): Record<string, string> {
  return {
    PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
    HOME: Deno.env.get("HOME") ?? "/tmp",
    ...(Deno.env.get("DENO_DIR") ? { DENO_DIR: Deno.env.get("DENO_DIR")! } : {}),
    NO_COLOR: "1",
    ...env,
  };
}

/** Runs `main.ts <args>` with the start task's permission flags and a clean environment. */
export async function runMain(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...serveFlags(), `${ROOT}main.ts`, ...args],
    cwd: ROOT,
    clearEnv: true,
    env: childEnv(env),
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

/** A free TCP port on loopback (for servers whose URL must be known before they start). */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** What the pure call reducer makes of notifications, in the order given: one state per session. */
export function reduceAll(notes: Payload[]): Map<string, CallState> {
  const out = new Map<string, CallState>();
  for (const n of notes) {
    const ev = parseTelephonyEvent(n);
    if (!ev) continue;
    out.set(ev.telephonySessionId, reduceCall(out.get(ev.telephonySessionId), ev).state);
  }
  return out;
}

/** A ringhook child process. */
export interface Child {
  port: number;
  url: string;
  dataDir: string;
  proc: Deno.ChildProcess;
  /** Every stdout+stderr line so far. */
  lines: string[];
  /** Sends a signal and waits for the exit status. */
  stop(signal?: Deno.Signal): Promise<Deno.CommandStatus>;
  /** Resolves when a line matching `re` has been printed. */
  waitFor(re: RegExp, timeoutMs?: number): Promise<string>;
}

/** Starts `main.ts serve` with the start task's flags, on port 0 unless told otherwise. */
export async function startServer(
  env: Record<string, string> = {},
  opts: { dataDir?: string; args?: string[] } = {},
): Promise<Child> {
  const dataDir = opts.dataDir ?? await Deno.makeTempDir({ prefix: "ringhook-e2e-" });
  const cmd = new Deno.Command(Deno.execPath(), {
    args: ["run", ...serveFlags(), `${ROOT}main.ts`, ...(opts.args ?? ["serve"])],
    cwd: ROOT,
    clearEnv: true,
    env: childEnv({
      RINGHOOK_PORT: "0",
      RINGHOOK_HOSTNAME: "127.0.0.1",
      RINGHOOK_DATA_DIR: dataDir,
      RINGHOOK_LOG_FORMAT: "json",
      ...env,
    }),
    stdout: "piped",
    stderr: "piped",
  });
  const proc = cmd.spawn();
  const lines: string[] = [];
  const watchers: Array<{ re: RegExp; resolve: (l: string) => void }> = [];
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    let buf = "";
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      buf += chunk;
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        lines.push(line);
        for (let w = watchers.length - 1; w >= 0; w--) {
          if (watchers[w].re.test(line)) watchers.splice(w, 1)[0].resolve(line);
        }
      }
    }
    if (buf) lines.push(buf);
  };
  const pumped = Promise.all([pump(proc.stdout), pump(proc.stderr)]);
  const waitFor = (re: RegExp, timeoutMs = 15_000) => {
    const found = lines.find((l) => re.test(l));
    if (found) return Promise.resolve(found);
    return new Promise<string>((resolve, reject) => {
      const t = setTimeout(() => {
        reject(new Error(`timed out waiting for ${re}; output:\n${lines.join("\n")}`));
      }, timeoutMs);
      watchers.push({
        re,
        resolve: (l) => {
          clearTimeout(t);
          resolve(l);
        },
      });
    });
  };
  const statusP = proc.status;
  const listening = await Promise.race([
    waitFor(/Listening on/),
    statusP.then((s) => {
      throw new Error(`ringhook exited with ${s.code} before listening:\n${lines.join("\n")}`);
    }),
  ]);
  const port = JSON.parse(listening).port as number;
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    dataDir,
    proc,
    lines,
    waitFor,
    async stop(signal: Deno.Signal = "SIGTERM") {
      try {
        proc.kill(signal);
      } catch {
        // already gone
      }
      const s = await statusP;
      await pumped;
      return s;
    },
  };
}

/** A seeded pseudo-random generator (mulberry32), for reproducible property tests. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * The crash test every engine runs: 16 clients stream `count` fresh events into `first`, which
 * is SIGKILLed once `killAfter` of them were acked; a second server on the same storage then
 * takes the client's retries. Asserts that every acked event is stored exactly once, that a
 * retry is "received" or (when its ack was lost) "duplicate", and that nothing is missing.
 */
export async function crashAndRetry(o: {
  first: Child;
  startSecond: () => Promise<Child>;
  /** POSTs one fresh event; resolves to the answer's status field, rejects when unreachable. */
  post: (url: string, uuid: string) => Promise<string>;
  stored: () => Promise<Map<string, number>> | Map<string, number>;
  count?: number;
  killAfter?: number;
}): Promise<Child> {
  const count = o.count ?? 1500;
  const killAfter = o.killAfter ?? 400;
  const uuids = Array.from({ length: count }, (_, i) => `crash-${i}-${crypto.randomUUID()}`);
  const acked = new Set<string>();
  const unacked = new Set<string>();
  let next = 0;
  let killed = false;
  await Promise.all(Array.from({ length: 16 }, async () => {
    while (next < count) {
      const uuid = uuids[next++];
      try {
        if ((await o.post(o.first.url, uuid)) === "received") acked.add(uuid);
        else unacked.add(uuid);
      } catch {
        unacked.add(uuid);
      }
      if (!killed && acked.size >= killAfter) {
        killed = true;
        o.first.proc.kill("SIGKILL");
      }
    }
  }));
  const status = await o.first.stop();
  assert.equal(status.signal, "SIGKILL");
  assert.ok(
    acked.size >= killAfter && unacked.size > 0,
    `acked ${acked.size}, unacked ${unacked.size}`,
  );

  const second = await o.startSecond();
  const before = await o.stored();
  for (const u of acked) assert.equal(before.get(u), 1, `acked ${u} is in the journal once`);
  let received = 0;
  let duplicate = 0;
  for (const u of unacked) {
    const answer = await o.post(second.url, u);
    if (answer === "received") received++;
    else if (answer === "duplicate") {
      duplicate++;
      assert.ok(before.has(u), "a duplicate was stored before the crash (its ack was lost)");
    } else assert.fail(`retry of ${u} answered ${answer}`);
  }
  assert.equal(received + duplicate, unacked.size);
  const after = await o.stored();
  assert.equal(after.size, count);
  assert.ok([...after.values()].every((n) => n === 1));
  return second;
}
