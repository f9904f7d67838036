/**
 * `doctor`: checks configuration, data directory, database, the public URL's
 * handshake and RingCentral, explaining each failure in one line.
 */
import { parseCommand } from "./args.ts";
import { type Config, secretsOf } from "../config.ts";
import { openStore, storeLocation } from "../journal/open.ts";
import { ringCentralClient } from "../app.ts";
import { makeScrubber, redactUrl } from "../log.ts";
import * as rt from "../runtime.ts";

const HELP = `Usage: ringhook doctor [--json] [--timeout SECONDS]

Checks, one line each: configuration, data directory, database, the public URL
(RINGHOOK_PUBLIC_URL answers RingCentral's handshake), and RingCentral (login with the
configured credentials). Skipped checks say why.
Exit codes: 0 every check passed or was skipped, 1 a check failed, 2 bad usage.`;

/** One check's outcome. */
export interface Check {
  name: string;
  status: "pass" | "fail" | "skip";
  detail: string;
}

/** Runs every check for a config. */
export async function diagnose(config: Config, timeoutMs = 5000): Promise<Check[]> {
  const out: Check[] = [{ name: "config", status: "pass", detail: "environment is valid" }];
  const dir = config.dataDir.replace(/\/+$/, "");
  try {
    rt.ensureDir(dir);
    const probe = `${dir}/.doctor-${crypto.randomUUID()}`;
    rt.writeText(probe, "ok");
    rt.remove(probe);
    out.push({ name: "data-dir", status: "pass", detail: `${dir} is writable` });
  } catch (e) {
    out.push({ name: "data-dir", status: "fail", detail: `${dir} is not writable: ${msg(e)}` });
  }
  try {
    const where = storeLocation(config);
    const store = await openStore(config, { busyTimeoutMs: 2000 });
    try {
      await store.probe();
      const s = await store.stats();
      out.push({
        name: "database",
        status: "pass",
        detail: `${where} takes writes; ${s.events} events, ${s.activeCalls} active calls`,
      });
    } finally {
      await store.close();
    }
  } catch (e) {
    out.push({
      name: "database",
      status: "fail",
      detail: `cannot write ${storeLocation(config)}: ${msg(e)}`,
    });
  }

  const pub = config.ringcentral.publicUrl;
  if (!pub) {
    out.push({ name: "public-url", status: "skip", detail: "RINGHOOK_PUBLIC_URL is not set" });
  } else {
    const shown = redactUrl(pub);
    try {
      const token = `doctor-${crypto.randomUUID()}`;
      const t0 = performance.now();
      const res = await fetch(pub, {
        method: "POST",
        headers: { "Validation-Token": token, "Content-Type": "application/json" },
        // RingCentral is not known to follow redirects: a redirect is a failure here.
        redirect: "manual",
        signal: AbortSignal.timeout(timeoutMs),
      });
      const ms = Math.round(performance.now() - t0);
      await res.body?.cancel();
      const echoed = res.headers.get("validation-token") === token;
      out.push(
        res.status === 200 && echoed
          ? {
            name: "public-url",
            status: "pass",
            detail: `${shown} answers the handshake in ${ms} ms`,
          }
          : {
            name: "public-url",
            status: "fail",
            detail: `${shown} answered ${res.status}` +
              (res.status >= 300 && res.status < 400 ? " (a redirect)" : "") +
              (echoed ? "" : " without echoing Validation-Token") +
              ": RingCentral would refuse the subscription (SUB-520/SUB-525)",
          },
      );
    } catch (e) {
      out.push({
        name: "public-url",
        status: "fail",
        detail: `${shown} is unreachable from here (${msg(e)}): RingCentral would answer CMN-101`,
      });
    }
  }

  const rc = ringCentralClient(config);
  if (!rc) {
    out.push({
      name: "ringcentral",
      status: "skip",
      detail: "RINGHOOK_RC_CLIENT_ID, _CLIENT_SECRET and _JWT are not set",
    });
  } else {
    try {
      await rc.login({ signal: AbortSignal.timeout(timeoutMs) });
      const subs = await rc.listSubscriptions({ signal: AbortSignal.timeout(timeoutMs) });
      out.push({
        name: "ringcentral",
        status: "pass",
        detail:
          `logged in to ${config.ringcentral.server}; ${subs.length} subscription(s) for this app`,
      });
    } catch (e) {
      out.push({
        name: "ringcentral",
        status: "fail",
        detail: `${config.ringcentral.server}: ${msg(e)}`,
      });
    }
  }
  const scrub = makeScrubber(secretsOf(config));
  return out.map((c) => ({ ...c, detail: scrub(c.detail) }));
}

/** The CLI wrapper around diagnose(). */
export async function doctorCommand(argv: string[]): Promise<number> {
  const a = parseCommand(argv, {
    json: { type: "boolean" },
    timeout: { type: "string" },
  }, HELP);
  if (typeof a === "number") return a;
  const c = rt.configFromEnv();
  if (!c.ok) {
    const checks = c.errors.map((e) => ({ name: "config", status: "fail", detail: e }));
    for (const ch of checks) {
      rt.print(a.json ? JSON.stringify(ch) : `FAIL config       ${ch.detail}`);
    }
    return 1;
  }
  const checks = await diagnose(c.config, Number(a.timeout ?? 5) * 1000);
  for (const ch of checks) {
    rt.print(
      a.json
        ? JSON.stringify(ch)
        : `${ch.status.toUpperCase().padEnd(4)} ${ch.name.padEnd(12)} ${ch.detail}`,
    );
  }
  return checks.some((ch) => ch.status === "fail") ? 1 : 0;
}

function msg(e: unknown): string {
  const x = e as { errorCode?: string; message?: string };
  return (x.errorCode ? `${x.errorCode}: ` : "") +
    String(x.message ?? e).split("\n")[0].slice(0, 200);
}
