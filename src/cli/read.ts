/**
 * `events` and `calls`: read what ringhook stored, as a table or JSON. They ask
 * a running ringhook's admin API (`--url`), or open the local database through
 * the same admin routes, so both ways print the same thing.
 */
import { parseCommand } from "./args.ts";
import { createAdmin } from "../admin/api.ts";
import { openStore, sqlitePath } from "../journal/open.ts";
import * as rt from "../runtime.ts";

const COMMON =
  `  --url URL            a running ringhook (its admin port when RINGHOOK_ADMIN_PORT is set);
                       without it, the local database in RINGHOOK_DATA_DIR is read
  --admin-token T      the admin token for --url (default RINGHOOK_ADMIN_TOKEN)
  --since WHEN         ISO-8601 time, or a duration back from now: 30m, 6h, 2d
  --limit N            at most N rows (default 50)
  --json               one JSON object per line instead of a table`;

const EVENTS_HELP = `Usage: ringhook events [options]

Lists received notifications, newest first.

Options:
${COMMON}
  --event TEXT         only events whose path contains TEXT (e.g. telephony)
  --uuid UUID          one notification, with its headers and body
Exit codes: 0 ok, 1 failure, 2 bad usage.`;

const CALLS_HELP = `Usage: ringhook calls [options]

Lists call records, newest first: state, result, direction, parties, durations.

Options:
${COMMON}
  --active             only calls in progress
  --id SESSION         one call (telephonySessionId) with its timeline and parties
Exit codes: 0 ok, 1 failure, 2 bad usage.`;

/** Fetches an admin API path, remotely or from the local database. */
type Fetcher = (path: string) => Promise<{ status: number; body: Record<string, unknown> }>;

async function fetcher(
  url?: string,
  token?: string,
): Promise<{ get: Fetcher; close(): Promise<void> }> {
  if (url) {
    const base = url.replace(/\/+$/, "");
    return {
      get: async (path) => {
        const res = await fetch(base + path, {
          headers: token ? { Authorization: `Bearer ${token}` } : {},
        });
        return { status: res.status, body: await res.json().catch(() => ({})) };
      },
      close: () => Promise.resolve(),
    };
  }
  const c = rt.exitOnConfigErrors(rt.configFromEnv());
  const path = sqlitePath(c);
  if (!c.databaseUrl && !rt.exists(path)) {
    throw new Error(`no database at ${path}: start the server first, or use --url`);
  }
  const store = await openStore(c, { busyTimeoutMs: 5000 });
  const local = "local-cli";
  const admin = createAdmin({
    tokens: () => [local],
    store,
    readiness: () => ({ ready: true }),
    consumers: () => ({}),
    version: "local",
  });
  return {
    get: async (p) => {
      const res = await admin(
        new Request(`http://local${p}`, { headers: { Authorization: `Bearer ${local}` } }),
        new URL(`http://local${p}`),
      );
      return { status: res!.status, body: await res!.json() };
    },
    close: () => store.close(),
  };
}

/** Turns "30m", "6h", "2d" or an ISO time into epoch ms. */
export function parseSince(s: string, now = Date.now()): number | undefined {
  const m = s.match(/^(\d+)\s*([smhd])$/);
  if (m) return now - Number(m[1]) * { s: 1e3, m: 60e3, h: 3600e3, d: 86400e3 }[m[2] as "s"];
  const t = Date.parse(s);
  return Number.isFinite(t) ? t : undefined;
}

const OPTIONS = {
  url: { type: "string" },
  "admin-token": { type: "string" },
  since: { type: "string" },
  limit: { type: "string" },
  json: { type: "boolean" },
} as const;

/** `ringhook events`. */
export function eventsCommand(argv: string[]): Promise<number> {
  return run(
    argv,
    EVENTS_HELP,
    { event: { type: "string" }, uuid: { type: "string" } },
    async (a, get) => {
      if (a.uuid) {
        return await showOne(get, `/api/v1/events/${encodeURIComponent(String(a.uuid))}`, a);
      }
      return await showList(get, "/api/v1/events", a, { event: a.event }, {
        head: ["SEQ", "RECEIVED", "UUID", "EVENT", "BYTES"],
        row: (i) => [i.seq, i.receivedAt, i.uuid, shortPath(String(i.event)), i.bytes],
      });
    },
  );
}

