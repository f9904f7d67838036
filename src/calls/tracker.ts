/**
 * The call tracker: a pure reducer from RingCentral telephony session events (§5.2 of the
 * reference) to one call record per `telephonySessionId`.
 *
 * Design:
 * - The only accumulated data is each party's **history**: one snapshot per (party id, sequence),
 *   sorted by sequence. Everything else in CallState (party "latest" fields, direction, result,
 *   durations, timeline, state) is recomputed from the merged histories on every reduction, so
 *   the same set of events gives the same record whatever the arrival order, and duplicates
 *   change nothing. Two different snapshots for the same (party, sequence) keep the one whose
 *   JSON sorts first, so even conflicting duplicates converge.
 * - The exceptions are bookkeeping, not derived from events: `emittedTypes` (which call.* events
 *   were already emitted, so each is emitted at most once per call) and `staleAt` (set by
 *   closeStale). `emittedTypes` can differ between arrival orders (a late Proceeding after the
 *   answer does not pop a ringing event); compare records with {@link withoutBookkeeping}.
 * - Which legs count (for durations, answered, ringing): the account's own legs on its side of
 *   the call, the "counted" parties: for inbound calls the account's Inbound legs (the callee
 *   legs: the original target and, after a blind transfer, the target), for outbound calls the
 *   account's Outbound legs (the caller), for internal calls the callee's Inbound legs (the
 *   caller's Outbound leg reports Answered as soon as the target is reached, §5.2 flow 2), or the
 *   caller's leg when no callee leg was seen. The PSTN leg never counts while an account leg is
 *   known (it shows Answered when voicemail picks up).
 * - A party is an account leg when it has a party-level extensionId (and, when
 *   TrackerOptions.accountId is given, no other accountId). PSTN legs carry the account's
 *   accountId but no extensionId, so accountId alone does not make an account leg.
 *
 * No I/O, no clock: time comes from eventTime or from arguments.
 */
import type { CallRow } from "../journal/types.ts";
import { idString } from "../notification.ts";
import {
  CALL_EVENT_TYPES,
  type CallDirection,
  type CallEvent,
  type CallEventType,
  type CallResult,
  type Durations,
  type Endpoint,
  makeCallEvent,
  type PartyRef,
  type PeerRef,
  type Recording,
  type RingingData,
  type TransferInfo,
} from "./events.ts";

// ---------------------------------------------------------------------------------------------
// Vocabulary

/** Status codes of the current spec, in their canonical spelling. */
export const KNOWN_CODES = [
  "Setup",
  "Proceeding",
  "Answered",
  "Disconnected",
  "Gone",
  "Parked",
  "Hold",
  "VoiceMail",
  "FaxReceive",
  "Tds",
  "VoiceMailScreening",
] as const;

/** Status reasons of the spec enum plus the two seen in the wild on Gone (Undefined, Conference). */
export const KNOWN_REASONS = [
  "Pickup",
  "Supervising",
  "TakeOver",
  "Timeout",
  "BlindTransfer",
  "RccTransfer",
  "AttendedTransfer",
  "CallerInputRedirect",
  "CallFlip",
  "ParkLocation",
  "DtmfTransfer",
  "AgentAnswered",
  "AgentDropped",
  "Rejected",
  "Cancelled",
  "InternalError",
  "NoAnswer",
  "TargetBusy",
  "InvalidNumber",
  "InternationalDisabled",
  "DestinationBlocked",
  "NotEnoughFunds",
  "NoSuchUser",
  "CallPark",
  "CallRedirected",
  "CallReplied",
  "CallSwitch",
  "CallFinished",
  "CallDropped",
  "Voicemail",
  "Undefined",
  "Conference",
] as const;

const CODE_BY_LOWER = new Map<string, string>([
  ...KNOWN_CODES.map((c) => [c.toLowerCase(), c] as [string, string]),
  ["vmscreening", "VoiceMailScreening"],
]);
const REASON_BY_LOWER = new Map<string, string>(
  KNOWN_REASONS.map((r) => [r.toLowerCase(), r] as [string, string]),
);

const BLIND_TRANSFER_REASONS = new Set(["BlindTransfer", "RccTransfer", "DtmfTransfer"]);
const FAILED_REASONS = new Set([
  "InvalidNumber",
  "InternationalDisabled",
  "DestinationBlocked",
  "NotEnoughFunds",
  "NoSuchUser",
  "InternalError",
]);
const NO_ANSWER_REASONS = new Set(["NoAnswer", "Timeout", "Cancelled"]);
const VOICEMAIL_CODES = new Set(["VoiceMail", "VoiceMailScreening"]);
const TERMINAL_CODES = new Set(["Disconnected", "Gone"]);

/** The canonical spelling of a status code (case-insensitive; VMScreening → VoiceMailScreening), or undefined when unknown. */
export function canonicalCode(code: string): string | undefined {
  return CODE_BY_LOWER.get(code.toLowerCase());
}

/** The canonical spelling of a status reason (case-insensitive), or undefined when unknown. */
export function canonicalReason(reason: string): string | undefined {
  return REASON_BY_LOWER.get(reason.toLowerCase());
}

// ---------------------------------------------------------------------------------------------
// Types

/** Options that change how events are read; pass the same options for every event of a call. */
export interface TrackerOptions {
  /** The subscribing account: parties of another account are never account legs. */
  accountId?: string;
}

