/**
 * The SQLite engine (node:sqlite): synchronous SQL for every Store operation.
 * It runs inside the journal worker (see worker.ts) so that no query or fsync
 * ever stalls the thread that answers HTTP requests; tests may use it directly.
 */
import { DatabaseSync, type StatementSync } from "node:sqlite";
import type { Durability } from "../config.ts";
import {
  type AppendRow,
  type CallQuery,
  type CallRow,
  type EventQuery,
  type JournalEntry,
  LeaseLost,
  type ProcessorCommit,
  type TopicEntry,
} from "./types.ts";

const SCHEMA = `
CREATE TABLE IF NOT EXISTS events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  uuid TEXT NOT NULL UNIQUE,
  event TEXT NOT NULL,
  subscription_id TEXT,
  owner_id TEXT,
  received_at INTEGER NOT NULL,
  raw BLOB NOT NULL,
  headers TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_received_at ON events (received_at);
CREATE TABLE IF NOT EXISTS cursors (consumer TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS calls (
  telephony_session_id TEXT PRIMARY KEY,
  state TEXT NOT NULL,
  result TEXT,
  direction TEXT,
  started_at INTEGER,
  ended_at INTEGER,
  updated_at INTEGER NOT NULL,
  data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS calls_state_updated ON calls (state, updated_at);
CREATE INDEX IF NOT EXISTS calls_started_at ON calls (started_at);
CREATE TABLE IF NOT EXISTS topic_events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  topic TEXT NOT NULL,
  type TEXT NOT NULL,
  key TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  payload TEXT NOT NULL,
  UNIQUE (topic, key)
);
CREATE TABLE IF NOT EXISTS leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS health (id INTEGER PRIMARY KEY, at INTEGER NOT NULL);
`;

import { type Row, toCall, toEntry } from "./rows.ts";

/** Options for opening the database. */
export interface SqliteOptions {
  path: string;
  durability: Durability;
  /** How long a write waits for a lock held by another process, in ms. */
  busyTimeoutMs?: number;
}

/** Every Store operation as synchronous SQL on one connection. */
export class SqliteEngine {
  #db: DatabaseSync;
  #insert: StatementSync;
  #readAfter: StatementSync;

