/**
 * The call tracker (src/calls/tracker.ts): every fixture call flow reduced in order and checked
 * field by field, the same flows in seeded random orders with duplicates, and a property test
 * over generated call flows. Emitted events are validated against CALL_EVENT_SCHEMA (strictly).
 */
import assert from "node:assert/strict";
import {
  CALL_EVENT_SCHEMA,
  CALL_EVENT_TYPES,
  type CallEvent,
  type CallEventType,
  type CallResult,
  toTopicEvent,
} from "../src/calls/events.ts";
import {
  type CallState,
  closeStale,
  parseCallState,
  parseTelephonyEvent,
  type PartyUpdate,
  rebuildCall,
  reduceCall,
  type TelephonyEvent,
  toCallRow,
  type TrackerOptions,
  withoutBookkeeping,
} from "../src/calls/tracker.ts";

const OPTS: TrackerOptions = { accountId: "999000001" };

// ---------------------------------------------------------------------------------------------
// Helpers

/** mulberry32: a small seeded generator, so every random order can be replayed from its seed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

function shuffle<T>(xs: T[], r: () => number): T[] {
  const a = [...xs];
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

/** The events in a random order with 1..n random duplicates mixed in. */
function scramble<T>(xs: T[], r: () => number): T[] {
  const dups = Array.from(
    { length: 1 + Math.floor(r() * xs.length) },
    () => xs[Math.floor(r() * xs.length)],
  );
  return shuffle([...xs, ...dups], r);
}

async function readFixture(name: string): Promise<Record<string, unknown>> {
  return JSON.parse(await Deno.readTextFile(new URL(`./fixtures/${name}`, import.meta.url)));
}

async function loadEvents(files: string[]): Promise<TelephonyEvent[]> {
  const out: TelephonyEvent[] = [];
  for (const f of files) {
    const env = await readFixture(f);
    const ev = parseTelephonyEvent(env as Parameters<typeof parseTelephonyEvent>[0]);
    assert.ok(ev, `${f} parses as a telephony event`);
    out.push(ev);
  }
  return out;
}

interface Run {
  state: CallState;
  /** Emitted event types per applied event. */
  steps: CallEventType[][];
  events: CallEvent[];
  states: CallState[];
}

function run(events: TelephonyEvent[], opts: TrackerOptions = OPTS, init?: CallState): Run {
  let state = init;
  const steps: CallEventType[][] = [];
  const all: CallEvent[] = [];
  const states: CallState[] = [];
  for (const ev of events) {
    const r = reduceCall(state, ev, opts);
    state = r.state;
    steps.push(r.emitted.map((e) => e.type));
    all.push(...r.emitted);
    states.push(state);
  }
  assert.ok(state);
  return { state, steps, events: all, states };
}

const ms = (iso: string) => Date.parse(iso);
const span = (from: string, to: string) => ms(to) - ms(from);

function deepFreeze<T>(o: T): T {
  if (typeof o === "object" && o !== null) {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}

// A minimal JSON Schema checker for the keywords CALL_EVENT_SCHEMA uses. Strict mode rejects
// properties the schema does not list, so the schema cannot drift from what is emitted.
type Schema = Record<string, unknown>;
function schemaErrors(schema: Schema, value: unknown, path = "$"): string[] {
  const root = CALL_EVENT_SCHEMA as unknown as Schema;
  if (typeof schema.$ref === "string") {
    const name = schema.$ref.replace("#/$defs/", "");
    const def = (root.$defs as Record<string, Schema>)[name];
    if (!def) return [`${path}: unresolved ${schema.$ref}`];
    return schemaErrors(def, value, path);
  }
  const errs: string[] = [];
  if (Array.isArray(schema.oneOf)) {
    const ok = (schema.oneOf as Schema[]).filter((s) => !schemaErrors(s, value, path).length);
    if (ok.length !== 1) {
      const why = (schema.oneOf as Schema[]).map((s) => schemaErrors(s, value, path).join("; "));
      errs.push(`${path}: matches ${ok.length} of oneOf (${why.join(" | ")})`);
    }
  }
  if ("const" in schema && JSON.stringify(schema.const) !== JSON.stringify(value)) {
    errs.push(`${path}: expected ${JSON.stringify(schema.const)}`);
  }
  if (Array.isArray(schema.enum) && !schema.enum.includes(value)) {
    errs.push(`${path}: ${JSON.stringify(value)} not in enum`);
  }
  const type = schema.type;
  if (type === "object") {
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      return [...errs, `${path}: not an object`];
    }
    const o = value as Record<string, unknown>;
    const props = (schema.properties ?? {}) as Record<string, Schema>;
    for (const k of (schema.required ?? []) as string[]) {
      if (!(k in o)) errs.push(`${path}.${k}: required`);
    }
    for (const [k, v] of Object.entries(o)) {
      if (v === undefined) errs.push(`${path}.${k}: undefined is not JSON`);
      else if (props[k]) errs.push(...schemaErrors(props[k], v, `${path}.${k}`));
      else errs.push(`${path}.${k}: not in the schema`);
    }
  } else if (type === "array") {
    if (!Array.isArray(value)) return [...errs, `${path}: not an array`];
    value.forEach((v, i) => errs.push(...schemaErrors(schema.items as Schema, v, `${path}[${i}]`)));
  } else if (type === "string") {
    if (typeof value !== "string") return [...errs, `${path}: not a string`];
    if (typeof schema.minLength === "number" && value.length < schema.minLength) {
      errs.push(`${path}: too short`);
    }
    if (typeof schema.pattern === "string" && !new RegExp(schema.pattern).test(value)) {
      errs.push(`${path}: does not match ${schema.pattern}`);
    }
    if (
      schema.format === "date-time" &&
      (!/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/.test(value) ||
        !Number.isFinite(Date.parse(value)))
    ) errs.push(`${path}: not a date-time`);
  } else if (type === "integer" || type === "number") {
    if (typeof value !== "number" || (type === "integer" && !Number.isInteger(value))) {
      return [...errs, `${path}: not an ${type}`];
    }
    if (typeof schema.minimum === "number" && value < schema.minimum) {
      errs.push(`${path}: below ${schema.minimum}`);
    }
  } else if (type === "boolean" && typeof value !== "boolean") {
    errs.push(`${path}: not a boolean`);
  }
  return errs;
}

function assertValidEvents(events: CallEvent[]): void {
  for (const e of events) {
    assert.deepEqual(schemaErrors(CALL_EVENT_SCHEMA as unknown as Schema, e), [], e.type);
    assert.equal(e.id, `${e.type}:${e.telephonySessionId}`);
    assert.equal(e.version, 1);
  }
}

