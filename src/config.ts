/**
 * Configuration: the environment turned into a typed, validated Config.
 *
 * Pure: it reads only the env record and the file reader it is given, so tests
 * and other runtimes can call it without Deno.
 */

/** Log levels ringhook accepts (LogTape's names). */
export type LogLevel = "trace" | "debug" | "info" | "warning" | "error" | "fatal";

/** How durable an acknowledged event is. */
export type Durability = "full" | "normal" | "off";

/** ringhook's whole configuration. */
export interface Config {
  port: number;
  hostname: string;
  /** Accepted Verification-Token values (several for rotation). */
  verificationTokens: string[];
  /** Where the tokens came from: configured, generated (stored in the data dir), or none. */
  tokenSource: "env" | "generated" | "none";
  hmacSecrets: string[];
  hmacHeader: string;
  maxBodyBytes: number;
  logLevel: LogLevel;
  logFormat: "json" | "pretty";
  dataDir: string;
  allowUnverified: boolean;
  durability: Durability;
  /** Group commit: the most events in one transaction. */
  batchMax: number;
  /** Group commit: how long the first event of a batch may wait for others, in ms. */
  batchDelayMs: number;
  /** A group commit slower than this answers its events 503 (the database is stalled), in ms. */
  commitTimeoutMs: number;
  retentionDays: number;
  /** Admin API bearer tokens; empty = the admin API is off. */
  adminTokens: string[];
  /** A separate port for the admin API and /metrics; undefined = the webhook port. */
  adminPort?: number;
  /** A call that has been silent this long is closed as stale, in seconds. */
  callStaleSeconds: number;
  /**
   * A PostgreSQL URL (postgres://user:password@host:5432/db?schema=ringhook): the journal is
   * shared by every instance on it; unset = SQLite in the data directory.
   */
  databaseUrl?: string;
  ringcentral: RingCentralConfig;
}

/** What ringhook needs to manage the RingCentral subscription. */
export interface RingCentralConfig {
  server: string;
  clientId?: string;
  clientSecret?: string;
  jwt?: string;
  /** The public https URL RingCentral calls (ends with /webhook). */
  publicUrl?: string;
  eventFilters: string[];
  /** Requested subscription lifetime in seconds. */
  expiresIn: number;
  /** Renewal reminder threshold and interval in seconds (0 = no reminder filter). */
  reminderThreshold: number;
  reminderInterval: number;
  /** How often the keeper checks the subscription's status, in seconds. */
  checkSeconds: number;
}

/** Reads a file as text; throws when it cannot. */
export type ReadText = (path: string) => string;

/** The result of loading configuration: a Config, or one line per problem. */
export type ConfigResult = { ok: true; config: Config } | { ok: false; errors: string[] };

/** Names of the variables that hold secrets (each may also come from NAME_FILE or credentials). */
export const SECRET_VARS = [
  "RINGHOOK_VERIFICATION_TOKEN",
  "RINGHOOK_HMAC_SECRET",
  "RINGHOOK_ADMIN_TOKEN",
  "RINGHOOK_RC_CLIENT_SECRET",
  "RINGHOOK_RC_JWT",
  "RINGHOOK_DATABASE_URL",
] as const;

/** The shortest token or secret accepted. */
export const MIN_SECRET_LENGTH = 8;

const LOG_LEVELS: LogLevel[] = ["trace", "debug", "info", "warning", "error", "fatal"];

/** The default telephony + SMS + voicemail filters, with ~ for the authorised account/extension. */
export const DEFAULT_EVENT_FILTERS = [
  "/restapi/v1.0/account/~/telephony/sessions",
  "/restapi/v1.0/account/~/extension/~/message-store/instant?type=SMS",
  "/restapi/v1.0/account/~/extension/~/voicemail",
];

