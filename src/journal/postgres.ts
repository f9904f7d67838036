/**
 * The PostgreSQL engine (npm:postgres): the same Store as sqlite.ts, shared by
 * several ringhook instances behind a load balancer. Appends are serialized by
 * an advisory lock so that seq order equals commit order; leases use the
 * database clock; LISTEN/NOTIFY wakes the consumers of the other instances.
 */
import postgres from "postgres";
import {
  type AppendRow,
  type CallQuery,
  type CallRow,
  type EventQuery,
  type JournalEntry,
  LeaseLost,
  type ProcessorCommit,
  type Store,
  type TopicEntry,
} from "./types.ts";

/** Options for opening the PostgreSQL store. */
export interface PostgresOptions {
  /** The schema holding ringhook's tables (default: the URL's `schema` parameter, else public). */
  schema?: string;
  /** Pool size (default 10). */
  max?: number;
}

/** The channel every append commit notifies; the payload names the schema and the writer. */
export const NOTIFY_CHANNEL = "ringhook_events";

/** Advisory lock namespaces (the first key; the second is hashtext(schema)). */
const LOCK_EVENTS = 0x72686b01;
const LOCK_TOPIC = 0x72686b02;
const LOCK_DDL = 0x72686b03;

/** Connection parameters ringhook sets unless the URL sets them (`?statement_timeout=...`). */
const SESSION_DEFAULTS = {
  application_name: "ringhook",
  // A stuck lock or a hung server turns into an error (503, not-ready) instead of a hung ack.
  statement_timeout: 15_000,
  lock_timeout: 5_000,
  idle_in_transaction_session_timeout: 60_000,
};

const IDENT = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;

type Sql = ReturnType<typeof postgres>;
import { type Row, toCall, toEntry } from "./rows.ts";

const SCHEMA_DDL = (s: string) => `
CREATE TABLE IF NOT EXISTS ${s}.events (
  seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  uuid text COLLATE "C" NOT NULL UNIQUE,
  event text NOT NULL,
  subscription_id text,
  owner_id text,
  received_at bigint NOT NULL,
  raw bytea NOT NULL,
  headers text NOT NULL
);
CREATE INDEX IF NOT EXISTS events_received_at ON ${s}.events (received_at);
CREATE TABLE IF NOT EXISTS ${s}.cursors (consumer text COLLATE "C" PRIMARY KEY, seq bigint NOT NULL);
CREATE TABLE IF NOT EXISTS ${s}.calls (
  telephony_session_id text COLLATE "C" PRIMARY KEY,
  state text NOT NULL,
  result text,
  direction text,
  started_at bigint,
  ended_at bigint,
  updated_at bigint NOT NULL,
  data text NOT NULL
);
CREATE INDEX IF NOT EXISTS calls_state_updated ON ${s}.calls (state, updated_at);
CREATE INDEX IF NOT EXISTS calls_newest
  ON ${s}.calls ((coalesce(started_at, updated_at)) DESC, telephony_session_id);
CREATE TABLE IF NOT EXISTS ${s}.topic_events (
  seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  topic text COLLATE "C" NOT NULL,
  type text NOT NULL,
  key text COLLATE "C" NOT NULL,
  created_at bigint NOT NULL,
  payload text NOT NULL,
  UNIQUE (topic, key)
);
CREATE INDEX IF NOT EXISTS topic_events_topic_seq ON ${s}.topic_events (topic, seq);
CREATE TABLE IF NOT EXISTS ${s}.leases (
  name text COLLATE "C" PRIMARY KEY,
  holder text NOT NULL,
  expires_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS ${s}.settings (key text COLLATE "C" PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS ${s}.health (id integer PRIMARY KEY, at bigint NOT NULL);
`;

/** Splits ringhook's own `schema` URL parameter off the URL the driver sees. */
function splitSchema(url: string): { url: string; schema?: string } {
  const u = new URL(url);
  const schema = u.searchParams.get("schema") ?? undefined;
  if (schema === undefined) return { url };
  u.searchParams.delete("schema");
  return { url: u.toString(), schema };
}

