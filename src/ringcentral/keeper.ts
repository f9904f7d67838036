/**
 * The subscription keeper: makes sure one healthy WebHook subscription points at ringhook, and
 * keeps it that way while serving: renews on the renewal reminder and on a schedule, checks its
 * status, and deletes and recreates it when RingCentral blacklists or drops it (reference §3, §4).
 * Only the holder of the `rc.keeper` lease acts, so several instances can share one store.
 */
import type { RingCentralConfig } from "../config.ts";
import type { Store } from "../journal/types.ts";
import { logger } from "../log.ts";
import { serializer } from "../serial.ts";
import type { Registry } from "../metrics.ts";
import { isRenewalReminder } from "../notification.ts";
import {
  type CreateSubscriptionRequest,
  isNotFound,
  RingCentralError,
  type SubscriptionInfo,
} from "./client.ts";

/** The setting that holds the subscription id. */
export const SUBSCRIPTION_ID_SETTING = "rc.subscription_id";
/** The lease name the active keeper holds. */
export const KEEPER_LEASE = "rc.keeper";

/** The part of the RingCentral client the keeper uses. */
export interface SubscriptionApi {
  createSubscription(
    body: CreateSubscriptionRequest,
    options?: { signal?: AbortSignal },
  ): Promise<SubscriptionInfo>;
  getSubscription(id: string, options?: { signal?: AbortSignal }): Promise<SubscriptionInfo>;
  renewSubscription(id: string, options?: { signal?: AbortSignal }): Promise<SubscriptionInfo>;
  updateSubscription(
    id: string,
    body: { eventFilters?: string[]; expiresIn?: number },
    options?: { signal?: AbortSignal },
  ): Promise<SubscriptionInfo>;
  deleteSubscription(id: string, options?: { signal?: AbortSignal }): Promise<void>;
  listSubscriptions(options?: { signal?: AbortSignal }): Promise<SubscriptionInfo[]>;
}

/** The part of the store the keeper uses. */
export type KeeperStore =
  & Pick<Store, "lease" | "getSetting" | "setSetting">
  & Partial<Pick<Store, "releaseLease">>;

/** What the subscription should look like. */
export type SubscriptionSpec =
  & Pick<RingCentralConfig, "eventFilters" | "expiresIn" | "reminderThreshold" | "reminderInterval">
  & {
    /** The public webhook URL RingCentral calls. */
    publicUrl: string;
    /** The Verification-Token, generated and stored before any create. */
    verificationToken?: string;
  };

/** What happened to the subscription, and RingCentral's reason where it gave one. */
export type TransitionKind =
  | "created"
  | "adopted"
  | "updated"
  | "renewed"
  | "recreated"
  | "deleted"
  | "blacklisted"
  | "gone"
  | "failed"
  | "lease_acquired"
  | "lease_lost";

/** One transition, passed to `onTransition` and counted in metrics. */
export interface Transition {
  kind: TransitionKind;
  subscriptionId?: string;
  /** RingCentral's reason (blacklistedData.reason, error code and message) or ringhook's own. */
  reason?: string;
  at: number;
}

/** The outcome of ensureSubscription. */
export interface EnsureResult {
  /** `adopted`: an existing subscription at the public URL was taken over and matched the spec. */
  action: "unchanged" | "adopted" | "created" | "updated" | "recreated";
  subscription: SubscriptionInfo;
  /** True when the subscription was found by address rather than by the stored id. */
  adopted?: boolean;
}

/** Options shared by ensureSubscription and the Keeper. */
export interface EnsureOptions {
  api: SubscriptionApi;
  store: KeeperStore;
  spec: SubscriptionSpec;
  onTransition?: (t: Transition) => void;
  now?: () => number;
  signal?: AbortSignal;
  /** Delete and create the subscription even when it matches (`subscribe --recreate`). */
  forceRecreate?: boolean;
  /**
   * Called right before each change at RingCentral (delete, update, create); false aborts.
   * The keeper renews and checks its lease here, so a pass that outlived its lease (a slow
   * API, a long backoff) cannot create a second subscription beside another instance's.
   */
  beforeChange?: () => Promise<boolean>;
}

/** Thrown when the lease was lost between checking and changing the subscription. */
class LeaseLostBeforeChange extends Error {
  constructor() {
    super("the keeper lease was lost before changing the subscription");
    this.name = "LeaseLost";
  }
}

/** The renewal reminder filter, or undefined when the threshold is 0. */
export function reminderFilter(threshold: number, interval: number): string | undefined {
  if (!(threshold > 0)) return undefined;
  return `/restapi/v1.0/subscription/~?threshold=${threshold}&interval=${interval}`;
}