/** Each event type at most once per call, and ids unique. */
function assertOncePerKind(events: CallEvent[], label: string): void {
  const ids = events.map((e) => e.id);
  assert.equal(new Set(ids).size, ids.length, `${label}: an event kind was emitted twice: ${ids}`);
}

// ---------------------------------------------------------------------------------------------
// Fixture families

const P1 = (n: number, i: number) => `p-a000000000000000000000000000000${n}-${i}`;
const S = (n: number) => `s-a000000000000000000000000000000${n}`;

const FAMILIES: Record<string, string[]> = {
  "inbound-answered": [
    "telephony-inbound-answered-01-caller-party-setup.json",
    "telephony-inbound-answered-02-alice-party-setup.json",
    "telephony-inbound-answered-03-alice-ringing-proceeding.json",
    "telephony-inbound-answered-04-alice-answered.json",
    "telephony-inbound-answered-05-caller-party-answered.json",
    "telephony-inbound-answered-06-alice-disconnected.json",
    "telephony-inbound-answered-07-caller-party-disconnected.json",
  ],
  "missed": [
    "telephony-missed-call-01-caller-party-setup.json",
    "telephony-missed-call-02-alice-party-setup.json",
    "telephony-missed-call-03-alice-ringing-proceeding.json",
    "telephony-missed-call-04-alice-disconnected-missed.json",
    "telephony-missed-call-05-caller-party-disconnected.json",
  ],
  "voicemail": [
    "telephony-voicemail-01-caller-party-setup.json",
    "telephony-voicemail-02-alice-party-setup.json",
    "telephony-voicemail-03-alice-ringing-proceeding.json",
    "telephony-voicemail-04-alice-party-voicemail.json",
    "telephony-voicemail-05-caller-party-answered-by-vm.json",
    "telephony-voicemail-06-alice-party-disconnected.json",
    "telephony-voicemail-07-caller-party-disconnected.json",
  ],
  "outbound-hold": [
    "telephony-outbound-01-alice-party-setup.json",
    "telephony-outbound-02-remote-party-proceeding.json",
    "telephony-outbound-03-alice-party-proceeding.json",
    "telephony-outbound-04-remote-party-answered.json",
    "telephony-outbound-05-alice-party-answered.json",
    "telephony-outbound-06-alice-party-hold.json",
    "telephony-outbound-07-alice-party-unhold-answered.json",
    "telephony-outbound-08-alice-party-disconnected.json",
    "telephony-outbound-09-remote-party-disconnected.json",
  ],
  "blind-transfer": [
    "telephony-blind-transfer-01-alice-answered.json",
    "telephony-blind-transfer-02-alice-disconnected-blindtransfer.json",
    "telephony-blind-transfer-03-bob-party-setup.json",
    "telephony-blind-transfer-04-bob-ringing-proceeding.json",
    "telephony-blind-transfer-05-bob-answered.json",
    "telephony-blind-transfer-06-bob-disconnected.json",
    "telephony-blind-transfer-07-caller-party-disconnected.json",
  ],
  "attended-transfer": ["telephony-attended-transfer-gone.json"],
};

const ALICE = { extensionId: "999000101", name: "Alice Example", phoneNumber: "+15555550123" };
const BOB = { extensionId: "999000102", name: "Bob Example" };
const CALLER = { phoneNumber: "+15555550100", name: "WIRELESS CALLER" };
const ALICE_TO = { phoneNumber: "+15555550123", name: "Alice Example", extensionId: "999000101" };

Deno.test("fixture: inbound answered", async () => {
  const r = run(await loadEvents(FAMILIES["inbound-answered"]));
  const s = r.state;
  assert.equal(s.telephonySessionId, S(1));
  assert.equal(s.sessionId, "900000000001");
  assert.equal(s.origin, "Call");
  assert.equal(s.state, "ended");
  assert.equal(s.direction, "inbound");
  assert.equal(s.result, "answered");
  assert.equal(s.resultReason, undefined);
  assert.deepEqual(s.from, CALLER);
  assert.deepEqual(s.to, ALICE_TO);
  assert.deepEqual(s.for, { partyId: P1(1, 2), ...ALICE });
  assert.deepEqual(s.answeredBy, { partyId: P1(1, 2), ...ALICE });
  assert.equal(s.startedAt, "2026-01-15T17:00:00.100Z");
  assert.equal(s.ringingAt, "2026-01-15T17:00:00.190Z");
  assert.equal(s.answeredAt, "2026-01-15T17:00:07.010Z");
  assert.equal(s.endedAt, "2026-01-15T17:02:31.520Z");
  assert.equal(s.lastSequence, 8);
  // Alice's leg counts: ring Proceeding→Answered, talk Answered→Disconnected, no hold.
  assert.deepEqual(s.countedParties, [P1(1, 2)]);
  assert.deepEqual(s.durations, {
    ringMs: span("2026-01-15T17:00:00.190Z", "2026-01-15T17:00:07.010Z"),
    talkMs: span("2026-01-15T17:00:07.010Z", "2026-01-15T17:02:31.500Z"),
    holdMs: 0,
    totalMs: span("2026-01-15T17:00:00.100Z", "2026-01-15T17:02:31.520Z"),
  });
  assert.equal(s.durations.ringMs, 6820);
  assert.equal(s.durations.talkMs, 144490);
  assert.equal(s.missedCall, false);
  assert.equal(s.transfer, undefined);
  assert.deepEqual(s.recordings, []);
  assert.deepEqual(s.unknownCodes, []);
  assert.deepEqual(s.timeline.map((e) => [e.type, e.at, e.sequence]), [
    ["started", "2026-01-15T17:00:00.100Z", 2],
    ["ringing", "2026-01-15T17:00:00.190Z", 4],
    ["answered", "2026-01-15T17:00:07.010Z", 5],
    ["ended", "2026-01-15T17:02:31.520Z", 8],
  ]);
  assert.deepEqual(s.parties.map((p) => [p.id, p.accountLeg, p.direction, p.code, p.ended]), [
    [P1(1, 1), false, "Outbound", "Disconnected", true],
    [P1(1, 2), true, "Inbound", "Disconnected", true],
  ]);
  const alice = s.parties[1];
  assert.deepEqual(alice.history.map((h) => [h.sequence, h.code]), [
    [3, "Setup"],
    [4, "Proceeding"],
    [5, "Answered"],
    [7, "Disconnected"],
  ]);
  assert.deepEqual(alice.metrics, { ringMs: 6820, talkMs: 144490, holdMs: 0 });
  // The caller party's `to` gained a name later: the latest snapshot wins.
  assert.deepEqual(s.parties[0].to, ALICE_TO);
  assert.deepEqual(r.steps, [[], [], ["call.ringing"], ["call.answered"], [], [], [
    "call.ended",
  ]]);
  assert.deepEqual(s.emittedTypes, ["call.ringing", "call.answered", "call.ended"]);
  assertValidEvents(r.events);

  const [ringing, answered, ended] = r.events;
  assert.equal(ringing.type, "call.ringing");
  assert.deepEqual(ringing, {
    version: 1,
    id: `call.ringing:${S(1)}`,
    type: "call.ringing",
    telephonySessionId: S(1),
    occurredAt: "2026-01-15T17:00:00.190Z",
    data: {
      direction: "inbound",
      partyId: P1(1, 2),
      from: CALLER,
      to: ALICE_TO,
      for: { partyId: P1(1, 2), ...ALICE },
    },
  });
  assert.equal(answered.type, "call.answered");
  assert.equal(answered.occurredAt, "2026-01-15T17:00:07.010Z");
  assert.equal(answered.data.ringMs, 6820);
  assert.equal(ended.type, "call.ended");
  if (ended.type === "call.ended") {
    assert.equal(ended.occurredAt, "2026-01-15T17:02:31.520Z");
    assert.equal(ended.data.result, "answered");
    assert.equal(ended.data.state, "ended");
    assert.deepEqual(ended.data.durations, s.durations);
  }
});