/** Opens (and creates) ringhook's tables in a PostgreSQL schema; several instances may share it. */
export async function openPostgresStore(url: string, opts: PostgresOptions = {}): Promise<Store> {
  const split = splitSchema(url);
  const schema = opts.schema ?? split.schema ?? "public";
  if (!IDENT.test(schema)) {
    throw new Error(`invalid schema name ${JSON.stringify(schema)}: use letters, digits and _`);
  }
  const int8 = {
    to: 20,
    from: [20],
    serialize: (x: number) => String(x),
    parse: (x: string) => Number(x),
  };
  const base = {
    connect_timeout: 5,
    onnotice: () => {},
    connection: SESSION_DEFAULTS,
  };
  const sql = postgres(split.url, {
    ...base,
    max: opts.max ?? 10,
    idle_timeout: 300,
    types: { int8 },
  }) as unknown as Sql;
  const store = new PostgresStore(sql, split.url, schema, base);
  try {
    await store.init();
  } catch (e) {
    await sql.end({ timeout: 1 }).catch(() => {});
    throw e;
  }
  return store;
}

/** Every Store operation as SQL on a connection pool. */
class PostgresStore implements Store {
  #sql: Sql;
  #url: string;
  #schema: string;
  #s: string;
  #base: Record<string, unknown>;
  #id = crypto.randomUUID();
  #watch: Watcher | undefined;
  #closed = false;

  constructor(sql: Sql, url: string, schema: string, base: Record<string, unknown>) {
    this.#sql = sql;
    this.#url = url;
    this.#schema = schema;
    this.#s = `"${schema}"`;
    this.#base = base;
  }