/** The filters ringhook asks for: the configured ones plus the reminder filter. */
export function desiredFilters(spec: SubscriptionSpec): string[] {
  const r = reminderFilter(spec.reminderThreshold, spec.reminderInterval);
  return r ? [...spec.eventFilters, r] : [...spec.eventFilters];
}

/** True when two filter lists mean the same; `~` in a wanted filter matches a resolved id. */
export function filtersMatch(wanted: string[], actual: string[]): boolean {
  const patterns = wanted.map(filterPattern);
  return patterns.every((p) => actual.some((a) => p.test(a))) &&
    actual.every((a) => patterns.some((p) => p.test(a)));
}

function filterPattern(filter: string): RegExp {
  const q = filter.indexOf("?");
  const path = q < 0 ? filter : filter.slice(0, q);
  const query = q < 0 ? "" : filter.slice(q);
  // The renewal filter comes back literally; account/extension `~` come back as ids.
  const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const pathRe = path.split("/").map((seg) => (seg === "~" ? "(?:~|[^/?]+)" : esc(seg))).join("/");
  return new RegExp(`^${pathRe}${esc(query)}$`);
}

/**
 * Picks the subscription to adopt among this app's subscriptions: one whose WebHook address is the
 * public URL, preferring an Active one, then the one that expires last. Undefined when none.
 */
export function adoptable(
  subs: SubscriptionInfo[],
  publicUrl: string,
): SubscriptionInfo | undefined {
  const expires = (s: SubscriptionInfo) => Date.parse(s.expirationTime ?? "") || 0;
  return subs
    .filter((s) => s.deliveryMode?.address === publicUrl)
    .sort((a, b) =>
      Number((b.status ?? "Active") === "Active") - Number((a.status ?? "Active") === "Active") ||
      expires(b) - expires(a)
    )[0];
}

/**
 * Makes the stored subscription match the spec: creates it when there is none (or it is gone),
 * updates its filters when they differ, and deletes and recreates it when it is blacklisted or
 * points elsewhere. With no usable stored id, a subscription of this app already pointing at the
 * public URL is adopted rather than a second one created. The id is stored under
 * `rc.subscription_id`.
 */
export async function ensureSubscription(o: EnsureOptions): Promise<EnsureResult> {
  const { api, store, spec, signal } = o;
  const now = o.now ?? Date.now;
  const emit = (kind: TransitionKind, subscriptionId?: string, reason?: string) =>
    o.onTransition?.({ kind, subscriptionId, reason, at: now() });
  const wanted = desiredFilters(spec);
  const id = await store.getSetting(SUBSCRIPTION_ID_SETTING);

  let existing: SubscriptionInfo | undefined;
  let recreateReason: string | undefined;
  let adopted = false;
  if (id) {
    try {
      existing = await api.getSubscription(id, { signal });
    } catch (e) {
      if (!isNotFound(e)) throw e;
      recreateReason = describe(e);
      emit("gone", id, recreateReason);
    }
  }
  if (!existing) {
    // No stored id (a new data directory, a crash between create and store, another tool), or
    // the stored one is gone: take over a subscription already aimed at us instead of adding one.
    const all = await api.listSubscriptions({ signal });
    const found = adoptable(all, spec.publicUrl);
    if (found) {
      existing = found;
      adopted = true;
      await store.setSetting(SUBSCRIPTION_ID_SETTING, found.id);
      const others = all.filter((s) => s.deliveryMode?.address === spec.publicUrl).length - 1;
      emit(
        "adopted",
        found.id,
        `status ${found.status ?? "Active"}, same address` +
          (others > 0 ? `; ${others} more at this address (see \`ringhook subscriptions\`)` : ""),
      );
    }
  }

  if (existing) {
    const status = existing.status ?? "Active";
    const expires = Date.parse(existing.expirationTime ?? "");
    recreateReason = undefined;
    if (status !== "Active") {
      recreateReason = existing.blacklistedData?.reason ?? `status ${status}`;
      emit(status === "Blacklisted" ? "blacklisted" : "gone", existing.id, recreateReason);
    } else if (existing.deliveryMode?.address !== spec.publicUrl) {
      recreateReason = "the webhook address changed";
    } else if (!Number.isNaN(expires) && expires <= now()) {
      recreateReason = "the subscription expired";
      emit("gone", existing.id, recreateReason);
    } else if (o.forceRecreate) {
      recreateReason = "recreate requested";
    }
    if (recreateReason !== undefined) {
      await fence(o);
      try {
        await api.deleteSubscription(existing.id, { signal });
        emit("deleted", existing.id, recreateReason);
      } catch (e) {
        if (!isNotFound(e)) throw e;
      }
    } else if (!filtersMatch(wanted, existing.eventFilters ?? [])) {
      await fence(o);
      const updated = await api.updateSubscription(existing.id, {
        eventFilters: wanted,
        expiresIn: spec.expiresIn,
      }, { signal });
      emit("updated", updated.id, "the event filters changed");
      return { action: "updated", subscription: updated, adopted };
    } else {
      return { action: adopted ? "adopted" : "unchanged", subscription: existing, adopted };
    }
  }

  const body: CreateSubscriptionRequest = {
    eventFilters: wanted,
    deliveryMode: { transportType: "WebHook", address: spec.publicUrl },
    expiresIn: spec.expiresIn,
  };
  if (spec.verificationToken) body.deliveryMode.verificationToken = spec.verificationToken;
  let created: SubscriptionInfo;
  await fence(o);
  try {
    created = await api.createSubscription(body, { signal });
  } catch (e) {
    emit("failed", undefined, `create: ${describe(e)}`);
    throw e;
  }
  await store.setSetting(SUBSCRIPTION_ID_SETTING, created.id);
  const action = id || existing ? "recreated" : "created";
  emit(action, created.id, recreateReason);
  return { action, subscription: created, adopted };
}

