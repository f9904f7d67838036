/**
 * The /webhook rules: RingCentral's validation handshake, verification over the
 * raw bytes, size limits, envelope checks, and the hand-off to the journal.
 */
import type { Logger } from "../log.ts";
import { previewBody, redactHeaders } from "../log.ts";
import type { Registry } from "../metrics.ts";
import { type Notification, parseNotification } from "../notification.ts";
import { type Accept, JournalUnavailable } from "../journal/types.ts";
import { type HmacVerifier, matchesAnyToken } from "../verify.ts";
import { json } from "./respond.ts";
import { traced } from "../trace.ts";

/** The secrets the edge checks; swapped as a whole when secrets are reloaded. */
export interface EdgeAuth {
  tokens: readonly string[];
  hmac?: HmacVerifier;
  hmacHeader: string;
  allowUnverified: boolean;
}

/** What the webhook route needs. */
export interface WebhookDeps {
  auth: () => EdgeAuth;
  accept: Accept;
  maxBodyBytes: number;
  metrics: Registry;
  log: Logger;
  now?: () => number;
}

/** What the request logger learns about a webhook request. */
export interface WebhookInfo {
  uuid?: string;
  event?: string;
  kind?: "handshake" | "event" | "duplicate" | "empty" | "challenge";
}

const ALLOW = "GET, HEAD, POST, OPTIONS";
/** Longest Validation-Token / hub.challenge echoed: keeps the handshake far below 1024 bytes. */
const MAX_ECHO = 512;
/** Request headers kept with a journal entry (the rest are noise or secrets). */
const KEPT_HEADERS = [
  "content-type",
  "user-agent",
  "x-forwarded-for",
  "x-real-ip",
  "content-length",
];