/** One party as carried by one telephony notification, leniently parsed. */
export interface PartyUpdate {
  id: string;
  accountId?: string;
  extensionId?: string;
  /** "Inbound" / "Outbound" (canonical case) or the raw value when unknown. */
  direction?: string;
  from?: Endpoint;
  to?: Endpoint;
  /** Canonical status code when known, else the code as received. */
  code: string;
  /** The code as received, when it differs from `code`. */
  rawCode?: string;
  /** Canonical reason when known, else as received. */
  reason?: string;
  /** The reason as received, when it differs from `reason`. */
  rawReason?: string;
  peer?: PeerRef;
  missedCall: boolean;
  queueCall?: boolean;
  recordings?: Recording[];
}

/** A telephony session notification reduced to what the tracker uses. */
export interface TelephonyEvent {
  uuid: string;
  telephonySessionId: string;
  sessionId?: string;
  sequence: number;
  /** ISO-8601 (normalized) time of the state change; envelope timestamp when eventTime is absent. */
  eventTime: string;
  origin?: string;
  ownerId?: string;
  parties: PartyUpdate[];
}

/** One state of one party, as stored in its history. */
export interface PartySnapshot extends Omit<PartyUpdate, "id"> {
  sequence: number;
  eventTime: string;
  uuid: string;
  sessionId?: string;
  origin?: string;
}

/** A party of the call: latest fields (by sequence), its own metrics and its full history. */
export interface PartyState {
  id: string;
  /** True for an extension's leg of the account (see the module comment). */
  accountLeg: boolean;
  direction?: string;
  accountId?: string;
  extensionId?: string;
  from?: Endpoint;
  to?: Endpoint;
  /** Status at the highest sequence seen. */
  code: string;
  reason?: string;
  sequence: number;
  eventTime: string;
  /** Latest code is Disconnected or Gone. */
  ended: boolean;
  missedCall: boolean;
  queueCall?: boolean;
  peer?: PeerRef;
  recordings: Recording[];
  /** §5.2 metrics of this party's own timeline. */
  metrics: { ringMs: number; talkMs: number; holdMs: number };
  /** Every state seen, sorted by sequence, one per sequence. */
  history: PartySnapshot[];
}

/** A milestone of the call, from the counted legs (ringing: a leg's first Proceeding; for an outbound call that is the far end ringing back). */
export interface TimelineEntry {
  type:
    | "started"
    | "ringing"
    | "answered"
    | "held"
    | "resumed"
    | "voicemail"
    | "transferred"
    | "ended";
  at: string;
  sequence: number;
  partyId?: string;
}

/** The tracker's record of one call (one telephony session); JSON-safe. */
export interface CallState {
  version: 1;
  telephonySessionId: string;
  sessionId?: string;
  origin?: string;
  state: "active" | "ended" | "stale";
  direction: CallDirection;
  /** null while active. */
  result: CallResult | null;
  /** The status reason that decided the result, when one did. */
  resultReason?: string;
  from?: Endpoint;
  to?: Endpoint;
  /** Who the call was for: the account's callee (inbound/internal) or caller (outbound). */
  for?: PartyRef;
  /** The counted party that answered first. */
  answeredBy?: PartyRef;
  startedAt: string;
  ringingAt?: string;
  answeredAt?: string;
  /** Set when ended or stale: the last event's time. */
  endedAt?: string;
  lastEventAt: string;
  lastSequence: number;
  durations: Durations;
  missedCall: boolean;
  transfer?: TransferInfo;
  recordings: Recording[];
  timeline: TimelineEntry[];
  /** The party ids whose timelines count for durations/answered (see the module comment). */
  countedParties: string[];
  /** Codes and reasons outside the known lists, as received. */
  unknownCodes: string[];
  unknownReasons: string[];
  /** Sorted by party id. */
  parties: PartyState[];
  /** Bookkeeping: when closeStale closed the call (ISO). */
  staleAt?: string;
  /** Bookkeeping: call.* event types already emitted for this call. */
  emittedTypes: CallEventType[];
}

/** What one reduction returns: the new state and the call events to publish. */
export interface Reduction {
  state: CallState;
  emitted: CallEvent[];
}

// ---------------------------------------------------------------------------------------------
// Parsing

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function str(v: unknown): string | undefined {
  return typeof v === "string" && v !== "" ? v : undefined;
}

function toIso(v: unknown): string | undefined {
  if (typeof v !== "string" || v === "") return undefined;
  const t = Date.parse(v);
  return Number.isFinite(t) ? new Date(t).toISOString() : undefined;
}

function toSequence(v: unknown): number | undefined {
  const n = typeof v === "number" ? v : typeof v === "string" && v.trim() !== "" ? Number(v) : NaN;
  return Number.isFinite(n) ? n : undefined;
}

function parseEndpoint(v: unknown): Endpoint | undefined {
  if (!isObject(v)) return undefined;
  return endpoint({
    phoneNumber: idString(v.phoneNumber),
    name: str(v.name),
    extensionId: idString(v.extensionId),
    deviceId: idString(v.deviceId),
  });
}

/** Rebuilds an endpoint with a fixed key order and without empty fields (undefined when empty). */
function endpoint(e: Endpoint | undefined): Endpoint | undefined {
  if (!e) return undefined;
  const out: Endpoint = {};
  if (e.phoneNumber !== undefined) out.phoneNumber = e.phoneNumber;
  if (e.name !== undefined) out.name = e.name;
  if (e.extensionId !== undefined) out.extensionId = e.extensionId;
  if (e.deviceId !== undefined) out.deviceId = e.deviceId;
  return Object.keys(out).length ? out : undefined;
}

function peerRef(p: PeerRef | undefined): PeerRef | undefined {
  if (!p) return undefined;
  const out: PeerRef = {};
  if (p.sessionId !== undefined) out.sessionId = p.sessionId;
  if (p.telephonySessionId !== undefined) out.telephonySessionId = p.telephonySessionId;
  if (p.partyId !== undefined) out.partyId = p.partyId;
  return Object.keys(out).length ? out : undefined;
}

