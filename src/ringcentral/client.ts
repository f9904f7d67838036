/**
 * A small RingCentral REST client for what ringhook needs: the JWT bearer login with proactive
 * refresh, the subscription endpoints, and the rate-limit rules of the reference (§4.3, §4.4):
 * a 429 closes a gate that every request waits behind until the penalty ends, 5xx and transport
 * errors back off on the documented schedule, and one login serves every concurrent caller.
 *
 * Written by hand rather than on `@ringcentral/sdk`; docs/ringcentral-client.md says why.
 * Web-standard APIs only: fetch, URL, AbortSignal. The clock, sleep and fetch are injectable.
 */
import { logger } from "../log.ts";
import type { Registry } from "../metrics.ts";

/** The path of the token endpoint. */
export const TOKEN_PATH = "/restapi/oauth/token";
/** The path of the subscription collection. */
export const SUBSCRIPTION_PATH = "/restapi/v1.0/subscription";
/** RingCentral's documented backoff for 5xx and transport errors, in seconds. */
export const DEFAULT_RETRY_SCHEDULE_SEC = [2, 3, 5, 8, 13, 21, 30];
/** How long to stop sending after a 429 without Retry-After (the documented penalty). */
export const DEFAULT_RETRY_AFTER_SEC = 60;

const JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/** Thrown inside the client when a request's token passed its refresh time while it waited. */
const STALE_TOKEN = Symbol("stale token");

/** An error from RingCentral (status > 0) or from the transport (status 0). */
export class RingCentralError extends Error {
  /** HTTP status; 0 when no response arrived. */
  readonly status: number;
  /** RingCentral's code (`CMN-102`, `SUB-520`, `OAU-128`...), or `NETWORK` / `HTTP-<status>`. */
  readonly errorCode: string;
  /** The detailed `errors[]` of the body, when present. */
  readonly errors: Array<{ errorCode?: string; message?: string; parameterName?: string }>;
  /** For 429: how long the client stopped sending, in ms. */
  readonly retryAfterMs?: number;

  /** Builds an error; `message` is RingCentral's message and never holds a secret. */
  constructor(
    status: number,
    errorCode: string,
    message: string,
    errors: RingCentralError["errors"] = [],
    retryAfterMs?: number,
  ) {
    super(message);
    this.name = "RingCentralError";
    this.status = status;
    this.errorCode = errorCode;
    this.errors = errors;
    this.retryAfterMs = retryAfterMs;
  }
}

/** Parses RingCentral's error body (`{errorCode, message, errors}` or the OAuth shape). */
export function parseRingCentralError(
  status: number,
  bodyText: string,
  statusText = "",
  retryAfterMs?: number,
): RingCentralError {
  let body: Record<string, unknown> = {};
  try {
    const parsed = JSON.parse(bodyText);
    if (parsed && typeof parsed === "object" && !Array.isArray(parsed)) body = parsed;
  } catch {
    // not JSON: keep the defaults
  }
  const errors = Array.isArray(body.errors)
    ? body.errors.filter((e): e is Record<string, string> => !!e && typeof e === "object")
    : [];
  const str = (v: unknown) => (typeof v === "string" && v !== "" ? v : undefined);
  const errorCode = str(body.errorCode) ?? str(errors[0]?.errorCode) ?? str(body.error) ??
    `HTTP-${status}`;
  const message = str(body.message) ?? str(body.error_description) ?? str(errors[0]?.message) ??
    (statusText || `HTTP ${status}`);
  return new RingCentralError(status, errorCode, message.slice(0, 500), errors, retryAfterMs);
}

/** True when the error says the resource does not exist (a deleted or expired subscription). */
export function isNotFound(e: unknown): boolean {
  return e instanceof RingCentralError &&
    (e.status === 404 || e.errorCode === "CMN-102" || e.errorCode === "SUB-404");
}

/** The latest X-Rate-Limit-* values RingCentral sent for one group. */
export interface RateLimitInfo {
  group: string;
  limit?: number;
  remaining?: number;
  windowSec?: number;
  /** When they were read (client clock, ms). */
  at: number;
}