async function fence(o: EnsureOptions): Promise<void> {
  if (o.beforeChange && !(await o.beforeChange())) throw new LeaseLostBeforeChange();
}

/** The Keeper's settings beyond ensureSubscription's. */
export interface KeeperOptions extends Omit<EnsureOptions, "signal"> {
  /** This instance's name in the lease. */
  instanceId: string;
  /** How often to check the subscription's status, ms. */
  checkIntervalMs?: number;
  /** The lease lifetime, ms (renewed every check); defaults to three check intervals. */
  leaseTtlMs?: number;
  /** Renew when less than this much lifetime is left, ms. */
  renewBeforeMs?: number;
  /** Counts transitions as `ringhook_rc_subscription_transitions_total{kind}`. */
  metrics?: Registry;
}

/** What one keeper pass did. */
export type TickResult = "standby" | EnsureResult["action"] | "renewed" | "failed";

/** Keeps the subscription alive while ringhook serves; start() it, stop() it. */
export class Keeper {
  readonly #o: KeeperOptions;
  readonly #now: () => number;
  readonly #checkMs: number;
  readonly #leaseMs: number;
  readonly #renewBeforeMs: number;
  readonly #log = logger("ringcentral", "keeper");
  readonly #count?: ReturnType<Registry["counter"]>;
  #abort = new AbortController();
  #timer?: ReturnType<typeof setTimeout>;
  #running = false;
  #leader = false;
  #current?: SubscriptionInfo;
  /** Serialises ticks and reminder renewals. */
  #exclusive = serializer();