function sortRecordings(list: Recording[]): Recording[] {
  return [...list].sort((a, b) => cmp(a.id, b.id) || Number(a.active) - Number(b.active));
}

function normalizeDirection(v: string | undefined): string | undefined {
  if (v === undefined) return undefined;
  const l = v.toLowerCase();
  return l === "inbound" ? "Inbound" : l === "outbound" ? "Outbound" : v;
}

function parseParty(v: unknown): PartyUpdate | undefined {
  if (!isObject(v)) return undefined;
  const id = idString(v.id);
  const status = isObject(v.status) ? v.status : undefined;
  const code = str(status?.code);
  if (!id || !status || !code) return undefined;
  const peer = isObject(status.peerId)
    ? peerRef({
      sessionId: idString(status.peerId.sessionId),
      telephonySessionId: idString(status.peerId.telephonySessionId),
      partyId: idString(status.peerId.partyId),
    })
    : undefined;
  const recordings = Array.isArray(v.recordings)
    ? v.recordings.flatMap((r) => {
      const rid = isObject(r) ? idString(r.id) : undefined;
      return rid && isObject(r) ? [{ id: rid, active: r.active === true }] : [];
    })
    : undefined;
  return normalizeUpdate({
    id,
    accountId: idString(v.accountId),
    extensionId: idString(v.extensionId),
    direction: str(v.direction),
    from: parseEndpoint(v.from),
    to: parseEndpoint(v.to),
    code,
    reason: str(status.reason),
    peer,
    missedCall: v.missedCall === true,
    queueCall: typeof v.queueCall === "boolean" ? v.queueCall : undefined,
    recordings,
  });
}

/** Canonical spelling, fixed key order, no undefined values: the form stored in histories. */
function normalizeUpdate(u: PartyUpdate): PartyUpdate {
  const rawCode = u.rawCode ?? u.code;
  const code = canonicalCode(rawCode) ?? rawCode;
  const rawReason = u.rawReason ?? u.reason;
  const reason = rawReason === undefined ? undefined : canonicalReason(rawReason) ?? rawReason;
  const out: PartyUpdate = { id: u.id, code, missedCall: u.missedCall === true };
  if (u.accountId !== undefined) out.accountId = u.accountId;
  if (u.extensionId !== undefined) out.extensionId = u.extensionId;
  const direction = normalizeDirection(u.direction);
  if (direction !== undefined) out.direction = direction;
  const from = endpoint(u.from);
  if (from) out.from = from;
  const to = endpoint(u.to);
  if (to) out.to = to;
  if (rawCode !== code) out.rawCode = rawCode;
  if (reason !== undefined) out.reason = reason;
  if (rawReason !== undefined && rawReason !== reason) out.rawReason = rawReason;
  const peer = peerRef(u.peer);
  if (peer) out.peer = peer;
  if (u.queueCall !== undefined) out.queueCall = u.queueCall;
  if (u.recordings && u.recordings.length) out.recordings = sortRecordings(u.recordings);
  return out;
}

/** Leniently extracts a telephony event from a notification envelope; undefined when it is not one (no session id, sequence, time or usable party). */
export function parseTelephonyEvent(envelope: {
  uuid: string;
  event: string;
  ownerId?: string;
  timestamp?: string;
  body: unknown;
}): TelephonyEvent | undefined {
  const body = envelope.body;
  if (!isObject(body)) return undefined;
  const telephonySessionId = idString(body.telephonySessionId);
  const sequence = toSequence(body.sequence);
  const eventTime = toIso(body.eventTime) ?? toIso(envelope.timestamp);
  if (!telephonySessionId || sequence === undefined || !eventTime) return undefined;
  if (!Array.isArray(body.parties)) return undefined;
  const parties = body.parties.flatMap((p) => parseParty(p) ?? []);
  if (!parties.length) return undefined;
  const ev: TelephonyEvent = {
    uuid: envelope.uuid,
    telephonySessionId,
    sequence,
    eventTime,
    parties,
  };
  const sessionId = idString(body.sessionId);
  if (sessionId) ev.sessionId = sessionId;
  const origin = isObject(body.origin) ? str(body.origin.type) : undefined;
  if (origin) ev.origin = origin;
  if (envelope.ownerId) ev.ownerId = envelope.ownerId;
  return ev;
}

// ---------------------------------------------------------------------------------------------
// Reducer

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function snapshotOf(u: PartyUpdate, ev: TelephonyEvent, eventTime: string): PartySnapshot {
  const { id: _id, ...rest } = normalizeUpdate(u);
  const snap: PartySnapshot = { sequence: ev.sequence, eventTime, uuid: ev.uuid, ...rest };
  if (ev.sessionId !== undefined) snap.sessionId = ev.sessionId;
  if (ev.origin !== undefined) snap.origin = ev.origin;
  return snap;
}

/** Merges one snapshot into a sorted history; returns the same array when nothing changes. */
function mergeSnapshot(history: PartySnapshot[], snap: PartySnapshot): PartySnapshot[] {
  let i = 0;
  while (i < history.length && history[i].sequence < snap.sequence) i++;
  if (i < history.length && history[i].sequence === snap.sequence) {
    // Same (party, sequence): keep the snapshot whose JSON sorts first, so any order converges.
    const a = JSON.stringify(history[i]);
    const b = JSON.stringify(snap);
    if (b >= a) return history;
    return [...history.slice(0, i), snap, ...history.slice(i + 1)];
  }
  return [...history.slice(0, i), snap, ...history.slice(i)];
}