  /** Creates the schema and tables once, even when several instances start together. */
  async init(): Promise<void> {
    await this.#sql.begin(async (tx) => {
      await tx.unsafe("SELECT pg_advisory_xact_lock($1, hashtext($2))", [LOCK_DDL, this.#schema]);
      const [ns] = await tx.unsafe("SELECT 1 FROM pg_namespace WHERE nspname = $1", [
        this.#schema,
      ]);
      // Only create what is missing: a role without CREATE on the database may use a given schema.
      if (!ns) await tx.unsafe(`CREATE SCHEMA ${this.#s}`);
      await tx.unsafe(SCHEMA_DDL(this.#s));
    });
  }

  async append(rows: AppendRow[]): Promise<number[]> {
    if (rows.length === 0) return [];
    // Within a batch the first occurrence of a uuid is the one stored; later ones are duplicates.
    const first = new Map<string, AppendRow>();
    for (const r of rows) if (!first.has(r.uuid)) first.set(r.uuid, r);
    const unique = [...first.values()];
    const a = this.#sql;
    const params = [
      a.array(unique.map((r) => r.uuid), 25),
      a.array(unique.map((r) => r.event), 25),
      a.array(unique.map((r) => r.subscriptionId), 25),
      a.array(unique.map((r) => r.ownerId), 25),
      a.array(unique.map((r) => r.receivedAt), 20),
      a.array(unique.map((r) => r.raw), 17),
      a.array(unique.map((r) => r.headers), 25),
      NOTIFY_CHANNEL,
      `${this.#schema} ${this.#id}`,
    ];
    const s = this.#s;
    // The advisory lock is held until commit, so a later transaction draws its seqs only after
    // this one is visible: seq order is commit order, and `seq > cursor` never skips a row.
    const [, inserted] = await this.#sql.begin((tx) => [
      tx.unsafe("SELECT pg_advisory_xact_lock($1, hashtext($2))", [LOCK_EVENTS, this.#schema]),
      tx.unsafe(
        `WITH ins AS (
           INSERT INTO ${s}.events (uuid, event, subscription_id, owner_id, received_at, raw, headers)
           SELECT u, e, sid, oid, r, b, h
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::bytea[],
                         $7::text[]) WITH ORDINALITY AS t(u, e, sid, oid, r, b, h, ord)
            ORDER BY ord
           ON CONFLICT (uuid) DO NOTHING
           RETURNING uuid, seq
         ), woke AS (
           SELECT pg_notify($8, $9) FROM (SELECT 1 FROM ins LIMIT 1) AS one
         )
         SELECT ins.uuid, ins.seq FROM ins CROSS JOIN (SELECT count(*) FROM woke) AS w`,
        params as never[],
      ),
    ]) as unknown as [unknown, Row[]];
    const seqOf = new Map<string, number>();
    for (const r of inserted) seqOf.set(String(r.uuid), Number(r.seq));
    const taken = new Set<string>();
    return rows.map((r) => {
      if (taken.has(r.uuid)) return 0;
      taken.add(r.uuid);
      return seqOf.get(r.uuid) ?? 0;
    });
  }

  async readAfter(afterSeq: number, limit: number): Promise<JournalEntry[]> {
    const rows = await this.#sql.unsafe(
      `SELECT * FROM ${this.#s}.events WHERE seq > $1 ORDER BY seq LIMIT $2`,
      [afterSeq, limit],
      { prepare: true },
    );
    return rows.map(toEntry);
  }

  async queryEvents(q: EventQuery): Promise<JournalEntry[]> {
    const where: string[] = [];
    const args: unknown[] = [];
    const p = (v: unknown) => (args.push(v), `$${args.length}`);
    if (q.uuid !== undefined) where.push(`uuid = ${p(q.uuid)}`);
    if (q.afterSeq !== undefined) where.push(`seq ${q.descending ? "<" : ">"} ${p(q.afterSeq)}`);
    if (q.since !== undefined) where.push(`received_at >= ${p(q.since)}`);
    if (q.until !== undefined) where.push(`received_at < ${p(q.until)}`);
    if (q.eventContains !== undefined) where.push(`strpos(event, ${p(q.eventContains)}) > 0`);
    const sql = `SELECT * FROM ${this.#s}.events
      ${where.length ? "WHERE " + where.join(" AND ") : ""}
      ORDER BY seq ${q.descending ? "DESC" : "ASC"} LIMIT ${p(q.limit)}`;
    return (await this.#sql.unsafe(sql, args as never[], { prepare: true })).map(toEntry);
  }

  async lastSeq(): Promise<number> {
    const [r] = await this.#sql.unsafe(`SELECT max(seq) AS seq FROM ${this.#s}.events`);
    return Number(r?.seq ?? 0);
  }

  async getCursor(consumer: string): Promise<number> {
    const [r] = await this.#sql.unsafe(
      `SELECT seq FROM ${this.#s}.cursors WHERE consumer = $1`,
      [consumer],
      { prepare: true },
    );
    return Number(r?.seq ?? 0);
  }

  async commit(c: ProcessorCommit): Promise<void> {
    const s = this.#s;
    await this.#sql.begin(async (tx) => {
      if (c.lease) {
        // FOR UPDATE: no one can take the lease over until this commit is done (fencing).
        const [r] = await tx.unsafe(
          `SELECT holder, expires_at < now() AS expired FROM ${s}.leases WHERE name = $1 FOR UPDATE`,
          [c.lease.name],
        );
        if (!r || r.holder !== c.lease.holder || r.expired) throw new LeaseLost(c.lease.name);
      }
      if (c.consumer !== undefined && c.cursor !== undefined) {
        await tx.unsafe(
          `INSERT INTO ${s}.cursors (consumer, seq) VALUES ($1, $2)
           ON CONFLICT (consumer) DO UPDATE SET seq = greatest(cursors.seq, excluded.seq)`,
          [c.consumer, c.cursor],
        );
      }
      if (c.calls?.length) {
        // One row per session (the last wins, as in sequential upserts).
        const calls = [...new Map(c.calls.map((r) => [r.telephonySessionId, r])).values()];
        await tx.unsafe(
          `INSERT INTO ${s}.calls (telephony_session_id, state, result, direction, started_at,
                                   ended_at, updated_at, data)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[],
                                $6::int8[], $7::int8[], $8::text[])
           ON CONFLICT (telephony_session_id) DO UPDATE SET state = excluded.state,
             result = excluded.result, direction = excluded.direction,
             started_at = excluded.started_at, ended_at = excluded.ended_at,
             updated_at = excluded.updated_at, data = excluded.data`,
          [
            tx.array(calls.map((r) => r.telephonySessionId), 25),
            tx.array(calls.map((r) => r.state), 25),
            tx.array(calls.map((r) => r.result), 25),
            tx.array(calls.map((r) => r.direction), 25),
            tx.array(calls.map((r) => r.startedAt), 20),
            tx.array(calls.map((r) => r.endedAt), 20),
            tx.array(calls.map((r) => r.updatedAt), 20),
            tx.array(calls.map((r) => r.data), 25),
          ] as never[],
        );
      }
      if (c.topicEvents?.length) {
        const t = c.topicEvents;
        // Topic readers also read `seq > cursor`: the same commit-order rule as the journal.
        await tx.unsafe("SELECT pg_advisory_xact_lock($1, hashtext($2))", [
          LOCK_TOPIC,
          this.#schema,
        ]);
        await tx.unsafe(
          `INSERT INTO ${s}.topic_events (topic, type, key, created_at, payload)
           SELECT tp, ty, k, ca, pl
             FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[])
                  WITH ORDINALITY AS t(tp, ty, k, ca, pl, ord)
            ORDER BY ord
           ON CONFLICT (topic, key) DO NOTHING`,
          [
            tx.array(t.map((e) => e.topic), 25),
            tx.array(t.map((e) => e.type), 25),
            tx.array(t.map((e) => e.key), 25),
            tx.array(t.map((e) => e.createdAt), 20),
            tx.array(t.map((e) => e.payload), 25),
          ] as never[],
        );
      }
    });
  }

  async getCall(id: string): Promise<CallRow | undefined> {
    const [r] = await this.#sql.unsafe(
      `SELECT * FROM ${this.#s}.calls WHERE telephony_session_id = $1`,
      [id],
      { prepare: true },
    );
    return r ? toCall(r) : undefined;
  }

  async getCalls(ids: string[]): Promise<CallRow[]> {
    if (ids.length === 0) return [];
    const rows = await this.#sql.unsafe(
      `SELECT * FROM ${this.#s}.calls WHERE telephony_session_id = ANY($1::text[])`,
      [this.#sql.array(ids, 25)] as never[],
      { prepare: true },
    );
    return rows.map(toCall);
  }

  async queryCalls(q: CallQuery): Promise<CallRow[]> {
    const where: string[] = [];
    const args: unknown[] = [];
    const p = (v: unknown) => (args.push(v), `$${args.length}`);
    const at = "coalesce(started_at, updated_at)";
    if (q.active) where.push("state = 'active'");
    if (q.since !== undefined) where.push(`${at} >= ${p(q.since)}`);
    if (q.after !== undefined) {
      const a = p(q.after.at);
      where.push(`(${at} < ${a} OR (${at} = ${a} AND telephony_session_id > ${p(q.after.id)}))`);
    }
    const sql = `SELECT * FROM ${this.#s}.calls
      ${where.length ? "WHERE " + where.join(" AND ") : ""}
      ORDER BY ${at} DESC, telephony_session_id LIMIT ${p(q.limit)}`;
    return (await this.#sql.unsafe(sql, args as never[], { prepare: true })).map(toCall);
  }

  async staleCalls(olderThan: number, limit: number): Promise<CallRow[]> {
    const rows = await this.#sql.unsafe(
      `SELECT * FROM ${this.#s}.calls WHERE state = 'active' AND updated_at < $1
       ORDER BY updated_at LIMIT $2`,
      [olderThan, limit],
      { prepare: true },
    );
    return rows.map(toCall);
  }

  async readTopic(topic: string, afterSeq: number, limit: number): Promise<TopicEntry[]> {
    const rows = await this.#sql.unsafe(
      `SELECT * FROM ${this.#s}.topic_events WHERE topic = $1 AND seq > $2 ORDER BY seq LIMIT $3`,
      [topic, afterSeq, limit],
      { prepare: true },
    );
    return rows.map((r) => ({
      seq: Number(r.seq),
      topic: String(r.topic),
      type: String(r.type),
      key: String(r.key),
      createdAt: Number(r.created_at),
      payload: String(r.payload),
    }));
  }

  async lease(name: string, holder: string, ttlMs: number): Promise<boolean> {
    // The database's clock decides, so instances with skewed clocks agree on expiry.
    const rows = await this.#sql.unsafe(
      `INSERT INTO ${this.#s}.leases (name, holder, expires_at)
       VALUES ($1, $2, now() + $3::int8 * interval '1 millisecond')
       ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
       WHERE leases.holder = excluded.holder OR leases.expires_at < now()
       RETURNING holder`,
      [name, holder, Math.round(ttlMs)],
      { prepare: true },
    );
    return rows.length === 1 && rows[0].holder === holder;
  }

  async releaseLease(name: string, holder: string): Promise<void> {
    await this.#sql.unsafe(
      `DELETE FROM ${this.#s}.leases WHERE name = $1 AND holder = $2`,
      [name, holder],
      { prepare: true },
    );
  }

  async getSetting(key: string): Promise<string | undefined> {
    const [r] = await this.#sql.unsafe(
      `SELECT value FROM ${this.#s}.settings WHERE key = $1`,
      [key],
      { prepare: true },
    );
    return r ? String(r.value) : undefined;
  }

  async setSetting(key: string, value: string): Promise<void> {
    await this.#sql.unsafe(
      `INSERT INTO ${this.#s}.settings (key, value) VALUES ($1, $2)
       ON CONFLICT (key) DO UPDATE SET value = excluded.value`,
      [key, value],
      { prepare: true },
    );
  }

  async initSetting(key: string, value: string): Promise<string> {
    const inserted = await this.#sql.unsafe(
      `INSERT INTO ${this.#s}.settings (key, value) VALUES ($1, $2)
       ON CONFLICT (key) DO NOTHING RETURNING value`,
      [key, value],
      { prepare: true },
    );
    if (inserted.length === 1) return value;
    // Someone else's value: a new statement sees it even if it committed a moment ago.
    const existing = await this.getSetting(key);
    if (existing === undefined) throw new Error(`setting ${key} vanished while being read`);
    return existing;
  }

  async prune(before: number, limit: number): Promise<number> {
    const r = await this.#sql.unsafe(
      `DELETE FROM ${this.#s}.events WHERE seq IN
       (SELECT seq FROM ${this.#s}.events WHERE received_at < $1 ORDER BY seq LIMIT $2)`,
      [before, limit],
      { prepare: true },
    );
    return r.count;
  }

  async stats(): Promise<{ events: number; lastSeq: number; calls: number; activeCalls: number }> {
    const s = this.#s;
    const [r] = await this.#sql.unsafe(
      `SELECT (SELECT count(*) FROM ${s}.events) AS events,
              (SELECT coalesce(max(seq), 0) FROM ${s}.events) AS last_seq,
              (SELECT count(*) FROM ${s}.calls) AS calls,
              (SELECT count(*) FROM ${s}.calls WHERE state = 'active') AS active`,
    );
    return {
      events: Number(r.events),
      lastSeq: Number(r.last_seq),
      calls: Number(r.calls),
      activeCalls: Number(r.active),
    };
  }

  async probe(): Promise<void> {
    await this.#sql.unsafe(
      `INSERT INTO ${this.#s}.health (id, at) VALUES (1, $1)
       ON CONFLICT (id) DO UPDATE SET at = excluded.at`,
      [Date.now()],
      { prepare: true },
    );
  }

  /** Calls `listener` when another instance (another store) appends to this schema. */
  watch(listener: () => void): () => void {
    if (this.#closed) return () => {};
    this.#watch ??= new Watcher(this.#url, this.#base, this.#schema, this.#id);
    return this.#watch.add(listener);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#watch?.close();
    // The journal is flushed and the consumers stopped before this, so nothing is in flight. A
    // short timeout: under Deno, a connection that died under a query keeps end() waiting for a
    // socket "close" that already happened.
    await this.#sql.end({ timeout: 1 });
  }
}

