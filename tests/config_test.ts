/** Configuration from the environment: defaults, validation, secrets from files and credentials. */
import assert from "node:assert/strict";
import { loadConfig, secretsOf } from "../src/config.ts";

const noFiles = (p: string): string => {
  throw new Deno.errors.NotFound(p);
};

Deno.test("defaults", () => {
  const r = loadConfig({}, noFiles);
  assert.ok(r.ok);
  const c = r.config;
  assert.equal(c.port, 8080);
  assert.equal(c.hostname, "0.0.0.0");
  assert.deepEqual(c.verificationTokens, []);
  assert.equal(c.maxBodyBytes, 1048576);
  assert.equal(c.logLevel, "info");
  assert.equal(c.logFormat, "json");
  assert.equal(c.dataDir, "./data");
  assert.equal(c.allowUnverified, false);
  assert.equal(c.durability, "full");
  assert.equal(c.retentionDays, 30);
  assert.equal(c.hmacHeader, "X-Hub-Signature-256");
  assert.equal(c.ringcentral.server, "https://platform.ringcentral.com");
  assert.equal(c.adminPort, undefined);
});

Deno.test("PORT is the fallback for RINGHOOK_PORT; STATE_DIRECTORY for the data dir", () => {
  const a = loadConfig({ PORT: "9000", STATE_DIRECTORY: "/var/lib/ringhook" }, noFiles);
  assert.ok(a.ok);
  assert.equal(a.config.port, 9000);
  assert.equal(a.config.dataDir, "/var/lib/ringhook");
  const b = loadConfig({ PORT: "9000", RINGHOOK_PORT: "9100", RINGHOOK_DATA_DIR: "/d" }, noFiles);
  assert.ok(b.ok);
  assert.equal(b.config.port, 9100);
  assert.equal(b.config.dataDir, "/d");
});

Deno.test("several tokens and secrets, comma-separated, trimmed", () => {
  const r = loadConfig({
    RINGHOOK_VERIFICATION_TOKEN: " old-token , new-token ,",
    RINGHOOK_HMAC_SECRET: "a-secret,b-secret",
  }, noFiles);
  assert.ok(r.ok);
  assert.deepEqual(r.config.verificationTokens, ["old-token", "new-token"]);
  assert.deepEqual(r.config.hmacSecrets, ["a-secret", "b-secret"]);
  assert.deepEqual(secretsOf(r.config).sort(), ["a-secret", "b-secret", "new-token", "old-token"]);
});

Deno.test("secrets from NAME_FILE and from systemd's CREDENTIALS_DIRECTORY; env wins", () => {
  const files: Record<string, string> = {
    "/run/secrets/token": "file-token\n",
    "/run/credentials/ringhook.service/RINGHOOK_HMAC_SECRET": "cred-secret\n",
    "/run/credentials/ringhook.service/RINGHOOK_ADMIN_TOKEN": "cred-admin",
  };
  const read = (p: string) => {
    if (p in files) return files[p];
    throw new Deno.errors.NotFound(p);
  };
  const r = loadConfig({
    RINGHOOK_VERIFICATION_TOKEN_FILE: "/run/secrets/token",
    CREDENTIALS_DIRECTORY: "/run/credentials/ringhook.service",
    RINGHOOK_ADMIN_TOKEN: "env-admin",
  }, read);
  assert.ok(r.ok, JSON.stringify(r));
  assert.deepEqual(r.config.verificationTokens, ["file-token"]);
  assert.deepEqual(r.config.hmacSecrets, ["cred-secret"]);
  assert.deepEqual(r.config.adminTokens, ["env-admin"]);
});

Deno.test("every problem is reported, one line each", () => {
  const r = loadConfig({
    RINGHOOK_PORT: "70000",
    RINGHOOK_MAX_BODY_BYTES: "1k",
    RINGHOOK_LOG_LEVEL: "loud",
    RINGHOOK_LOG_FORMAT: "xml",
    RINGHOOK_ALLOW_UNVERIFIED: "maybe",
    RINGHOOK_DURABILITY: "sometimes",
    RINGHOOK_HMAC_HEADER: "bad header",
    RINGHOOK_VERIFICATION_TOKEN: "has space",
    RINGHOOK_RC_CLIENT_ID: "only-id",
    RINGHOOK_PUBLIC_URL: "ftp://x",
    RINGHOOK_VERIFICATION_TOKEN_FILE: "/x",
  }, noFiles);
  assert.ok(!r.ok);
  const text = r.errors.join("\n");
  for (
    const v of [
      "RINGHOOK_PORT",
      "RINGHOOK_MAX_BODY_BYTES",
      "RINGHOOK_LOG_LEVEL",
      "RINGHOOK_LOG_FORMAT",
      "RINGHOOK_ALLOW_UNVERIFIED",
      "RINGHOOK_DURABILITY",
      "RINGHOOK_HMAC_HEADER",
      "RINGHOOK_VERIFICATION_TOKEN",
      "RINGHOOK_RC_CLIENT_ID",
      "RINGHOOK_PUBLIC_URL",
    ]
  ) assert.match(text, new RegExp(`^${v}`, "m"), `no line for ${v}`);
  assert.equal(r.errors.length, 10);
});

Deno.test("a named _FILE that cannot be read is an error", () => {
  const r = loadConfig({ RINGHOOK_HMAC_SECRET_FILE: "/missing" }, noFiles);
  assert.ok(!r.ok);
  assert.match(r.errors[0], /RINGHOOK_HMAC_SECRET_FILE: cannot read \/missing/);
});
