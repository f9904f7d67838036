/**
 * The normalized call events ringhook emits on its internal topic (call.ringing, call.answered,
 * call.ended, call.missed, call.voicemail), version 1, with their JSON Schema. Pure data: the
 * tracker (tracker.ts) decides when to emit them; docs/call-events.md describes them.
 */
import type { TopicEntry } from "../journal/types.ts";

/** The payload version; bumped only for incompatible changes (fields are only ever added). */
export const CALL_EVENT_VERSION = 1;

/** The call event types, in the order the tracker emits them within one reduction. */
export const CALL_EVENT_TYPES = [
  "call.ringing",
  "call.answered",
  "call.ended",
  "call.missed",
  "call.voicemail",
] as const;

/** One of the call event types. */
export type CallEventType = typeof CALL_EVENT_TYPES[number];

/** Direction of the call as seen from the account. */
export type CallDirection = "inbound" | "outbound" | "internal" | "unknown";

/** How a call ended, seen from the account. */
export type CallResult =
  | "answered"
  | "missed"
  | "voicemail"
  | "transferred"
  | "rejected"
  | "busy"
  | "failed"
  | "no_answer"
  | "fax"
  | "unknown";

/** Every CallResult value, for schemas and validation. */
export const CALL_RESULTS: readonly CallResult[] = [
  "answered",
  "missed",
  "voicemail",
  "transferred",
  "rejected",
  "busy",
  "failed",
  "no_answer",
  "fax",
  "unknown",
];

/** One end of a call leg as RingCentral reports it (`from` / `to`). */
export interface Endpoint {
  phoneNumber?: string;
  name?: string;
  extensionId?: string;
  deviceId?: string;
}

/** A party of the account (an extension's leg): who a call was for, who answered it. */
export interface PartyRef {
  /** Absent only when the party itself was not seen (an internal call seen from the caller's leg). */
  partyId?: string;
  extensionId?: string;
  name?: string;
  phoneNumber?: string;
}

/** The session a `Gone` party was linked to (status.peerId). */
export interface PeerRef {
  sessionId?: string;
  telephonySessionId?: string;
  partyId?: string;
}

/** A transfer that ended the account's part of the call. */
export interface TransferInfo {
  /** blind: Disconnected + BlindTransfer (or RccTransfer/DtmfTransfer); attended: Gone + AttendedTransfer. */
  kind: "blind" | "attended";
  /** The party that transferred (the one that left). */
  partyId: string;
  /** The status reason as received (canonical spelling). */
  reason: string;
  at: string;
  sequence: number;
  /** Blind: the first account party that joined the session after the transfer. */
  target?: PartyRef;
  /** Attended: the session and party that continue the call. */
  peer?: PeerRef;
}

/** A call recording as RingCentral lists it on a party. */
export interface Recording {
  id: string;
  active: boolean;
}

/** Ring, talk and hold time of the call (see tracker.ts for which legs count), in ms. */
export interface Durations {
  ringMs: number;
  talkMs: number;
  holdMs: number;
  /** First event to end (or to the last event while the call is open). */
  totalMs: number;
}

/** Fields every call event's data carries. */
export interface CallEventCommon {
  direction: CallDirection;
  from?: Endpoint;
  to?: Endpoint;
  /** The account party the call was for: the callee for inbound/internal calls, the caller for outbound. */
  for?: PartyRef;
}

/** `call.ringing`: an account party's phone started ringing (the incoming-call pop). */
export interface RingingData extends CallEventCommon {
  /** The ringing party (the one in `for`). */
  partyId: string;
  queueCall?: boolean;
}

/** `call.answered`: an account party answered. */
export interface AnsweredData extends CallEventCommon {
  answeredBy?: PartyRef;
  answeredAt: string;
  ringMs: number;
}

/** `call.ended`: every party left (`ended`) or the session went silent (`stale`). */
export interface EndedData extends CallEventCommon {
  state: "ended" | "stale";
  result: CallResult;
  /** The status reason that decided the result, when one did. */
  reason?: string;
  answeredBy?: PartyRef;
  startedAt: string;
  answeredAt?: string;
  endedAt: string;
  durations: Durations;
  missedCall: boolean;
  transfer?: TransferInfo;
  recordings: Recording[];
}

/** `call.missed`: an inbound or internal call ended unanswered. */
export interface MissedData extends CallEventCommon {
  ringMs: number;
  reason?: string;
  endedAt: string;
}

/** `call.voicemail`: the call went to the voicemail of the party in `for`. */
export interface VoicemailData extends CallEventCommon {
  ringMs: number;
  voicemailAt?: string;
  endedAt: string;
}

/** Payload types by event type. */
export interface CallEventDataMap {
  "call.ringing": RingingData;
  "call.answered": AnsweredData;
  "call.ended": EndedData;
  "call.missed": MissedData;
  "call.voicemail": VoicemailData;
}

/** One versioned call event of type T. */
export interface CallEventOf<T extends CallEventType> {
  version: 1;
  /** `<type>:<telephonySessionId>`: the same for every re-emission, so consumers can dedupe. */
  id: string;
  type: T;
  telephonySessionId: string;
  /** ISO-8601 time of the state change (RingCentral's eventTime), not of the emission. */
  occurredAt: string;
  data: CallEventDataMap[T];
}

