/**
 * The one HTTP handler: routes by path and method, logs one line per request,
 * and turns any unexpected error into a JSON 500 instead of a crash.
 */
import type { Logger } from "../log.ts";
import type { Registry } from "../metrics.ts";
import { json } from "./respond.ts";
import { createWebhook, type WebhookDeps, type WebhookInfo } from "./webhook.ts";

/** A route module mounted under a path prefix (the admin API). */
export type SubHandler = (req: Request, url: URL) => Promise<Response | undefined>;

/** Everything the handler serves. */
export interface HandlerDeps extends WebhookDeps {
  /** Alive: the process answers. Ready: events can be stored. */
  readiness: () => { ready: boolean; reason?: string };
  /** Serve /metrics here (false when it lives on the admin port). */
  serveMetrics: boolean;
  /** The admin API, when it is served on this port. */
  admin?: SubHandler;
  /** The request log (one line per request). */
  accessLog: Logger;
}

/** The request handler: `(Request) => Promise<Response>`, callable without a socket. */
export type Handler = (req: Request) => Promise<Response>;

/** Builds the main handler. */
export function createHandler(deps: HandlerDeps): Handler {
  const webhook = createWebhook(deps);
  const requests = deps.metrics.counter(
    "ringhook_http_requests_total",
    "HTTP requests by route and status",
  );

  return async (req) => {
    const started = performance.now();
    const info: WebhookInfo = {};
    let url: URL | undefined;
    let route = "other";
    let res: Response;
    try {
      url = new URL(req.url);
      const path = url.pathname.replace(/\/+$/, "") || "/";
      if (path === "/webhook") {
        route = "webhook";
        res = await webhook(req, url, info);
      } else {
        const shared = await common(req, path, deps, deps.serveMetrics);
        const admin = shared || !deps.admin ? undefined : await deps.admin(req, url);
        route = shared ? path.slice(1) : admin ? "admin" : "other";
        res = shared ?? admin ?? json(404, { error: "not_found", message: `no route for ${path}` });
      }
    } catch (e) {
      deps.log.error("Unhandled error in handler: {error}", { error: e });
      res = json(500, { error: "internal", message: "unexpected error; see the server log" });
    }
    requests.inc({ route, status: String(res.status) });
    const level = res.status >= 500 ? "warning" : "info";
    if (deps.accessLog.isEnabledFor(level)) {
      const line = {
        method: req.method,
        // The path only: a query string may carry a secret, as in RingCentral's samples.
        path: route === "other" ? "(other)" : url!.pathname.slice(0, 200),
        status: res.status,
        durationMs: Math.round((performance.now() - started) * 1000) / 1000,
        ...(info.kind ? { kind: info.kind } : {}),
        ...(info.uuid ? { uuid: info.uuid, event: info.event } : {}),
      };
      if (level === "warning") deps.accessLog.warn("request", line);
      else deps.accessLog.info("request", line);
    }
    return res;
  };
}

/** /healthz, /readyz and (when served here) /metrics; undefined for other paths. */
async function common(
  req: Request,
  path: string,
  deps: { metrics: Registry; readiness: () => { ready: boolean; reason?: string } },
  metrics: boolean,
): Promise<Response | undefined> {
  if (path === "/healthz") return onlyGet(req, () => json(200, { status: "alive" }));
  if (path === "/readyz") {
    const r = deps.readiness();
    return onlyGet(
      req,
      () =>
        r.ready
          ? json(200, { status: "ready" })
          : json(503, { status: "not_ready", reason: r.reason }),
    );
  }
  if (path === "/metrics" && metrics) {
    const text = req.method === "GET" ? await deps.metrics.render() : "";
    return onlyGet(req, () =>
      new Response(text, {
        headers: { "Content-Type": "text/plain; version=0.0.4; charset=utf-8" },
      }));
  }
  return undefined;
}

function onlyGet(req: Request, fn: () => Response): Response {
  if (req.method === "GET") return fn();
  if (req.method === "HEAD") {
    const r = fn();
    return new Response(null, { status: r.status, headers: r.headers });
  }
  return json(405, { error: "method_not_allowed", message: `${req.method} is not allowed` }, {
    Allow: "GET, HEAD",
  });
}

/** What the separate admin port serves. */
export interface AdminHandlerDeps {
  admin: SubHandler;
  metrics: Registry;
  readiness: () => { ready: boolean; reason?: string };
  accessLog: Logger;
  log: Logger;
}

/** The admin port's handler: the admin API, /metrics and health; never /webhook. */
export function createAdminHandler(deps: AdminHandlerDeps): Handler {
  return async (req) => {
    let res: Response;
    try {
      const url = new URL(req.url);
      const path = url.pathname.replace(/\/+$/, "") || "/";
      const shared = await common(req, path, deps, true);
      if (shared) {
        res = shared;
      } else {
        res = (await deps.admin(req, url)) ??
          json(404, { error: "not_found", message: `no route for ${path}` });
      }
    } catch (e) {
      deps.log.error("Unhandled error in admin handler: {error}", { error: e });
      res = json(500, { error: "internal", message: "unexpected error; see the server log" });
    }
    deps.accessLog.info("request", { method: req.method, status: res.status });
    return res;
  };
}