/** Builds the /webhook handler. `info` collects what the request log line reports. */
export function createWebhook(
  deps: WebhookDeps,
): (req: Request, url: URL, info: WebhookInfo) => Promise<Response> {
  const now = deps.now ?? Date.now;
  const m = deps.metrics;
  const handshakes = m.counter("ringhook_handshakes_total", "Validation handshakes answered");
  const rejected = m.counter(
    "ringhook_verification_failures_total",
    "Requests refused by Verification-Token or HMAC checks",
  );
  const received = m.counter("ringhook_events_total", "Notifications by outcome");
  const invalid = m.counter("ringhook_invalid_requests_total", "Bodies refused, by reason");
  const ackLatency = m.histogram(
    "ringhook_ack_seconds",
    "Time from request to durable ack for notifications",
    [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
  );

  return async (req, url, info) => {
    const started = performance.now(); // durations: monotonic
    const receivedAt = now(); // the journal's receive time: wall clock
    if (req.method === "OPTIONS") {
      return new Response(null, { status: 204, headers: { Allow: ALLOW } });
    }
    if (req.method === "GET" || req.method === "HEAD") {
      const challenge = url.searchParams.get("hub.challenge");
      if (challenge === null || challenge === "" || challenge.length > MAX_ECHO) {
        return json(400, {
          error: "missing_challenge",
          message: challenge && challenge.length > MAX_ECHO
            ? `hub.challenge is longer than ${MAX_ECHO} characters`
            : "GET /webhook needs a hub.challenge query parameter; RingCentral itself uses POST",
        });
      }
      info.kind = "challenge";
      return new Response(req.method === "HEAD" ? null : challenge, {
        status: 200,
        headers: {
          "Content-Type": "text/plain; charset=utf-8",
          "X-Content-Type-Options": "nosniff",
        },
      });
    }
    if (req.method !== "POST") {
      return json(405, { error: "method_not_allowed", message: `${req.method} is not allowed` }, {
        Allow: ALLOW,
      });
    }

    const auth = deps.auth();
    const validationToken = req.headers.get("validation-token");
    const verificationToken = req.headers.get("verification-token");
    if (validationToken !== null && validationToken.length > MAX_ECHO) {
      return json(400, { error: "bad_validation_token", message: "Validation-Token is too long" });
    }

    const body = await readBody(req, deps.maxBodyBytes);
    if (body === "too_large") {
      invalid.inc({ reason: "too_large" });
      return json(413, {
        error: "too_large",
        message: `body is larger than ${deps.maxBodyBytes} bytes`,
      }, { Connection: "close" });
    }
    if (body === "aborted") {
      invalid.inc({ reason: "aborted" });
      return json(400, { error: "incomplete_body", message: "the request body was cut short" });
    }

    if (body.length === 0) {
      // The handshake and the Flask-compatible empty POST: nothing to store, so nothing to
      // verify, except that a token that is present must be right when tokens are configured.
      if (verificationToken !== null && auth.tokens.length > 0) {
        if (!matchesAnyToken(verificationToken, auth.tokens)) {
          rejected.inc({ reason: "token" });
          deps.log.warn("Handshake refused: Verification-Token does not match", {
            reason: "token",
          });
          return json(401, { error: "unauthorized", message: "Verification-Token does not match" });
        }
      }
      if (validationToken !== null) {
        handshakes.inc();
        info.kind = "handshake";
        return new Response(null, {
          status: 200,
          headers: { "Validation-Token": validationToken, "Content-Type": "application/json" },
        });
      }
      info.kind = "empty";
      return json(200, { status: "ok" });
    }

    // Verification comes before any parsing. RingCentral's current docs (wrongly) call the
    // per-event header Validation-Token; accept it there too.
    const presented = verificationToken ?? validationToken;
    if (auth.tokens.length > 0) {
      if (presented === null || !matchesAnyToken(presented, auth.tokens)) {
        rejected.inc({ reason: presented === null ? "token_missing" : "token" });
        deps.log.warn("Event refused: Verification-Token {problem}", {
          problem: presented === null ? "missing" : "does not match",
          userAgent: req.headers.get("user-agent")?.slice(0, 80),
        });
        return json(401, {
          error: "unauthorized",
          message: presented === null
            ? "Verification-Token header is missing"
            : "Verification-Token does not match",
        });
      }
    } else if (!auth.hmac && !auth.allowUnverified) {
      rejected.inc({ reason: "unconfigured" });
      return json(401, {
        error: "unauthorized",
        message: "no verification is configured and RINGHOOK_ALLOW_UNVERIFIED is not set",
      });
    }
    if (auth.hmac) {
      const sig = req.headers.get(auth.hmacHeader);
      if (!(await auth.hmac.verify(body, sig))) {
        rejected.inc({ reason: sig === null ? "signature_missing" : "signature" });
        deps.log.warn("Event refused: {header} {problem}", {
          header: auth.hmacHeader,
          problem: sig === null ? "is missing" : "does not verify",
        });
        return json(401, {
          error: "unauthorized",
          message: sig === null
            ? `${auth.hmacHeader} header is missing`
            : `${auth.hmacHeader} does not verify`,
        });
      }
    }

    const parsed = parseNotification(body);
    if (!parsed.ok) {
      invalid.inc({ reason: parsed.error.code });
      deps.log.info("Event refused: {reason}", {
        reason: parsed.error.reason,
        bodyPreview: previewBody(body, 128),
      });
      return json(400, { error: parsed.error.code, message: parsed.error.reason });
    }
    const n: Notification = {
      ...parsed.value,
      raw: body,
      headers: keptHeaders(req.headers),
      receivedAt,
    };
    info.uuid = n.uuid;
    info.event = n.event;
    if (deps.log.isEnabledFor("debug")) {
      deps.log.debug("Notification received", {
        uuid: n.uuid,
        headers: redactHeaders(req.headers, [auth.hmacHeader]),
        bodyPreview: previewBody(body),
      });
    }

    let outcome;
    try {
      outcome = await traced(
        "ringhook.accept",
        { "ringhook.uuid": n.uuid, "ringhook.event": n.event },
        async (span) => {
          const r = await deps.accept(n);
          span.setAttribute("ringhook.outcome", r.status);
          return r;
        },
      );
    } catch (e) {
      const cause = e instanceof JournalUnavailable ? e.message : String(e);
      received.inc({ outcome: "unavailable" });
      deps.log.error("Event {uuid} not stored: {cause}", { uuid: n.uuid, cause });
      return json(503, {
        error: "unavailable",
        message: "the journal cannot store events right now; nothing was stored",
      }, { "Retry-After": "5" });
    }
    ackLatency.observe((performance.now() - started) / 1000);
    if (outcome.status === "duplicate") {
      received.inc({ outcome: "duplicate" });
      info.kind = "duplicate";
      return json(200, { status: "duplicate", uuid: n.uuid });
    }
    received.inc({ outcome: "stored" });
    info.kind = "event";
    return json(200, { status: "received", uuid: n.uuid });
  };
}

/**
 * Reads a body up to `max` bytes. A declared Content-Length over the limit is refused
 * before reading; a chunked body is counted as it streams and cancelled past the limit.
 */
export async function readBody(
  req: Request,
  max: number,
): Promise<Uint8Array | "too_large" | "aborted"> {
  const declared = req.headers.get("content-length");
  if (declared !== null && /^\d+$/.test(declared)) {
    const n = Number(declared);
    if (n > max) return "too_large";
    if (n === 0) return new Uint8Array(0);
    // A declared length is enforced by the HTTP server: read it in one go.
    try {
      return new Uint8Array(await req.arrayBuffer());
    } catch {
      return "aborted";
    }
  }
  if (req.body === null) return new Uint8Array(0);
  const reader = req.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    while (true) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.length;
      if (total > max) {
        await reader.cancel().catch(() => {});
        return "too_large";
      }
      chunks.push(value);
    }
  } catch {
    return "aborted";
  }
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8Array(total);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}

function keptHeaders(h: Headers): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of KEPT_HEADERS) {
    const v = h.get(k);
    if (v !== null) out[k] = v.slice(0, 256);
  }
  return out;
}
