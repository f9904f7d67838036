/**
 * The RingCentral notification envelope: strict about the fields ringhook keys
 * on (uuid, event, body), lenient about everything else.
 */

/** A notification as accepted at the edge, with its raw bytes. */
export interface Notification {
  uuid: string;
  event: string;
  subscriptionId?: string;
  ownerId?: string;
  timestamp?: string;
  body: Record<string, unknown>;
  /** The request body exactly as received. */
  raw: Uint8Array;
  /** Request headers worth keeping, secrets removed. */
  headers: Record<string, string>;
  /** When ringhook received it (ms since epoch). */
  receivedAt: number;
}

/** Why a body is not a notification; `reason` is safe to return to the client. */
export interface ParseError {
  code: "not_utf8" | "invalid_json" | "not_object" | "bad_envelope";
  reason: string;
}

/** The longest uuid and event path accepted. */
export const MAX_UUID_LENGTH = 256;
export const MAX_EVENT_LENGTH = 2048;

const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false });

/** Decodes and validates a notification body; returns the envelope fields or a ParseError. */
export function parseNotification(
  raw: Uint8Array,
): { ok: true; value: Omit<Notification, "raw" | "headers" | "receivedAt"> } | {
  ok: false;
  error: ParseError;
} {
  let text: string;
  try {
    text = decoder.decode(raw);
  } catch {
    return fail("not_utf8", "body is not valid UTF-8");
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    return fail("invalid_json", `body is not valid JSON (${(e as Error).message.slice(0, 120)})`);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    return fail("not_object", `body must be a JSON object, got ${kindOf(parsed)}`);
  }
  const o = parsed as Record<string, unknown>;
  if (typeof o.uuid !== "string" || o.uuid === "") {
    return fail("bad_envelope", `"uuid" must be a non-empty string, got ${kindOf(o.uuid)}`);
  }
  if (o.uuid.length > MAX_UUID_LENGTH) {
    return fail("bad_envelope", `"uuid" is longer than ${MAX_UUID_LENGTH} characters`);
  }
  if (typeof o.event !== "string" || o.event === "") {
    return fail("bad_envelope", `"event" must be a non-empty string, got ${kindOf(o.event)}`);
  }
  if (o.event.length > MAX_EVENT_LENGTH) {
    return fail("bad_envelope", `"event" is longer than ${MAX_EVENT_LENGTH} characters`);
  }
  if (typeof o.body !== "object" || o.body === null || Array.isArray(o.body)) {
    return fail("bad_envelope", `"body" must be an object, got ${kindOf(o.body)}`);
  }
  // Keys must survive storage as they are: a lone surrogate turns into U+FFFD in SQLite (two
  // different uuids would become one, and the second event would be lost as a "duplicate"),
  // and PostgreSQL refuses U+0000 (failing the whole group commit).
  for (const k of ["uuid", "event", "subscriptionId", "ownerId"] as const) {
    const v = o[k];
    if (typeof v === "string" && !storable(v)) {
      return fail("bad_envelope", `"${k}" contains control characters or invalid UTF-16`);
    }
  }
  return {
    ok: true,
    value: {
      uuid: o.uuid,
      event: o.event,
      subscriptionId: idString(o.subscriptionId),
      ownerId: idString(o.ownerId),
      timestamp: typeof o.timestamp === "string" ? o.timestamp : undefined,
      body: o.body as Record<string, unknown>,
    },
  };
}

/** True when a key string is well-formed UTF-16 without control characters. */
function storable(v: string): boolean {
  if (!v.isWellFormed()) return false;
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return false;
  }
  return true;
}

/** RingCentral types ids as strings in some places and numbers in others; ringhook keeps strings. */
export function idString(v: unknown): string | undefined {
  if (typeof v === "string" && v !== "") return v.slice(0, MAX_UUID_LENGTH);
  if (typeof v === "number" && Number.isFinite(v)) return String(v);
  return undefined;
}

/** True when the notification is a telephony session event. */
export function isTelephony(n: { event: string; body: Record<string, unknown> }): boolean {
  return typeof n.body.telephonySessionId === "string" ||
    /\/telephony\/sessions(\?|$)/.test(n.event);
}

/** True when the notification is a subscription renewal reminder (matched literally, as RingCentral does). */
export function isRenewalReminder(event: string): boolean {
  return event.startsWith("/restapi/v1.0/subscription/~?");
}

function fail(code: ParseError["code"], reason: string): { ok: false; error: ParseError } {
  return { ok: false, error: { code, reason } };
}

function kindOf(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  if (v === undefined) return "nothing";
  return typeof v === "object" ? "an object" : `a ${typeof v}`;
}