/** Turns an environment into a Config, collecting every problem instead of stopping at the first. */
export function loadConfig(
  env: Record<string, string | undefined>,
  readText: ReadText,
): ConfigResult {
  const errors: string[] = [];
  const get = (name: string): string | undefined => {
    const v = env[name];
    return v === undefined || v.trim() === "" ? undefined : v.trim();
  };
  const secret = (name: string): string | undefined => {
    const direct = get(name);
    if (direct !== undefined) return direct;
    const file = get(`${name}_FILE`);
    const creds = get("CREDENTIALS_DIRECTORY");
    const path = file ?? (creds ? `${creds.replace(/\/$/, "")}/${name}` : undefined);
    if (path === undefined) return undefined;
    try {
      const text = readText(path).trim();
      return text === "" ? undefined : text;
    } catch (e) {
      // A credentials directory need not hold every secret; a named _FILE must exist.
      if (file !== undefined) {
        errors.push(`${name}_FILE: cannot read ${path} (${(e as Error).name})`);
      }
      return undefined;
    }
  };
  const int = (name: string, fallback: number, min: number, max: number): number => {
    const raw = get(name);
    if (raw === undefined) return fallback;
    if (!/^\d+$/.test(raw)) {
      errors.push(`${name}: expected a whole number, got ${JSON.stringify(raw.slice(0, 40))}`);
      return fallback;
    }
    const n = Number(raw);
    if (n < min || n > max) {
      errors.push(`${name}: ${n} is out of range (${min} to ${max})`);
      return fallback;
    }
    return n;
  };
  const bool = (name: string): boolean => {
    const raw = get(name)?.toLowerCase();
    if (raw === undefined) return false;
    if (["1", "true", "yes", "on"].includes(raw)) return true;
    if (["0", "false", "no", "off"].includes(raw)) return false;
    errors.push(`${name}: expected true or false, got ${JSON.stringify(raw.slice(0, 40))}`);
    return false;
  };
  const list = (value: string | undefined): string[] =>
    (value ?? "").split(",").map((s) => s.trim()).filter((s) => s !== "");

  const portVar = get("RINGHOOK_PORT") !== undefined ? "RINGHOOK_PORT" : "PORT";
  const port = int(portVar, 8080, 0, 65535);
  const hostname = get("RINGHOOK_HOSTNAME") ?? "0.0.0.0";

  const verificationTokens = list(secret("RINGHOOK_VERIFICATION_TOKEN"));
  for (const t of verificationTokens) {
    if (!/^[\x21-\x7e]+$/.test(t)) {
      errors.push("RINGHOOK_VERIFICATION_TOKEN: tokens must be printable ASCII without spaces");
      break;
    }
  }
  const hmacSecrets = list(secret("RINGHOOK_HMAC_SECRET"));
  // Short secrets are guessable, and too short to scrub from log lines without mangling them.
  const tooShort = (name: string, values: string[]) => {
    if (values.some((v) => v.length < MIN_SECRET_LENGTH)) {
      errors.push(`${name}: each value must be at least ${MIN_SECRET_LENGTH} characters long`);
    }
  };
  tooShort("RINGHOOK_VERIFICATION_TOKEN", verificationTokens);
  tooShort("RINGHOOK_HMAC_SECRET", hmacSecrets);
  const hmacHeader = get("RINGHOOK_HMAC_HEADER") ?? "X-Hub-Signature-256";
  if (!/^[A-Za-z0-9-]+$/.test(hmacHeader)) {
    errors.push(`RINGHOOK_HMAC_HEADER: ${JSON.stringify(hmacHeader)} is not a header name`);
  }
  const maxBodyBytes = int("RINGHOOK_MAX_BODY_BYTES", 1024 * 1024, 1024, 64 * 1024 * 1024);

  const logLevelRaw = (get("RINGHOOK_LOG_LEVEL") ?? "info").toLowerCase();
  const logLevel = (logLevelRaw === "warn" ? "warning" : logLevelRaw) as LogLevel;
  if (!LOG_LEVELS.includes(logLevel)) {
    errors.push(`RINGHOOK_LOG_LEVEL: expected one of ${LOG_LEVELS.join(", ")}, got ${logLevelRaw}`);
  }
  const logFormat = (get("RINGHOOK_LOG_FORMAT") ?? "json").toLowerCase();
  if (logFormat !== "json" && logFormat !== "pretty") {
    errors.push(`RINGHOOK_LOG_FORMAT: expected json or pretty, got ${logFormat}`);
  }

  const dataDir = get("RINGHOOK_DATA_DIR") ?? get("STATE_DIRECTORY")?.split(":")[0] ?? "./data";
  const allowUnverified = bool("RINGHOOK_ALLOW_UNVERIFIED");

  const durability = (get("RINGHOOK_DURABILITY") ?? "full").toLowerCase() as Durability;
  if (!["full", "normal", "off"].includes(durability)) {
    errors.push(`RINGHOOK_DURABILITY: expected full, normal or off, got ${durability}`);
  }
  const batchMax = int("RINGHOOK_BATCH_MAX", 256, 1, 10_000);
  const batchDelayMs = int("RINGHOOK_BATCH_DELAY_MS", 1, 0, 1000);
  const retentionDays = int("RINGHOOK_RETENTION_DAYS", 30, 0, 36500);
  const commitTimeoutMs = int("RINGHOOK_COMMIT_TIMEOUT_MS", 2000, 100, 60_000);

  const adminTokens = list(secret("RINGHOOK_ADMIN_TOKEN"));
  tooShort("RINGHOOK_ADMIN_TOKEN", adminTokens);
  const adminPortRaw = get("RINGHOOK_ADMIN_PORT");
  const adminPort = adminPortRaw === undefined
    ? undefined
    : int("RINGHOOK_ADMIN_PORT", 0, 0, 65535);
  const callStaleSeconds = int("RINGHOOK_CALL_STALE_SECONDS", 4 * 3600, 10, 30 * 86400);
  const databaseUrl = secret("RINGHOOK_DATABASE_URL");
  if (databaseUrl !== undefined && !isPostgresUrl(databaseUrl)) {
    // Never echo the value: it holds a password.
    errors.push("RINGHOOK_DATABASE_URL: expected a postgres:// or postgresql:// URL");
  }

  const server = (get("RINGHOOK_RC_SERVER") ?? "https://platform.ringcentral.com").replace(
    /\/+$/,
    "",
  );
  if (!isHttpUrl(server)) errors.push(`RINGHOOK_RC_SERVER: ${server} is not an http(s) URL`);
  const publicUrl = get("RINGHOOK_PUBLIC_URL");
  if (publicUrl !== undefined && !isHttpUrl(publicUrl)) {
    // Not echoed: a query string may hold a token.
    errors.push("RINGHOOK_PUBLIC_URL: is not an http(s) URL");
  }
  const eventFilters = list(get("RINGHOOK_RC_EVENT_FILTERS"));
  const ringcentral: RingCentralConfig = {
    server,
    clientId: get("RINGHOOK_RC_CLIENT_ID"),
    clientSecret: secret("RINGHOOK_RC_CLIENT_SECRET"),
    jwt: secret("RINGHOOK_RC_JWT"),
    publicUrl,
    eventFilters: eventFilters.length > 0 ? eventFilters : DEFAULT_EVENT_FILTERS,
    expiresIn: int("RINGHOOK_RC_EXPIRES_IN", 315_360_000, 60, 630_720_000),
    reminderThreshold: int("RINGHOOK_RC_REMINDER_THRESHOLD", 86_400, 0, 31_536_000),
    reminderInterval: int("RINGHOOK_RC_REMINDER_INTERVAL", 3_600, 0, 31_536_000),
    checkSeconds: int("RINGHOOK_RC_CHECK_SECONDS", 300, 1, 86_400),
  };
  if (ringcentral.reminderThreshold > 0) {
    if (ringcentral.reminderThreshold > ringcentral.expiresIn / 2) {
      errors.push(
        "RINGHOOK_RC_REMINDER_THRESHOLD: must be at most half of RINGHOOK_RC_EXPIRES_IN (RingCentral's rule)",
      );
    }
    if (ringcentral.reminderInterval > ringcentral.reminderThreshold / 2) {
      errors.push(
        "RINGHOOK_RC_REMINDER_INTERVAL: must be at most half of RINGHOOK_RC_REMINDER_THRESHOLD (RingCentral's rule)",
      );
    }
  }
  const rcParts = [ringcentral.clientId, ringcentral.clientSecret, ringcentral.jwt];
  if (rcParts.some((p) => p !== undefined) && rcParts.some((p) => p === undefined)) {
    errors.push(
      "RINGHOOK_RC_CLIENT_ID, RINGHOOK_RC_CLIENT_SECRET and RINGHOOK_RC_JWT go together: set all three or none",
    );
  }

  if (errors.length > 0) return { ok: false, errors };
  return {
    ok: true,
    config: {
      port,
      hostname,
      verificationTokens,
      tokenSource: verificationTokens.length > 0 ? "env" : "none",
      hmacSecrets,
      hmacHeader,
      maxBodyBytes,
      logLevel,
      logFormat: logFormat as "json" | "pretty",
      dataDir,
      allowUnverified,
      durability,
      batchMax,
      batchDelayMs,
      commitTimeoutMs,
      retentionDays,
      adminTokens,
      adminPort,
      callStaleSeconds,
      databaseUrl,
      ringcentral,
    },
  };
}

/** Every secret value in a config, for log scrubbing. */
export function secretsOf(config: Config): string[] {
  return [
    ...config.verificationTokens,
    ...config.hmacSecrets,
    ...config.adminTokens,
    config.ringcentral.clientSecret,
    config.ringcentral.jwt,
    ...databaseSecrets(config.databaseUrl),
  ].filter((s): s is string => typeof s === "string" && s.length >= 4);
}

/** The database URL and its password (raw and decoded), so neither reaches a log line. */
function databaseSecrets(url: string | undefined): string[] {
  if (url === undefined) return [];
  const out = [url];
  try {
    const password = new URL(url).password;
    if (password) out.push(password, decodeURIComponent(password));
  } catch {
    // Unparseable (config validation reports it) or a malformed %-escape: what we have is kept.
  }
  return out;
}

function isPostgresUrl(s: string): boolean {
  try {
    const u = new URL(s);
    return (u.protocol === "postgres:" || u.protocol === "postgresql:") && u.hostname !== "";
  } catch {
    return false;
  }
}

function isHttpUrl(s: string): boolean {
  try {
    const u = new URL(s);
    return u.protocol === "https:" || u.protocol === "http:";
  } catch {
    return false;
  }
}