Deno.test("fixture: missed call", async () => {
  const r = run(await loadEvents(FAMILIES.missed));
  const s = r.state;
  assert.equal(s.state, "ended");
  assert.equal(s.direction, "inbound");
  assert.equal(s.result, "missed");
  assert.equal(s.missedCall, true);
  assert.deepEqual(s.for, { partyId: P1(2, 2), ...ALICE });
  assert.equal(s.answeredAt, undefined);
  assert.equal(s.answeredBy, undefined);
  assert.equal(s.ringingAt, "2026-01-15T18:10:00.200Z");
  assert.equal(s.endedAt, "2026-01-15T18:10:12.420Z");
  assert.deepEqual(s.durations, {
    ringMs: span("2026-01-15T18:10:00.200Z", "2026-01-15T18:10:12.400Z"),
    talkMs: 0,
    holdMs: 0,
    totalMs: span("2026-01-15T18:10:00.100Z", "2026-01-15T18:10:12.420Z"),
  });
  assert.equal(s.durations.ringMs, 12200);
  assert.deepEqual(r.steps, [[], [], ["call.ringing"], [], ["call.ended", "call.missed"]]);
  assertValidEvents(r.events);
  const missed = r.events.find((e) => e.type === "call.missed");
  assert.ok(missed && missed.type === "call.missed");
  assert.deepEqual(missed.data, {
    direction: "inbound",
    from: CALLER,
    to: ALICE_TO,
    for: { partyId: P1(2, 2), ...ALICE },
    ringMs: 12200,
    endedAt: "2026-01-15T18:10:12.420Z",
  });
});

Deno.test("fixture: voicemail (the caller leg's Answered does not make it answered)", async () => {
  const r = run(await loadEvents(FAMILIES.voicemail));
  const s = r.state;
  assert.equal(s.state, "ended");
  assert.equal(s.direction, "inbound");
  assert.equal(s.result, "voicemail");
  assert.equal(s.answeredAt, undefined);
  assert.equal(s.missedCall, true);
  assert.deepEqual(s.countedParties, [P1(3, 2)]);
  // Ringing ends when the call goes to voicemail; nobody on the account's side talked.
  assert.deepEqual(s.durations, {
    ringMs: span("2026-01-15T19:00:00.200Z", "2026-01-15T19:00:20.300Z"),
    talkMs: 0,
    holdMs: 0,
    totalMs: span("2026-01-15T19:00:00.100Z", "2026-01-15T19:00:48.920Z"),
  });
  assert.deepEqual(s.timeline.map((e) => e.type), ["started", "ringing", "voicemail", "ended"]);
  assert.equal(s.timeline[2].at, "2026-01-15T19:00:20.300Z");
  // The PSTN leg's own metrics still show its (voicemail) talk time.
  assert.equal(
    s.parties[0].metrics.talkMs,
    span("2026-01-15T19:00:20.350Z", "2026-01-15T19:00:48.920Z"),
  );
  assert.deepEqual(r.steps, [[], [], ["call.ringing"], [], [], [], [
    "call.ended",
    "call.voicemail",
  ]]);
  assertValidEvents(r.events);
  const vm = r.events.find((e) => e.type === "call.voicemail");
  assert.ok(vm && vm.type === "call.voicemail");
  assert.equal(vm.data.voicemailAt, "2026-01-15T19:00:20.300Z");
  assert.equal(vm.data.ringMs, 20100);
  // The /voicemail and /message-store notifications of the family are not telephony events.
  for (const f of ["08-voicemail-message-event", "09-message-store-changed"]) {
    const env = await readFixture(`telephony-voicemail-${f}.json`);
    assert.equal(parseTelephonyEvent(env as Parameters<typeof parseTelephonyEvent>[0]), undefined);
  }
});

Deno.test("fixture: outbound with hold", async () => {
  const r = run(await loadEvents(FAMILIES["outbound-hold"]));
  const s = r.state;
  assert.equal(s.state, "ended");
  assert.equal(s.direction, "outbound");
  assert.equal(s.result, "answered");
  // Alice's own leg has no name; it is looked up from the remote party's `from`.
  assert.deepEqual(s.from, { ...ALICE_TO, deviceId: "800000000001" });
  assert.deepEqual(s.to, { phoneNumber: "+15555550188" });
  assert.deepEqual(s.for, { partyId: P1(4, 1), ...ALICE });
  assert.deepEqual(s.answeredBy, { partyId: P1(4, 1), ...ALICE });
  assert.deepEqual(s.countedParties, [P1(4, 1)]);
  assert.equal(s.answeredAt, "2026-01-15T20:00:07.430Z");
  assert.deepEqual(s.durations, {
    ringMs: span("2026-01-15T20:00:03.700Z", "2026-01-15T20:00:07.430Z"),
    talkMs: span("2026-01-15T20:00:07.430Z", "2026-01-15T20:00:14.100Z") +
      span("2026-01-15T20:00:17.400Z", "2026-01-15T20:00:23.500Z"),
    holdMs: span("2026-01-15T20:00:14.100Z", "2026-01-15T20:00:17.400Z"),
    totalMs: span("2026-01-15T20:00:00.100Z", "2026-01-15T20:00:23.520Z"),
  });
  assert.deepEqual(s.durations, { ringMs: 3730, talkMs: 12770, holdMs: 3300, totalMs: 23420 });
  assert.deepEqual(s.timeline.map((e) => [e.type, e.sequence]), [
    ["started", 2],
    ["ringing", 4],
    ["answered", 6],
    ["held", 7],
    ["resumed", 8],
    ["ended", 10],
  ]);
  assert.ok(
    s.durations.talkMs + s.durations.holdMs <= span(s.answeredAt!, s.endedAt!),
    "talk + hold fit between answer and end",
  );
  // No ringing pop for an outbound call; answered when Alice's leg is Answered.
  assert.deepEqual(r.steps, [[], [], [], [], ["call.answered"], [], [], [], ["call.ended"]]);
  assertValidEvents(r.events);
});

