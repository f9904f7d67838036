/**
 * The runtime layer: every Deno API ringhook uses lives here (and in main.ts),
 * so moving to another runtime means rewriting this file, not the core.
 */
import { type Config, type ConfigResult, loadConfig } from "./config.ts";
import { bufferedWriter, setupLogging } from "./log.ts";
import { secretsOf } from "./config.ts";

/** Loads the configuration from the process environment. */
export function configFromEnv(): ConfigResult {
  return loadConfig(Deno.env.toObject(), (p) => Deno.readTextFileSync(p));
}

/** Prints config problems one per line and exits with code 2. */
export function exitOnConfigErrors(result: ConfigResult): Config {
  if (result.ok) return result.config;
  for (const e of result.errors) console.error(`config error: ${e}`);
  Deno.exit(2);
}

/** Log lines go to stdout through a buffer; flush before exit. */
export async function startLogging(
  config: Config,
): Promise<{ flush: () => Promise<void>; setSecrets: (secrets: string[]) => void }> {
  const out = bufferedWriter((b) => writeAll(Deno.stdout, b));
  const setSecrets = await setupLogging({
    level: config.logLevel,
    format: config.logFormat,
    secrets: secretsOf(config),
    write: out.write,
  });
  return { flush: out.flush, setSecrets };
}

async function writeAll(w: { write(p: Uint8Array): Promise<number> }, b: Uint8Array) {
  let off = 0;
  while (off < b.length) off += await w.write(b.subarray(off));
}

/** Creates the data directory (owner-only) if needed. */
export function ensureDir(path: string): void {
  Deno.mkdirSync(path, { recursive: true, mode: 0o700 });
}

/** A listening server. */
export interface Served {
  port: number;
  hostname: string;
  /** Stops accepting, lets in-flight requests finish. */
  shutdown(): Promise<void>;
  finished: Promise<void>;
}

/** Serves a handler with Deno.serve. */
export function serve(
  handler: (req: Request) => Promise<Response>,
  opts: { port: number; hostname: string },
): Promise<Served> {
  return new Promise((resolve) => {
    const server = Deno.serve({
      port: opts.port,
      hostname: opts.hostname,
      onListen: () => {},
      onError: () => new Response('{"error":"internal"}', { status: 500 }),
    }, handler);
    const addr = server.addr as Deno.NetAddr;
    resolve({
      port: addr.port,
      hostname: addr.hostname,
      shutdown: () => server.shutdown(),
      finished: server.finished,
    });
  });
}

/** Calls `fn` on the first SIGTERM or SIGINT, and `again` on any later one. */
export function onShutdownSignal(
  fn: (signal: string) => void,
  again: (signal: string) => void,
): void {
  let fired = false;
  for (const sig of ["SIGTERM", "SIGINT"] as const) {
    Deno.addSignalListener(sig, () => {
      if (fired) return again(sig);
      fired = true;
      fn(sig);
    });
  }
}

/**
 * A last line of defence for a server that holds acks in flight: an error nothing caught (a
 * driver's stray rejection when its connection is killed, say) is reported to `fn` instead of
 * ending the process.
 */
export function onUncaught(fn: (error: unknown) => void): void {
  globalThis.addEventListener("unhandledrejection", (e) => {
    e.preventDefault();
    fn(e.reason);
  });
  globalThis.addEventListener("error", (e) => {
    e.preventDefault();
    fn(e.error ?? e.message);
  });
}

/** Calls `fn` on every SIGHUP (secret reload). */
export function onReloadSignal(fn: () => void): void {
  if (Deno.build.os !== "windows") Deno.addSignalListener("SIGHUP", fn);
}

/** Writes to stdout (CLI output). */
export function print(text: string): void {
  console.log(text);
}

/** Writes to stderr (CLI diagnostics). */
export function printErr(text: string): void {
  console.error(text);
}

/** Ends the process. */
export function exit(code: number): never {
  Deno.exit(code);
}

/** The command-line arguments. */
export function args(): string[] {
  return Deno.args;
}

/** Writes a text file. */
export function writeText(path: string, text: string): void {
  Deno.writeTextFileSync(path, text);
}

/** Removes a file. */
export function remove(path: string): void {
  Deno.removeSync(path);
}

/** True when a path exists. */
export function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}
