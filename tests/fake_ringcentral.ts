/**
 * A fake RingCentral API on a loopback port, behaving as ../shared/reference/ringcentral-webhooks.md
 * describes: JWT login with Basic auth, expiring tokens (OAU-128), the subscription endpoints with
 * SubscriptionInfo shapes and RingCentral's error bodies, a real validation POST on create
 * (SUB-520 / CMN-101 / SUB-525), blacklisting, 429 penalties that restart when a request arrives
 * inside them, and notification delivery with the Verification-Token header.
 */

/** One request the fake received. */
export interface RecordedRequest {
  method: string;
  /** Path and query. */
  path: string;
  /** Arrival time, ms since epoch. */
  at: number;
  status: number;
  /** The request body as text. */
  body: string;
}

/** A subscription as the fake holds it. */
export interface FakeSubscription {
  id: string;
  eventFilters: string[];
  address: string;
  verificationToken?: string;
  expiresIn: number;
  expiresAt: number;
  creationTime: string;
  status: "Active" | "Blacklisted";
  blacklistedData?: { blacklistedAt: string; reason: string };
}

/** What one validation POST looked like and how it ended. */
export interface ValidationAttempt {
  address: string;
  validationToken: string;
  verificationToken: string | null;
  outcome: "ok" | "SUB-520" | "SUB-525" | "CMN-101";
  responseBytes?: number;
}

/** Settings of the fake. */
export interface FakeOptions {
  clientId?: string;
  clientSecret?: string;
  jwt?: string;
  /** `expires_in` of issued access tokens, seconds. */
  tokenTtlSec?: number;
  refreshTokenTtlSec?: number;
  /** Subscriptions allowed per user and app (SUB-505 beyond). */
  maxSubscriptions?: number;
  /** How long the validation POST may take, ms (RingCentral: 3000). */
  validationTimeoutMs?: number;
}

/** The ids the fake resolves `~` to. */
export const FAKE_ACCOUNT_ID = "999000001";
export const FAKE_EXTENSION_ID = "999000101";

const JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const SUB_PATH = "/restapi/v1.0/subscription";

/** The fake API; start() it, close() it. */
export class FakeRingCentral {
  readonly clientId: string;
  readonly clientSecret: string;
  readonly jwt: string;
  tokenTtlSec: number;
  refreshTokenTtlSec: number;
  maxSubscriptions: number;
  validationTimeoutMs: number;

  /** Every request, in arrival order. */
  readonly requests: RecordedRequest[] = [];
  readonly subscriptions = new Map<string, FakeSubscription>();
  readonly validations: ValidationAttempt[] = [];
  /** Every access and refresh token issued (to check they never reach a log). */
  readonly issuedTokens: string[] = [];
  /** JWT grants and refresh-token grants that succeeded. */
  logins = 0;
  refreshes = 0;
  /** Requests that arrived while a 429 penalty was running (each one restarted it). */
  requestsInPenalty = 0;
  /** When the current penalty started and ends (ms); 0 when none ran yet. */
  penaltyStartedAt = 0;
  penaltyUntil = 0;

  #server?: Deno.HttpServer<Deno.NetAddr>;
  #tokens = new Map<string, number>();
  #refreshTokens = new Map<string, number>();
  #storm = { triggers: 0, penaltyMs: 0, sendRetryAfter: true };
  #failures: number[] = [];
  #seq = 0;
  #pending = new Set<Promise<unknown>>();
  #windows = new Map<string, { start: number; used: number }>();

  /** Creates the fake; call start(). */
  constructor(o: FakeOptions = {}) {
    this.clientId = o.clientId ?? "fake-client-id";
    this.clientSecret = o.clientSecret ?? "fake-client-secret-0123456789";
    this.jwt = o.jwt ?? "fake.jwt.credential-abcdef0123456789";
    this.tokenTtlSec = o.tokenTtlSec ?? 3600;
    this.refreshTokenTtlSec = o.refreshTokenTtlSec ?? 604800;
    this.maxSubscriptions = o.maxSubscriptions ?? 30;
    this.validationTimeoutMs = o.validationTimeoutMs ?? 3000;
  }

