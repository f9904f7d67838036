/**
 * `subscribe`, `subscriptions`, `unsubscribe`: ringhook's RingCentral WebHook subscription from the
 * command line, with the server's client, the keeper's ensureSubscription and the same database
 * (the stored subscription id, the generated verification token and the keeper lease).
 */
import type { Config } from "../config.ts";
import { generatedToken } from "../app.ts";
import { openStore, storeLocation } from "../journal/open.ts";
import { readSetting } from "./local.ts";
import { parseCommand } from "./args.ts";
import { redactUrl } from "../log.ts";
import type { Store } from "../journal/types.ts";
import {
  isNotFound,
  RingCentralClient,
  RingCentralError,
  type SubscriptionInfo,
} from "../ringcentral/client.ts";
import {
  ensureSubscription,
  KEEPER_LEASE,
  SUBSCRIPTION_ID_SETTING,
  type Transition,
} from "../ringcentral/keeper.ts";
import * as rt from "../runtime.ts";

const SUBSCRIBE_HELP = `Usage: ringhook subscribe [--recreate] [--force] [--json]

Makes sure ringhook's RingCentral WebHook subscription exists and matches the configuration:
creates it (event filters from RINGHOOK_RC_EVENT_FILTERS plus the renewal reminder, top-level
expiresIn), updates its filters, or deletes and recreates it when it is blacklisted, expired or
points at another address. With no stored subscription id, a subscription of this app already at
RINGHOOK_PUBLIC_URL is adopted instead of creating a second one.

RingCentral validates RINGHOOK_PUBLIC_URL while the create call runs, so a ringhook must be
serving there, on the same data directory (it answers with the same verification token).

Needs RINGHOOK_RC_CLIENT_ID, RINGHOOK_RC_CLIENT_SECRET, RINGHOOK_RC_JWT and RINGHOOK_PUBLIC_URL.

Options:
  --recreate   delete and create the subscription even when it matches
  --force      act even while a running ringhook holds the keeper lease
  --json       print the result as one JSON object
Exit codes: 0 ok, 1 RingCentral refused or failed, 2 bad configuration or usage.`;

const SUBSCRIPTIONS_HELP = `Usage: ringhook subscriptions [--json]

Lists this RingCentral app's subscriptions (for the JWT's user): id, status, address, expiry and
blacklist reason, marking ringhook's (the id stored in the data directory) and any others that
point at RINGHOOK_PUBLIC_URL. Query-string values in addresses are masked.

Needs RINGHOOK_RC_CLIENT_ID, RINGHOOK_RC_CLIENT_SECRET and RINGHOOK_RC_JWT.

Options:
  --json       print one JSON object
Exit codes: 0 ok, 1 RingCentral refused or failed, 2 bad configuration or usage.`;

const UNSUBSCRIBE_HELP = `Usage: ringhook unsubscribe [--id ID] [--force] [--json]

Deletes ringhook's subscription (the id stored in the data directory) and clears the stored id.
A running ringhook with credentials would create a new one at its next check: stop it first.

Needs RINGHOOK_RC_CLIENT_ID, RINGHOOK_RC_CLIENT_SECRET and RINGHOOK_RC_JWT.

Options:
  --id ID      delete this subscription of the app instead (see 'ringhook subscriptions')
  --force      act even while a running ringhook holds the keeper lease
  --json       print the result as one JSON object
Exit codes: 0 deleted (or already gone), 1 failure, 2 bad configuration or usage.`;

/** How long the CLI holds the keeper lease at most (a create may wait out penalties). */
const CLI_LEASE_MS = 10 * 60_000;