Deno.test("fixture: blind transfer", async () => {
  const r = run(await loadEvents(FAMILIES["blind-transfer"]));
  const s = r.state;
  assert.equal(s.state, "ended");
  assert.equal(s.direction, "inbound");
  assert.equal(s.result, "transferred");
  assert.equal(s.resultReason, "BlindTransfer");
  assert.deepEqual(s.transfer, {
    kind: "blind",
    partyId: P1(5, 2),
    reason: "BlindTransfer",
    at: "2026-01-15T21:00:40.000Z",
    sequence: 7,
    target: { partyId: P1(5, 3), ...BOB, phoneNumber: "+15555550123" },
  });
  // The call was for Alice (original target); she answered first.
  assert.deepEqual(s.for, { partyId: P1(5, 2), ...ALICE });
  assert.deepEqual(s.answeredBy, { partyId: P1(5, 2), ...ALICE });
  assert.deepEqual(s.countedParties, [P1(5, 2), P1(5, 3)]);
  assert.equal(s.startedAt, "2026-01-15T21:00:05.000Z");
  assert.equal(s.endedAt, "2026-01-15T21:03:10.020Z");
  // Both callee legs count: Alice talked until the transfer, Bob rang and talked after it.
  assert.deepEqual(s.durations, {
    ringMs: span("2026-01-15T21:00:40.200Z", "2026-01-15T21:00:46.000Z"),
    talkMs: span("2026-01-15T21:00:05.000Z", "2026-01-15T21:00:40.000Z") +
      span("2026-01-15T21:00:46.000Z", "2026-01-15T21:03:10.000Z"),
    holdMs: 0,
    totalMs: span("2026-01-15T21:00:05.000Z", "2026-01-15T21:03:10.020Z"),
  });
  assert.deepEqual(s.timeline.map((e) => [e.type, e.sequence, e.partyId]), [
    ["started", 5, P1(5, 2)],
    ["answered", 5, P1(5, 2)],
    ["transferred", 7, P1(5, 2)],
    ["ringing", 9, P1(5, 3)],
    ["answered", 10, P1(5, 3)],
    ["ended", 12, undefined],
  ]);
  assert.deepEqual(s.parties.map((p) => [p.id, p.code, p.reason ?? null]), [
    [P1(5, 1), "Disconnected", null],
    [P1(5, 2), "Disconnected", "BlindTransfer"],
    [P1(5, 3), "Disconnected", null],
  ]);
  // Alice's BlindTransfer disconnect does not end the call: the transfer is still going on.
  assert.deepEqual(r.states.map((x) => x.state), [
    "active",
    "active",
    "active",
    "active",
    "active",
    "ended", // every party seen so far (Alice, Bob) has left; the caller leg shows up at seq 12
    "ended",
  ]);
  assert.deepEqual(r.steps, [["call.answered"], [], [], ["call.ringing"], [], ["call.ended"], []]);
  assertValidEvents(r.events);
  const ringing = r.events.find((e) => e.type === "call.ringing");
  assert.ok(ringing && ringing.type === "call.ringing");
  assert.deepEqual(ringing.data.for, { partyId: P1(5, 3), ...BOB, phoneNumber: "+15555550123" });
});

Deno.test("fixture: attended transfer (Gone + AttendedTransfer keeps the peer link)", async () => {
  const r = run(await loadEvents(FAMILIES["attended-transfer"]));
  const s = r.state;
  assert.equal(s.state, "ended");
  assert.equal(s.direction, "internal");
  assert.equal(s.result, "transferred");
  assert.equal(s.resultReason, "AttendedTransfer");
  assert.deepEqual(s.transfer, {
    kind: "attended",
    partyId: P1(7, 1),
    reason: "AttendedTransfer",
    at: "2026-01-15T22:01:10.000Z",
    sequence: 6,
    peer: {
      sessionId: "900000000006",
      telephonySessionId: S(6),
      partyId: P1(6, 2),
    },
  });
  assert.deepEqual(s.parties[0].peer, s.transfer?.peer);
  // Only Alice's consult leg was seen: the call was for the extension she called.
  assert.deepEqual(s.for, { ...BOB, phoneNumber: "102" });
  assert.deepEqual(s.durations, { ringMs: 0, talkMs: 0, holdMs: 0, totalMs: 0 });
  assert.equal(s.answeredAt, undefined);
  assert.deepEqual(r.steps, [["call.ended"]]);
  assertValidEvents(r.events);
});

// ---------------------------------------------------------------------------------------------
// Order independence, idempotency, purity

Deno.test("every fixture family: 20 seeded random orders with duplicates give the same record", async () => {
  let seed = 1000;
  for (const [family, files] of Object.entries(FAMILIES)) {
    const events = await loadEvents(files);
    const inOrder = run(events);
    const expected = withoutBookkeeping(inOrder.state);
    for (let i = 0; i < 20; i++) {
      const r = rng(++seed);
      const order = scramble(events, r);
      const got = run(order);
      assert.deepEqual(
        withoutBookkeeping(got.state),
        expected,
        `${family}, seed ${seed}: order ${order.map((e) => e.sequence)}`,
      );
      assertOncePerKind(got.events, `${family} seed ${seed}`);
      assert.equal(
        got.events.filter((e) => e.type === "call.ended").length,
        1,
        `${family} seed ${seed}: call.ended exactly once`,
      );
      assertValidEvents(got.events);
    }
  }
});

Deno.test("idempotent: the same (party, sequence) twice changes nothing", async () => {
  const events = await loadEvents(FAMILIES["inbound-answered"]);
  const first = run(events.slice(0, 4)).state;
  const again = reduceCall(first, events[3], OPTS);
  assert.equal(again.state, first, "the very same state object comes back");
  assert.deepEqual(again.emitted, []);
  // A re-delivery under another uuid (overlapping subscriptions) is the same (party, sequence).
  const redelivered = reduceCall(first, { ...events[2], uuid: "other" }, OPTS);
  assert.deepEqual(withoutBookkeeping(redelivered.state).parties.map((p) => p.history.length), [
    1,
    3,
  ]);
  assert.deepEqual(redelivered.emitted, []);
});

