/**
 * Wires one ringhook instance together from a Config and a Store: metrics,
 * journal, edge, processors. No Deno APIs here; the runtime layer serves it.
 */
import type { Config } from "./config.ts";
import { createHandler, type Handler } from "./http/handler.ts";
import type { EdgeAuth } from "./http/webhook.ts";
import { Journal } from "./journal/journal.ts";
import type { Store } from "./journal/types.ts";
import { logger } from "./log.ts";
import { Registry } from "./metrics.ts";
import { createHmacVerifier } from "./verify.ts";
import { type CallTracker, startCallTracker } from "./calls/processor.ts";
import { RingCentralClient } from "./ringcentral/client.ts";
import { Keeper } from "./ringcentral/keeper.ts";
import { isRenewalReminder } from "./notification.ts";
import type { Consumer } from "./journal/journal.ts";
import { createAdmin } from "./admin/api.ts";
import { createAdminHandler } from "./http/handler.ts";

/** ringhook's version, reported by the admin API and --version. */
export const VERSION = "0.1.0";

/** The setting under which a generated verification token is kept. */
export const GENERATED_TOKEN_KEY = "edge.generated_verification_token";

/** A running ringhook instance (without its sockets). */
export interface App {
  handler: Handler;
  /** The admin port's handler (admin API, /metrics, health), when RINGHOOK_ADMIN_PORT is set. */
  adminHandler?: Handler;
  journal: Journal;
  calls: CallTracker;
  /** The subscription keeper, when RingCentral credentials and a public URL are configured. */
  keeper?: Keeper;
  /** The RingCentral client, when credentials are configured. */
  ringcentral?: RingCentralClient;
  store: Store;
  metrics: Registry;
  /** The tokens the edge accepts right now. */
  auth(): EdgeAuth;
  /** Starts work that talks to the outside (the subscription keeper): call once listening. */
  startBackground(): void;
  /** Marks the instance not-ready (shutdown has begun) so load balancers stop sending. */
  beginDrain(): void;
  /** Swaps in rotated secrets from a new Config without dropping anything. */
  reloadSecrets(config: Config): Promise<void>;
  /** Stops processors, flushes the journal; the caller closes the store. */
  close(): Promise<void>;
}

/** Options for tests and the runtime layer. */
export interface AppOptions {
  now?: () => number;
  /** The fetch the RingCentral client uses (tests point it at a fake). */
  fetch?: typeof fetch;
  /** This instance's name in leases; random by default. */
  instanceId?: string;
}

/** Builds an instance around an open store. */
export async function createApp(
  config: Config,
  store: Store,
  opts: AppOptions = {},
): Promise<App> {
  const metrics = new Registry();
  const log = logger("edge");
  const journal = new Journal(store, {
    batchMax: config.batchMax,
    batchDelayMs: config.batchDelayMs,
    commitTimeoutMs: config.commitTimeoutMs,
    retentionDays: config.retentionDays,
    metrics,
    log: logger("journal"),
    now: opts.now,
  });

  let auth = await resolveAuth(config, store);
  let draining = false;
  journal.start();
  const calls = startCallTracker(journal, {
    staleSeconds: config.callStaleSeconds,
    metrics,
    log: logger("calls"),
    now: opts.now,
  });
  const consumers: Record<string, () => number> = { calls: () => calls.consumer.position() };

  const rc = ringCentralClient(config, metrics, opts.fetch);
  let keeper: Keeper | undefined;
  let reminders: Consumer | undefined;
  if (rc && config.ringcentral.publicUrl) {
    keeper = new Keeper({
      api: rc,
      store,
      spec: {
        ...config.ringcentral,
        publicUrl: config.ringcentral.publicUrl,
        verificationToken: auth.tokens[0],
      },
      instanceId: opts.instanceId ?? crypto.randomUUID(),
      checkIntervalMs: config.ringcentral.checkSeconds * 1000,
      metrics,
      now: opts.now,
    });
    const k = keeper;
    // Renewal reminders reach the keeper from the journal, never from the ack path.
    reminders = journal.consume("rc-reminders", async (entries) => {
      for (const e of entries) {
        if (isRenewalReminder(e.event)) {
          await k.onNotification({ event: e.event, subscriptionId: e.subscriptionId ?? undefined });
        }
      }
    }, { log: logger("ringcentral") });
    const r = reminders;
    consumers["rc-reminders"] = () => r.position();
  }
  registerGauges(metrics, store, consumers);
  let adminTokens = config.adminTokens;
  const admin = createAdmin({
    tokens: () => adminTokens,
    store,
    readiness: () => journal.readiness(),
    consumers: () => Object.fromEntries(Object.entries(consumers).map(([k, f]) => [k, f()])),
    keeper,
    version: VERSION,
  });
  const readiness = () =>
    draining ? { ready: false, reason: "shutting down" } : journal.readiness();
  const separateAdmin = config.adminPort !== undefined;
  const handler = createHandler({
    auth: () => auth,
    accept: journal.accept,
    maxBodyBytes: config.maxBodyBytes,
    metrics,
    log,
    accessLog: logger("http"),
    readiness,
    serveMetrics: !separateAdmin,
    admin: separateAdmin ? undefined : admin,
    now: opts.now,
  });
  const adminHandler = separateAdmin
    ? createAdminHandler({ admin, metrics, readiness, accessLog: logger("admin"), log })
    : undefined;

  return {
    handler,
    adminHandler,
    journal,
    calls,
    keeper,
    ringcentral: rc,
    store,
    metrics,
    auth: () => auth,
    beginDrain: () => void (draining = true),
    startBackground: () => keeper?.start(),
    async reloadSecrets(next) {
      auth = await resolveAuth(next, store);
      adminTokens = next.adminTokens;
      keeper?.setVerificationToken(auth.tokens[0]);
      log.info("Secrets reloaded: {tokens} verification token(s), {hmac} HMAC secret(s)", {
        tokens: auth.tokens.length,
        hmac: next.hmacSecrets.length,
      });
    },
    async close() {
      await keeper?.stop();
      await reminders?.stop();
      await calls.stop();
      await journal.close();
    },
  };
}

