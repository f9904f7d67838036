/**
 * The storage model every engine implements (SQLite now, PostgreSQL later):
 * the journal of received notifications, consumer cursors, leases, the call
 * records and the topic of call.* events.
 */
import type { Notification } from "../notification.ts";

/** What happened to one notification handed to the journal. */
export type AcceptResult = { status: "stored"; seq: number } | { status: "duplicate" };

/** The seam between the edge and the journal: durable before it resolves. */
export type Accept = (n: Notification) => Promise<AcceptResult>;

/** Thrown by commit() when the fencing lease is no longer held. */
export class LeaseLost extends Error {
  /** Names the lease that was lost. */
  constructor(lease: string) {
    super(`lease ${lease} is held by another instance`);
    this.name = "LeaseLost";
  }
}

/** Thrown when the journal cannot store events right now (disk full, read-only, locked, corrupt). */
export class JournalUnavailable extends Error {
  /** Wraps the engine's error with a one-line cause. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "JournalUnavailable";
  }
}

/** A journal row as consumers read it. */
export interface JournalEntry {
  seq: number;
  uuid: string;
  event: string;
  subscriptionId: string | null;
  ownerId: string | null;
  receivedAt: number;
  /** The body bytes as received. */
  raw: Uint8Array;
  headers: Record<string, string>;
}

/** Filters for listing journal entries (admin API, CLI). */
export interface EventQuery {
  afterSeq?: number;
  /** Only entries received at or after / before these times (ms since epoch). */
  since?: number;
  until?: number;
  /** Substring of the event path. */
  eventContains?: string;
  uuid?: string;
  limit: number;
  /** Newest first when true. */
  descending?: boolean;
}

/** A row for the append transaction. */
export interface AppendRow {
  uuid: string;
  event: string;
  subscriptionId: string | null;
  ownerId: string | null;
  receivedAt: number;
  raw: Uint8Array;
  headers: string;
}

/** A call record as stored: the tracker's state serialised, plus indexed columns. */
export interface CallRow {
  telephonySessionId: string;
  state: "active" | "ended" | "stale";
  result: string | null;
  direction: string | null;
  startedAt: number | null;
  endedAt: number | null;
  updatedAt: number;
  /** The tracker's full state as JSON. */
  data: string;
}

/** Filters for listing calls. */
export interface CallQuery {
  active?: boolean;
  since?: number;
  limit: number;
  /** Paging, newest first: return calls after this one in that order. */
  after?: { at: number; id: string };
}

/** One event on an internal topic (call.ringing, call.ended, ...). */
export interface TopicEntry {
  seq: number;
  topic: string;
  type: string;
  key: string;
  createdAt: number;
  payload: string;
}

/** What a processor commits atomically after handling a batch of journal entries. */
export interface ProcessorCommit {
  /** The consumer whose cursor moves to `cursor`; none for writes outside a consumer (sweeps). */
  consumer?: string;
  cursor?: number;
  /** Commit only while this lease is held (fencing against a second instance). */
  lease?: { name: string; holder: string };
  calls?: CallRow[];
  topicEvents?: Array<Omit<TopicEntry, "seq">>;
}

/** The storage engine interface: async so that a network database fits the same shape. */
export interface Store {
  /** Appends rows in one durable transaction; per row the new seq, or 0 for a duplicate uuid. */
  append(rows: AppendRow[]): Promise<number[]>;
  /** Entries with seq > afterSeq, in order. */
  readAfter(afterSeq: number, limit: number): Promise<JournalEntry[]>;
  /** Lists entries for operators. */
  queryEvents(q: EventQuery): Promise<JournalEntry[]>;
  /** The newest seq (0 when empty). */
  lastSeq(): Promise<number>;
  getCursor(consumer: string): Promise<number>;
  /** Commits a processor's batch: cursor, call rows and topic events in one transaction. */
  commit(c: ProcessorCommit): Promise<void>;
  getCall(telephonySessionId: string): Promise<CallRow | undefined>;
  getCalls(ids: string[]): Promise<CallRow[]>;
  queryCalls(q: CallQuery): Promise<CallRow[]>;
  /** Active calls not updated since `olderThan` (ms). */
  staleCalls(olderThan: number, limit: number): Promise<CallRow[]>;
  readTopic(topic: string, afterSeq: number, limit: number): Promise<TopicEntry[]>;
  /** Takes or renews a named lease for `holder` for `ttlMs`; true when held. */
  lease(name: string, holder: string, ttlMs: number): Promise<boolean>;
  releaseLease(name: string, holder: string): Promise<void>;
  /** Key-value settings (subscription id, generated token). */
  getSetting(key: string): Promise<string | undefined>;
  setSetting(key: string, value: string): Promise<void>;
  /** Writes a setting only if it has none; returns the value stored (someone else's, or this). */
  initSetting(key: string, value: string): Promise<string>;
  /** Deletes journal entries received before `before`, at most `limit`; returns how many. */
  prune(before: number, limit: number): Promise<number>;
  /** Counts for health and metrics. */
  stats(): Promise<{ events: number; lastSeq: number; calls: number; activeCalls: number }>;
  /** A cheap write that proves the database takes writes again. */
  probe(): Promise<void>;
  /**
   * Optional: calls `listener` when another instance sharing the database appended events
   * (engines where several processes write); returns the unsubscribe function.
   */
  watch?(listener: () => void): () => void;
  close(): Promise<void>;
}

/** Converts a notification into the row the journal stores. */
export function toRow(n: Notification): AppendRow {
  return {
    uuid: n.uuid,
    event: n.event,
    subscriptionId: n.subscriptionId ?? null,
    ownerId: n.ownerId ?? null,
    receivedAt: n.receivedAt,
    raw: n.raw,
    headers: JSON.stringify(n.headers),
  };
}