/** `ringhook calls`. */
export function callsCommand(argv: string[]): Promise<number> {
  return run(
    argv,
    CALLS_HELP,
    { active: { type: "boolean" }, id: { type: "string" } },
    async (a, get) => {
      if (a.id) return await showOne(get, `/api/v1/calls/${encodeURIComponent(String(a.id))}`, a);
      return await showList(get, "/api/v1/calls", a, { active: a.active ? "true" : undefined }, {
        head: [
          "STARTED",
          "STATE",
          "RESULT",
          "DIRECTION",
          "FROM",
          "TO",
          "RING",
          "TALK",
          "HOLD",
          "SESSION",
        ],
        row: (i) => {
          const d = (i.durations ?? {}) as Record<string, number>;
          return [
            i.startedAt,
            i.state,
            i.result ?? "-",
            i.direction,
            party(i.from),
            party(i.to),
            secs(d.ringMs),
            secs(d.talkMs),
            secs(d.holdMs),
            i.telephonySessionId,
          ];
        },
      });
    },
  );
}

type Args = Record<string, string | boolean | undefined>;

async function run(
  argv: string[],
  help: string,
  extra: Record<string, { type: "string" | "boolean" }>,
  body: (a: Args, get: Fetcher) => Promise<number>,
): Promise<number> {
  const parsed = parseCommand(argv, { ...OPTIONS, ...extra }, help);
  if (typeof parsed === "number") return parsed;
  const a = parsed as Args;
  if (a.limit !== undefined && !/^\d+$/.test(String(a.limit))) {
    rt.printErr("--limit takes a whole number");
    return 2;
  }
  if (a.since !== undefined) {
    const t = parseSince(String(a.since));
    if (t === undefined) {
      rt.printErr("--since takes an ISO-8601 time or a duration like 30m, 6h, 2d");
      return 2;
    }
    a.since = new Date(t).toISOString();
  }
  let f;
  try {
    f = await fetcher(
      a.url as string | undefined,
      (a["admin-token"] as string | undefined) ?? adminToken(),
    );
  } catch (e) {
    rt.printErr(`error: ${(e as Error).message}`);
    return 1;
  }
  try {
    return await body(a, f.get);
  } catch (e) {
    rt.printErr(`error: ${(e as Error).message}`);
    return 1;
  } finally {
    await f.close();
  }
}

/** The first configured admin token (from the environment, a _FILE or credentials). */
function adminToken(): string | undefined {
  const c = rt.configFromEnv();
  return c.ok ? c.config.adminTokens[0] : undefined;
}

/** Prints one item (an event with its body, a call with its record) as JSON. */
async function showOne(get: Fetcher, path: string, a: Args): Promise<number> {
  const r = await get(path);
  if (r.status !== 200) return fail(r);
  rt.print(JSON.stringify(r.body, null, a.json ? 0 : 2));
  return 0;
}

/** Prints a listing: one JSON object per line, or a table. */
async function showList(
  get: Fetcher,
  path: string,
  a: Args,
  filters: Record<string, unknown>,
  view: { head: string[]; row: (item: Record<string, unknown>) => unknown[] },
): Promise<number> {
  const q = new URLSearchParams({ limit: String(a.limit ?? 50) });
  if (a.since) q.set("since", String(a.since));
  for (const [k, v] of Object.entries(filters)) if (v) q.set(k, String(v));
  const r = await get(`${path}?${q}`);
  if (r.status !== 200) return fail(r);
  const items = r.body.items as Array<Record<string, unknown>>;
  if (a.json) items.forEach((i) => rt.print(JSON.stringify(i)));
  else table(view.head, items.map(view.row));
  return 0;
}

function fail(r: { status: number; body: Record<string, unknown> }): number {
  rt.printErr(`error: ${r.status} ${r.body.error ?? ""}: ${r.body.message ?? ""}`);
  return 1;
}

function party(p: unknown): string {
  if (!p || typeof p !== "object") return "-";
  const o = p as Record<string, unknown>;
  return String(o.name ?? o.phoneNumber ?? o.extensionNumber ?? "-");
}

function secs(ms: number | undefined): string {
  return typeof ms === "number" ? `${Math.round(ms / 1000)}s` : "-";
}

function shortPath(p: string): string {
  return p.replace(/^\/restapi\/v1\.0/, "");
}

function table(head: string[], rows: unknown[][]): void {
  const cells = [head, ...rows.map((r) => r.map((c) => String(c ?? "-")))];
  const widths = head.map((_, i) => Math.max(...cells.map((r) => r[i].length)));
  for (const r of cells) rt.print(r.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd());
  if (rows.length === 0) rt.print("(none)");
}
