/**
 * A Store whose SQLite engine runs in a worker thread: each call is one message,
 * each answer one message, so the HTTP thread never blocks on the database.
 */
import type { Durability } from "../config.ts";
import type { Store } from "./types.ts";

/** An error raised by the engine inside the worker. */
export class EngineError extends Error {
  /** SQLite's error code name (SQLITE_FULL, SQLITE_BUSY...), when known. */
  code?: string;
  /** Builds the error from what the worker sent back. */
  constructor(e: { name?: string; message: string; code?: string }) {
    super(e.message);
    // Keep the engine's own kind (LeaseLost, ...) so callers can tell errors apart.
    this.name = e.name && e.name !== "Error" ? e.name : "EngineError";
    this.code = e.code;
  }
}

/** Opens the SQLite store at `path` in a worker. */
export async function openSqliteStore(
  path: string,
  durability: Durability,
  busyTimeoutMs = 1000,
): Promise<Store> {
  const worker = new Worker(new URL("./worker.ts", import.meta.url), { type: "module" });
  const waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  let next = 1;
  let closed = false;
  worker.onmessage = (e: MessageEvent) => {
    const { id, ok, value, error } = e.data;
    const w = waiting.get(id);
    if (!w) return;
    waiting.delete(id);
    if (ok) w.resolve(value);
    else w.reject(new EngineError(error));
  };
  worker.onerror = (e: ErrorEvent) => {
    e.preventDefault();
    for (const w of waiting.values()) w.reject(new EngineError({ message: e.message }));
    waiting.clear();
  };
  const call = <T>(method: string, ...args: unknown[]): Promise<T> => {
    if (closed) return Promise.reject(new EngineError({ message: "the store is closed" }));
    return new Promise<T>((resolve, reject) => {
      const id = next++;
      waiting.set(id, { resolve: resolve as (v: unknown) => void, reject });
      worker.postMessage({ id, method, args });
    });
  };
  try {
    await call("open", { path, durability, busyTimeoutMs });
  } catch (e) {
    worker.terminate();
    throw e;
  }
  const method = (name: keyof Store) => (...args: unknown[]) => call(name, ...args);
  return {
    append: method("append"),
    readAfter: method("readAfter"),
    queryEvents: method("queryEvents"),
    lastSeq: method("lastSeq"),
    getCursor: method("getCursor"),
    commit: method("commit"),
    getCall: method("getCall"),
    getCalls: method("getCalls"),
    queryCalls: method("queryCalls"),
    staleCalls: method("staleCalls"),
    readTopic: method("readTopic"),
    lease: method("lease"),
    releaseLease: method("releaseLease"),
    getSetting: method("getSetting"),
    setSetting: method("setSetting"),
    initSetting: method("initSetting"),
    prune: method("prune"),
    stats: method("stats"),
    probe: method("probe"),
    async close() {
      if (closed) return;
      try {
        await call("close");
      } finally {
        closed = true;
        worker.terminate();
      }
    },
  } as Store;
}