/** Applies one telephony event to a call's state (undefined for a new call); pure, idempotent, order independent. */
export function reduceCall(
  state: CallState | undefined,
  event: TelephonyEvent,
  opts: TrackerOptions = {},
): Reduction {
  if (state && state.telephonySessionId !== event.telephonySessionId) {
    throw new RangeError(
      `event for ${event.telephonySessionId} applied to call ${state.telephonySessionId}`,
    );
  }
  if (!Number.isFinite(event.sequence)) throw new RangeError("event sequence is not a number");
  const eventTime = toIso(event.eventTime);
  if (!eventTime) throw new RangeError(`event time ${JSON.stringify(event.eventTime)} is invalid`);

  const histories = new Map<string, PartySnapshot[]>(
    (state?.parties ?? []).map((p) => [p.id, p.history]),
  );
  let changed = false;
  for (const u of event.parties) {
    const before = histories.get(u.id) ?? [];
    const after = mergeSnapshot(before, snapshotOf(u, event, eventTime));
    if (after !== before) {
      histories.set(u.id, after);
      changed = true;
    }
  }
  if (state && !changed) return { state, emitted: [] };
  if (!histories.size) throw new RangeError("event carries no party");

  const next = derive(event.telephonySessionId, histories, opts, {
    staleAt: state?.staleAt,
    emittedTypes: state?.emittedTypes ?? [],
  });
  return emit(next, event, eventTime);
}

/** Closes an active call as `stale` at nowMs (only when silent for opts.silentForMs, if given) and emits its call.ended. */
export function closeStale(
  state: CallState,
  nowMs: number,
  opts: TrackerOptions & { silentForMs?: number } = {},
): Reduction {
  if (state.state !== "active") return { state, emitted: [] };
  if (opts.silentForMs !== undefined && nowMs - Date.parse(state.lastEventAt) < opts.silentForMs) {
    return { state, emitted: [] };
  }
  const next = derive(state.telephonySessionId, historiesOf(state), opts, {
    staleAt: new Date(nowMs).toISOString(),
    emittedTypes: state.emittedTypes,
  });
  return emit(next, undefined, undefined);
}

/** Recomputes every derived field from the stored histories (e.g. after a tracker upgrade); emits nothing. */
export function rebuildCall(state: CallState, opts: TrackerOptions = {}): CallState {
  return derive(state.telephonySessionId, historiesOf(state), opts, {
    staleAt: state.staleAt,
    emittedTypes: state.emittedTypes,
  });
}

/** The record without bookkeeping (emittedTypes): what must be equal for any arrival order. */
export function withoutBookkeeping(state: CallState): Omit<CallState, "emittedTypes"> {
  const { emittedTypes: _e, ...rest } = state;
  return rest;
}

function historiesOf(state: CallState): Map<string, PartySnapshot[]> {
  return new Map(state.parties.map((p) => [p.id, p.history]));
}

// ---------------------------------------------------------------------------------------------
// Derivation (everything below is a function of the merged histories)

interface Interval {
  start: number;
  end: number;
}

const t = (iso: string) => Date.parse(iso);

/** The last defined value of a field walking the history backwards (latest wins). */
function lastDefined<K extends keyof PartySnapshot>(
  h: PartySnapshot[],
  key: K,
): PartySnapshot[K] | undefined {
  for (let i = h.length - 1; i >= 0; i--) if (h[i][key] !== undefined) return h[i][key];
  return undefined;
}

/** Ring, talk and hold spans of one party per §5.2, open spans closed at `horizon`. */
function spans(h: PartySnapshot[], horizon: number) {
  const ring: Interval[] = [];
  const talk: Interval[] = [];
  const hold: Interval[] = [];
  let ringStart: number | undefined;
  let ringDone = false;
  let talkStart: number | undefined;
  let holdStart: number | undefined;
  let answered = false;
  const close = (list: Interval[], start: number, end: number) =>
    list.push({ start, end: Math.max(start, end) });
  for (const s of h) {
    if (!canonicalCode(s.code)) continue; // unknown codes neither open nor close a span
    const at = t(s.eventTime);
    if (talkStart !== undefined && s.code !== "Answered") {
      close(talk, talkStart, at);
      talkStart = undefined;
    }
    if (holdStart !== undefined && s.code !== "Hold") {
      close(hold, holdStart, at);
      holdStart = undefined;
    }
    if (ringStart !== undefined && s.code !== "Proceeding" && s.code !== "Setup") {
      close(ring, ringStart, at);
      ringStart = undefined;
      ringDone = true;
    }
    if (s.code === "Proceeding" && !ringDone && ringStart === undefined) ringStart = at;
    if (s.code === "Answered" && talkStart === undefined) talkStart = at;
    if (s.code === "Answered") answered = true;
    // A Hold before the leg's first Answered (only possible with events missing) is not counted.
    if (s.code === "Hold" && holdStart === undefined && answered) holdStart = at;
  }
  if (ringStart !== undefined) close(ring, ringStart, horizon);
  if (talkStart !== undefined) close(talk, talkStart, horizon);
  if (holdStart !== undefined) close(hold, holdStart, horizon);
  return { ring, talk, hold };
}

function union(list: Interval[]): Interval[] {
  const sorted = [...list].sort((a, b) => a.start - b.start || a.end - b.end);
  const out: Interval[] = [];
  for (const i of sorted) {
    const last = out[out.length - 1];
    if (last && i.start <= last.end) last.end = Math.max(last.end, i.end);
    else out.push({ ...i });
  }
  return out;
}

/** Parts of `a` not covered by `b` (both merged). */
function subtract(a: Interval[], b: Interval[]): Interval[] {
  const out: Interval[] = [];
  for (const i of a) {
    let cur = i.start;
    for (const j of b) {
      if (j.end <= cur || j.start >= i.end) continue;
      if (j.start > cur) out.push({ start: cur, end: j.start });
      cur = Math.max(cur, j.end);
    }
    if (cur < i.end) out.push({ start: cur, end: i.end });
  }
  return out;
}