  /** Listens on a free loopback port. */
  start(): this {
    this.#server = Deno.serve(
      { port: 0, hostname: "127.0.0.1", onListen: () => {} },
      (req) => this.#track(this.#handle(req)),
    );
    return this;
  }

  /** The base URL (what RINGHOOK_RC_SERVER would be). */
  get url(): string {
    if (!this.#server) throw new Error("fake not started");
    return `http://127.0.0.1:${this.#server.addr.port}`;
  }

  /** Stops listening, after the validation POSTs and notifications in flight. */
  async close(): Promise<void> {
    await Promise.allSettled([...this.#pending]);
    await this.#server?.shutdown();
  }

  /** Requests filtered by method and a path prefix or pattern. */
  requestsTo(method: string, path: string | RegExp): RecordedRequest[] {
    return this.requests.filter((r) =>
      r.method === method &&
      (typeof path === "string" ? r.path.split("?")[0] === path : path.test(r.path))
    );
  }

  /**
   * Arms a 429 storm: each of the next `triggers` requests outside a penalty gets a 429 and
   * starts a penalty of `penaltyMs`; any request inside a penalty gets a 429, restarts it and is
   * counted in requestsInPenalty.
   */
  startRateLimitStorm(o: { triggers?: number; penaltyMs?: number; sendRetryAfter?: boolean } = {}) {
    this.#storm = {
      triggers: o.triggers ?? 1,
      penaltyMs: o.penaltyMs ?? 1000,
      sendRetryAfter: o.sendRetryAfter ?? true,
    };
  }

  /** The next `count` API requests fail with `status` (5xx). */
  failNext(count: number, status = 503): void {
    for (let i = 0; i < count; i++) this.#failures.push(status);
  }

  /** Invalidates every access token (the next API call gets 401 OAU-128). */
  expireAccessTokens(): void {
    for (const k of this.#tokens.keys()) this.#tokens.set(k, 0);
  }

  /** Invalidates every refresh token (the session was revoked). */
  revokeRefreshTokens(): void {
    this.#refreshTokens.clear();
  }

  /** Blacklists a subscription as RingCentral does after failed deliveries. */
  blacklist(id: string, reason = "Webhook responses with code: [404], reason: [Not Found]"): void {
    const s = this.#sub(id);
    s.status = "Blacklisted";
    s.blacklistedData = { blacklistedAt: new Date().toISOString(), reason };
  }

  /** Lets a subscription expire: it is gone (404 CMN-102) afterwards. */
  expire(id: string): void {
    this.#sub(id);
    this.subscriptions.delete(id);
  }

  /** Sends a notification to the subscription's address; returns the receiver's status. */
  notify(id: string, event: string, body: Record<string, unknown>): Promise<number> {
    const s = this.#sub(id);
    const envelope = {
      uuid: crypto.randomUUID(),
      event,
      timestamp: new Date().toISOString(),
      subscriptionId: s.id,
      ownerId: FAKE_EXTENSION_ID,
      body,
    };
    const headers: Record<string, string> = {
      "Accept": "application/json",
      "Content-Type": "application/json; charset=UTF-8",
      "User-Agent": "RingCentral-Webhook/8.3",
    };
    if (s.verificationToken) headers["Verification-Token"] = s.verificationToken;
    return this.#track((async () => {
      const res = await fetch(s.address, {
        method: "POST",
        headers,
        body: JSON.stringify(envelope),
      });
      await res.body?.cancel();
      return res.status;
    })());
  }

  /** Sends the renewal reminder: `event` is the reminder filter, literally. */
  sendRenewalReminder(id: string): Promise<number> {
    const s = this.#sub(id);
    const filter = s.eventFilters.find((f) => f.startsWith("/restapi/v1.0/subscription/~?"));
    if (!filter) throw new Error(`subscription ${id} has no renewal reminder filter`);
    return this.notify(id, filter, {
      expiresIn: Math.max(0, Math.round((s.expiresAt - Date.now()) / 1000)),
    });
  }

  #track<T>(p: Promise<T>): Promise<T> {
    this.#pending.add(p);
    p.finally(() => this.#pending.delete(p)).catch(() => {});
    return p;
  }

  #sub(id: string): FakeSubscription {
    const s = this.subscriptions.get(id);
    if (!s) throw new Error(`fake: no subscription ${id}`);
    return s;
  }

  async #handle(req: Request): Promise<Response> {
    const at = Date.now();
    const url = new URL(req.url);
    const body = await req.text();
    const record: RecordedRequest = {
      method: req.method,
      path: url.pathname + url.search,
      at,
      status: 0,
      body,
    };
    this.requests.push(record);
    const res = await this.#route(req, url, body, at);
    record.status = res.status;
    // X-Rate-Limit-Remaining counts down per group within a 60 s window.
    const group = res.headers.get("x-rate-limit-group");
    if (group && res.status !== 429) {
      const w = this.#windows.get(group);
      const win = w && at - w.start < 60_000 ? w : { start: at, used: 0 };
      win.used++;
      this.#windows.set(group, win);
      const limit = Number(res.headers.get("x-rate-limit-limit"));
      res.headers.set("X-Rate-Limit-Remaining", String(Math.max(0, limit - win.used)));
    }
    return res;
  }

  async #route(req: Request, url: URL, body: string, at: number): Promise<Response> {
    const path = url.pathname;
    const group = path === "/restapi/oauth/token"
      ? "auth"
      : req.method === "GET" || path.endsWith("/renew")
      ? "light"
      : "medium";

    // Rate limiting comes first: RingCentral counts every request, including the token endpoint.
    if (at < this.penaltyUntil) {
      this.requestsInPenalty++;
      this.penaltyUntil = at + this.#storm.penaltyMs;
      return this.#tooMany(group);
    }
    if (this.#storm.triggers > 0) {
      this.#storm.triggers--;
      this.penaltyStartedAt = at;
      this.penaltyUntil = at + this.#storm.penaltyMs;
      return this.#tooMany(group);
    }
    const failure = this.#failures.shift();
    if (failure !== undefined) {
      return error(failure, "CMN-211", "Service Temporary Unavailable", group);
    }

    if (path === "/restapi/oauth/token" && req.method === "POST") return this.#token(req, body);

    // Everything else needs a valid bearer token.
    const auth = req.headers.get("authorization") ?? "";
    const m = /^Bearer (.+)$/i.exec(auth);
    const expiresAt = m ? this.#tokens.get(m[1]) : undefined;
    if (expiresAt === undefined) {
      return error(401, "OAU-129", "Access token corrupted", group);
    }
    if (expiresAt <= at) return error(401, "OAU-128", "Access token expired", group);

    if (path === SUB_PATH && req.method === "POST") return await this.#create(body, at, group);
    if (path === SUB_PATH && req.method === "GET") {
      const records = [...this.subscriptions.values()].map((s) => this.#info(s, at));
      return json(200, { uri: this.url + SUB_PATH, records }, group);
    }
    const sm = /^\/restapi\/v1\.0\/subscription\/([^/]+)(\/renew)?$/.exec(path);
    if (sm) {
      const id = decodeURIComponent(sm[1]);
      const s = this.subscriptions.get(id);
      if (!s) {
        return error(
          404,
          "CMN-102",
          "Resource for parameter [subscriptionId] is not found",
          group,
          {
            parameterName: "subscriptionId",
          },
        );
      }
      if (sm[2] && req.method === "POST") {
        s.expiresAt = at + s.expiresIn * 1000;
        return json(200, this.#info(s, at), group);
      }
      if (!sm[2] && req.method === "GET") return json(200, this.#info(s, at), group);
      if (!sm[2] && req.method === "PUT") {
        let b: Record<string, unknown>;
        try {
          b = body.trim() === "" ? {} : JSON.parse(body);
        } catch {
          return error(400, "CMN-100", "The request body is not valid JSON", group);
        }
        if (Array.isArray(b.eventFilters)) {
          s.eventFilters = b.eventFilters.map((f) => resolveFilter(String(f)));
        }
        if (typeof b.expiresIn === "number") s.expiresIn = b.expiresIn;
        s.expiresAt = at + s.expiresIn * 1000;
        return json(200, this.#info(s, at), group);
      }
      if (!sm[2] && req.method === "DELETE") {
        this.subscriptions.delete(id);
        return new Response(null, { status: 204, headers: rateHeaders(group) });
      }
    }
    return error(404, "CMN-102", `Resource not found: ${req.method} ${path}`, group);
  }

  #tooMany(group: string): Response {
    const headers = rateHeaders(group, 0);
    if (this.#storm.sendRetryAfter) {
      headers["Retry-After"] = String(Math.ceil(this.#storm.penaltyMs / 1000));
    }
    return json(429, errorBody("CMN-301", "Request rate exceeded"), group, headers);
  }

  #token(req: Request, body: string): Response {
    const expected = "Basic " + btoa(`${this.clientId}:${this.clientSecret}`);
    if (req.headers.get("authorization") !== expected) {
      return json(401, {
        error: "invalid_client",
        error_description: "Invalid client",
        ...errorBody("OAU-123", "Invalid client"),
      }, "auth");
    }
    if (!(req.headers.get("content-type") ?? "").startsWith("application/x-www-form-urlencoded")) {
      return error(415, "CMN-415", "Unsupported Media Type", "auth");
    }
    const form = new URLSearchParams(body);
    const grant = form.get("grant_type");
    if (grant === JWT_GRANT) {
      if (form.get("assertion") !== this.jwt) {
        return json(400, {
          error: "invalid_grant",
          error_description: "Invalid token",
          ...errorBody("OAU-213", "Invalid token"),
        }, "auth");
      }
      this.logins++;
      return this.#issue();
    }
    if (grant === "refresh_token") {
      const rt = form.get("refresh_token") ?? "";
      const until = this.#refreshTokens.get(rt);
      if (until === undefined || until <= Date.now()) {
        return json(400, {
          error: "invalid_grant",
          error_description: "Token is expired",
          ...errorBody("OAU-211", "Token is expired"),
        }, "auth");
      }
      this.#refreshTokens.delete(rt);
      this.refreshes++;
      return this.#issue();
    }
    return json(400, {
      error: "unsupported_grant_type",
      ...errorBody("OAU-250", "Unsupported grant type"),
    }, "auth");
  }

  #issue(): Response {
    const n = ++this.#seq;
    const access = `FAKE-ACCESS-TOKEN-${n}-${crypto.randomUUID()}`;
    const refresh = `FAKE-REFRESH-TOKEN-${n}-${crypto.randomUUID()}`;
    this.issuedTokens.push(access, refresh);
    this.#tokens.set(access, Date.now() + this.tokenTtlSec * 1000);
    this.#refreshTokens.set(refresh, Date.now() + this.refreshTokenTtlSec * 1000);
    return json(200, {
      access_token: access,
      token_type: "bearer",
      expires_in: this.tokenTtlSec,
      refresh_token: refresh,
      refresh_token_expires_in: this.refreshTokenTtlSec,
      scope: "CallControl ReadMessages ReadPresence SMS SubscriptionWebhook",
      owner_id: FAKE_EXTENSION_ID,
      endpoint_id: "fakeEndpointId0001",
      session_id: `fake-session-${n}`,
    }, "auth");
  }

  async #create(body: string, at: number, group: string): Promise<Response> {
    let b: Record<string, unknown>;
    try {
      b = JSON.parse(body);
    } catch {
      return error(400, "CMN-100", "The request body is not valid JSON", group);
    }
    const dm = (b.deliveryMode ?? {}) as Record<string, unknown>;
    if (!Array.isArray(b.eventFilters) || b.eventFilters.length === 0) {
      return error(400, "CMN-101", "Parameter [eventFilters] value is invalid", group, {
        parameterName: "eventFilters",
      });
    }
    if (dm.transportType !== "WebHook" || typeof dm.address !== "string") {
      return error(400, "CMN-101", "Parameter [deliveryMode] value is invalid", group, {
        parameterName: "deliveryMode",
      });
    }
    if (this.subscriptions.size >= this.maxSubscriptions) {
      return error(400, "SUB-505", "Subscriptions limit exceeded", group);
    }
    const verificationToken = typeof dm.verificationToken === "string"
      ? dm.verificationToken
      : undefined;
    const outcome = await this.#validate(dm.address, verificationToken);
    if (outcome === "CMN-101") {
      return error(400, "CMN-101", "Parameter [deliveryMode.address] value is invalid", group, {
        parameterName: "deliveryMode.address",
      });
    }
    if (outcome === "SUB-520") {
      return error(400, "SUB-520", "Validation Token is not returned", group);
    }
    if (outcome === "SUB-525") {
      return error(400, "SUB-525", "WebHook server response is invalid", group);
    }

    // expiresIn counts only at the top level (nested in deliveryMode it is ignored: 7 days).
    const expiresIn = typeof b.expiresIn === "number" ? b.expiresIn : 604800;
    const s: FakeSubscription = {
      id: crypto.randomUUID(),
      eventFilters: b.eventFilters.map((f) => resolveFilter(String(f))),
      address: dm.address,
      verificationToken,
      expiresIn,
      expiresAt: Date.now() + expiresIn * 1000,
      creationTime: new Date(at).toISOString(),
      status: "Active",
    };
    this.subscriptions.set(s.id, s);
    return json(200, this.#info(s, Date.now()), group);
  }

  /** The validation POST: empty body, Validation-Token (+ Verification-Token) headers. */
  async #validate(
    address: string,
    verificationToken: string | undefined,
  ): Promise<ValidationAttempt["outcome"]> {
    const validationToken = crypto.randomUUID();
    const attempt: ValidationAttempt = {
      address,
      validationToken,
      verificationToken: verificationToken ?? null,
      outcome: "CMN-101",
    };
    this.validations.push(attempt);
    const headers: Record<string, string> = {
      "Validation-Token": validationToken,
      "Content-Type": "application/json",
    };
    if (verificationToken) headers["Verification-Token"] = verificationToken;
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), this.validationTimeoutMs);
    try {
      const res = await fetch(address, { method: "POST", headers, body: "", signal: ctl.signal });
      const text = new Uint8Array(await res.arrayBuffer());
      let size = `HTTP/1.1 ${res.status} ${res.statusText}\r\n`.length + 2 + text.length;
      for (const [k, v] of res.headers) size += `${k}: ${v}\r\n`.length;
      attempt.responseBytes = size;
      if (res.status !== 200) attempt.outcome = "SUB-525";
      else if (res.headers.get("validation-token") !== validationToken) attempt.outcome = "SUB-520";
      else if (size > 1024) attempt.outcome = "SUB-525";
      else attempt.outcome = "ok";
    } catch {
      attempt.outcome = "CMN-101"; // timeout, refused, TLS
    } finally {
      clearTimeout(timer);
    }
    return attempt.outcome;
  }

  #info(s: FakeSubscription, now: number) {
    const info: Record<string, unknown> = {
      uri: `${this.url}${SUB_PATH}/${s.id}`,
      id: s.id,
      creationTime: s.creationTime,
      status: s.status,
      eventFilters: s.eventFilters,
      expirationTime: new Date(s.expiresAt).toISOString(),
      expiresIn: Math.max(0, Math.floor((s.expiresAt - now) / 1000)),
      deliveryMode: { transportType: "WebHook", encryption: false, address: s.address },
    };
    if (s.blacklistedData) info.blacklistedData = s.blacklistedData;
    return info;
  }
}

