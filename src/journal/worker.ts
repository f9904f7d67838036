/**
 * The journal worker: owns the SQLite connection and answers Store calls sent
 * by remote.ts, so SQL and fsync run beside the HTTP thread, never on it.
 */
import { SqliteEngine, type SqliteOptions } from "./sqlite.ts";

interface Port {
  onmessage: ((e: MessageEvent) => void) | null;
  postMessage(message: unknown): void;
}

/** Answers Store calls on `port` with one engine, opened by the first "open" message. */
function serveEngine(port: Port): void {
  let engine: SqliteEngine | undefined;
  port.onmessage = (e: MessageEvent) => {
    const { id, method, args } = e.data as { id: number; method: string; args: unknown[] };
    try {
      let value: unknown;
      if (method === "open") {
        engine = new SqliteEngine(args[0] as SqliteOptions);
      } else if (engine === undefined) {
        throw new Error("the journal is not open");
      } else {
        const fn = (engine as unknown as Record<string, (...a: unknown[]) => unknown>)[method];
        if (typeof fn !== "function") throw new Error(`unknown method ${method}`);
        value = fn.apply(engine, args);
        if (method === "close") engine = undefined;
      }
      port.postMessage({ id, ok: true, value });
    } catch (err) {
      const x = err as { name?: string; message?: string; code?: string; errcode?: number };
      port.postMessage({
        id,
        ok: false,
        error: {
          name: x.name,
          message: String(x.message ?? err),
          code: x.code,
          errcode: x.errcode,
        },
      });
    }
  };
}

serveEngine(globalThis as unknown as Port);
