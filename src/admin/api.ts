/**
 * The admin API under /api/v1/: read-only views of events, calls, call events,
 * the subscription and the instance's status. Bearer-token protected; with no
 * token configured it is off (403), never open. Routes match openapi.json.
 */
import type { CallRow, JournalEntry, Store } from "../journal/types.ts";
import { json } from "../http/respond.ts";
import { matchesAnyToken } from "../verify.ts";
import { CALLS_TOPIC } from "../calls/processor.ts";
import { parseCallState } from "../calls/tracker.ts";
import type { Keeper } from "../ringcentral/keeper.ts";
import openapi from "./openapi.json" with { type: "json" };

/** What the admin API reads. */
export interface AdminDeps {
  tokens: () => readonly string[];
  store: Store;
  readiness: () => { ready: boolean; reason?: string };
  consumers: () => Record<string, number>;
  keeper?: Keeper;
  version: string;
}

type Params = Record<string, string>;
type RouteHandler = (url: URL, params: Params) => Promise<Response>;

/** One route: the method and the OpenAPI path template it serves. */
export interface Route {
  method: "GET";
  path: string;
  handler: RouteHandler;
}

/** The routes of the admin API (the OpenAPI document lists exactly these). */
export function adminRoutes(d: AdminDeps): Route[] {
  return [
    { method: "GET", path: "/api/v1/status", handler: () => status(d) },
    { method: "GET", path: "/api/v1/events", handler: (u) => listEvents(d.store, u) },
    { method: "GET", path: "/api/v1/events/{uuid}", handler: (_u, p) => getEvent(d.store, p.uuid) },
    { method: "GET", path: "/api/v1/calls", handler: (u) => listCalls(d.store, u) },
    {
      method: "GET",
      path: "/api/v1/calls/{telephonySessionId}",
      handler: (_u, p) => getCall(d.store, p.telephonySessionId),
    },
    { method: "GET", path: "/api/v1/call-events", handler: (u) => callEvents(d.store, u) },
    { method: "GET", path: "/api/v1/subscription", handler: () => subscription(d) },
    {
      method: "GET",
      path: "/api/v1/openapi.json",
      handler: () => Promise.resolve(json(200, openapi)),
    },
  ];
}

/** The admin handler: undefined for paths outside /api/, so the caller can 404 them. */
export function createAdmin(
  d: AdminDeps,
): (req: Request, url: URL) => Promise<Response | undefined> {
  const routes = adminRoutes(d).map((r) => ({ ...r, re: templateToRegExp(r.path) }));
  return async (req, url) => {
    if (!url.pathname.startsWith("/api/")) return undefined;
    const tokens = d.tokens();
    if (tokens.length === 0) {
      return json(403, {
        error: "admin_disabled",
        message: "the admin API is off: set RINGHOOK_ADMIN_TOKEN to turn it on",
      });
    }
    const auth = req.headers.get("authorization") ?? "";
    const m = auth.match(/^Bearer\s+(\S+)$/i);
    if (!m || !matchesAnyToken(m[1], tokens)) {
      return json(401, {
        error: "unauthorized",
        message: m ? "the bearer token does not match" : "send Authorization: Bearer <token>",
      }, { "WWW-Authenticate": 'Bearer realm="ringhook"' });
    }
    const path = url.pathname.replace(/\/+$/, "");
    const matching = routes.filter((r) => r.re.test(path));
    if (matching.length === 0) {
      return json(404, { error: "not_found", message: `no admin route for ${path}` });
    }
    const route = matching.find((r) => r.method === req.method || (req.method === "HEAD"));
    if (!route) {
      return json(405, { error: "method_not_allowed", message: `${req.method} is not allowed` }, {
        Allow: "GET, HEAD",
      });
    }
    const params = route.re.exec(path)!.groups ?? {};
    for (const k of Object.keys(params)) {
      try {
        params[k] = decodeURIComponent(params[k]);
      } catch {
        return json(400, { error: "bad_request", message: `${k} is not valid percent-encoding` });
      }
    }
    try {
      return await route.handler(url, params);
    } catch (e) {
      if (e instanceof BadRequest) return json(400, { error: "bad_request", message: e.message });
      throw e;
    }
  };
}

/** A query parameter problem, answered with 400. */
class BadRequest extends Error {}

function templateToRegExp(template: string): RegExp {
  return new RegExp(`^${template.replace(/\{(\w+)\}/g, "(?<$1>[^/]+)")}$`);
}

function limitOf(url: URL, fallback = 50, max = 500): number {
  const raw = url.searchParams.get("limit");
  if (raw === null) return fallback;
  if (!/^\d+$/.test(raw) || Number(raw) < 1 || Number(raw) > max) {
    throw new BadRequest(`limit must be a whole number from 1 to ${max}`);
  }
  return Number(raw);
}

/** Accepts ISO-8601 or milliseconds since the epoch. */
function timeOf(url: URL, name: string): number | undefined {
  const raw = url.searchParams.get(name);
  if (raw === null || raw === "") return undefined;
  const t = /^\d+$/.test(raw) ? Number(raw) : Date.parse(raw);
  if (!Number.isFinite(t)) throw new BadRequest(`${name} must be ISO-8601 or epoch milliseconds`);
  return t;
}