  /** Opens (and creates) the database and its schema. */
  constructor(opts: SqliteOptions) {
    this.#db = new DatabaseSync(opts.path);
    const sync = { full: "FULL", normal: "NORMAL", off: "OFF" }[opts.durability];
    this.#db.exec(`PRAGMA busy_timeout = ${opts.busyTimeoutMs ?? 1000}`);
    this.#db.exec("PRAGMA journal_mode = WAL");
    this.#db.exec(`PRAGMA synchronous = ${sync}`);
    this.#db.exec("PRAGMA wal_autocheckpoint = 1000");
    this.#db.exec(SCHEMA);
    this.#insert = this.#db.prepare(
      `INSERT INTO events (uuid, event, subscription_id, owner_id, received_at, raw, headers)
       VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (uuid) DO NOTHING`,
    );
    this.#readAfter = this.#db.prepare(
      "SELECT * FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
    );
  }

  /** Appends rows in one transaction; per row its seq, or 0 when the uuid was already stored. */
  append(rows: AppendRow[]): number[] {
    return this.#tx(() =>
      rows.map((r) => {
        const res = this.#insert.run(
          r.uuid,
          r.event,
          r.subscriptionId,
          r.ownerId,
          r.receivedAt,
          r.raw,
          r.headers,
        );
        return res.changes > 0 ? Number(res.lastInsertRowid) : 0;
      })
    );
  }

  /** Entries after a seq, in order. */
  readAfter(afterSeq: number, limit: number): JournalEntry[] {
    return (this.#readAfter.all(afterSeq, limit) as Row[]).map(toEntry);
  }

  /** Lists entries for operators, with filters. */
  queryEvents(q: EventQuery): JournalEntry[] {
    const where: string[] = [];
    const args: (string | number)[] = [];
    if (q.uuid !== undefined) (where.push("uuid = ?"), args.push(q.uuid));
    if (q.afterSeq !== undefined) {
      where.push(q.descending ? "seq < ?" : "seq > ?");
      args.push(q.afterSeq);
    }
    if (q.since !== undefined) (where.push("received_at >= ?"), args.push(q.since));
    if (q.until !== undefined) (where.push("received_at < ?"), args.push(q.until));
    if (q.eventContains !== undefined) {
      where.push("instr(event, ?) > 0");
      args.push(q.eventContains);
    }
    const sql = `SELECT * FROM events ${where.length ? "WHERE " + where.join(" AND ") : ""}
      ORDER BY seq ${q.descending ? "DESC" : "ASC"} LIMIT ?`;
    return (this.#db.prepare(sql).all(...args, q.limit) as Row[]).map(toEntry);
  }

  /** The newest stored seq (0 when empty). Ignored duplicates may leave gaps below it. */
  lastSeq(): number {
    const r = this.#db.prepare("SELECT max(seq) AS seq FROM events").get() as Row | undefined;
    return Number(r?.seq ?? 0);
  }

  /** A consumer's cursor (0 when it never committed). */
  getCursor(consumer: string): number {
    const r = this.#db.prepare("SELECT seq FROM cursors WHERE consumer = ?").get(consumer) as
      | Row
      | undefined;
    return Number(r?.seq ?? 0);
  }

  /** Commits a processor's results and its cursor together. */
  commit(c: ProcessorCommit): void {
    this.#tx(() => {
      if (c.lease) {
        const r = this.#db.prepare("SELECT holder, expires_at FROM leases WHERE name = ?").get(
          c.lease.name,
        ) as Row | undefined;
        if (!r || r.holder !== c.lease.holder || Number(r.expires_at) < Date.now()) {
          throw new LeaseLost(c.lease.name);
        }
      }
      if (c.consumer !== undefined && c.cursor !== undefined) {
        this.#db.prepare(
          `INSERT INTO cursors (consumer, seq) VALUES (?, ?)
           ON CONFLICT (consumer) DO UPDATE SET seq = max(seq, excluded.seq)`,
        ).run(c.consumer, c.cursor);
      }
      if (c.calls?.length) {
        const up = this.#db.prepare(
          `INSERT INTO calls (telephony_session_id, state, result, direction, started_at, ended_at, updated_at, data)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (telephony_session_id) DO UPDATE SET state = excluded.state,
             result = excluded.result, direction = excluded.direction, started_at = excluded.started_at,
             ended_at = excluded.ended_at, updated_at = excluded.updated_at, data = excluded.data`,
        );
        for (const r of c.calls) {
          up.run(
            r.telephonySessionId,
            r.state,
            r.result,
            r.direction,
            r.startedAt,
            r.endedAt,
            r.updatedAt,
            r.data,
          );
        }
      }
      if (c.topicEvents?.length) {
        const ins = this.#db.prepare(
          `INSERT INTO topic_events (topic, type, key, created_at, payload) VALUES (?, ?, ?, ?, ?)
           ON CONFLICT (topic, key) DO NOTHING`,
        );
        for (const t of c.topicEvents) ins.run(t.topic, t.type, t.key, t.createdAt, t.payload);
      }
    });
  }

  /** One call by session id. */
  getCall(id: string): CallRow | undefined {
    const r = this.#db.prepare("SELECT * FROM calls WHERE telephony_session_id = ?").get(id) as
      | Row
      | undefined;
    return r ? toCall(r) : undefined;
  }

  /** Several calls by session id. */
  getCalls(ids: string[]): CallRow[] {
    if (ids.length === 0) return [];
    const out: CallRow[] = [];
    for (let i = 0; i < ids.length; i += 500) {
      const part = ids.slice(i, i + 500);
      const sql = `SELECT * FROM calls WHERE telephony_session_id IN (${
        part.map(() => "?").join(",")
      })`;
      out.push(...(this.#db.prepare(sql).all(...part) as Row[]).map(toCall));
    }
    return out;
  }

  /** Lists calls, newest first. */
  queryCalls(q: CallQuery): CallRow[] {
    const where: string[] = [];
    const args: (string | number)[] = [];
    if (q.active) where.push("state = 'active'");
    if (q.since !== undefined) {
      (where.push("coalesce(started_at, updated_at) >= ?"), args.push(q.since));
    }
    if (q.after !== undefined) {
      where.push(
        "(coalesce(started_at, updated_at) < ? OR (coalesce(started_at, updated_at) = ? AND telephony_session_id > ?))",
      );
      args.push(q.after.at, q.after.at, q.after.id);
    }
    const sql = `SELECT * FROM calls ${where.length ? "WHERE " + where.join(" AND ") : ""}
      ORDER BY coalesce(started_at, updated_at) DESC, telephony_session_id LIMIT ?`;
    return (this.#db.prepare(sql).all(...args, q.limit) as Row[]).map(toCall);
  }

  /** Active calls not updated since a time. */
  staleCalls(olderThan: number, limit: number): CallRow[] {
    return (this.#db.prepare(
      "SELECT * FROM calls WHERE state = 'active' AND updated_at < ? ORDER BY updated_at LIMIT ?",
    ).all(olderThan, limit) as Row[]).map(toCall);
  }

  /** Topic events after a seq, in order. */
  readTopic(topic: string, afterSeq: number, limit: number): TopicEntry[] {
    return (this.#db.prepare(
      "SELECT * FROM topic_events WHERE topic = ? AND seq > ? ORDER BY seq LIMIT ?",
    ).all(topic, afterSeq, limit) as Row[]).map((r) => ({
      seq: Number(r.seq),
      topic: String(r.topic),
      type: String(r.type),
      key: String(r.key),
      createdAt: Number(r.created_at),
      payload: String(r.payload),
    }));
  }

  /** Takes or renews a lease; true when `holder` holds it afterwards. */
  lease(name: string, holder: string, ttlMs: number, now = Date.now()): boolean {
    return this.#tx(() => {
      this.#db.prepare(
        `INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?)
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
         WHERE leases.holder = excluded.holder OR leases.expires_at < ?`,
      ).run(name, holder, now + ttlMs, now);
      const r = this.#db.prepare("SELECT holder FROM leases WHERE name = ?").get(name) as Row;
      return r.holder === holder;
    });
  }

  /** Gives a lease up if `holder` has it. */
  releaseLease(name: string, holder: string): void {
    this.#db.prepare("DELETE FROM leases WHERE name = ? AND holder = ?").run(name, holder);
  }

  /** Reads a setting. */
  getSetting(key: string): string | undefined {
    const r = this.#db.prepare("SELECT value FROM settings WHERE key = ?").get(key) as
      | Row
      | undefined;
    return r ? String(r.value) : undefined;
  }

  /** Writes a setting. */
  setSetting(key: string, value: string): void {
    this.#db.prepare(
      "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    ).run(key, value);
  }

  /** Writes a setting if absent; returns the stored value. */
  initSetting(key: string, value: string): string {
    this.#db.prepare("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING")
      .run(key, value);
    return this.getSetting(key)!;
  }

  /** Deletes up to `limit` entries received before `before`. */
  prune(before: number, limit: number): number {
    const r = this.#db.prepare(
      `DELETE FROM events WHERE seq IN
       (SELECT seq FROM events WHERE received_at < ? ORDER BY seq LIMIT ?)`,
    ).run(before, limit);
    return Number(r.changes);
  }

  /** Counts for health and metrics. */
  stats(): { events: number; lastSeq: number; calls: number; activeCalls: number } {
    const n = (sql: string) => Number((this.#db.prepare(sql).get() as Row).n);
    return {
      events: n("SELECT count(*) AS n FROM events"),
      lastSeq: this.lastSeq(),
      calls: n("SELECT count(*) AS n FROM calls"),
      activeCalls: n("SELECT count(*) AS n FROM calls WHERE state = 'active'"),
    };
  }

  /** Proves the database takes writes. */
  probe(): void {
    this.#db.prepare(
      "INSERT INTO health (id, at) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET at = excluded.at",
    ).run(Date.now());
  }

  /** Checkpoints and closes. */
  close(): void {
    try {
      this.#db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
    } catch {
      // A failed checkpoint leaves the WAL to be replayed on the next open.
    }
    this.#db.close();
  }

  #tx<T>(fn: () => T): T {
    this.#db.exec("BEGIN IMMEDIATE");
    try {
      const out = fn();
      this.#db.exec("COMMIT");
      return out;
    } catch (e) {
      try {
        this.#db.exec("ROLLBACK");
      } catch {
        // The transaction may already be gone (SQLite rolls back on some errors).
      }
      throw e;
    }
  }
}