  /** Creates a keeper; nothing happens until start() or tick(). */
  constructor(options: KeeperOptions) {
    this.#o = { ...options };
    this.#now = options.now ?? Date.now;
    this.#checkMs = options.checkIntervalMs ?? 5 * 60_000;
    this.#leaseMs = options.leaseTtlMs ?? 3 * this.#checkMs;
    const lifeMs = options.spec.expiresIn * 1000;
    this.#renewBeforeMs = options.renewBeforeMs ??
      Math.max(Math.min(lifeMs / 2, 7 * 86_400_000), 3 * this.#checkMs);
    this.#count = options.metrics?.counter(
      "ringhook_rc_subscription_transitions_total",
      "Subscription transitions (created, renewed, blacklisted, recreated...).",
    );
    options.metrics?.collect(
      "ringhook_rc_subscription_expires_seconds",
      "Seconds until the subscription expires, as last seen by the active keeper.",
      () => {
        const t = Date.parse(this.#current?.expirationTime ?? "");
        return Number.isNaN(t) ? [] : [{ value: (t - this.#now()) / 1000 }];
      },
    );
  }

  /** The subscription as last seen by this keeper. */
  get subscription(): SubscriptionInfo | undefined {
    return this.#current;
  }

  /**
   * Sets the verification token future creates and recreates use (after a secret reload). The
   * current subscription keeps its token until it is recreated: RingCentral cannot change it.
   */
  setVerificationToken(token: string | undefined): void {
    this.#o.spec = { ...this.#o.spec, verificationToken: token };
  }

  /** True while this instance holds the keeper lease. */
  get isLeader(): boolean {
    return this.#leader;
  }

  /** Runs a check now and then every checkIntervalMs until stop(). */
  start(): void {
    if (this.#running) return;
    this.#running = true;
    if (this.#abort.signal.aborted) this.#abort = new AbortController();
    const loop = async () => {
      this.#timer = undefined;
      await this.tick();
      if (this.#running) this.#timer = setTimeout(loop, this.#checkMs);
    };
    this.#timer = setTimeout(loop, 0);
  }

  /** Cancels the timer and any call in flight, waits for it to settle, and releases the lease. */
  async stop(): Promise<void> {
    this.#running = false;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#abort.abort(new DOMException("keeper stopped", "AbortError"));
    await this.#exclusive(() => Promise.resolve());
    if (this.#leader) {
      this.#leader = false;
      await this.#o.store.releaseLease?.(KEEPER_LEASE, this.#o.instanceId).catch(() => {});
    }
  }

  /** One pass: take the lease, check the subscription, recreate or renew it as needed. */
  tick(): Promise<TickResult> {
    return this.#exclusive(async () => {
      if (!(await this.#lease())) return "standby";
      try {
        const r = await ensureSubscription({
          ...this.#o,
          onTransition: (t) => this.#transition(t),
          signal: this.#abort.signal,
          beforeChange: () => this.#lease(),
        });
        this.#current = r.subscription;
        const disabled = r.subscription.disabledFilters ?? [];
        if (r.action !== "unchanged" && disabled.length > 0) {
          // Accepted but switched off, usually a missing app scope or user permission (§4.1).
          this.#log.warn("RingCentral disabled {count} event filter(s): {disabled}", {
            count: disabled.length,
            disabled: disabled.map((d) =>
              `${d.filter} (${[d.reason, d.message].filter(Boolean).join(": ") || "no reason"})`
            ),
          });
        }
        if (r.action !== "unchanged" && r.action !== "adopted") return r.action;
        const expires = Date.parse(r.subscription.expirationTime ?? "");
        if (!Number.isNaN(expires) && expires - this.#now() < this.#renewBeforeMs) {
          await this.#renew(r.subscription.id, "scheduled: less than the renewal margin left");
          return "renewed";
        }
        return r.action;
      } catch (e) {
        if (this.#abort.signal.aborted) return "failed";
        this.#log.error("Subscription check failed: {error}", { error: describe(e) });
        return "failed";
      }
    });
  }

  /** Renews on a renewal reminder for our subscription; true when it renewed. Never throws. */
  onNotification(n: { event: string; subscriptionId?: string }): Promise<boolean> {
    if (!isRenewalReminder(n.event)) return Promise.resolve(false);
    return this.#exclusive(async () => {
      try {
        const ours = this.#current?.id ??
          await this.#o.store.getSetting(SUBSCRIPTION_ID_SETTING);
        if (!ours || n.subscriptionId !== ours) {
          this.#log.info("Ignoring a renewal reminder for subscription {id}", {
            id: n.subscriptionId ?? "(none)",
          });
          return false;
        }
        if (!(await this.#lease())) return false; // the active keeper renews on its schedule
        await this.#renew(ours, "renewal reminder");
        return true;
      } catch (e) {
        if (isNotFound(e)) void this.tick(); // gone: recreate now rather than at the next check
        else if (!this.#abort.signal.aborted) {
          this.#log.error("Renewing on the reminder failed: {error}", { error: describe(e) });
        }
        return false;
      }
    });
  }

  async #renew(id: string, why: string): Promise<void> {
    try {
      this.#current = await this.#o.api.renewSubscription(id, { signal: this.#abort.signal });
      this.#transition({ kind: "renewed", subscriptionId: id, reason: why, at: this.#now() });
    } catch (e) {
      if (!this.#abort.signal.aborted) {
        this.#transition({
          kind: "failed",
          subscriptionId: id,
          reason: `renew: ${describe(e)}`,
          at: this.#now(),
        });
      }
      if (isNotFound(e)) this.#current = undefined;
      throw e;
    }
  }

  async #lease(): Promise<boolean> {
    let held: boolean;
    try {
      held = await this.#o.store.lease(KEEPER_LEASE, this.#o.instanceId, this.#leaseMs);
    } catch (e) {
      this.#log.error("Taking the keeper lease failed: {error}", { error: describe(e) });
      held = false;
    }
    if (held !== this.#leader) {
      this.#leader = held;
      this.#transition({
        kind: held ? "lease_acquired" : "lease_lost",
        reason: `instance ${this.#o.instanceId}`,
        at: this.#now(),
      });
      if (!held) this.#current = undefined;
    }
    return held;
  }

  #transition(t: Transition): void {
    this.#count?.inc({ kind: t.kind });
    const props = { kind: t.kind, subscriptionId: t.subscriptionId ?? "", reason: t.reason ?? "" };
    if (t.kind === "failed" || t.kind === "blacklisted" || t.kind === "gone") {
      this.#log.warn("Subscription {kind} {subscriptionId}: {reason}", props);
    } else {
      this.#log.info("Subscription {kind} {subscriptionId}: {reason}", props);
    }
    try {
      this.#o.onTransition?.(t);
    } catch {
      // a callback's failure must not stop the keeper
    }
  }
}

function describe(e: unknown): string {
  if (e instanceof RingCentralError) return `${e.errorCode} ${e.message}`;
  if (e instanceof Error) return `${e.name}: ${e.message}`;
  return String(e);
}
