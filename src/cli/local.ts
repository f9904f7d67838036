/**
 * Reads the local ringhook's database for CLI commands that run on the same
 * machine (token, simulate's default token).
 */
import { DatabaseSync } from "node:sqlite";
import { GENERATED_TOKEN_KEY } from "../app.ts";
import * as rt from "../runtime.ts";

/** The path of the SQLite database for the configured data directory. */
export function localDbPath(): string | undefined {
  const c = rt.configFromEnv();
  if (!c.ok) return undefined;
  return `${c.config.dataDir.replace(/\/+$/, "")}/ringhook.db`;
}

/** The first configured token, else the generated one in the local database, if any. */
export function localToken(): string | undefined {
  const c = rt.configFromEnv();
  if (c.ok && c.config.verificationTokens.length > 0) return c.config.verificationTokens[0];
  const path = localDbPath();
  if (!path || !rt.exists(path)) return undefined;
  try {
    const db = new DatabaseSync(path, { readOnly: true });
    try {
      const row = db.prepare("SELECT value FROM settings WHERE key = ?").get(GENERATED_TOKEN_KEY) as
        | { value: string }
        | undefined;
      return row?.value;
    } finally {
      db.close();
    }
  } catch {
    return undefined;
  }
}