/** Any call event. */
export type CallEvent = { [T in CallEventType]: CallEventOf<T> }[CallEventType];

/** The deterministic id of the event of `type` for a session. */
export function callEventId(telephonySessionId: string, type: CallEventType): string {
  return `${type}:${telephonySessionId}`;
}

/** Builds a versioned call event with its deterministic id. */
export function makeCallEvent<T extends CallEventType>(
  type: T,
  telephonySessionId: string,
  occurredAt: string,
  data: CallEventDataMap[T],
): CallEventOf<T> {
  return {
    version: CALL_EVENT_VERSION,
    id: callEventId(telephonySessionId, type),
    type,
    telephonySessionId,
    occurredAt,
    data,
  };
}

/** Maps a call event to a topic row (key = the event id, so a re-emission dedupes). */
export function toTopicEvent(
  event: CallEvent,
  topic: string,
  createdAt: number,
): Omit<TopicEntry, "seq"> {
  return { topic, type: event.type, key: event.id, createdAt, payload: JSON.stringify(event) };
}

// ---------------------------------------------------------------------------------------------
// JSON Schema (draft 2020-12). Objects leave additionalProperties open so that fields added
// within version 1 do not break consumers; the tests validate emitted events strictly.

const str = { type: "string" } as const;
const isoTime = { type: "string", format: "date-time" } as const;
const ms = { type: "integer", minimum: 0 } as const;
const ref = (name: string) => ({ $ref: `#/$defs/${name}` });

const common = {
  direction: ref("direction"),
  from: ref("endpoint"),
  to: ref("endpoint"),
  for: ref("partyRef"),
};

function envelope(type: CallEventType, data: Record<string, unknown>): Record<string, unknown> {
  return {
    type: "object",
    required: ["version", "id", "type", "telephonySessionId", "occurredAt", "data"],
    properties: {
      version: { const: 1 },
      id: { type: "string", pattern: `^${type.replace(".", "\\.")}:` },
      type: { const: type },
      telephonySessionId: { type: "string", minLength: 1 },
      occurredAt: isoTime,
      data,
    },
  };
}

/** JSON Schema (2020-12) for every call event (version 1); `oneOf` by `type`. */
export const CALL_EVENT_SCHEMA = {
  $schema: "https://json-schema.org/draft/2020-12/schema",
  $id: "urn:ringhook:schema:call-event:1",
  title: "ringhook call event, version 1",
  oneOf: [
    ref("call.ringing"),
    ref("call.answered"),
    ref("call.ended"),
    ref("call.missed"),
    ref("call.voicemail"),
  ],
  $defs: {
    direction: { enum: ["inbound", "outbound", "internal", "unknown"] },
    result: { enum: [...CALL_RESULTS] },
    endpoint: {
      type: "object",
      properties: { phoneNumber: str, name: str, extensionId: str, deviceId: str },
    },
    partyRef: {
      type: "object",
      properties: { partyId: str, extensionId: str, name: str, phoneNumber: str },
    },
    peerRef: {
      type: "object",
      properties: { sessionId: str, telephonySessionId: str, partyId: str },
    },
    durations: {
      type: "object",
      required: ["ringMs", "talkMs", "holdMs", "totalMs"],
      properties: { ringMs: ms, talkMs: ms, holdMs: ms, totalMs: ms },
    },
    recording: {
      type: "object",
      required: ["id", "active"],
      properties: { id: str, active: { type: "boolean" } },
    },
    transfer: {
      type: "object",
      required: ["kind", "partyId", "reason", "at", "sequence"],
      properties: {
        kind: { enum: ["blind", "attended"] },
        partyId: str,
        reason: str,
        at: isoTime,
        sequence: { type: "integer" },
        target: ref("partyRef"),
        peer: ref("peerRef"),
      },
    },
    "call.ringing": envelope("call.ringing", {
      type: "object",
      required: ["direction", "partyId"],
      properties: { ...common, partyId: str, queueCall: { type: "boolean" } },
    }),
    "call.answered": envelope("call.answered", {
      type: "object",
      required: ["direction", "answeredAt", "ringMs"],
      properties: { ...common, answeredBy: ref("partyRef"), answeredAt: isoTime, ringMs: ms },
    }),
    "call.ended": envelope("call.ended", {
      type: "object",
      required: [
        "direction",
        "state",
        "result",
        "startedAt",
        "endedAt",
        "durations",
        "missedCall",
        "recordings",
      ],
      properties: {
        ...common,
        state: { enum: ["ended", "stale"] },
        result: ref("result"),
        reason: str,
        answeredBy: ref("partyRef"),
        startedAt: isoTime,
        answeredAt: isoTime,
        endedAt: isoTime,
        durations: ref("durations"),
        missedCall: { type: "boolean" },
        transfer: ref("transfer"),
        recordings: { type: "array", items: ref("recording") },
      },
    }),
    "call.missed": envelope("call.missed", {
      type: "object",
      required: ["direction", "ringMs", "endedAt"],
      properties: { ...common, ringMs: ms, reason: str, endedAt: isoTime },
    }),
    "call.voicemail": envelope("call.voicemail", {
      type: "object",
      required: ["direction", "ringMs", "endedAt"],
      properties: { ...common, ringMs: ms, voicemailAt: isoTime, endedAt: isoTime },
    }),
  },
} as const;