Deno.test("conflicting copies of one (party, sequence) converge whatever the order", async () => {
  const events = await loadEvents(FAMILIES.missed);
  const disc = events[3];
  const copy: TelephonyEvent = {
    ...disc,
    uuid: "copy-from-another-subscription",
    parties: [{ ...disc.parties[0], missedCall: false, reason: "NoAnswer" }],
  };
  const ab = run([...events, copy]).state;
  const ba = run([...events.slice(0, 3), copy, disc, events[4]]).state;
  assert.deepEqual(withoutBookkeeping(ab), withoutBookkeeping(ba));
  assert.equal(ab.parties[1].history.length, 3, "one snapshot per sequence");
});

Deno.test("a late lower sequence never overwrites the newer state but joins the history", async () => {
  const events = await loadEvents(FAMILIES["inbound-answered"]);
  const [, aliceSetup, aliceRinging, aliceAnswered, , aliceGone] = events;
  const r = run([aliceSetup, aliceGone, aliceAnswered, aliceRinging]);
  const alice = r.state.parties.find((p) => p.id === P1(1, 2))!;
  assert.equal(alice.code, "Disconnected");
  assert.equal(alice.sequence, 7);
  assert.deepEqual(alice.history.map((h) => h.sequence), [3, 4, 5, 7]);
  assert.deepEqual(alice.metrics, { ringMs: 6820, talkMs: 144490, holdMs: 0 });
  // No ringing pop once the leg is already past ringing.
  assert.ok(!r.events.some((e) => e.type === "call.ringing"));
});

Deno.test("the reducer is pure: frozen input state, rebuild from histories, JSON round trip", async () => {
  for (const files of Object.values(FAMILIES)) {
    const events = await loadEvents(files);
    let state: CallState | undefined;
    for (const ev of events) {
      if (state) deepFreeze(state);
      state = reduceCall(state, deepFreeze(structuredClone(ev)), OPTS).state;
      assert.deepEqual(rebuildCall(state, OPTS), state);
      assert.deepEqual(JSON.parse(JSON.stringify(state)), state, "no undefined or non-JSON values");
    }
    const row = toCallRow(state!, 42);
    assert.equal(row.telephonySessionId, state!.telephonySessionId);
    assert.equal(row.state, state!.state);
    assert.equal(row.result, state!.result);
    assert.equal(row.direction, state!.direction);
    assert.equal(row.startedAt, Date.parse(state!.startedAt));
    assert.equal(row.endedAt, Date.parse(state!.endedAt!));
    assert.equal(row.updatedAt, 42);
    assert.deepEqual(parseCallState(row.data), state);
    assert.equal(toCallRow(state!).updatedAt, Date.parse(state!.lastEventAt));
  }
  assert.equal(parseCallState("{"), undefined);
  assert.equal(parseCallState('{"version":2,"telephonySessionId":"s","parties":[]}'), undefined);
});

Deno.test("reduceCall refuses an event of another session", async () => {
  const [a] = await loadEvents(FAMILIES["inbound-answered"]);
  const [b] = await loadEvents(FAMILIES.missed);
  const s = reduceCall(undefined, a, OPTS).state;
  assert.throws(() => reduceCall(s, b, OPTS), RangeError);
});

// ---------------------------------------------------------------------------------------------
// Parsing, spelling, reasons

function withParty(
  env: Record<string, unknown>,
  patch: (p: Record<string, unknown>) => void,
): Record<string, unknown> {
  const c = structuredClone(env) as { body: { parties: Record<string, unknown>[] } };
  patch(c.body.parties[0]);
  return c as unknown as Record<string, unknown>;
}

async function eventsWith(
  files: string[],
  index: number,
  patch: (p: Record<string, unknown>) => void,
): Promise<TelephonyEvent[]> {
  const out: TelephonyEvent[] = [];
  for (const [i, f] of files.entries()) {
    let env = await readFixture(f);
    if (i === index) env = withParty(env, patch);
    const ev = parseTelephonyEvent(env as Parameters<typeof parseTelephonyEvent>[0]);
    assert.ok(ev);
    out.push(ev);
  }
  return out;
}

const setStatus = (fields: Record<string, unknown>) => (p: Record<string, unknown>) => {
  p.status = { ...(p.status as Record<string, unknown>), ...fields };
};

Deno.test("parseTelephonyEvent is lenient about ids, sequence and time", async () => {
  const env = await readFixture("telephony-inbound-answered-04-alice-answered.json");
  const body = env.body as Record<string, unknown>;
  const e1 = parseTelephonyEvent({
    uuid: "u",
    event: "/x",
    timestamp: "2026-01-15T17:00:09.000Z",
    body: {
      ...body,
      sequence: "5",
      eventTime: undefined,
      parties: [
        { ...(body.parties as Record<string, unknown>[])[0], extensionId: 999000101 },
        { id: "p-broken" }, // no status: skipped
        "nonsense",
      ],
    },
  });
  assert.ok(e1);
  assert.equal(e1.sequence, 5);
  assert.equal(e1.eventTime, "2026-01-15T17:00:09.000Z", "falls back to the envelope timestamp");
  assert.equal(e1.parties.length, 1);
  assert.equal(e1.parties[0].extensionId, "999000101");
  assert.equal(e1.parties[0].code, "Answered");
  const bad = (b: Record<string, unknown>) =>
    parseTelephonyEvent({ uuid: "u", event: "/x", body: b });
  assert.equal(bad({ ...body, telephonySessionId: undefined }), undefined);
  assert.equal(bad({ ...body, sequence: "five" }), undefined);
  assert.equal(bad({ ...body, eventTime: "yesterday" }), undefined);
  assert.equal(bad({ ...body, parties: [] }), undefined);
  assert.equal(bad({ ...body, parties: "x" }), undefined);
});

