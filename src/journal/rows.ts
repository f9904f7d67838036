/** Database rows (snake_case columns, as both engines name them) to the storage model's shapes. */
import type { CallRow, JournalEntry } from "./types.ts";

/** A row as a driver returns it. */
export type Row = Record<string, unknown>;

/** A journal row; tolerant of a damaged headers column, so one bad row cannot stop a consumer. */
export function toEntry(r: Row): JournalEntry {
  let headers: Record<string, string> = {};
  try {
    const h = typeof r.headers === "string" ? JSON.parse(r.headers) : r.headers;
    if (h && typeof h === "object" && !Array.isArray(h)) headers = h as Record<string, string>;
  } catch {
    // keep {}: the headers are informational
  }
  return {
    seq: Number(r.seq),
    uuid: String(r.uuid),
    event: String(r.event),
    subscriptionId: r.subscription_id === null ? null : String(r.subscription_id),
    ownerId: r.owner_id === null ? null : String(r.owner_id),
    receivedAt: Number(r.received_at),
    // A plain Uint8Array (a driver's Buffer may share a pooled slab).
    raw: r.raw instanceof Uint8Array && r.raw.constructor === Uint8Array
      ? r.raw
      : new Uint8Array(r.raw as Uint8Array),
    headers,
  };
}

/** A call row. */
export function toCall(r: Row): CallRow {
  const num = (v: unknown) => (v === null || v === undefined ? null : Number(v));
  return {
    telephonySessionId: String(r.telephony_session_id),
    state: r.state as CallRow["state"],
    result: r.result === null ? null : String(r.result),
    direction: r.direction === null ? null : String(r.direction),
    startedAt: num(r.started_at),
    endedAt: num(r.ended_at),
    updatedAt: Number(r.updated_at),
    data: String(r.data),
  };
}
