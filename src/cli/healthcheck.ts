/**
 * `healthcheck`: GETs ringhook's /readyz and exits 0 when it answers 200, 1 otherwise. It is the
 * readiness probe for systemd (`ExecStartPost=ringhook healthcheck --wait 30`) and Docker
 * (`HEALTHCHECK`) on images that have no curl.
 */
import { parseArgs } from "node:util";
import type { Config } from "../config.ts";
import * as rt from "../runtime.ts";

const HELP = `Usage: ringhook healthcheck [--url URL] [--wait SECONDS] [--timeout SECONDS]

GETs ringhook's readiness endpoint and exits 0 when it answers 200, 1 otherwise.

Options:
  --url URL            the URL to check (default: http://127.0.0.1:$RINGHOOK_PORT/readyz, with
                       the port and listen address from the same environment as 'serve')
  --wait SECONDS       retry until ready or SECONDS have passed (default 0: one attempt)
  --timeout SECONDS    the longest one attempt may take (default 5)
Exit codes: 0 ready, 1 anything else (not ready, unreachable, bad usage or configuration).
Never 2: Docker reserves that code for health checks.`;

/** The readiness URL of the ringhook the current configuration describes. */
export function readyzUrl(config: Pick<Config, "hostname" | "port">): string {
  return `http://${probeHost(config.hostname)}:${config.port}/readyz`;
}

/** Where to connect to reach a server listening on `hostname`: loopback for a wildcard. */
function probeHost(hostname: string): string {
  const h = hostname.replace(/^\[(.*)\]$/, "$1");
  if (h === "" || h === "0.0.0.0") return "127.0.0.1";
  if (h === "::") return "[::1]";
  return h.includes(":") ? `[${h}]` : h;
}

/** One attempt: the outcome and a line that says why. */
async function probe(url: string, timeoutMs: number): Promise<{ ok: boolean; why: string }> {
  try {
    const res = await fetch(url, {
      signal: AbortSignal.timeout(timeoutMs),
      redirect: "manual",
      headers: { "User-Agent": "ringhook-healthcheck" },
    });
    const body = (await res.text()).slice(0, 200).trim();
    return {
      ok: res.status === 200,
      why: `${res.status}${body === "" ? "" : ` ${body}`}`,
    };
  } catch (e) {
    const err = e as Error;
    const cause = (err.cause as Error | undefined)?.message;
    return {
      ok: false,
      why: err.name === "TimeoutError"
        ? `no answer within ${timeoutMs} ms`
        : `unreachable (${cause ?? err.message})`,
    };
  }
}

function seconds(name: string, raw: string | undefined, fallback: number): number | string {
  if (raw === undefined) return fallback;
  if (!/^\d+(\.\d+)?$/.test(raw)) return `--${name}: expected a number of seconds, got ${raw}`;
  return Number(raw);
}

/** Runs `ringhook healthcheck`: exit 0 when /readyz answers 200, 1 otherwise. */
export async function healthcheckCommand(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        url: { type: "string" },
        wait: { type: "string" },
        timeout: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (e) {
    rt.printErr(`healthcheck: ${(e as Error).message}\n\n${HELP}`);
    return 1;
  }
  if (values.help) {
    rt.print(HELP);
    return 0;
  }
  const wait = seconds("wait", values.wait, 0);
  const timeout = seconds("timeout", values.timeout, 5);
  for (const v of [wait, timeout]) {
    if (typeof v === "string") {
      rt.printErr(`healthcheck: ${v}`);
      return 1;
    }
  }
  const waitMs = (wait as number) * 1000;
  const timeoutMs = Math.max(1, (timeout as number) * 1000);

  let url = values.url;
  if (url === undefined) {
    const loaded = rt.configFromEnv();
    if (!loaded.ok) {
      for (const e of loaded.errors) rt.printErr(`config error: ${e}`);
      return 1;
    }
    if (loaded.config.port === 0) {
      rt.printErr("healthcheck: RINGHOOK_PORT is 0 (any free port); pass --url");
      return 1;
    }
    url = readyzUrl(loaded.config);
  } else {
    try {
      const u = new URL(url);
      if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error("not http(s)");
    } catch {
      rt.printErr(`healthcheck: --url: ${url} is not an http(s) URL`);
      return 1;
    }
  }

  const deadline = Date.now() + waitMs;
  for (;;) {
    const left = deadline - Date.now();
    const result = await probe(
      url,
      waitMs > 0 ? Math.min(timeoutMs, Math.max(left, 1)) : timeoutMs,
    );
    if (result.ok) {
      rt.print(`ready: ${url}`);
      return 0;
    }
    const pause = Math.min(250, deadline - Date.now());
    if (pause <= 0) {
      rt.printErr(`not ready: ${url}: ${result.why}`);
      return 1;
    }
    await new Promise((r) => setTimeout(r, pause));
  }
}