Deno.test("status codes and reasons compare case-insensitively; unknown ones are kept", async () => {
  for (
    const spelling of ["VoiceMail", "Voicemail", "VOICEMAIL", "VMScreening", "voicemailscreening"]
  ) {
    const events = await eventsWith(FAMILIES.voicemail, 3, setStatus({ code: spelling }));
    const s = run(events).state;
    assert.equal(s.result, "voicemail", spelling);
    const snap = s.parties[1].history.find((h) => h.sequence === 5)!;
    const canonical = spelling.toLowerCase().includes("screening")
      ? "VoiceMailScreening"
      : "VoiceMail";
    assert.equal(snap.code, canonical, spelling);
    assert.equal(snap.rawCode, spelling === canonical ? undefined : spelling);
  }
  const blind = run(
    await eventsWith(FAMILIES["blind-transfer"], 1, setStatus({ reason: "blindtransfer" })),
  ).state;
  assert.equal(blind.result, "transferred");
  assert.equal(blind.parties[1].history[1].rawReason, "blindtransfer");

  // An unknown code mid-call is stored (party history, unknownCodes) and does not break the talk.
  const events = await loadEvents(FAMILIES["inbound-answered"]);
  const weird: TelephonyEvent = {
    ...events[3],
    uuid: "weird",
    sequence: 6.5,
    eventTime: "2026-01-15T17:01:00.000Z",
    parties: [{ ...events[3].parties[0], code: "Whispering", reason: "SupervisorJoined" }],
  };
  const s = run([...events, weird]).state;
  assert.deepEqual(s.unknownCodes, ["Whispering"]);
  assert.deepEqual(s.unknownReasons, ["SupervisorJoined"]);
  assert.equal(s.result, "answered");
  assert.equal(s.durations.talkMs, 144490);
  const alice = s.parties[1];
  assert.deepEqual(alice.history.map((h) => h.code), [
    "Setup",
    "Proceeding",
    "Answered",
    "Whispering",
    "Disconnected",
  ]);

  // A call that ends on an unknown code, unanswered, has an unknown result.
  const missed = await loadEvents(FAMILIES.missed);
  const odd = run([
    ...missed.slice(0, 3),
    { ...missed[3], parties: [{ ...missed[3].parties[0], code: "Teleported", missedCall: false }] },
    {
      ...missed[3],
      uuid: "end",
      sequence: 9,
      parties: [{ ...missed[3].parties[0], missedCall: false }],
    },
    missed[4],
  ]).state;
  assert.equal(odd.state, "ended");
  assert.equal(odd.result, "unknown");
});

Deno.test("results from reasons: rejected, busy, failed, no answer", async () => {
  const cases: Array<[string, CallResult]> = [
    ["Rejected", "rejected"],
    ["targetbusy", "busy"],
    ["InvalidNumber", "failed"],
    ["NoSuchUser", "failed"],
    ["NoAnswer", "missed"],
  ];
  for (const [reason, result] of cases) {
    const events = await eventsWith(
      FAMILIES.missed,
      3,
      setStatus({ reason }),
    );
    const s = run(events).state;
    assert.equal(s.result, result, reason);
    assert.ok(s.resultReason && s.resultReason.toLowerCase() === reason.toLowerCase(), reason);
  }
  // Outbound, nobody answered: the remote leg's reason decides, else no_answer.
  const out = await loadEvents(FAMILIES["outbound-hold"]);
  const unanswered = [out[0], out[1], out[2], out[7], out[8]];
  assert.equal(run(unanswered).state.result, "no_answer");
  const busy = [...unanswered];
  busy[4] = {
    ...out[8],
    parties: [{ ...out[8].parties[0], reason: "TargetBusy" }],
  };
  assert.equal(run(busy).state.result, "busy");
  // A plain unanswered inbound call without missedCall is still missed.
  const missed = await eventsWith(FAMILIES.missed, 3, (p) => (p.missedCall = false));
  assert.equal(run(missed).state.result, "missed");
});

Deno.test("closeStale closes a silent active call once and emits call.ended", async () => {
  const events = await loadEvents(FAMILIES["inbound-answered"]);
  const active = run(events.slice(0, 4)).state; // answered, never ended
  const later = Date.parse("2026-01-15T21:00:00.000Z");
  const notYet = closeStale(active, later, { ...OPTS, silentForMs: 24 * 3600_000 });
  assert.equal(notYet.state, active);
  assert.deepEqual(notYet.emitted, []);
  const closed = closeStale(active, later, OPTS);
  assert.equal(closed.state.state, "stale");
  assert.equal(closed.state.staleAt, "2026-01-15T21:00:00.000Z");
  assert.equal(closed.state.result, "answered");
  assert.equal(closed.state.endedAt, "2026-01-15T17:00:07.010Z");
  assert.deepEqual(closed.emitted.map((e) => e.type), ["call.ended"]);
  assertValidEvents(closed.emitted);
  const ended = closed.emitted[0];
  assert.ok(ended.type === "call.ended");
  assert.equal(ended.data.state, "stale");
  assert.deepEqual(closeStale(closed.state, later + 1, OPTS).emitted, [], "only once");
  assert.equal(toCallRow(closed.state).state, "stale");
  // Ringing only, then silence: unknown result, no call.missed.
  const ringingOnly = closeStale(run(events.slice(0, 3)).state, later, OPTS);
  assert.equal(ringingOnly.state.result, "unknown");
  assert.deepEqual(ringingOnly.emitted.map((e) => e.type), ["call.ended"]);
  // A stale call whose remaining parties end later becomes ended without a second call.ended.
  const rest = run(events.slice(4), OPTS, closed.state);
  assert.equal(rest.state.state, "ended");
  assert.deepEqual(rest.events, []);
  // Ended calls are left alone.
  const done = run(events).state;
  assert.equal(closeStale(done, later, OPTS).state, done);
});

Deno.test("toTopicEvent keys by the deterministic event id", async () => {
  const r = run(await loadEvents(FAMILIES.missed));
  const row = toTopicEvent(r.events[0], "calls", 7);
  assert.deepEqual(row, {
    topic: "calls",
    type: "call.ringing",
    key: `call.ringing:${S(2)}`,
    createdAt: 7,
    payload: JSON.stringify(r.events[0]),
  });
});

// ---------------------------------------------------------------------------------------------
// Property test: generated call flows

interface Leg {
  id: string;
  extensionId?: string;
  direction: "Inbound" | "Outbound";
  from: PartyUpdate["from"];
  to: PartyUpdate["to"];
}

interface Flow {
  sessionId: string;
  events: TelephonyEvent[];
  expect: {
    direction: "inbound" | "outbound" | "internal";
    result: CallResult;
    ringMs: number;
    talkMs: number;
    holdMs: number;
    parties: number;
    counted: string[];
  };
}

const EXT = ["999000101", "999000102", "999000103"];
const PSTN = { phoneNumber: "+15555550199", name: "OUTSIDE" };

