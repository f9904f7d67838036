/**
 * Logging through LogTape: one sink that formats records as JSON lines or
 * readable text, scrubs every configured secret, and writes through a buffer.
 */
import { configure, getLogger, type Logger, type LogRecord, reset } from "@logtape/logtape";
import type { LogLevel } from "./config.ts";

export type { Logger };

/** Headers whose values never reach a log line. */
const SENSITIVE_HEADER = /token|secret|signature|authorization|cookie|api-key|password|credential/i;

/** Where log lines go and what they must never contain. */
export interface LogSetup {
  level: LogLevel;
  format: "json" | "pretty";
  /** Secret values that are replaced by [redacted] wherever they appear. */
  secrets: string[];
  /** Receives one formatted line (with its newline). */
  write: (line: string) => void;
}

/**
 * Configures LogTape for the whole process (it keeps one global configuration by design).
 * Returns a function that replaces the secrets to scrub (after a reload, or once a token was
 * generated), so a rotated or generated secret is never logged either.
 */
export async function setupLogging(setup: LogSetup): Promise<(secrets: string[]) => void> {
  let scrub = makeScrubber(setup.secrets);
  const format = setup.format === "json" ? formatJson : formatPretty;
  await configure({
    reset: true,
    sinks: { main: (record: LogRecord) => setup.write(scrub(format(record)) + "\n") },
    loggers: [
      { category: ["ringhook"], lowestLevel: setup.level, sinks: ["main"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["main"] },
    ],
  });
  return (secrets) => void (scrub = makeScrubber(secrets));
}

/** Removes the LogTape configuration (tests). */
export async function resetLogging(): Promise<void> {
  await reset();
}

/** The logger for one ringhook component. */
export function logger(...category: string[]): Logger {
  return getLogger(["ringhook", ...category]);
}

/** Copies headers for logging with every sensitive value replaced. */
export function redactHeaders(headers: Headers, extra: string[] = []): Record<string, string> {
  const extraLower = new Set(extra.map((h) => h.toLowerCase()));
  const out: Record<string, string> = {};
  for (const [k, v] of headers) {
    out[k] = SENSITIVE_HEADER.test(k) || extraLower.has(k) ? "[redacted]" : v.slice(0, 256);
  }
  return out;
}

/**
 * A URL safe to print: the password and every query value (RingCentral's own samples put
 * tokens there) replaced with ***.
 */
export function redactUrl(u: string): string {
  try {
    const url = new URL(u);
    if (url.password) url.password = "***";
    const keys = [...url.searchParams.keys()];
    url.search = "";
    let out = url.toString();
    if (keys.length > 0) {
      const hash = out.indexOf("#");
      const query = "?" + keys.map((k) => `${encodeURIComponent(k)}=***`).join("&");
      out = hash < 0 ? out + query : out.slice(0, hash) + query + out.slice(hash);
    }
    return out;
  } catch {
    return "(not a URL)";
  }
}

/** Shows the first bytes of a body safely: lossy UTF-8, truncated, JSON-escaped. */
export function previewBody(raw: Uint8Array, max = 256): string {
  const text = new TextDecoder().decode(raw.subarray(0, max));
  const more = raw.length > max ? `…(+${raw.length - max} bytes)` : "";
  return JSON.stringify(text).slice(1, -1) + more;
}

/** Returns a function that replaces each secret (longest first) with [redacted]. */
export function makeScrubber(secrets: string[]): (line: string) => string {
  const list = [...new Set(secrets.filter((s) => s.length >= 4))].sort((a, b) =>
    b.length - a.length
  );
  if (list.length === 0) return (line) => line;
  // JSON encoding may escape characters of a secret; scrub both spellings.
  const variants = [...new Set(list.flatMap((s) => [s, JSON.stringify(s).slice(1, -1)]))];
  return (line) => {
    for (const s of variants) if (line.includes(s)) line = line.split(s).join("[redacted]");
    return line;
  };
}

/** Collects lines and writes them in one call per tick, so logging never blocks a request. */
export function bufferedWriter(
  writeBytes: (bytes: Uint8Array) => Promise<unknown>,
): { write: (line: string) => void; flush: () => Promise<void> } {
  const encoder = new TextEncoder();
  let pending: string[] = [];
  let inflight: Promise<void> = Promise.resolve();
  let scheduled = false;
  const drain = () => {
    scheduled = false;
    const lines = pending;
    pending = [];
    if (lines.length === 0) return inflight;
    inflight = inflight.then(() => writeBytes(encoder.encode(lines.join("")))).then(
      () => {},
      () => {},
    );
    return inflight;
  };
  return {
    write(line) {
      pending.push(line);
      if (!scheduled) {
        scheduled = true;
        setTimeout(drain, 0);
      }
    },
    flush: () => drain(),
  };
}

function formatJson(record: LogRecord): string {
  const m = record.message;
  const msg = m.length === 1 && typeof m[0] === "string"
    ? m[0]
    : m.map((p) => (typeof p === "string" ? p : stringify(p))).join("");
  const line = {
    time: new Date(record.timestamp).toISOString(),
    level: record.level,
    logger: record.category.join("."),
    msg,
    ...record.properties,
  };
  // The replacer costs a call per key: use it only when a value needs it (one per request
  // line otherwise, on the hot path).
  for (const k in record.properties) {
    const v = record.properties[k];
    if (typeof v === "object" && v !== null || typeof v === "bigint") {
      return JSON.stringify(line, jsonReplacer);
    }
  }
  return JSON.stringify(line);
}

function formatPretty(record: LogRecord): string {
  const msg = record.message.map((p) => (typeof p === "string" ? p : stringify(p))).join("");
  const time = new Date(record.timestamp).toISOString().slice(11, 23);
  const props = Object.entries(record.properties)
    .filter(([k]) => !record.rawMessage.toString().includes(`{${k}}`))
    .map(([k, v]) => `${k}=${stringify(v)}`).join(" ");
  return `${time} ${record.level.toUpperCase().padEnd(7)} ${
    record.category.slice(1).join(".")
  }: ${msg}${props ? " " + props : ""}`;
}

function stringify(v: unknown): string {
  if (typeof v === "string") return v;
  if (v instanceof Error) return `${v.name}: ${v.message}`;
  try {
    return JSON.stringify(v, jsonReplacer) ?? String(v);
  } catch {
    return String(v);
  }
}

function jsonReplacer(_key: string, value: unknown): unknown {
  if (value instanceof Error) return { name: value.name, message: value.message };
  if (typeof value === "bigint") return value.toString();
  if (value instanceof Uint8Array) return `[${value.length} bytes]`;
  return value;
}
