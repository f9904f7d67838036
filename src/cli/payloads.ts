/**
 * RingCentral-shaped notifications for the simulator, built with fresh ids so
 * they can be sent again and again (shapes follow tests/fixtures/).
 */

const ACCOUNT = "999000001";
const ALICE = { ext: "999000101", number: "+15555550123", name: "Alice Example" };
const CALLER = { number: "+15555550100", name: "WIRELESS CALLER" };
const SUBSCRIPTION = "00000000-1111-4222-8333-444444444444";

/** A notification body as RingCentral posts it. */
export type Payload = {
  uuid: string;
  event: string;
  timestamp: string;
  subscriptionId: string;
  ownerId: string;
  body: Record<string, unknown>;
};

/** A random decimal uuid like RingCentral's telephony ones. */
function decimalId(): string {
  const b = crypto.getRandomValues(new Uint32Array(2));
  return `${1 + (b[0] % 8)}${String(b[0]).padStart(10, "0")}${String(b[1]).padStart(10, "0")}`
    .slice(0, 19);
}

function envelope(event: string, body: Record<string, unknown>, at: Date): Payload {
  return {
    uuid: decimalId(),
    event,
    timestamp: at.toISOString(),
    subscriptionId: SUBSCRIPTION,
    ownerId: ALICE.ext,
    body,
  };
}

/** Which way a simulated call ends. */
export type CallOutcome = "answered" | "missed" | "voicemail";

/** The notifications of one inbound call to Alice, in sequence order. */
export function inboundCall(outcome: CallOutcome, start = new Date()): Payload[] {
  const hex = crypto.randomUUID().replace(/-/g, "");
  const tsid = `s-${hex}`;
  const sessionId = String(100000000000 + (parseInt(hex.slice(0, 8), 16) % 899999999999));
  const callerParty = `p-${hex}-1`;
  const aliceParty = `p-${hex}-2`;
  const accountPath = `/restapi/v1.0/account/${ACCOUNT}/telephony/sessions`;
  const alicePath = `/restapi/v1.0/account/${ACCOUNT}/extension/${ALICE.ext}/telephony/sessions`;
  const to = { phoneNumber: ALICE.number, name: ALICE.name, extensionId: ALICE.ext };
  const from = { phoneNumber: CALLER.number, name: CALLER.name };
  let seq = 1;
  let t = start.getTime();
  const step = (
    party: "caller" | "alice",
    code: string,
    ms: number,
    extra: Record<string, unknown> = {},
  ): Payload => {
    t += ms;
    const at = new Date(t);
    const p = party === "caller"
      ? { id: callerParty, direction: "Outbound" }
      : { id: aliceParty, direction: "Inbound", accountId: ACCOUNT, extensionId: ALICE.ext };
    return envelope(party === "caller" ? accountPath : alicePath, {
      sequence: ++seq,
      sessionId,
      telephonySessionId: tsid,
      serverId: "10.0.0.1.TAM",
      eventTime: at.toISOString(),
      parties: [{
        ...p,
        to,
        from,
        status: { code, rcc: false },
        park: {},
        missedCall: false,
        standAlone: false,
        muted: false,
        ...extra,
      }],
      origin: { type: "Call" },
    }, new Date(t + 50));
  };
  const flow = [
    step("caller", "Setup", 0),
    step("alice", "Setup", 140),
    step("alice", "Proceeding", 300),
  ];
  if (outcome === "answered") {
    flow.push(
      step("alice", "Answered", 6000),
      step("caller", "Answered", 100),
      step("alice", "Disconnected", 45000),
      step("caller", "Disconnected", 200),
    );
  } else if (outcome === "missed") {
    flow.push(
      step("alice", "Disconnected", 20000, { missedCall: true }),
      step("caller", "Disconnected", 200),
    );
  } else {
    flow.push(
      step("alice", "VoiceMail", 20000),
      step("caller", "Answered", 100),
      step("alice", "Disconnected", 15000),
      step("caller", "Disconnected", 200),
    );
  }
  return flow;
}

/** An inbound SMS notification. */
export function inboundSms(text = "Hi, is the store open today?"): Payload {
  const now = new Date();
  return envelope(
    `/restapi/v1.0/account/${ACCOUNT}/extension/${ALICE.ext}/message-store/instant?type=SMS`,
    {
      id: decimalId().slice(0, 12),
      to: [{ phoneNumber: ALICE.number, name: ALICE.name, target: true }],
      from: { phoneNumber: CALLER.number },
      type: "SMS",
      creationTime: now.toISOString(),
      lastModifiedTime: now.toISOString(),
      readStatus: "Unread",
      priority: "Normal",
      attachments: [],
      direction: "Inbound",
      availability: "Alive",
      subject: text,
      messageStatus: "Received",
      conversation: { id: decimalId() },
      ownerId: ALICE.ext,
    },
    now,
  );
}

/** A detailed presence notification (Alice's phone is ringing). */
export function presence(): Payload {
  return envelope(
    `/restapi/v1.0/account/${ACCOUNT}/extension/${ALICE.ext}/presence?detailedTelephonyState=true`,
    {
      extensionId: ALICE.ext,
      telephonyStatus: "Ringing",
      activeCalls: [],
      sequence: 1,
      presenceStatus: "Busy",
      userStatus: "Available",
      dndStatus: "TakeAllCalls",
      ownerId: ALICE.ext,
    },
    new Date(),
  );
}

/** A voicemail notification. */
export function voicemail(): Payload {
  return envelope(`/restapi/v1.0/account/${ACCOUNT}/extension/${ALICE.ext}/voicemail`, {
    id: decimalId().slice(0, 12),
    from: { phoneNumber: CALLER.number },
    to: [{ phoneNumber: ALICE.number, name: ALICE.name }],
    type: "VoiceMail",
    direction: "Inbound",
    readStatus: "Unread",
    vmTranscriptionStatus: "NotAvailable",
    attachments: [{ id: "1", type: "AudioRecording", contentType: "audio/mpeg", vmDuration: 12 }],
    ownerId: ALICE.ext,
  }, new Date());
}

/** A subscription renewal reminder (its event is the filter string, literally). */
export function renewalReminder(): Payload {
  return {
    ...envelope("/restapi/v1.0/subscription/~?threshold=86400&interval=3600", {
      expiresIn: 86100,
    }, new Date()),
    uuid: crypto.randomUUID(),
  };
}