/** A generated call: random kind, holds, transfers, outcome, spellings and timings. */
function genFlow(r: () => number, n: number): Flow {
  const sessionId = `s-gen-${n}`;
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)];
  const int = (lo: number, hi: number) => lo + Math.floor(r() * (hi - lo + 1));
  const casing = (s: string) => pick([s, s.toLowerCase(), s.toUpperCase()]);
  let seq = int(1, 4);
  let now = Date.parse("2026-02-01T00:00:00.000Z") + n * 3_600_000;
  const events: TelephonyEvent[] = [];
  const leg = (i: number, l: Omit<Leg, "id">): Leg => ({ id: `p-gen-${n}-${i}`, ...l });
  const say = (
    l: Leg,
    code: string,
    extra: Partial<PartyUpdate> = {},
  ): number => {
    now += int(1, 30_000);
    seq += int(1, 2); // gaps happen
    const p: PartyUpdate = {
      id: l.id,
      accountId: "999000001",
      direction: l.direction,
      from: l.from,
      to: l.to,
      code,
      missedCall: false,
      ...extra,
    };
    if (l.extensionId) p.extensionId = l.extensionId;
    events.push({
      uuid: `${sessionId}-${seq}`,
      telephonySessionId: sessionId,
      sequence: seq,
      eventTime: new Date(now).toISOString(),
      parties: [p],
    });
    return now;
  };
  let ringMs = 0;
  let talkMs = 0;
  let holdMs = 0;
  /** Answer, talk with 0..3 holds (and maybe an unknown code), return when the talk ends. */
  const talk = (l: Leg, answeredAt: number) => {
    let t = answeredAt;
    for (let h = int(0, 3); h > 0; h--) {
      if (r() < 0.3) say(l, "Whispering"); // unknown codes do not interrupt anything
      const held = say(l, "Hold");
      talkMs += held - t;
      t = say(l, casing("Answered"));
      holdMs += t - held;
    }
    return t;
  };
  const ring = (l: Leg) => {
    say(l, "Setup");
    return say(l, casing("Proceeding"));
  };

  const kind = pick(["inbound", "outbound", "internal"] as const);
  const mainNumber = { phoneNumber: "+15555550123" };
  if (kind === "inbound") {
    const caller = leg(1, { direction: "Outbound", from: PSTN, to: mainNumber });
    const user = (i: number, ext: string) =>
      leg(i, {
        direction: "Inbound",
        extensionId: ext,
        from: PSTN,
        to: { ...mainNumber, extensionId: ext },
      });
    const alice = user(2, EXT[0]);
    say(caller, "Setup");
    const rang = ring(alice);
    const outcome = pick(
      ["answered", "missed", "voicemail", "reason", "blind", "attended"] as const,
    );
    let result: CallResult = outcome === "reason" ? "missed" : outcome as CallResult;
    const counted = [alice.id];
    let parties = 2;
    if (outcome === "missed") {
      ringMs += say(alice, "Disconnected", { missedCall: true }) - rang;
    } else if (outcome === "voicemail") {
      ringMs += say(alice, pick(["VoiceMail", "Voicemail", "VMScreening"])) - rang;
      say(caller, "Answered");
      say(alice, "Disconnected", { missedCall: true });
    } else if (outcome === "reason") {
      const [reason, res] = pick(
        [["Rejected", "rejected"], ["TargetBusy", "busy"], ["InvalidNumber", "failed"], [
          "NoAnswer",
          "missed",
        ]] as const,
      );
      result = res;
      ringMs += say(alice, "Disconnected", { reason: casing(reason) }) - rang;
    } else {
      const answered = say(alice, "Answered");
      ringMs += answered - rang;
      if (r() < 0.5) say(caller, "Answered");
      const t = talk(alice, answered);
      if (outcome === "answered") {
        talkMs += say(alice, "Disconnected") - t;
      } else if (outcome === "attended") {
        result = "transferred";
        talkMs += say(alice, "Gone", {
          reason: "AttendedTransfer",
          peer: { telephonySessionId: `s-peer-${n}`, partyId: `p-peer-${n}-2` },
        }) - t;
      } else {
        // A chain of blind transfers: Alice → Bob (→ Carol …), each target rings, maybe answers.
        result = "transferred";
        talkMs += say(alice, "Disconnected", { reason: casing("BlindTransfer") }) - t;
        for (let i = 3;; i++) {
          const next = user(i, EXT[(i - 2) % EXT.length]);
          counted.push(next.id);
          parties++;
          const rang = ring(next);
          if (r() < 0.3) {
            ringMs += say(next, "Disconnected", { missedCall: true }) - rang;
            break;
          }
          const a = say(next, "Answered");
          ringMs += a - rang;
          const end = talk(next, a); // talk (and its events) before the hang-up
          const again = i < 6 && r() < 0.3;
          talkMs += say(next, "Disconnected", again ? { reason: "BlindTransfer" } : {}) - end;
          if (!again) break;
        }
      }
    }
    say(caller, "Disconnected");
    return {
      sessionId,
      events,
      expect: { direction: "inbound", result, ringMs, talkMs, holdMs, parties, counted },
    };
  }
  if (kind === "outbound") {
    const alice = leg(1, {
      direction: "Outbound",
      extensionId: EXT[0],
      from: { ...mainNumber, extensionId: EXT[0] },
      to: PSTN,
    });
    const remote = leg(2, {
      direction: "Inbound",
      from: { ...mainNumber, extensionId: EXT[0] },
      to: PSTN,
    });
    say(alice, "Setup");
    say(remote, "Proceeding");
    const rang = say(alice, "Proceeding");
    let result: CallResult = "answered";
    if (r() < 0.7) {
      say(remote, "Answered");
      const a = say(alice, "Answered");
      ringMs += a - rang;
      const t = talk(alice, a); // talk (and its events) before the hang-up
      talkMs += say(alice, "Disconnected") - t;
      say(remote, "Disconnected");
    } else {
      ringMs += say(alice, "Disconnected") - rang;
      const busy = r() < 0.5;
      result = busy ? "busy" : "no_answer";
      say(remote, "Disconnected", busy ? { reason: "TargetBusy" } : {});
    }
    return {
      sessionId,
      events,
      expect: {
        direction: "outbound",
        result,
        ringMs,
        talkMs,
        holdMs,
        parties: 2,
        counted: [alice.id],
      },
    };
  }
  // internal: Alice calls Bob; the caller's leg is Answered when Bob is reached (§5.2 flow 2).
  const aliceEp = { phoneNumber: "101", extensionId: EXT[0] };
  const bobEp = { phoneNumber: "102", extensionId: EXT[1] };
  const alice = leg(1, { direction: "Outbound", extensionId: EXT[0], from: aliceEp, to: bobEp });
  const bob = leg(2, { direction: "Inbound", extensionId: EXT[1], from: aliceEp, to: bobEp });
  say(alice, "Setup");
  say(bob, "Setup");
  say(alice, "Answered");
  const rang = say(bob, "Proceeding");
  let result: CallResult = "answered";
  if (r() < 0.6) {
    const a = say(bob, "Answered");
    ringMs += a - rang;
    const t = talk(bob, a); // talk (and its events) before the hang-up
    talkMs += say(bob, "Disconnected") - t;
    say(alice, "Disconnected");
  } else {
    result = "missed";
    say(alice, "Disconnected");
    ringMs += say(bob, "Disconnected", { missedCall: r() < 0.5 }) - rang;
  }
  return {
    sessionId,
    events,
    expect: {
      direction: "internal",
      result,
      ringMs,
      talkMs,
      holdMs,
      parties: 2,
      counted: [bob.id],
    },
  };
}