function boolOf(url: URL, name: string): boolean | undefined {
  const raw = url.searchParams.get(name);
  if (raw === null) return undefined;
  if (raw === "true" || raw === "1") return true;
  if (raw === "false" || raw === "0") return false;
  throw new BadRequest(`${name} must be true or false`);
}

const iso = (ms: number | null | undefined) =>
  ms === null || ms === undefined ? null : new Date(ms).toISOString();

function eventSummary(e: JournalEntry) {
  return {
    seq: e.seq,
    uuid: e.uuid,
    event: e.event,
    subscriptionId: e.subscriptionId,
    ownerId: e.ownerId,
    receivedAt: iso(e.receivedAt),
    bytes: e.raw.length,
  };
}

async function listEvents(store: Store, url: URL): Promise<Response> {
  const limit = limitOf(url);
  const cursor = url.searchParams.get("cursor");
  if (cursor !== null && !/^\d+$/.test(cursor)) throw new BadRequest("cursor is not valid");
  const items = await store.queryEvents({
    limit,
    descending: true,
    afterSeq: cursor === null ? undefined : Number(cursor),
    since: timeOf(url, "since"),
    until: timeOf(url, "until"),
    eventContains: url.searchParams.get("event") ?? undefined,
    uuid: url.searchParams.get("uuid") ?? undefined,
  });
  return json(200, {
    items: items.map(eventSummary),
    nextCursor: items.length === limit ? String(items[items.length - 1].seq) : null,
  });
}

async function getEvent(store: Store, uuid: string): Promise<Response> {
  const [e] = await store.queryEvents({ uuid, limit: 1 });
  if (!e) return json(404, { error: "not_found", message: `no event with uuid ${uuid}` });
  const text = new TextDecoder().decode(e.raw);
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = text;
  }
  return json(200, { ...eventSummary(e), headers: e.headers, notification: body });
}

function callSummary(row: CallRow) {
  const s = parseCallState(row.data);
  return {
    telephonySessionId: row.telephonySessionId,
    state: row.state,
    result: row.result,
    direction: row.direction,
    from: s?.from ?? null,
    to: s?.to ?? null,
    for: s?.for ?? null,
    startedAt: iso(row.startedAt),
    answeredAt: s?.answeredAt ?? null,
    endedAt: iso(row.endedAt),
    durations: s?.durations ?? null,
    updatedAt: iso(row.updatedAt),
  };
}

async function listCalls(store: Store, url: URL): Promise<Response> {
  const limit = limitOf(url);
  const cursor = url.searchParams.get("cursor");
  let after: { at: number; id: string } | undefined;
  if (cursor !== null) {
    const m = cursor.match(/^(\d+)~(.+)$/);
    if (!m) throw new BadRequest("cursor is not valid");
    after = { at: Number(m[1]), id: m[2] };
  }
  const rows = await store.queryCalls({
    limit,
    active: boolOf(url, "active"),
    since: timeOf(url, "since"),
    after,
  });
  const last = rows[rows.length - 1];
  return json(200, {
    items: rows.map(callSummary),
    nextCursor: rows.length === limit
      ? `${last.startedAt ?? last.updatedAt}~${last.telephonySessionId}`
      : null,
  });
}

async function getCall(store: Store, id: string): Promise<Response> {
  const row = await store.getCall(id);
  if (!row) return json(404, { error: "not_found", message: `no call ${id}` });
  return json(200, { ...callSummary(row), record: parseCallState(row.data) ?? null });
}

async function callEvents(store: Store, url: URL): Promise<Response> {
  const limit = limitOf(url, 100, 1000);
  const after = url.searchParams.get("after") ?? "0";
  if (!/^\d+$/.test(after)) throw new BadRequest("after must be a sequence number");
  const items = await store.readTopic(CALLS_TOPIC, Number(after), limit);
  return json(200, {
    items: items.map((t) => ({ seq: t.seq, ...JSON.parse(t.payload) })),
    nextAfter: items.length ? items[items.length - 1].seq : Number(after),
  });
}

async function status(d: AdminDeps): Promise<Response> {
  const stats = await d.store.stats();
  return json(200, {
    version: d.version,
    readiness: d.readiness(),
    journal: { events: stats.events, lastSeq: stats.lastSeq },
    calls: { total: stats.calls, active: stats.activeCalls },
    consumers: Object.fromEntries(
      Object.entries(d.consumers()).map(([k, v]) => [k, { position: v, lag: stats.lastSeq - v }]),
    ),
    subscriptionKeeper: d.keeper ? { leader: d.keeper.isLeader } : null,
  });
}

async function subscription(d: AdminDeps): Promise<Response> {
  const storedId = await d.store.getSetting("rc.subscription_id");
  if (!d.keeper) {
    return json(200, {
      managed: false,
      message: "RingCentral credentials or RINGHOOK_PUBLIC_URL are not configured",
      storedId: storedId ?? null,
    });
  }
  const s = d.keeper.subscription;
  return json(200, {
    managed: true,
    leader: d.keeper.isLeader,
    storedId: storedId ?? null,
    subscription: s
      ? {
        id: s.id,
        status: s.status,
        address: s.deliveryMode?.address,
        eventFilters: s.eventFilters,
        disabledFilters: s.disabledFilters ?? [],
        expirationTime: s.expirationTime,
        blacklistedData: s.blacklistedData ?? null,
      }
      : null,
  });
}