/** The WebHook delivery mode of a subscription. */
export interface DeliveryMode {
  transportType: string;
  address?: string;
  encryption?: boolean;
  verificationToken?: string;
}

/** A subscription as RingCentral returns it (SubscriptionInfo). */
export interface SubscriptionInfo {
  uri?: string;
  id: string;
  eventFilters: string[];
  disabledFilters?: Array<{ filter: string; reason?: string; message?: string }>;
  expirationTime?: string;
  expiresIn?: number;
  status?: string;
  creationTime?: string;
  deliveryMode: DeliveryMode;
  blacklistedData?: { blacklistedAt?: string; reason?: string };
}

/** The body of `POST /subscription`; `expiresIn` is top-level, as RingCentral requires. */
export interface CreateSubscriptionRequest {
  eventFilters: string[];
  deliveryMode: {
    transportType: "WebHook";
    address: string;
    verificationToken?: string;
  };
  expiresIn?: number;
}

/** The body of `PUT /subscription/{id}`. */
export interface UpdateSubscriptionRequest {
  eventFilters?: string[];
  expiresIn?: number;
}

/** Per-call options. */
export interface CallOptions {
  /** Cancels the call, including any wait for a penalty or backoff. */
  signal?: AbortSignal;
}

/** Sleeps `ms`; rejects when `signal` aborts. */
export type Sleep = (ms: number, signal?: AbortSignal) => Promise<void>;

/** How to reach RingCentral and how patient to be. */
export interface RingCentralClientOptions {
  server: string;
  clientId: string;
  clientSecret: string;
  jwt: string;
  fetch?: typeof fetch;
  /** The clock, ms since epoch. */
  now?: () => number;
  sleep?: Sleep;
  /** Refresh this long before the access token expires (capped at half its lifetime). */
  refreshMarginMs?: number;
  /** Backoff for 5xx and transport errors, seconds; its length bounds the retries. */
  retryScheduleSec?: number[];
  /** The penalty assumed for a 429 without Retry-After, seconds. */
  defaultRetryAfterSec?: number;
  /** How many 429s one call rides out before it gives up (the gate stays closed regardless). */
  maxRateLimitRetries?: number;
  /** Per-request timeout, ms. */
  requestTimeoutMs?: number;
  /** Counters and rate-limit gauges go here when given. */
  metrics?: Registry;
}

interface Token {
  accessToken: string;
  tokenType: string;
  expiresAt: number;
  /** When to get a new one (expiresAt minus the margin). */
  refreshAt: number;
  refreshToken?: string;
  refreshExpiresAt?: number;
}

interface SendRequest {
  method: string;
  path: string;
  json?: unknown;
  form?: URLSearchParams;
  /** Token endpoint: Basic auth instead of the bearer token. */
  basic?: boolean;
  signal?: AbortSignal;
}

/** Sleeps with setTimeout; aborting clears the timer. */
export const realSleep: Sleep = (ms, signal) =>
  new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, Math.max(0, ms));
    signal?.addEventListener("abort", onAbort, { once: true });
  });

/** The RingCentral REST client: one per credential set, shared by every caller in the process. */
export class RingCentralClient {
  readonly #server: string;
  readonly #clientId: string;
  readonly #clientSecret: string;
  readonly #jwt: string;
  readonly #fetch: typeof fetch;
  readonly #now: () => number;
  readonly #sleep: Sleep;
  readonly #marginMs: number;
  readonly #schedule: number[];
  readonly #defaultRetryAfterMs: number;
  readonly #max429: number;
  readonly #timeoutMs: number;
  readonly #log = logger("ringcentral", "client");

