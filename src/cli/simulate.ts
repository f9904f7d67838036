/**
 * `simulate`: sends RingCentral-shaped requests to a ringhook (local or
 * deployed) and checks every answer: one line per scenario, non-zero exit on
 * any mismatch. It covers the replaced Flask server's test_webhook.py and more.
 */
import { hmacHex } from "../verify.ts";
import {
  inboundCall,
  inboundSms,
  type Payload,
  presence,
  renewalReminder,
  voicemail,
} from "./payloads.ts";
import { localToken } from "./local.ts";
import { parseCommand } from "./args.ts";
import * as rt from "../runtime.ts";

const HELP = `Usage: ringhook simulate --url URL [options]

Sends the RingCentral handshake, notifications and bad requests to URL and checks each answer.

Options:
  --url URL            the ringhook base URL or its /webhook URL (required)
  --token T            the Verification-Token to send (default: RINGHOOK_VERIFICATION_TOKEN,
                       else the generated token in the local data directory)
  --hmac-secret S      also sign requests (RINGHOOK_HMAC_SECRET by default)
  --hmac-header H      the signature header (default X-Hub-Signature-256)
  --max-body-bytes N   the server's body limit, for the oversize scenario (default 1048576)
  --only NAMES         comma-separated scenario names to run
  --call OUTCOME       just send one call (answered, missed or voicemail) and exit
  --json               print results as JSON lines
Exit codes: 0 every scenario passed, 1 a mismatch, 2 bad usage.`;

/** One check's outcome. */
export interface ScenarioResult {
  name: string;
  ok: boolean;
  expected: string;
  got: string;
}

/** Options for a simulation run. */
export interface SimulateOptions {
  url: string;
  token?: string;
  hmacSecret?: string;
  hmacHeader: string;
  maxBodyBytes: number;
  only?: string[];
}

/** The /webhook URL for a base URL or a /webhook URL. */
function webhookUrl(url: string): string {
  const u = url.replace(/\/+$/, "");
  return u.endsWith("/webhook") ? u : `${u}/webhook`;
}

/** POSTs a RingCentral-shaped body: the token and signature headers, then `extra` ("" deletes). */
async function postTo(
  o: SimulateOptions,
  url: string,
  p: Payload | string | Uint8Array,
  extra: Record<string, string> = {},
): Promise<Response> {
  const body = p instanceof Uint8Array
    ? p
    : new TextEncoder().encode(typeof p === "string" ? p : JSON.stringify(p));
  const h: Record<string, string> = {
    "Content-Type": "application/json; charset=UTF-8",
    "User-Agent": "RingCentral-Webhook/8.3 (ringhook-simulate)",
  };
  if (o.token !== undefined) h["Verification-Token"] = o.token;
  if (o.hmacSecret) h[o.hmacHeader] = "sha256=" + await hmacHex(o.hmacSecret, body);
  const headers = { ...h, ...extra };
  for (const [k, v] of Object.entries(extra)) if (v === "") delete headers[k];
  // Never follow a redirect: the token must not travel to another origin.
  return await fetch(url, { method: "POST", headers, body: body as BodyInit, redirect: "manual" });
}

