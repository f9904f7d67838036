/**
 * `deno run -A bench/profile.ts`: a CPU profile of ringhook's ack path. Starts ringhook with
 * --inspect on 127.0.0.1, drives one bench scenario with wrk, records a V8 CPU profile of
 * every isolate (the HTTP thread and the journal worker) through the inspector protocol,
 * writes the .cpuprofile files (open them in Chrome DevTools) and prints where the time went.
 *
 * Flags: --scenario event|handshake|duplicate|hmac (default event) --seconds 5
 *        --connections 50 --threads 2 --env KEY=VALUE (repeatable) --top 25
 *        --out-dir DIR (default: a new temp dir; profiles are megabytes, keep them out of git)
 */
import {
  freePort,
  haveWrk,
  HMAC_SECRET,
  parseFlags,
  ROOT,
  runLoad,
  runScript,
  startRinghook,
  stopAll,
  stopAllOnSignal,
  table,
  TOKEN,
  uuidPrefix,
  writeTemplate,
  WRK_HINT,
} from "./lib.ts";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

/** A V8 CPU profile as the inspector returns it. */
export interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

/** Talks to one inspector target over its WebSocket. */
async function connect(wsUrl: string) {
  const ws = new WebSocket(wsUrl);
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = reject;
  });
  let next = 1;
  const waiting = new Map<number, (v: unknown) => void>();
  ws.onmessage = (e) => {
    const msg = JSON.parse(e.data);
    if (msg.id && waiting.has(msg.id)) {
      waiting.get(msg.id)!(msg.result ?? msg.error);
      waiting.delete(msg.id);
    }
  };
  return {
    send(method: string, params: Record<string, unknown> = {}): Promise<unknown> {
      const id = next++;
      ws.send(JSON.stringify({ id, method, params }));
      return new Promise((resolve) => waiting.set(id, resolve));
    },
    close: () => ws.close(),
  };
}

/** Self time per function and per source file of a profile, in ms, largest first. */
export function summarize(p: CpuProfile): {
  total: number;
  byFunction: [string, number][];
  byFile: [string, number][];
} {
  const self = new Map<number, number>();
  for (let i = 0; i < p.samples.length; i++) {
    const dt = (p.timeDeltas[i + 1] ?? 0) / 1000;
    self.set(p.samples[i], (self.get(p.samples[i]) ?? 0) + dt);
  }
  const byFunction = new Map<string, number>();
  const byFile = new Map<string, number>();
  let total = 0;
  for (const n of p.nodes) {
    const t = self.get(n.id) ?? 0;
    if (t === 0) continue;
    total += t;
    const url = n.callFrame.url.replace(`file://${ROOT}/`, "").replace(/^.*node_modules\//, "npm:");
    const file = url || "(native/vm)";
    const fn = `${n.callFrame.functionName || "(anonymous)"} ${
      url ? `${file.split("/").slice(-2).join("/")}:${n.callFrame.lineNumber + 1}` : ""
    }`.trim();
    byFunction.set(fn, (byFunction.get(fn) ?? 0) + t);
    byFile.set(file, (byFile.get(file) ?? 0) + t);
  }
  const sort = (m: Map<string, number>) => [...m.entries()].sort((a, b) => b[1] - a[1]);
  return { total, byFunction: sort(byFunction), byFile: sort(byFile) };
}

async function main(): Promise<number> {
  const f = parseFlags(Deno.args);
  const one = (k: string, d: string) => f.get(k)?.at(-1) ?? d;
  const scenario = one("scenario", "event");
  const seconds = Number(one("seconds", "5"));
  const top = Number(one("top", "25"));
  const outDir = one("out-dir", "") || await Deno.makeTempDir({ prefix: "ringhook-cpuprofile-" });
  const env: Record<string, string> = { RINGHOOK_LOG_LEVEL: "warning" };
  for (const kv of f.get("env") ?? []) {
    const i = kv.indexOf("=");
    env[kv.slice(0, i)] = kv.slice(i + 1);
  }
  if (!(await haveWrk())) {
    console.error(WRK_HINT.split("\n")[1]);
    return 2;
  }
  stopAllOnSignal();
  const tmp = await Deno.makeTempDir({ prefix: "ringhook-profile-" });
  try {
    const tpl = await writeTemplate(tmp);
    if (scenario === "hmac") env.RINGHOOK_HMAC_SECRET = HMAC_SECRET;
    else env.RINGHOOK_VERIFICATION_TOKEN = TOKEN;
    const inspect = freePort();
    const server = await startRinghook(tmp, env, [`--inspect=127.0.0.1:${inspect}`]);
    const mode = { event: "unique", handshake: "handshake", duplicate: "static", hmac: "hmac" }[
      scenario
    ] as "unique";
    const spec = {
      url: server.url,
      mode,
      connections: Number(one("connections", "50")),
      threads: Number(one("threads", "2")),
      template: tpl.path,
      token: scenario === "hmac" ? undefined : TOKEN,
      secret: HMAC_SECRET,
      uuid: "profile-duplicate-uuid",
    };
    await runLoad("wrk", { ...spec, seconds: 1, prefix: uuidPrefix() }); // warm-up (and JIT)
    const targets = await (await fetch(`http://127.0.0.1:${inspect}/json/list`)).json() as {
      title: string;
      url: string;
      webSocketDebuggerUrl: string;
    }[];
    const sessions = await Promise.all(targets.map(async (t) => {
      const s = await connect(t.webSocketDebuggerUrl);
      await s.send("Profiler.enable");
      await s.send("Profiler.setSamplingInterval", { interval: 100 });
      await s.send("Profiler.start");
      return { target: t, s };
    }));
    const load = await runLoad("wrk", { ...spec, seconds, prefix: uuidPrefix() });
    console.log(
      `${scenario}: ${load.rps.toFixed(0)} req/s, p50 ${load.latencyMs.p50} ms, p99 ` +
        `${load.latencyMs.p99} ms under the profiler (${targets.length} isolates)`,
    );
    for (const [i, { target, s }] of sessions.entries()) {
      const { profile } = await s.send("Profiler.stop") as { profile: CpuProfile };
      s.close();
      const name = `profile-${scenario}-${i}-${target.url.includes("worker") ? "worker" : "main"}`;
      await Deno.mkdir(outDir, { recursive: true });
      await Deno.writeTextFile(`${outDir}/${name}.cpuprofile`, JSON.stringify(profile));
      const sum = summarize(profile);
      const pct = (ms: number) => `${(ms / sum.total * 100).toFixed(1)}%`;
      const wall = (profile.endTime - profile.startTime) / 1000;
      const busy = sum.byFunction.filter(([k]) => k !== "(idle)").reduce((a, [, v]) => a + v, 0);
      console.log(
        `\n== ${target.title} ${target.url} -> ${outDir}/${name}.cpuprofile\n` +
          `   busy ${(busy / wall * 100).toFixed(0)}% of ${(wall / 1000).toFixed(1)} s; ` +
          `per request ${(busy * 1000 / Math.max(1, load.requests)).toFixed(1)} µs`,
      );
      console.log(table([
        ["self time by file", "ms", "share"],
        ...sum.byFile.slice(0, 12).map(([k, v]) => [k.slice(0, 70), v.toFixed(0), pct(v)]),
      ]));
      console.log(table([
        ["self time by function", "ms", "share"],
        ...sum.byFunction.slice(0, top).map(([k, v]) => [k.slice(0, 90), v.toFixed(0), pct(v)]),
      ]));
    }
    await server.stop();
  } finally {
    await stopAll();
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
  return 0;
}

if (import.meta.main) await runScript("profile", main);