/** `subscribe`: creates, updates, adopts or recreates ringhook's subscription. */
export async function subscribeCommand(argv: string[]): Promise<number> {
  const a = parseCommand(argv, {
    recreate: { type: "boolean" },
    force: { type: "boolean" },
    json: { type: "boolean" },
  }, SUBSCRIBE_HELP);
  if (typeof a === "number") return a;
  const ctx = setup(true);
  if (typeof ctx === "number") return ctx;
  const { config, client } = ctx;
  const publicUrl = config.ringcentral.publicUrl!;

  return await withStore(config, async (store) => {
    // The token goes into the store before the create call: RingCentral's validation POST reaches
    // the server (which reads the same database) before the call returns (reference §1).
    const token = await verificationToken(config, store);
    const lease = await takeLease(store, !!a.force);
    if (lease === undefined) return 1;
    const transitions: Transition[] = [];
    try {
      const r = await ensureSubscription({
        api: client,
        store,
        spec: { ...config.ringcentral, publicUrl, verificationToken: token.value },
        forceRecreate: !!a.recreate,
        onTransition: (t) => transitions.push(t),
      });
      const s = r.subscription;
      if (a.json) {
        rt.print(JSON.stringify({
          action: r.action,
          adopted: r.adopted ?? false,
          subscription: summary(s, s.id, publicUrl),
          verificationToken: token.source,
          steps: transitions.map((t) => ({
            kind: t.kind,
            subscriptionId: t.subscriptionId,
            reason: t.reason,
          })),
        }));
      } else {
        const adopted = r.adopted && r.action !== "adopted" ? " (adopted)" : "";
        rt.print(`${r.action}${adopted} subscription ${s.id}`);
        for (const t of transitions) {
          if (t.kind === r.action) continue;
          rt.print(
            `  step:     ${t.kind}${t.subscriptionId ? ` ${t.subscriptionId}` : ""}` +
              (t.reason ? `: ${t.reason}` : ""),
          );
        }
        printDetails(s, publicUrl);
        rt.print(`  verification token: ${token.source}`);
      }
      return 0;
    } catch (e) {
      return failed(e, publicUrl);
    } finally {
      await lease();
    }
  });
}

/** `subscriptions`: lists the app's subscriptions and marks ringhook's. */
export async function subscriptionsCommand(argv: string[]): Promise<number> {
  const a = parseCommand(argv, { json: { type: "boolean" } }, SUBSCRIPTIONS_HELP);
  if (typeof a === "number") return a;
  const ctx = setup(false);
  if (typeof ctx === "number") return ctx;
  const { config, client } = ctx;
  const publicUrl = config.ringcentral.publicUrl;
  let subs: SubscriptionInfo[];
  try {
    subs = await client.listSubscriptions();
  } catch (e) {
    return failed(e);
  }
  const storedId = await readSetting(config, SUBSCRIPTION_ID_SETTING);
  const rows = subs.map((s) => summary(s, storedId, publicUrl));
  if (a.json) {
    rt.print(JSON.stringify({
      storedId: storedId ?? null,
      publicUrl: publicUrl ? redactUrl(publicUrl) : null,
      subscriptions: rows,
    }));
    return 0;
  }
  if (subs.length === 0) rt.print("no subscriptions for this app and user");
  for (const s of subs) {
    const mine = s.id === storedId;
    rt.print(`${s.id}${mine ? "  (ringhook's)" : ""}`);
    printDetails(s, publicUrl, false);
  }
  rt.print("");
  if (!storedId) rt.print("ringhook has no stored subscription id (run 'ringhook subscribe')");
  else if (!subs.some((s) => s.id === storedId)) {
    rt.print(`ringhook's stored id ${storedId} is not among them: it was deleted or has expired`);
  } else rt.print(`ringhook's subscription: ${storedId}`);
  const strays = subs.filter((s) =>
    publicUrl !== undefined && s.id !== storedId && s.deliveryMode?.address === publicUrl
  );
  if (strays.length > 0) {
    rt.print(
      `${strays.length} other subscription(s) point at RINGHOOK_PUBLIC_URL and deliver duplicates: ` +
        `delete with 'ringhook unsubscribe --id ID'`,
    );
  }
  return 0;
}