/** Sometimes the last two changes arrive in one notification (two parties, one sequence). */
function maybeMerge(f: Flow, r: () => number): Flow {
  const [a, b] = f.events.slice(-2);
  const pa = a.parties[0];
  const pb = b.parties[0];
  if (r() < 0.6 || pa.id === pb.id || f.expect.counted.includes(pb.id)) return f;
  const merged = { ...a, parties: [pa, pb] };
  return { ...f, events: [...f.events.slice(0, -2), merged] };
}

/** Invariants that hold after every single reduction. */
function checkInvariants(s: CallState, label: string): void {
  const ids = s.parties.map((p) => p.id);
  assert.deepEqual(ids, [...new Set(ids)].sort(), `${label}: parties unique and sorted by id`);
  for (const p of s.parties) {
    const seqs = p.history.map((h) => h.sequence);
    assert.ok(seqs.every((x, i) => i === 0 || x > seqs[i - 1]), `${label}: history sorted`);
    assert.equal(p.code, p.history[p.history.length - 1].code, `${label}: latest by sequence`);
    assert.equal(p.ended, p.code === "Disconnected" || p.code === "Gone");
  }
  const last = Math.max(...s.parties.flatMap((p) => p.history.map((h) => h.sequence)));
  const transferPending = s.parties.some((p) =>
    p.history.some((h) =>
      h.sequence === last && h.code === "Disconnected" && h.reason === "BlindTransfer"
    )
  );
  const allEnded = s.parties.every((p) => p.ended);
  assert.equal(
    s.state === "ended",
    allEnded && !transferPending,
    `${label}: ended iff every party ended (state ${s.state})`,
  );
  assert.equal(s.result === null, s.state === "active", `${label}: result iff closed`);
  const d = s.durations;
  for (const v of Object.values(d)) assert.ok(Number.isInteger(v) && v >= 0, `${label}: ${v}`);
  assert.ok(d.ringMs + d.talkMs + d.holdMs <= d.totalMs, `${label}: ring+talk+hold ≤ total`);
  assert.equal(d.totalMs, span(s.startedAt, s.lastEventAt));
  if (s.answeredAt) {
    const end = s.endedAt ?? s.lastEventAt;
    assert.ok(d.talkMs + d.holdMs <= span(s.answeredAt, end), `${label}: talk+hold ≤ end−answer`);
  } else {
    assert.equal(d.talkMs, 0, `${label}: no talk without an answer`);
  }
  if (s.endedAt) assert.equal(s.endedAt, s.lastEventAt);
  assert.equal(s.timeline[0].type, "started");
  assert.equal(s.timeline.at(-1)!.type === "ended", s.state !== "active");
}

Deno.test("property: generated call flows, interleaved, shuffled and duplicated", () => {
  for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
    const r = rng(seed * 7919);
    const flows = Array.from({ length: 25 }, (_, i) => maybeMerge(genFlow(r, seed * 100 + i), r));
    // Reduce every session's events interleaved into one map, as the processor would.
    const all = scramble(flows.flatMap((f) => f.events), r);
    const calls = new Map<string, CallState>();
    const emitted = new Map<string, CallEvent[]>();
    for (const ev of all) {
      const { state, emitted: out } = reduceCall(calls.get(ev.telephonySessionId), ev, OPTS);
      calls.set(ev.telephonySessionId, state);
      emitted.set(ev.telephonySessionId, [...(emitted.get(ev.telephonySessionId) ?? []), ...out]);
      checkInvariants(state, `seed ${seed} ${ev.telephonySessionId}@${ev.sequence}`);
      assertValidEvents(out);
    }
    assert.equal(calls.size, flows.length, "one record per session");
    for (const f of flows) {
      const label = `seed ${seed} ${f.sessionId}`;
      const got = calls.get(f.sessionId)!;
      const inOrder = run(f.events);
      for (const s of inOrder.states) checkInvariants(s, `${label} in order`);
      assert.deepEqual(withoutBookkeeping(got), withoutBookkeeping(inOrder.state), label);
      assert.equal(got.state, "ended", label);
      assert.equal(got.parties.length, f.expect.parties, label);
      assert.ok(got.parties.every((p) => p.id.startsWith(`p-gen-${f.sessionId.slice(6)}-`)));
      assert.equal(got.direction, f.expect.direction, label);
      assert.equal(got.result, f.expect.result, label);
      assert.deepEqual(got.countedParties, f.expect.counted, label);
      assert.deepEqual(
        [got.durations.ringMs, got.durations.talkMs, got.durations.holdMs],
        [f.expect.ringMs, f.expect.talkMs, f.expect.holdMs],
        `${label}: ring/talk/hold`,
      );
      const events = emitted.get(f.sessionId)!;
      assertOncePerKind(events, label);
      // Whatever the order, call.answered means an account party on the account's side answered.
      if (events.some((e) => e.type === "call.answered")) {
        assert.ok(got.answeredBy && got.result !== "voicemail", `${label}: answered`);
      }
      assertOncePerKind(inOrder.events, `${label} in order`);
      // In order, the call ends exactly at its last event, with the expected kinds.
      assert.deepEqual(inOrder.steps.at(-1)!.slice(0, 1), ["call.ended"], label);
      assert.equal(inOrder.events.filter((e) => e.type === "call.ended").length, 1);
      const kinds = new Set(inOrder.events.map((e) => e.type));
      assert.equal(kinds.has("call.missed"), f.expect.result === "missed", label);
      assert.equal(kinds.has("call.voicemail"), f.expect.result === "voicemail", label);
      assert.equal(
        kinds.has("call.ringing"),
        f.expect.direction !== "outbound",
        `${label}: ringing pop for inbound/internal only`,
      );
      assert.equal(kinds.has("call.answered"), got.answeredAt !== undefined, label);
      assert.deepEqual(
        inOrder.state.emittedTypes,
        CALL_EVENT_TYPES.filter((t) => kinds.has(t)),
        label,
      );
    }
  }
});

Deno.test("docs/call-events.md: every example is what the tracker emits for the fixtures", async () => {
  const doc = await Deno.readTextFile(new URL("../docs/call-events.md", import.meta.url));
  const emitted = new Map<string, CallEvent>();
  for (const files of Object.values(FAMILIES)) {
    for (const e of run(await loadEvents(files)).events) emitted.set(e.id, e);
  }
  const blocks = [...doc.matchAll(/```json\n([\s\S]*?)\n```/g)].map((m) => JSON.parse(m[1]));
  const examples = blocks.filter((b) => !("…" in b.data));
  assert.deepEqual(
    examples.map((e) => e.type).sort(),
    ["call.answered", "call.ended", "call.ended", "call.missed", "call.ringing", "call.voicemail"],
  );
  for (const ex of examples) {
    assert.deepEqual(ex, emitted.get(ex.id), ex.id);
    assertValidEvents([ex as CallEvent]);
  }
});
