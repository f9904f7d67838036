/**
 * The test PostgreSQL: its URL, the explicit opt-out, and an admin connection that fails
 * loudly (a silent skip would hide a broken engine).
 */
import postgres from "postgres";
import { redactUrl } from "../src/log.ts";

/** The test database (CI starts PostgreSQL on 127.0.0.1:5432, trust auth, database test). */
export const PG_URL = Deno.env.get("RINGHOOK_TEST_DATABASE_URL") ??
  "postgres://postgres@127.0.0.1:5432/test";

/** True only when RINGHOOK_TEST_SKIP_PG=1 says to skip the PostgreSQL tests on purpose. */
export const SKIP_PG = Deno.env.get("RINGHOOK_TEST_SKIP_PG") === "1";

/** A connection for setting up and inspecting test schemas; throws a clear error when down. */
export async function pgAdmin(max = 3): Promise<ReturnType<typeof postgres>> {
  const admin = postgres(PG_URL, { max, connect_timeout: 5, onnotice: () => {} });
  try {
    await admin`SELECT 1`;
  } catch (e) {
    await admin.end({ timeout: 1 }).catch(() => {});
    throw new Error(
      `PostgreSQL is unreachable at ${redactUrl(PG_URL)} (${(e as Error).message}). ` +
        "Start it (CI does) or point RINGHOOK_TEST_DATABASE_URL at one; " +
        "set RINGHOOK_TEST_SKIP_PG=1 only to skip the PostgreSQL tests on purpose.",
    );
  }
  return admin;
}

/** A unique name for a schema or role. */
export function freshName(prefix: string): string {
  return `${prefix}_${crypto.randomUUID().replace(/-/g, "").slice(0, 16)}`;
}
