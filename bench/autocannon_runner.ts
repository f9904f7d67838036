/**
 * The load generator bench.ts falls back to when wrk is missing: autocannon from npm,
 * driven through its API so each request can carry a fresh uuid and an HMAC signature.
 * Prints one line "ACJSON {...}" shaped like lib.ts's LoadResult.
 *
 * Run by lib.ts: deno run -A --no-lock --node-modules-dir=none bench/autocannon_runner.ts '<json>'
 */
import { createHmac } from "node:crypto";
import type { LoadSpec } from "./lib.ts";

/** A LoadSpec (lib.ts) plus the autocannon package to import. */
interface Spec extends Omit<LoadSpec, "threads"> {
  package: string;
}

/** Runs one load as described by `spec` and returns the LoadResult fields. */
export async function run(spec: Spec): Promise<Record<string, unknown>> {
  // A computed specifier: `deno check` and the lock file never see the package.
  const { default: autocannon } = await import(spec.package);
  const headers: Record<string, string> = {
    "content-type": "application/json; charset=UTF-8",
    "user-agent": "RingCentral-Webhook/8.3",
    accept: "application/json",
  };
  if (spec.token) headers["verification-token"] = spec.token;
  let before = "";
  let after = "";
  if (spec.mode !== "handshake") {
    const template = await Deno.readTextFile(spec.template!);
    [before, after] = template.split("@@UUID@@");
  }
  let sent = 0;
  let n = 0;
  const counts = { received: 0, duplicate: 0, other200: 0, non200: 0 };
  const bodyFor = (): { body: string; headers: Record<string, string> } => {
    if (spec.mode === "handshake") {
      return { body: "", headers: { ...headers, "validation-token": crypto.randomUUID() } };
    }
    if (spec.mode === "static") return { body: before + spec.uuid + after, headers };
    const body = before + spec.prefix + "8000-" + (++n).toString(16).padStart(12, "0") + after;
    if (spec.mode === "unique") return { body, headers };
    const sig = createHmac("sha256", spec.secret!).update(body).digest("hex");
    return {
      body,
      headers: { ...headers, [spec.header ?? "x-hub-signature-256"]: `sha256=${sig}` },
    };
  };
  const result = await autocannon({
    url: `${spec.url}/webhook`,
    connections: spec.connections,
    duration: spec.seconds,
    timeout: 10,
    requests: [{
      method: "POST",
      setupRequest: (req: Record<string, unknown>) => {
        sent++;
        return { ...req, ...bodyFor() };
      },
      onResponse: (status: number, body: string) => {
        if (status !== 200) counts.non200++;
        else if (body.includes('"received"')) counts.received++;
        else if (body.includes('"duplicate"')) counts.duplicate++;
        else counts.other200++;
      },
    }],
  });
  const requests = counts.received + counts.duplicate + counts.other200 + counts.non200;
  return {
    tool: "autocannon",
    seconds: result.duration,
    requests,
    rps: requests / result.duration,
    latencyMs: {
      mean: result.latency.mean,
      p50: result.latency.p50,
      p90: result.latency.p90,
      p99: result.latency.p99,
      max: result.latency.max,
    },
    errors: result.errors + result.timeouts,
    sent,
    ...counts,
  };
}

if (import.meta.main) {
  const out = await run(JSON.parse(Deno.args[0]));
  console.log("ACJSON " + JSON.stringify(out));
}