/** Resolves `~` in account/extension filters to ids, as RingCentral does; the reminder stays. */
export function resolveFilter(f: string): string {
  if (f.startsWith("/restapi/v1.0/subscription/")) return f;
  return f.replace("/account/~", `/account/${FAKE_ACCOUNT_ID}`)
    .replace("/extension/~", `/extension/${FAKE_EXTENSION_ID}`);
}

function errorBody(errorCode: string, message: string, extra: Record<string, string> = {}) {
  return { errorCode, message, errors: [{ errorCode, message, ...extra }] };
}

function error(
  status: number,
  code: string,
  message: string,
  group: string,
  extra: Record<string, string> = {},
): Response {
  return json(status, errorBody(code, message, extra), group);
}

function rateHeaders(group: string, remaining?: number): Record<string, string> {
  const limit = group === "auth" ? 5 : group === "light" ? 50 : 40;
  return {
    "X-Rate-Limit-Group": group,
    "X-Rate-Limit-Limit": String(limit),
    "X-Rate-Limit-Remaining": String(remaining ?? limit),
    "X-Rate-Limit-Window": "60",
  };
}

function json(
  status: number,
  body: unknown,
  group: string,
  headers: Record<string, string> = rateHeaders(group),
): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { ...headers, "Content-Type": "application/json" },
  });
}