  #token?: Token;
  #tokenInflight?: Promise<Token>;
  /** No request leaves before this time (client clock, ms). */
  #blockedUntil = 0;
  /** A penalty ended and no request has gone out since. */
  #afterPenalty = false;
  /** Settles when the probe request after a penalty has its answer. */
  #probe?: Promise<void>;
  #latest?: RateLimitInfo;
  readonly #byGroup = new Map<string, RateLimitInfo>();
  readonly #stats = { logins: 0, refreshes: 0, rateLimited: 0, retries: 0, requests: 0 };
  readonly #counters?: {
    logins: ReturnType<Registry["counter"]>;
    rateLimited: ReturnType<Registry["counter"]>;
    retries: ReturnType<Registry["counter"]>;
  };

  /** Creates a client; nothing is sent until the first call. */
  constructor(options: RingCentralClientOptions) {
    for (const k of ["server", "clientId", "clientSecret", "jwt"] as const) {
      if (!options[k]) throw new Error(`RingCentralClient: ${k} is required`);
    }
    this.#server = options.server.replace(/\/+$/, "");
    this.#clientId = options.clientId;
    this.#clientSecret = options.clientSecret;
    this.#jwt = options.jwt;
    this.#fetch = options.fetch ?? ((input, init) => fetch(input, init));
    this.#now = options.now ?? Date.now;
    this.#sleep = options.sleep ?? realSleep;
    this.#marginMs = options.refreshMarginMs ?? 5 * 60_000;
    this.#schedule = options.retryScheduleSec ?? DEFAULT_RETRY_SCHEDULE_SEC;
    this.#defaultRetryAfterMs = (options.defaultRetryAfterSec ?? DEFAULT_RETRY_AFTER_SEC) * 1000;
    this.#max429 = options.maxRateLimitRetries ?? 3;
    this.#timeoutMs = options.requestTimeoutMs ?? 30_000;
    const m = options.metrics;
    if (m) {
      this.#counters = {
        logins: m.counter("ringhook_rc_logins_total", "Token requests sent to RingCentral."),
        rateLimited: m.counter("ringhook_rc_rate_limited_total", "429 responses from RingCentral."),
        retries: m.counter("ringhook_rc_retries_total", "RingCentral requests retried."),
      };
      m.collect(
        "ringhook_rc_rate_limit_remaining",
        "X-Rate-Limit-Remaining as last reported.",
        () => this.#gauge("remaining"),
      );
      m.collect(
        "ringhook_rc_rate_limit_limit",
        "X-Rate-Limit-Limit as last reported.",
        () => this.#gauge("limit"),
      );
      m.collect("ringhook_rc_penalty_seconds", "Seconds left in a 429 penalty.", () => [
        { value: Math.max(0, this.#blockedUntil - this.#now()) / 1000 },
      ]);
    }
  }

  /** Logs in if there is no valid token (single-flight); resolves once a token is held. */
  async login(options: CallOptions = {}): Promise<void> {
    await this.#ensureToken(options.signal);
  }

  /** Creates a WebHook subscription (RingCentral sends the validation POST before this returns). */
  createSubscription(
    body: CreateSubscriptionRequest,
    options: CallOptions = {},
  ): Promise<SubscriptionInfo> {
    return this.request("POST", SUBSCRIPTION_PATH, body, options) as Promise<SubscriptionInfo>;
  }

  /** Reads one subscription. */
  getSubscription(id: string, options: CallOptions = {}): Promise<SubscriptionInfo> {
    return this.request("GET", subPath(id), undefined, options) as Promise<SubscriptionInfo>;
  }

  /** Lists the subscriptions of this user and app. */
  async listSubscriptions(options: CallOptions = {}): Promise<SubscriptionInfo[]> {
    const r = await this.request("GET", SUBSCRIPTION_PATH, undefined, options) as {
      records?: SubscriptionInfo[];
    };
    return r?.records ?? [];
  }

  /** Renews a subscription for its lifetime (`POST /subscription/{id}/renew`). */
  renewSubscription(id: string, options: CallOptions = {}): Promise<SubscriptionInfo> {
    return this.request("POST", `${subPath(id)}/renew`, undefined, options) as Promise<
      SubscriptionInfo
    >;
  }

  /** Replaces the event filters and/or lifetime (`PUT`); the address cannot change. */
  updateSubscription(
    id: string,
    body: UpdateSubscriptionRequest,
    options: CallOptions = {},
  ): Promise<SubscriptionInfo> {
    return this.request("PUT", subPath(id), body, options) as Promise<SubscriptionInfo>;
  }

  /** Deletes a subscription. */
  async deleteSubscription(id: string, options: CallOptions = {}): Promise<void> {
    await this.request("DELETE", subPath(id), undefined, options);
  }

  /** Sends an authenticated JSON request to a RingCentral path; returns the parsed body. */
  async request(
    method: string,
    path: string,
    body?: unknown,
    options: CallOptions = {},
  ): Promise<unknown> {
    let reauthenticated = false;
    for (;;) {
      const token = await this.#ensureToken(options.signal);
      try {
        return await this.#send({ method, path, json: body, signal: options.signal }, token);
      } catch (e) {
        // The token went stale while this call waited out a penalty or a backoff: get a fresh
        // one (refresh grant) rather than send it and earn a 401.
        if (e === STALE_TOKEN) continue;
        // A token rejected before its time (revoked session, OAU-128/129): log in again, once.
        if (e instanceof RingCentralError && e.status === 401 && !reauthenticated) {
          reauthenticated = true;
          if (this.#token === token) this.#token = undefined;
          this.#log.warn("RingCentral rejected the access token ({errorCode}); logging in again", {
            errorCode: e.errorCode,
          });
          continue;
        }
        throw e;
      }
    }
  }

  /** The latest rate-limit headers (overall and per group) and the end of any penalty. */
  rateLimitState(): { latest?: RateLimitInfo; byGroup: RateLimitInfo[]; penaltyUntil: number } {
    return {
      latest: this.#latest ? { ...this.#latest } : undefined,
      byGroup: [...this.#byGroup.values()].map((r) => ({ ...r })),
      penaltyUntil: this.#blockedUntil,
    };
  }

  /** Counts since start: token requests, refreshes, 429s, retries, requests sent. */
  stats(): {
    logins: number;
    refreshes: number;
    rateLimited: number;
    retries: number;
    requests: number;
  } {
    return { ...this.#stats };
  }

  #gauge(key: "remaining" | "limit"): Array<{ labels: Record<string, string>; value: number }> {
    return [...this.#byGroup.values()]
      .filter((r) => r[key] !== undefined)
      .map((r) => ({ labels: { group: r.group }, value: r[key] as number }));
  }

  /** A valid token, fetching one (single-flight) when absent or within the refresh margin. */
  #ensureToken(signal?: AbortSignal): Promise<Token> {
    const t = this.#token;
    if (t && this.#now() < t.refreshAt) return Promise.resolve(t);
    if (!this.#tokenInflight) {
      // The shared login must not die with one caller's signal; callers abort their own wait.
      this.#tokenInflight = this.#obtainToken(t).finally(() => {
        this.#tokenInflight = undefined;
      });
    }
    const p = this.#tokenInflight;
    if (!signal) return p;
    return new Promise<Token>((resolve, reject) => {
      if (signal.aborted) return reject(signal.reason);
      const onAbort = () => reject(signal.reason);
      signal.addEventListener("abort", onAbort, { once: true });
      p.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
    });
  }

  async #obtainToken(old: Token | undefined): Promise<Token> {
    const now = this.#now();
    if (old?.refreshToken && old.refreshExpiresAt !== undefined && now < old.refreshExpiresAt) {
      try {
        const t = await this.#tokenRequest(
          new URLSearchParams({ grant_type: "refresh_token", refresh_token: old.refreshToken }),
        );
        this.#stats.refreshes++;
        this.#counters?.logins.inc({ grant: "refresh_token" });
        this.#log.info("RingCentral access token refreshed; it expires in {expiresInSec} s", {
          expiresInSec: Math.round((t.expiresAt - this.#now()) / 1000),
        });
        return t;
      } catch (e) {
        if (!(e instanceof RingCentralError) || e.status === 0 || e.status >= 500) throw e;
        this.#log.warn("Refreshing the RingCentral token failed ({errorCode}); using the JWT", {
          errorCode: e.errorCode,
        });
      }
    }
    const t = await this.#tokenRequest(
      new URLSearchParams({ grant_type: JWT_GRANT, assertion: this.#jwt }),
    );
    this.#stats.logins++;
    this.#counters?.logins.inc({ grant: "jwt" });
    this.#log.info("Logged in to RingCentral; the access token expires in {expiresInSec} s", {
      expiresInSec: Math.round((t.expiresAt - this.#now()) / 1000),
    });
    return t;
  }

  async #tokenRequest(form: URLSearchParams): Promise<Token> {
    const body = await this.#send({ method: "POST", path: TOKEN_PATH, form, basic: true });
    const r = (body ?? {}) as Record<string, unknown>;
    if (typeof r.access_token !== "string" || r.access_token === "") {
      throw new RingCentralError(
        200,
        "BAD-TOKEN-RESPONSE",
        "the token response has no access_token",
      );
    }
    const now = this.#now();
    const lifeMs = Math.max(1, Number(r.expires_in) || 3600) * 1000;
    const margin = Math.min(this.#marginMs, lifeMs / 2);
    const refreshLifeMs = Number(r.refresh_token_expires_in) * 1000;
    const token: Token = {
      accessToken: r.access_token,
      tokenType: typeof r.token_type === "string" && r.token_type ? r.token_type : "bearer",
      expiresAt: now + lifeMs,
      refreshAt: now + lifeMs - margin,
      refreshToken: typeof r.refresh_token === "string" ? r.refresh_token : undefined,
      refreshExpiresAt: refreshLifeMs > 0 ? now + refreshLifeMs - margin : undefined,
    };
    this.#token = token;
    return token;
  }

  /**
   * Waits until no penalty is running. Every request passes here right before it is sent. The
   * first request after a penalty goes alone (a probe): the others wait for its answer, so a
   * second 429 does not find a crowd already on the wire. Returns the function that ends the probe.
   */
  async #gate(signal?: AbortSignal): Promise<() => void> {
    for (;;) {
      const wait = this.#blockedUntil - this.#now();
      if (wait > 0) {
        await this.#sleep(wait, signal);
        continue;
      }
      if (this.#probe) {
        await abortable(this.#probe, signal);
        continue;
      }
      if (!this.#afterPenalty) return () => {};
      this.#afterPenalty = false;
      let resolve = () => {};
      const probe = new Promise<void>((r) => (resolve = r));
      this.#probe = probe;
      let ended = false;
      return () => {
        if (ended) return;
        ended = true;
        if (this.#probe === probe) this.#probe = undefined;
        resolve();
      };
    }
  }

  /** One logical request: gate, send, read rate-limit headers, retry per the rules. */
  async #send(req: SendRequest, token?: Token): Promise<unknown> {
    let failures = 0;
    let limited = 0;
    for (;;) {
      const endProbe = await this.#gate(req.signal);
      if (token && this.#now() >= token.refreshAt) {
        endProbe();
        throw STALE_TOKEN;
      }
      try {
        const headers = new Headers({ Accept: "application/json" });
        let body: string | undefined;
        if (req.basic) {
          headers.set(
            "Authorization",
            `Basic ${base64(`${this.#clientId}:${this.#clientSecret}`)}`,
          );
        } else if (token) {
          headers.set("Authorization", `Bearer ${token.accessToken}`);
        }
        if (req.form) {
          headers.set("Content-Type", "application/x-www-form-urlencoded");
          body = req.form.toString();
        } else if (req.json !== undefined) {
          headers.set("Content-Type", "application/json");
          body = JSON.stringify(req.json);
        }

        let res: Response;
        let text: string;
        const timeout = new AbortController();
        const timer = setTimeout(
          () => timeout.abort(new Error(`no response within ${this.#timeoutMs} ms`)),
          this.#timeoutMs,
        );
        const signal = req.signal ? AbortSignal.any([req.signal, timeout.signal]) : timeout.signal;
        try {
          this.#stats.requests++;
          res = await this.#fetch(this.#server + req.path, {
            method: req.method,
            headers,
            body,
            signal,
          });
          text = await res.text();
        } catch (e) {
          if (req.signal?.aborted) throw req.signal.reason;
          const reason = timeout.signal.aborted
            ? String(timeout.signal.reason?.message)
            : errText(e);
          if (failures < this.#schedule.length) {
            endProbe(); // others may try while this one backs off
            await this.#retryWait(req, failures++, "network", reason);
            continue;
          }
          throw new RingCentralError(0, "NETWORK", `${req.method} ${req.path}: ${reason}`);
        } finally {
          clearTimeout(timer);
        }

        this.#readRateLimit(res.headers);

        if (res.status === 429) {
          const ms = this.#retryAfterMs(res.headers.get("retry-after")) ??
            this.#defaultRetryAfterMs;
          this.#blockedUntil = Math.max(this.#blockedUntil, this.#now() + ms);
          this.#afterPenalty = true;
          this.#stats.rateLimited++;
          this.#counters?.rateLimited.inc();
          const err = parseRingCentralError(429, text, res.statusText, ms);
          this.#log.warn(
            "RingCentral rate limit ({errorCode}) on {method} {path}: sending nothing for {waitSec} s",
            { errorCode: err.errorCode, method: req.method, path: req.path, waitSec: ms / 1000 },
          );
          if (limited++ < this.#max429) {
            this.#stats.retries++;
            this.#counters?.retries.inc({ reason: "rate_limit" });
            continue; // the gate holds this request (and every other) until the penalty ends
          }
          throw err;
        }

        if (res.status >= 500) {
          const err = parseRingCentralError(res.status, text, res.statusText);
          if (failures < this.#schedule.length) {
            const extra = this.#retryAfterMs(res.headers.get("retry-after"));
            endProbe();
            await this.#retryWait(
              req,
              failures++,
              `${res.status} ${err.errorCode}`,
              undefined,
              extra,
            );
            continue;
          }
          throw err;
        }

        if (!res.ok) throw parseRingCentralError(res.status, text, res.statusText);
        if (text.trim() === "") return undefined;
        try {
          return JSON.parse(text);
        } catch {
          throw new RingCentralError(res.status, "BAD-JSON", `${req.method} ${req.path}: not JSON`);
        }
      } finally {
        endProbe();
      }
    }
  }

  async #retryWait(
    req: SendRequest,
    attempt: number,
    why: string,
    detail?: string,
    atLeastMs = 0,
  ): Promise<void> {
    const ms = Math.max(this.#schedule[attempt] * 1000, atLeastMs);
    this.#stats.retries++;
    this.#counters?.retries.inc({ reason: why === "network" ? "network" : "server" });
    this.#log.warn("RingCentral {method} {path} failed ({why}); retry {n} in {waitSec} s", {
      method: req.method,
      path: req.path,
      why: detail ? `${why}: ${detail}` : why,
      n: attempt + 1,
      waitSec: ms / 1000,
    });
    await this.#sleep(ms, req.signal);
  }

  #retryAfterMs(value: string | null): number | undefined {
    if (value === null || value.trim() === "") return undefined;
    const v = value.trim();
    if (/^\d+(\.\d+)?$/.test(v)) return Math.max(1000, Math.ceil(Number(v) * 1000));
    const date = Date.parse(v);
    if (Number.isNaN(date)) return undefined;
    return Math.max(1000, date - this.#now());
  }

  #readRateLimit(h: Headers): void {
    const group = h.get("x-rate-limit-group");
    if (group === null) return;
    const num = (name: string) => {
      const v = h.get(name);
      return v === null || !/^\d+$/.test(v.trim()) ? undefined : Number(v);
    };
    const info: RateLimitInfo = {
      group,
      limit: num("x-rate-limit-limit"),
      remaining: num("x-rate-limit-remaining"),
      windowSec: num("x-rate-limit-window"),
      at: this.#now(),
    };
    this.#latest = info;
    this.#byGroup.set(group, info);
  }
}

function subPath(id: string): string {
  return `${SUBSCRIPTION_PATH}/${encodeURIComponent(id)}`;
}

function base64(s: string): string {
  let bin = "";
  for (const b of new TextEncoder().encode(s)) bin += String.fromCharCode(b);
  return btoa(bin);
}

/** Waits for `p`, or rejects when `signal` aborts first. */
function abortable(p: Promise<void>, signal?: AbortSignal): Promise<void> {
  if (!signal) return p;
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(resolve).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

function errText(e: unknown): string {
  return e instanceof Error ? `${e.name}: ${e.message}`.slice(0, 300) : String(e).slice(0, 300);
}