const measure = (list: Interval[]) => list.reduce((n, i) => n + (i.end - i.start), 0);

function isAccountLeg(h: PartySnapshot[], opts: TrackerOptions): boolean {
  const ext = lastDefined(h, "extensionId");
  const acc = lastDefined(h, "accountId");
  return ext !== undefined && (!opts.accountId || acc === undefined || acc === opts.accountId);
}

function deriveParty(id: string, h: PartySnapshot[], opts: TrackerOptions, horizon: number) {
  const last = h[h.length - 1];
  const s = spans(h, horizon);
  const recs = new Map<string, Recording>();
  for (const snap of h) for (const r of snap.recordings ?? []) recs.set(r.id, r);
  const p: PartyState = {
    id,
    accountLeg: isAccountLeg(h, opts),
    code: last.code,
    sequence: last.sequence,
    eventTime: last.eventTime,
    ended: TERMINAL_CODES.has(last.code),
    missedCall: last.missedCall,
    recordings: sortRecordings([...recs.values()]),
    metrics: { ringMs: measure(s.ring), talkMs: measure(s.talk), holdMs: measure(s.hold) },
    history: h,
  };
  const direction = lastDefined(h, "direction");
  if (direction !== undefined) p.direction = direction;
  const accountId = lastDefined(h, "accountId");
  if (accountId !== undefined) p.accountId = accountId;
  const extensionId = lastDefined(h, "extensionId");
  if (extensionId !== undefined) p.extensionId = extensionId;
  const from = lastDefined(h, "from");
  if (from) p.from = from;
  const to = lastDefined(h, "to");
  if (to) p.to = to;
  if (last.reason !== undefined) p.reason = last.reason;
  if (last.peer) p.peer = last.peer;
  const queueCall = lastDefined(h, "queueCall");
  if (queueCall !== undefined) p.queueCall = queueCall;
  return { party: p, spans: s };
}

/** Lowest first sequence, then id: the order parties joined the call. */
function byJoin(a: PartyState, b: PartyState): number {
  return a.history[0].sequence - b.history[0].sequence || cmp(a.id, b.id);
}

function deriveDirection(parties: PartyState[]): CallDirection {
  const joined = [...parties].sort(byJoin);
  const acct = joined.filter((p) => p.accountLeg);
  const ext = joined.filter((p) => !p.accountLeg);
  if (!acct.length) {
    // Only PSTN legs: the outside caller's leg is Outbound, an outside callee's leg Inbound.
    const p = ext.find((x) => x.direction === "Inbound" || x.direction === "Outbound");
    return p?.direction === "Outbound"
      ? "inbound"
      : p?.direction === "Inbound"
      ? "outbound"
      : "unknown";
  }
  const p = acct.find((x) => x.direction === "Inbound" || x.direction === "Outbound");
  if (!ext.length) {
    const dirs = new Set(acct.map((x) => x.direction));
    if (dirs.has("Inbound") && dirs.has("Outbound")) return "internal";
    const other = p?.direction === "Inbound"
      ? p.from
      : p?.direction === "Outbound"
      ? p.to
      : undefined;
    if (other?.extensionId !== undefined) return "internal";
  }
  return p?.direction === "Inbound"
    ? "inbound"
    : p?.direction === "Outbound"
    ? "outbound"
    : "unknown";
}

function countedLegs(parties: PartyState[], direction: CallDirection): PartyState[] {
  const joined = [...parties].sort(byJoin);
  const acct = joined.filter((p) => p.accountLeg);
  const inb = acct.filter((p) => p.direction === "Inbound");
  const outb = acct.filter((p) => p.direction === "Outbound");
  let chosen: PartyState[] = [];
  if (direction === "inbound") chosen = inb;
  else if (direction === "outbound") chosen = outb;
  else if (direction === "internal") chosen = inb.length ? inb : outb;
  if (chosen.length) return chosen;
  return acct.length ? acct : joined;
}

/** Looks a name up for an extension id in every from/to seen (deterministic: parties by id, latest first). */
function nameFor(extensionId: string | undefined, parties: PartyState[]): string | undefined {
  if (extensionId === undefined) return undefined;
  for (const p of parties) {
    for (let i = p.history.length - 1; i >= 0; i--) {
      for (const e of [p.history[i].from, p.history[i].to]) {
        if (e?.extensionId === extensionId && e.name !== undefined) return e.name;
      }
    }
  }
  return undefined;
}

function enrich(e: Endpoint | undefined, parties: PartyState[]): Endpoint | undefined {
  if (!e || e.name !== undefined || e.extensionId === undefined) return e;
  const name = nameFor(e.extensionId, parties);
  return name === undefined ? e : endpoint({ ...e, name });
}

function partyRef(
  e: Endpoint | undefined,
  partyId: string | undefined,
  extensionId: string | undefined,
  parties: PartyState[],
): PartyRef | undefined {
  const ext = extensionId ?? e?.extensionId;
  const name = e?.name ?? nameFor(ext, parties);
  const ref: PartyRef = {};
  if (partyId !== undefined) ref.partyId = partyId;
  if (ext !== undefined) ref.extensionId = ext;
  if (name !== undefined) ref.name = name;
  if (e?.phoneNumber !== undefined) ref.phoneNumber = e.phoneNumber;
  return Object.keys(ref).length ? ref : undefined;
}

/** The account user of an account leg: `to` of an Inbound leg, `from` of an Outbound leg. */
function ownRef(p: PartyState, parties: PartyState[]): PartyRef | undefined {
  if (!p.accountLeg) return undefined;
  const e = p.direction === "Outbound" ? p.from : p.direction === "Inbound" ? p.to : undefined;
  return partyRef(e, p.id, p.extensionId, parties);
}