/** Runs every scenario against a ringhook and returns the results. */
export async function simulate(o: SimulateOptions): Promise<ScenarioResult[]> {
  const url = webhookUrl(o.url);
  const post = (p: Payload | string | Uint8Array, extra: Record<string, string> = {}) =>
    postTo(o, url, p, extra);
  const results: ScenarioResult[] = [];
  const check = async (
    name: string,
    expected: string,
    run: () => Promise<{ ok: boolean; got: string }>,
  ) => {
    if (o.only && !o.only.includes(name)) return;
    try {
      const r = await run();
      results.push({ name, expected, ...r });
    } catch (e) {
      results.push({ name, expected, ok: false, got: `error: ${(e as Error).message}` });
    }
  };
  const expectEvent = (p: Payload, status = "received") => async () => {
    const res = await post(p);
    const body = await res.json().catch(() => ({}));
    return {
      ok: res.status === 200 && body.status === status && body.uuid === p.uuid,
      got: `${res.status} ${JSON.stringify(body)}`,
    };
  };

  await check(
    "handshake",
    "200, Validation-Token echoed, application/json, < 1024 bytes",
    async () => {
      const token = crypto.randomUUID();
      const h: Record<string, string> = {
        "Validation-Token": token,
        "Content-Type": "application/json",
      };
      if (o.token !== undefined) h["Verification-Token"] = o.token;
      const res = await fetch(url, { method: "POST", headers: h, redirect: "manual" });
      const text = await res.text();
      let size = `HTTP/1.1 ${res.status} ${res.statusText}\r\n`.length + 2 + text.length;
      for (const [k, v] of res.headers) size += k.length + v.length + 4;
      const echoed = res.headers.get("validation-token") === token;
      const ct = res.headers.get("content-type")?.startsWith("application/json") ?? false;
      return {
        ok: res.status === 200 && echoed && ct && size < 1024,
        got: `${res.status}, echoed=${echoed}, json=${ct}, ~${size} bytes`,
      };
    },
  );
  await check("empty-post", '200 {"status":"ok"}', async () => {
    const res = await post(new Uint8Array());
    const body = await res.text();
    return {
      ok: res.status === 200 && JSON.parse(body).status === "ok",
      got: `${res.status} ${body}`,
    };
  });
  await check("get-challenge", "200 text/plain echo", async () => {
    const res = await fetch(`${url}?hub.challenge=sim-${Date.now()}`, { redirect: "manual" });
    const body = await res.text();
    return { ok: res.status === 200 && body.startsWith("sim-"), got: `${res.status} ${body}` };
  });
  await check("get-no-challenge", "400", async () => {
    const res = await fetch(url, { redirect: "manual" });
    await res.body?.cancel();
    return { ok: res.status === 400, got: String(res.status) };
  });
  const call = inboundCall("answered");
  await check("call-inbound-answered", "200 received for each of 7 events", async () => {
    const statuses: number[] = [];
    for (const p of call) statuses.push((await post(p)).status);
    return { ok: statuses.every((s) => s === 200), got: statuses.join(",") };
  });
  await check("call-missed-out-of-order", "200 for each event sent in reverse", async () => {
    const statuses: number[] = [];
    for (const p of inboundCall("missed").reverse()) statuses.push((await post(p)).status);
    return { ok: statuses.every((s) => s === 200), got: statuses.join(",") };
  });
  await check("call-voicemail", "200 for each event", async () => {
    const statuses: number[] = [];
    for (const p of [...inboundCall("voicemail"), voicemail()]) {
      statuses.push((await post(p)).status);
    }
    return { ok: statuses.every((s) => s === 200), got: statuses.join(",") };
  });
  await check("sms", '200 "received"', expectEvent(inboundSms()));
  await check("presence", '200 "received"', expectEvent(presence()));
  await check("renewal-reminder", '200 "received"', expectEvent(renewalReminder()));
  await check("duplicate", '200 "duplicate"', expectEvent(call[0], "duplicate"));
  await check("no-content-type", '200 "received"', async () => {
    const p = inboundSms("no content type");
    const res = await post(p, { "Content-Type": "" });
    const body = await res.json().catch(() => ({}));
    return { ok: res.status === 200 && body.status === "received", got: `${res.status}` };
  });
  await check("bad-token", "401", async () => {
    const res = await post(inboundSms(), { "Verification-Token": "wrong-token-" + Date.now() });
    await res.body?.cancel();
    return { ok: res.status === 401, got: String(res.status) };
  });
  await check("invalid-json", "400 invalid_json", async () => {
    const res = await post('{"uuid": "x", "event": ');
    const body = await res.json().catch(() => ({}));
    return {
      ok: res.status === 400 && body.error === "invalid_json",
      got: `${res.status} ${body.error}`,
    };
  });
  await check("not-an-envelope", "400 bad_envelope", async () => {
    const res = await post('{"hello": "world"}');
    const body = await res.json().catch(() => ({}));
    return {
      ok: res.status === 400 && body.error === "bad_envelope",
      got: `${res.status} ${body.error}`,
    };
  });
  await check("oversized", "413", async () => {
    const big = new Uint8Array(o.maxBodyBytes + 1).fill(0x20);
    try {
      const res = await post(big);
      await res.body?.cancel();
      return { ok: res.status === 413, got: String(res.status) };
    } catch (e) {
      // A server may close the connection while the client still sends: that is a refusal too.
      return { ok: false, got: `connection error: ${(e as Error).message}` };
    }
  });
  return results;
}

/** The CLI wrapper around simulate(). */
export async function simulateCommand(argv: string[]): Promise<number> {
  const a = parseCommand(argv, {
    url: { type: "string" },
    token: { type: "string" },
    "hmac-secret": { type: "string" },
    "hmac-header": { type: "string" },
    "max-body-bytes": { type: "string" },
    only: { type: "string" },
    call: { type: "string" },
    json: { type: "boolean" },
  }, HELP);
  if (typeof a === "number") return a;
  if (!a.url) {
    rt.printErr(`--url is required\n\n${HELP}`);
    return 2;
  }
  // Defaults come from this machine's configuration (secrets from _FILE too), when it is valid.
  const c = rt.configFromEnv();
  const config = c.ok ? c.config : undefined;
  const opts: SimulateOptions = {
    url: a.url,
    token: a.token ?? await localToken(),
    hmacSecret: a["hmac-secret"] ?? config?.hmacSecrets[0],
    hmacHeader: a["hmac-header"] ?? config?.hmacHeader ?? "X-Hub-Signature-256",
    maxBodyBytes: Number(a["max-body-bytes"] ?? config?.maxBodyBytes ?? 1048576),
    only: a.only?.split(","),
  };
  if (a.call) {
    if (!["answered", "missed", "voicemail"].includes(a.call)) {
      rt.printErr("--call takes answered, missed or voicemail");
      return 2;
    }
    opts.only = ["call"];
  }
  const results = a.call ? await sendCall(opts, a.call as "answered") : await simulate(opts);
  for (const r of results) {
    rt.print(
      a.json
        ? JSON.stringify(r)
        : `${r.ok ? "PASS" : "FAIL"} ${r.name.padEnd(26)} expected ${r.expected}; got ${r.got}`,
    );
  }
  const failed = results.filter((r) => !r.ok).length;
  if (!a.json) rt.print(`${results.length - failed} passed, ${failed} failed`);
  return failed === 0 ? 0 : 1;
}

async function sendCall(o: SimulateOptions, outcome: "answered" | "missed" | "voicemail") {
  const url = webhookUrl(o.url);
  const flow = inboundCall(outcome);
  const statuses: number[] = [];
  for (const p of flow) {
    try {
      const res = await postTo(o, url, p);
      await res.body?.cancel();
      statuses.push(res.status);
    } catch (e) {
      return [{
        name: `call-${outcome}`,
        ok: false,
        expected: "200 for each event",
        got: `cannot reach ${url}: ${(e as Error).message.split("\n")[0]}`,
      }];
    }
  }
  const tsid = (flow[0].body as { telephonySessionId: string }).telephonySessionId;
  return [{
    name: `call-${outcome}`,
    ok: statuses.every((s) => s === 200),
    expected: "200 for each event",
    got: `${statuses.join(",")} (telephonySessionId ${tsid})`,
  }];
}