/** `unsubscribe`: deletes ringhook's subscription (or `--id`) and clears the stored id. */
export async function unsubscribeCommand(argv: string[]): Promise<number> {
  const a = parseCommand(argv, {
    id: { type: "string" },
    force: { type: "boolean" },
    json: { type: "boolean" },
  }, UNSUBSCRIBE_HELP);
  if (typeof a === "number") return a;
  if (a.id !== undefined && a.id.trim() === "") {
    rt.printErr(`--id needs a subscription id\n\n${UNSUBSCRIBE_HELP}`);
    return 2;
  }
  const ctx = setup(false);
  if (typeof ctx === "number") return ctx;
  const { config, client } = ctx;
  const storedId = await readSetting(config, SUBSCRIPTION_ID_SETTING);
  const id = a.id?.trim() ?? storedId;
  if (!id) {
    rt.printErr(
      "error: ringhook has no stored subscription id; pass --id ID (see 'ringhook subscriptions')",
    );
    return 1;
  }
  const ours = id === storedId;
  const run = async (store?: Store): Promise<number> => {
    const lease = store && ours ? await takeLease(store, !!a.force) : async () => {};
    if (lease === undefined) return 1;
    try {
      let alreadyGone = false;
      try {
        await client.deleteSubscription(id);
      } catch (e) {
        if (!isNotFound(e)) return failed(e);
        alreadyGone = true;
      }
      if (store && ours) await store.setSetting(SUBSCRIPTION_ID_SETTING, "");
      if (a.json) {
        rt.print(JSON.stringify({ id, deleted: !alreadyGone, alreadyGone, clearedStoredId: ours }));
      } else {
        rt.print(
          alreadyGone ? `subscription ${id} was already gone` : `deleted subscription ${id}`,
        );
        if (ours) rt.print("cleared ringhook's stored subscription id");
      }
      return 0;
    } finally {
      await lease();
    }
  };
  return ours ? await withStore(config, run) : await run();
}

// ---------------------------------------------------------------------------------------------

/** Loads the config and builds the client; prints one line per problem and returns 2. */
function setup(needPublicUrl: boolean): { config: Config; client: RingCentralClient } | number {
  const r = rt.configFromEnv();
  if (!r.ok) {
    for (const e of r.errors) rt.printErr(`config error: ${e}`);
    return 2;
  }
  const { server, clientId, clientSecret, jwt } = r.config.ringcentral;
  if (!clientId || !clientSecret || !jwt) {
    rt.printErr(
      "error: RingCentral credentials are missing: set RINGHOOK_RC_CLIENT_ID, " +
        "RINGHOOK_RC_CLIENT_SECRET and RINGHOOK_RC_JWT (see docs/connect-ringcentral.md)",
    );
    return 2;
  }
  if (needPublicUrl && !r.config.ringcentral.publicUrl) {
    rt.printErr(
      "error: RINGHOOK_PUBLIC_URL is not set: the public https URL of ringhook's /webhook, " +
        "which RingCentral calls",
    );
    return 2;
  }
  // A shorter 5xx/transport backoff than the server's (2+3+5 s instead of 82 s): someone waits.
  const client = new RingCentralClient({
    server,
    clientId,
    clientSecret,
    jwt,
    retryScheduleSec: [2, 3, 5],
  });
  return { config: r.config, client };
}

