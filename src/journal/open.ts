/**
 * Chooses the storage engine from the configuration: PostgreSQL when
 * RINGHOOK_DATABASE_URL is set (shared by several instances), else SQLite in
 * the data directory (one instance, or several processes on one machine).
 */
import type { Config } from "../config.ts";
import { openSqliteStore } from "./remote.ts";
import type { Store } from "./types.ts";
import { redactUrl } from "../log.ts";

/** The SQLite database file for a config's data directory. */
export function sqlitePath(config: Config): string {
  return `${config.dataDir.replace(/\/+$/, "")}/ringhook.db`;
}

/** Where the store lives, safe to print: the SQLite path, or the URL without its password. */
export function storeLocation(config: Config): string {
  return config.databaseUrl ? redactUrl(config.databaseUrl) : sqlitePath(config);
}

/** Opens the configured store; `busyTimeoutMs` applies to SQLite's wait for another writer. */
export async function openStore(
  config: Config,
  opts: { busyTimeoutMs?: number } = {},
): Promise<Store> {
  if (config.databaseUrl) {
    // Loaded on demand: SQLite deployments never load the PostgreSQL driver.
    const { openPostgresStore } = await import("./postgres.ts");
    return openPostgresStore(config.databaseUrl);
  }
  return openSqliteStore(sqlitePath(config), config.durability, opts.busyTimeoutMs);
}