/**
 * The edge's secrets. With no token, no HMAC secret and no explicit opt-out, a
 * random token is generated once and kept in the database (shared by every
 * instance on it), so the server is secure by default and still works.
 */
async function resolveAuth(config: Config, store: Store): Promise<EdgeAuth> {
  let tokens = config.verificationTokens;
  if (tokens.length === 0 && config.hmacSecrets.length === 0 && !config.allowUnverified) {
    tokens = [await generatedToken(store)];
  }
  return {
    tokens,
    hmac: config.hmacSecrets.length > 0 ? await createHmacVerifier(config.hmacSecrets) : undefined,
    hmacHeader: config.hmacHeader,
    allowUnverified: config.allowUnverified,
  };
}

/** Returns the stored generated token, creating it on first use (atomically: instances agree). */
export async function generatedToken(store: Store): Promise<string> {
  const existing = await store.getSetting(GENERATED_TOKEN_KEY);
  if (existing) return existing;
  const bytes = crypto.getRandomValues(new Uint8Array(24));
  const token = "rh_" + btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_")
    .replace(/=+$/, "");
  return await store.initSetting(GENERATED_TOKEN_KEY, token);
}

/** A RingCentral client when credentials are configured. */
export function ringCentralClient(
  config: Config,
  metrics?: Registry,
  fetchFn?: typeof fetch,
): RingCentralClient | undefined {
  const { server, clientId, clientSecret, jwt } = config.ringcentral;
  if (!clientId || !clientSecret || !jwt) return undefined;
  return new RingCentralClient({ server, clientId, clientSecret, jwt, metrics, fetch: fetchFn });
}

/** How long one reading of the store's counts serves /metrics, in ms. */
const STATS_TTL_MS = 10_000;

/** Gauges read from the store at scrape time: journal size, consumer lag, calls. */
function registerGauges(
  metrics: Registry,
  store: Store,
  consumers: Record<string, () => number>,
): void {
  // Counting rows is not free on a big journal and runs on the writer's thread: one count
  // serves every gauge and every scrape for a few seconds, however often /metrics is hit.
  let cached: { at: number; value: ReturnType<Store["stats"]> } | undefined;
  const stats = () => {
    const now = performance.now();
    if (!cached || now - cached.at > STATS_TTL_MS) {
      const value = store.stats();
      cached = { at: now, value };
      value.catch(() => (cached = undefined));
    }
    return cached.value;
  };
  metrics.collect("ringhook_journal_events", "Events in the journal", async () => [{
    value: (await stats()).events,
  }]);
  metrics.collect("ringhook_journal_last_seq", "Newest journal sequence number", async () => [{
    value: (await stats()).lastSeq,
  }]);
  metrics.collect(
    "ringhook_consumer_lag_events",
    "Journal events a consumer has not processed yet",
    async () => {
      const last = (await stats()).lastSeq;
      return Object.entries(consumers).map(([name, pos]) => ({
        labels: { consumer: name },
        value: Math.max(0, last - pos()),
      }));
    },
  );
  metrics.collect("ringhook_calls_active", "Calls in progress", async () => [{
    value: (await stats()).activeCalls,
  }]);
}