/** Opens the configured store (creating a SQLite database like `serve` does), runs `fn`, closes it. */
async function withStore(config: Config, fn: (store: Store) => Promise<number>): Promise<number> {
  let store: Store;
  try {
    if (!config.databaseUrl) rt.ensureDir(config.dataDir);
    store = await openStore(config);
  } catch (e) {
    rt.printErr(
      `error: cannot open the database ${storeLocation(config)}: ${(e as Error).message}`,
    );
    return 1;
  }
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

/** The token the server accepts, chosen as createApp chooses it; never printed, only its source. */
async function verificationToken(
  config: Config,
  store: Store,
): Promise<{ value?: string; source: string }> {
  if (config.verificationTokens.length > 0) {
    return {
      value: config.verificationTokens[0],
      source: "configured (RINGHOOK_VERIFICATION_TOKEN)",
    };
  }
  if (config.hmacSecrets.length === 0 && !config.allowUnverified) {
    return {
      value: await generatedToken(store),
      source: `generated, stored in ${storeLocation(config)} (print it with 'ringhook token')`,
    };
  }
  return { source: "none (no RINGHOOK_VERIFICATION_TOKEN)" };
}

/**
 * Takes the keeper lease so a running ringhook does not act at the same time. Returns the release
 * function, or undefined (after printing why) when another instance holds it and not `force`.
 */
async function takeLease(store: Store, force: boolean): Promise<(() => Promise<void>) | undefined> {
  const holder = `cli-${crypto.randomUUID()}`;
  if (await store.lease(KEEPER_LEASE, holder, CLI_LEASE_MS)) {
    return () => store.releaseLease(KEEPER_LEASE, holder).catch(() => {});
  }
  if (force) return async () => {};
  rt.printErr(
    "error: a running ringhook holds the keeper lease (rc.keeper) and manages the subscription " +
      "itself (or one stopped less than 3 x RINGHOOK_RC_CHECK_SECONDS ago); see " +
      "'ringhook subscriptions', or pass --force",
  );
  return undefined;
}

/** A subscription as the CLI shows it; addresses have their query values masked. */
function summary(s: SubscriptionInfo, storedId: string | undefined, publicUrl?: string) {
  return {
    id: s.id,
    status: s.status ?? "Active",
    transportType: s.deliveryMode?.transportType ?? null,
    address: s.deliveryMode?.address ? redactUrl(s.deliveryMode.address) : null,
    atPublicUrl: publicUrl !== undefined && s.deliveryMode?.address === publicUrl,
    ringhook: s.id === storedId,
    creationTime: s.creationTime ?? null,
    expirationTime: s.expirationTime ?? null,
    expiresIn: s.expiresIn ?? null,
    eventFilters: s.eventFilters ?? [],
    disabledFilters: s.disabledFilters ?? [],
    blacklistedAt: s.blacklistedData?.blacklistedAt ?? null,
    blacklistedReason: s.blacklistedData?.reason ?? null,
  };
}

function printDetails(s: SubscriptionInfo, publicUrl: string | undefined, withFilters = true) {
  const status = s.status ?? "Active";
  const bl = s.blacklistedData;
  rt.print(
    `  status:   ${status}` +
      (bl ? ` since ${bl.blacklistedAt ?? "?"}: ${bl.reason ?? "(no reason given)"}` : ""),
  );
  const address = s.deliveryMode?.address;
  rt.print(
    `  address:  ${address ? redactUrl(address) : `(${s.deliveryMode?.transportType ?? "none"})`}` +
      (address !== undefined && address === publicUrl ? "  (RINGHOOK_PUBLIC_URL)" : ""),
  );
  rt.print(`  expires:  ${s.expirationTime ?? "?"}${inDays(s.expirationTime)}`);
  const filters = s.eventFilters ?? [];
  if (withFilters) {
    filters.forEach((f, i) => rt.print(`  ${i === 0 ? "filters: " : "         "} ${f}`));
  } else rt.print(`  filters:  ${filters.length}`);
  for (const d of s.disabledFilters ?? []) {
    rt.print(
      `  disabled: ${d.filter}: ${[d.reason, d.message].filter(Boolean).join(": ") || "?"}`,
    );
  }
}

function inDays(iso?: string): string {
  const t = Date.parse(iso ?? "");
  if (Number.isNaN(t)) return "";
  const sec = Math.round((t - Date.now()) / 1000);
  if (sec < 0) return " (past)";
  if (sec < 3600) return ` (in ${sec} s)`;
  if (sec < 2 * 86400) return ` (in ${Math.round(sec / 3600)} h)`;
  return ` (in ${Math.round(sec / 86400)} days)`;
}

/** Prints a RingCentral (or other) failure on one line, with a hint; returns 1. */
function failed(e: unknown, publicUrl?: string): number {
  if (e instanceof RingCentralError) {
    let hint = "";
    const param = e.errors.find((x) => x.parameterName)?.parameterName;
    if (
      publicUrl &&
      (e.errorCode === "SUB-520" || e.errorCode === "SUB-525" ||
        (e.errorCode === "CMN-101" && param === "deliveryMode.address"))
    ) {
      hint = ` (RingCentral could not validate ${redactUrl(publicUrl)}: a ringhook must serve ` +
        "it, publicly reachable, and echo the Validation-Token; try 'ringhook simulate --url')";
    } else if (e.errorCode.startsWith("OAU-") || e.status === 401) {
      hint = " (check RINGHOOK_RC_CLIENT_ID, RINGHOOK_RC_CLIENT_SECRET and RINGHOOK_RC_JWT)";
    } else if (e.errorCode === "NETWORK") {
      hint = " (is RINGHOOK_RC_SERVER right and reachable?)";
    }
    rt.printErr(`error: RingCentral ${e.errorCode}: ${e.message}${hint}`);
    return 1;
  }
  rt.printErr(`error: ${e instanceof Error ? e.message : String(e)}`);
  return 1;
}
