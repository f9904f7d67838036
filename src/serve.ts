/**
 * The `serve` command: config → store → app → sockets, with graceful shutdown
 * on SIGTERM/SIGINT and secret reload on SIGHUP.
 */
import { createApp } from "./app.ts";
import { openStore, storeLocation } from "./journal/open.ts";
import { logger } from "./log.ts";
import { secretsOf } from "./config.ts";
import * as rt from "./runtime.ts";

/** How long SIGTERM waits for in-flight requests before closing anyway. */
const DRAIN_TIMEOUT_MS = 10_000;
/** How long the whole shutdown may take before the process exits anyway (exit code 1). */
const SHUTDOWN_TIMEOUT_MS = 25_000;

/** Runs the server until a shutdown signal; exits 0 after draining. */
export async function serveCommand(): Promise<void> {
  const config = rt.exitOnConfigErrors(rt.configFromEnv());
  const logs = await rt.startLogging(config);
  const log = logger("main");
  rt.onUncaught((error) =>
    log.error("Uncaught error (the server keeps running): {error}", { error })
  );
  rt.ensureDir(config.dataDir);
  const dbPath = storeLocation(config); // never the URL's password
  let store;
  try {
    store = await openStore(config);
  } catch (e) {
    rt.printErr(`error: cannot open the database ${dbPath}: ${(e as Error).message}`);
    await logs.flush();
    rt.exit(1);
  }
  const app = await createApp(config, store);
  // A generated token is a secret too: scrub it from every log line from now on.
  logs.setSecrets([...secretsOf(config), ...app.auth().tokens]);

  if (
    config.allowUnverified && config.verificationTokens.length === 0 && !config.hmacSecrets.length
  ) {
    for (let i = 0; i < 3; i++) {
      log.warn(
        "RINGHOOK_ALLOW_UNVERIFIED=true and no token or HMAC secret: ANYONE can post events",
      );
    }
  } else if (config.verificationTokens.length === 0 && config.hmacSecrets.length === 0) {
    log.warn(
      "No RINGHOOK_VERIFICATION_TOKEN set: using a generated token kept in {db}; print it with `main.ts token`",
      { db: dbPath },
    );
  }

  // Count in-flight requests: Deno's shutdown() cuts the bodies still streaming in,
  // so SIGTERM first waits for them to finish, then stops the listener.
  let inflight = 0;
  const idle: Array<() => void> = [];
  const handler = async (req: Request) => {
    inflight++;
    try {
      return await app.handler(req);
    } finally {
      if (--inflight === 0) idle.splice(0).forEach((f) => f());
    }
  };
  const served = await rt.serve(handler, { port: config.port, hostname: config.hostname });
  const adminServed = app.adminHandler
    ? await rt.serve(app.adminHandler, { port: config.adminPort!, hostname: config.hostname })
    : undefined;
  if (adminServed) {
    log.info("Admin API and /metrics on http://{hostname}:{adminPort}", {
      hostname: adminServed.hostname,
      adminPort: adminServed.port,
    });
  }
  log.info("Listening on http://{hostname}:{port}/webhook", {
    hostname: served.hostname,
    port: served.port,
    durability: config.durability,
    dataDir: config.dataDir,
  });

  app.startBackground();

  rt.onReloadSignal(() => {
    const next = rt.configFromEnv();
    if (!next.ok) {
      log.error("Reload refused: {errors}", { errors: next.errors });
      return;
    }
    app.reloadSecrets(next.config).then(
      () => logs.setSecrets([...secretsOf(next.config), ...app.auth().tokens]),
      (e) => log.error("Reload failed: {error}", { error: e }),
    );
  });

  const code = await new Promise<number>((resolve) => {
    const stop = async (signal: string) => {
      // Whatever hangs (a stalled database, a stuck request), the process ends in time.
      const deadline = setTimeout(() => {
        log.error("Shutdown did not finish in {seconds} s; exiting", {
          seconds: SHUTDOWN_TIMEOUT_MS / 1000,
        });
        logs.flush().finally(() => resolve(1));
      }, SHUTDOWN_TIMEOUT_MS);
      try {
        await drain(signal);
        clearTimeout(deadline);
        resolve(0);
      } catch (e) {
        clearTimeout(deadline);
        log.error("Shutdown failed: {error}", { error: e });
        await logs.flush();
        resolve(1);
      }
    };
    rt.onShutdownSignal(stop, (signal) => {
      log.warn("{signal} again: exiting now", { signal });
      logs.flush().finally(() => resolve(1));
    });
  });
  rt.exit(code);

  async function drain(signal: string): Promise<void> {
    app.beginDrain();
    log.info("{signal}: draining {inflight} in-flight request(s)", { signal, inflight });
    if (inflight > 0) {
      await Promise.race([
        new Promise<void>((r) => idle.push(r)),
        new Promise((r) => setTimeout(r, DRAIN_TIMEOUT_MS)),
      ]);
    }
    await served.shutdown();
    await adminServed?.shutdown();
    await app.close();
    await store!.close();
    log.info("Stopped cleanly");
    await logs.flush();
  }
}