function forRef(
  primary: PartyState | undefined,
  direction: CallDirection,
  parties: PartyState[],
): PartyRef | undefined {
  if (!primary?.accountLeg) return undefined;
  if (direction === "internal" && primary.direction === "Outbound") {
    // Only the caller's leg was seen: the call was for the extension it called.
    return primary.to?.extensionId !== undefined
      ? partyRef(primary.to, undefined, undefined, parties)
      : undefined;
  }
  return ownRef(primary, parties);
}

interface Decision {
  result: CallResult;
  reason?: string;
  transfer?: TransferInfo;
}

function firstSnapshot(
  parties: PartyState[],
  pred: (s: PartySnapshot) => boolean,
): { party: PartyState; snap: PartySnapshot } | undefined {
  let best: { party: PartyState; snap: PartySnapshot } | undefined;
  for (const party of parties) {
    for (const snap of party.history) {
      if (!pred(snap)) continue;
      if (
        !best || snap.sequence < best.snap.sequence ||
        (snap.sequence === best.snap.sequence && cmp(party.id, best.party.id) < 0)
      ) best = { party, snap };
    }
  }
  return best;
}

function decideResult(
  parties: PartyState[],
  counted: PartyState[],
  direction: CallDirection,
  stale: boolean,
): Decision {
  const attended = firstSnapshot(
    parties,
    (s) => s.code === "Gone" && s.reason === "AttendedTransfer",
  );
  const blind = firstSnapshot(
    parties,
    (s) =>
      s.code === "Disconnected" && s.reason !== undefined && BLIND_TRANSFER_REASONS.has(s.reason),
  );
  const tr = attended && (!blind || attended.snap.sequence <= blind.snap.sequence)
    ? { ...attended, kind: "attended" as const }
    : blind
    ? { ...blind, kind: "blind" as const }
    : undefined;
  if (tr) {
    const transfer: TransferInfo = {
      kind: tr.kind,
      partyId: tr.party.id,
      reason: tr.snap.reason!,
      at: tr.snap.eventTime,
      sequence: tr.snap.sequence,
    };
    if (tr.kind === "blind") {
      const target = [...parties].sort(byJoin).find((p) =>
        p.accountLeg && p.id !== tr.party.id && p.history[0].sequence > tr.snap.sequence
      );
      const ref = target && ownRef(target, parties);
      if (ref) transfer.target = ref;
    }
    if (tr.snap.peer) transfer.peer = tr.snap.peer;
    return { result: "transferred", reason: transfer.reason, transfer };
  }
  const inCounted = (pred: (s: PartySnapshot) => boolean) => firstSnapshot(counted, pred);
  if (inCounted((s) => s.code === "Answered")) return { result: "answered" };
  const vm = inCounted((s) => VOICEMAIL_CODES.has(s.code) || s.reason === "Voicemail");
  if (vm) return { result: "voicemail", reason: vm.snap.reason };
  if (inCounted((s) => s.code === "FaxReceive")) return { result: "fax" };
  const noAnswer: CallResult = direction === "outbound" ? "no_answer" : "missed";
  const byReason: Array<[Set<string>, CallResult]> = [
    [new Set(["TargetBusy"]), "busy"],
    [new Set(["Rejected"]), "rejected"],
    [FAILED_REASONS, "failed"],
    [NO_ANSWER_REASONS, noAnswer],
  ];
  for (const [set, result] of byReason) {
    const hit = firstSnapshot(parties, (s) => s.reason !== undefined && set.has(s.reason));
    if (hit) return { result, reason: hit.snap.reason };
  }
  const acct = parties.filter((p) => p.accountLeg);
  if ((acct.length ? acct : parties).some((p) => p.missedCall)) return { result: "missed" };
  if (stale) return { result: "unknown" };
  if (counted.some((p) => p.history.some((s) => !canonicalCode(s.code)))) {
    return { result: "unknown" };
  }
  return { result: direction === "unknown" ? "unknown" : noAnswer };
}

const TIMELINE_RANK: Record<TimelineEntry["type"], number> = {
  started: 0,
  ringing: 1,
  answered: 2,
  held: 3,
  resumed: 4,
  voicemail: 5,
  transferred: 6,
  ended: 7,
};

function timelineOf(
  counted: PartyState[],
  first: { party: PartyState; snap: PartySnapshot },
  startedAt: string,
  transfer: TransferInfo | undefined,
  end: { at: string; sequence: number } | undefined,
): TimelineEntry[] {
  const out: TimelineEntry[] = [
    { type: "started", at: startedAt, sequence: first.snap.sequence, partyId: first.party.id },
  ];
  for (const p of counted) {
    let rang = false;
    let answered = false;
    let voicemail = false;
    let prev: string | undefined;
    for (const s of p.history) {
      if (!canonicalCode(s.code)) continue;
      const add = (type: TimelineEntry["type"]) =>
        out.push({ type, at: s.eventTime, sequence: s.sequence, partyId: p.id });
      if (s.code === "Proceeding" && !rang) {
        rang = true;
        add("ringing");
      } else if (s.code === "Answered" && (prev === "Hold" || prev === "Parked")) {
        add("resumed");
      } else if (s.code === "Answered" && !answered) {
        add("answered");
      } else if (s.code === "Hold" && prev !== "Hold") {
        add("held");
      } else if (VOICEMAIL_CODES.has(s.code) && !voicemail) {
        voicemail = true;
        add("voicemail");
      }
      if (s.code === "Answered") answered = true;
      prev = s.code;
    }
  }
  if (transfer) {
    out.push({
      type: "transferred",
      at: transfer.at,
      sequence: transfer.sequence,
      partyId: transfer.partyId,
    });
  }
  if (end) out.push({ type: "ended", at: end.at, sequence: end.sequence });
  return out.sort((a, b) =>
    a.sequence - b.sequence || TIMELINE_RANK[a.type] - TIMELINE_RANK[b.type] ||
    cmp(a.partyId ?? "", b.partyId ?? "")
  );
}