/**
 * LISTEN on a dedicated connection that comes back by itself: when it closes
 * (server restart, terminated backend, network) it re-LISTENs with backoff, and
 * wakes the listeners once it is back, since notifications sent meanwhile are lost.
 */
class Watcher {
  #sql: Sql;
  #listeners = new Set<() => void>();
  #schema: string;
  #self: string;
  #listening = false;
  #closed = false;
  #attempt = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor(url: string, base: Record<string, unknown>, schema: string, self: string) {
    this.#schema = schema;
    this.#self = self;
    this.#sql = postgres(
      url,
      {
        ...base,
        max: 1,
        idle_timeout: null,
        max_lifetime: null,
        fetch_types: false,
        onnotify: (channel: string, payload: string) => this.#notified(channel, payload),
        onclose: () => {
          if (this.#listening) {
            this.#listening = false;
            this.#schedule();
          }
        },
      } as unknown as Parameters<typeof postgres>[1],
    ) as unknown as Sql;
    void this.#listen();
  }

  add(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => void this.#listeners.delete(listener);
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    await this.#sql.end({ timeout: 1 }).catch(() => {});
  }

  #notified(channel: string, payload: string) {
    if (channel !== NOTIFY_CHANNEL) return;
    const [schema, writer] = payload.split(" ");
    // Our own appends already woke our consumers; other schemas are other deployments.
    if (schema === this.#schema && writer !== this.#self) this.#fire();
  }

  #fire() {
    for (const l of this.#listeners) {
      try {
        l();
      } catch {
        // A listener's failure is its own.
      }
    }
  }

  async #listen() {
    if (this.#closed) return;
    try {
      await this.#sql.unsafe(`LISTEN ${NOTIFY_CHANNEL}`);
      if (this.#closed) return;
      this.#listening = true;
      if (this.#attempt > 0) this.#fire(); // appends made while we were away
      this.#attempt = 0;
    } catch {
      this.#schedule();
    }
  }

  #schedule() {
    if (this.#closed || this.#timer !== undefined) return;
    const ms = Math.min(10_000, 200 * 2 ** Math.min(this.#attempt++, 6));
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.#listen();
    }, ms);
  }
}
