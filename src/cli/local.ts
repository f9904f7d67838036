/**
 * What CLI commands read from the configured store on this machine: the
 * generated verification token and other settings, without creating a
 * database that does not exist yet.
 */
import type { Config } from "../config.ts";
import { GENERATED_TOKEN_KEY } from "../app.ts";
import { openStore, sqlitePath } from "../journal/open.ts";
import * as rt from "../runtime.ts";

/** A setting from the configured store; undefined when there is no store (or no such setting). */
export async function readSetting(config: Config, key: string): Promise<string | undefined> {
  if (!config.databaseUrl && !rt.exists(sqlitePath(config))) return undefined;
  try {
    const store = await openStore(config, { busyTimeoutMs: 5000 });
    try {
      return (await store.getSetting(key)) || undefined;
    } finally {
      await store.close();
    }
  } catch {
    return undefined;
  }
}

/** The first configured verification token, else the generated one in the store, if any. */
export async function localToken(): Promise<string | undefined> {
  const c = rt.configFromEnv();
  if (!c.ok) return undefined;
  if (c.config.verificationTokens.length > 0) return c.config.verificationTokens[0];
  return await readSetting(c.config, GENERATED_TOKEN_KEY);
}