function derive(
  telephonySessionId: string,
  histories: Map<string, PartySnapshot[]>,
  opts: TrackerOptions,
  book: { staleAt?: string; emittedTypes: CallEventType[] },
): CallState {
  const ids = [...histories.keys()].sort(cmp);
  let minT = Infinity;
  let maxT = -Infinity;
  let lastSequence = -Infinity;
  for (const h of histories.values()) {
    for (const s of h) {
      minT = Math.min(minT, t(s.eventTime));
      maxT = Math.max(maxT, t(s.eventTime));
      lastSequence = Math.max(lastSequence, s.sequence);
    }
  }
  const derived = ids.map((id) => deriveParty(id, histories.get(id)!, opts, maxT));
  const parties = derived.map((d) => d.party);
  const spansById = new Map(derived.map((d) => [d.party.id, d.spans]));

  const direction = deriveDirection(parties);
  const counted = countedLegs(parties, direction);
  const primary = counted[0];

  // A blind transfer that is the last thing that happened means the call goes on elsewhere in
  // this session (the target's leg has not been seen yet): not ended.
  const pendingTransfer = parties.some((p) =>
    p.history.some((s) =>
      s.sequence === lastSequence && s.code === "Disconnected" && s.reason !== undefined &&
      BLIND_TRANSFER_REASONS.has(s.reason)
    )
  );
  const allEnded = parties.every((p) => p.ended) && !pendingTransfer;
  const state: CallState["state"] = allEnded ? "ended" : book.staleAt ? "stale" : "active";

  const startedAt = new Date(minT).toISOString();
  const lastEventAt = new Date(maxT).toISOString();
  const closed = state !== "active";

  // Durations: union of the counted legs' spans; talk wins over hold, both over ring.
  const talk = union(counted.flatMap((p) => spansById.get(p.id)!.talk));
  const hold = subtract(union(counted.flatMap((p) => spansById.get(p.id)!.hold)), talk);
  const ring = subtract(
    union(counted.flatMap((p) => spansById.get(p.id)!.ring)),
    union([...talk, ...hold]),
  );
  const durations: Durations = {
    ringMs: measure(ring),
    talkMs: measure(talk),
    holdMs: measure(hold),
    totalMs: Math.max(0, maxT - minT),
  };

  const firstOf = (code: string) => {
    let best: { at: number; snap: PartySnapshot; party: PartyState } | undefined;
    for (const p of counted) {
      const s = p.history.find((x) => x.code === code);
      if (!s) continue;
      const at = t(s.eventTime);
      if (
        !best || at < best.at || (at === best.at && s.sequence < best.snap.sequence) ||
        (at === best.at && s.sequence === best.snap.sequence && cmp(p.id, best.party.id) < 0)
      ) best = { at, snap: s, party: p };
    }
    return best;
  };
  const answered = firstOf("Answered");
  const ringing = firstOf("Proceeding");
  const decision = closed
    ? decideResult(parties, counted, direction, state === "stale")
    : undefined;

  const firstEvent = firstSnapshot(parties, () => true)!;
  const session = firstSnapshot(parties, (s) => s.sessionId !== undefined);
  const origin = firstSnapshot(parties, (s) => s.origin !== undefined);

  const acct = parties.filter((p) => p.accountLeg);
  const recs = new Map<string, { seq: number; rec: Recording }>();
  for (const p of parties) {
    for (const s of p.history) {
      for (const r of s.recordings ?? []) {
        const cur = recs.get(r.id);
        if (
          !cur || s.sequence > cur.seq || (s.sequence === cur.seq && r.active && !cur.rec.active)
        ) {
          recs.set(r.id, { seq: s.sequence, rec: r });
        }
      }
    }
  }
  const unknownCodes = new Set<string>();
  const unknownReasons = new Set<string>();
  for (const p of parties) {
    for (const s of p.history) {
      if (!canonicalCode(s.code)) unknownCodes.add(s.code);
      if (s.reason !== undefined && !canonicalReason(s.reason)) unknownReasons.add(s.reason);
    }
  }

  const call: CallState = {
    version: 1,
    telephonySessionId,
    state,
    direction,
    result: decision?.result ?? null,
    startedAt,
    lastEventAt,
    lastSequence,
    durations,
    missedCall: (acct.length ? acct : parties).some((p) => p.missedCall),
    recordings: sortRecordings([...recs.values()].map((r) => r.rec)),
    timeline: timelineOf(
      counted,
      firstEvent,
      startedAt,
      decision?.transfer,
      closed ? { at: lastEventAt, sequence: lastSequence } : undefined,
    ),
    countedParties: counted.map((p) => p.id),
    unknownCodes: [...unknownCodes].sort(cmp),
    unknownReasons: [...unknownReasons].sort(cmp),
    parties,
    emittedTypes: book.emittedTypes,
  };
  if (session) call.sessionId = session.snap.sessionId;
  if (origin) call.origin = origin.snap.origin;
  if (decision?.reason !== undefined) call.resultReason = decision.reason;
  const from = enrich(primary?.from, parties);
  if (from) call.from = from;
  const to = enrich(primary?.to, parties);
  if (to) call.to = to;
  const forParty = forRef(primary, direction, parties);
  if (forParty) call.for = forParty;
  const answeredBy = answered && ownRef(answered.party, parties);
  if (answeredBy) call.answeredBy = answeredBy;
  if (ringing) call.ringingAt = ringing.snap.eventTime;
  if (answered) call.answeredAt = answered.snap.eventTime;
  if (closed) call.endedAt = lastEventAt;
  if (decision?.transfer) call.transfer = decision.transfer;
  if (book.staleAt !== undefined) call.staleAt = book.staleAt;
  return call;
}

// ---------------------------------------------------------------------------------------------
// Emission

function common(state: CallState) {
  const c: { direction: CallDirection; from?: Endpoint; to?: Endpoint; for?: PartyRef } = {
    direction: state.direction,
  };
  if (state.from) c.from = state.from;
  if (state.to) c.to = state.to;
  if (state.for) c.for = state.for;
  return c;
}

function emit(state: CallState, event: TelephonyEvent | undefined, eventTime?: string): Reduction {
  const done = new Set(state.emittedTypes);
  const out: CallEvent[] = [];
  const id = state.telephonySessionId;

  if (event && eventTime && !done.has("call.ringing") && state.state === "active") {
    const updated = [...event.parties].sort((a, b) => cmp(a.id, b.id));
    for (const u of updated) {
      const p = state.parties.find((x) => x.id === u.id);
      if (!p?.accountLeg || p.direction !== "Inbound") continue;
      if (canonicalCode(u.rawCode ?? u.code) !== "Proceeding") continue;
      if (p.code !== "Proceeding" && p.code !== "Setup") continue; // already answered or gone
      const data: RingingData = { direction: state.direction, partyId: p.id };
      const from = enrich(p.from, state.parties);
      if (from) data.from = from;
      const to = enrich(p.to, state.parties);
      if (to) data.to = to;
      const who = ownRef(p, state.parties);
      if (who) data.for = who;
      if (p.queueCall !== undefined) data.queueCall = p.queueCall;
      out.push(makeCallEvent("call.ringing", id, eventTime, data));
      break;
    }
  }
  // Only an account leg on the account's side of the call answers: not the PSTN leg (voicemail
  // picking up) nor an internal caller's leg (Answered as soon as the callee is reached), which
  // can be the only counted leg while events are missing.
  const side = state.direction === "outbound" ? "Outbound" : "Inbound";
  const answerer = state.parties.find((p) => p.id === state.answeredBy?.partyId);
  if (
    !done.has("call.answered") && state.state === "active" && state.answeredAt &&
    answerer?.accountLeg && answerer.direction === side
  ) {
    const data = {
      ...common(state),
      answeredAt: state.answeredAt,
      ringMs: state.durations.ringMs,
    };
    out.push(
      makeCallEvent(
        "call.answered",
        id,
        state.answeredAt,
        state.answeredBy ? { ...data, answeredBy: state.answeredBy } : data,
      ),
    );
  }
  if (!done.has("call.ended") && state.state !== "active" && state.result && state.endedAt) {
    const endedAt = state.endedAt;
    const ended = {
      ...common(state),
      state: state.state,
      result: state.result,
      ...(state.resultReason !== undefined ? { reason: state.resultReason } : {}),
      ...(state.answeredBy ? { answeredBy: state.answeredBy } : {}),
      startedAt: state.startedAt,
      ...(state.answeredAt ? { answeredAt: state.answeredAt } : {}),
      endedAt,
      durations: state.durations,
      missedCall: state.missedCall,
      ...(state.transfer ? { transfer: state.transfer } : {}),
      recordings: state.recordings,
    };
    out.push(makeCallEvent("call.ended", id, endedAt, ended));
    if (state.state === "ended" && state.result === "missed" && !done.has("call.missed")) {
      out.push(
        makeCallEvent("call.missed", id, endedAt, {
          ...common(state),
          ringMs: state.durations.ringMs,
          ...(state.resultReason !== undefined ? { reason: state.resultReason } : {}),
          endedAt,
        }),
      );
    }
    if (state.state === "ended" && state.result === "voicemail" && !done.has("call.voicemail")) {
      const vm = state.timeline.find((e) => e.type === "voicemail");
      out.push(
        makeCallEvent("call.voicemail", id, endedAt, {
          ...common(state),
          ringMs: state.durations.ringMs,
          ...(vm ? { voicemailAt: vm.at } : {}),
          endedAt,
        }),
      );
    }
  }
  if (!out.length) return { state, emitted: out };
  for (const e of out) done.add(e.type);
  const emittedTypes = CALL_EVENT_TYPES.filter((x) => done.has(x));
  return { state: { ...state, emittedTypes }, emitted: out };
}

// ---------------------------------------------------------------------------------------------
// Persistence

/** Serialises a call for the store: indexed columns plus the full state as JSON in `data`. */
export function toCallRow(state: CallState, updatedAt: number = t(state.lastEventAt)): CallRow {
  return {
    telephonySessionId: state.telephonySessionId,
    state: state.state,
    result: state.result,
    direction: state.direction,
    startedAt: t(state.startedAt),
    endedAt: state.endedAt !== undefined ? t(state.endedAt) : null,
    updatedAt,
    data: JSON.stringify(state),
  };
}

/** Restores a call state from CallRow.data; undefined when it is not a version-1 tracker state. */
export function parseCallState(data: string): CallState | undefined {
  let v: unknown;
  try {
    v = JSON.parse(data);
  } catch {
    return undefined;
  }
  if (!isObject(v) || v.version !== 1 || typeof v.telephonySessionId !== "string") return undefined;
  if (!Array.isArray(v.parties) || !Array.isArray(v.emittedTypes)) return undefined;
  return v as unknown as CallState;
}
