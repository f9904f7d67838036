/**
 * Authenticity checks: the static Verification-Token RingCentral echoes, and an
 * optional HMAC-SHA256 over the raw request bytes (for a signing proxy in front).
 * Web Crypto only, so it runs on any runtime.
 */

const encoder = new TextEncoder();

/** Compares two strings in time that depends only on their lengths, never on where they differ. */
export function constantTimeEqual(a: string, b: string): boolean {
  const x = encoder.encode(a);
  const y = encoder.encode(b);
  const n = Math.max(x.length, y.length);
  let diff = x.length ^ y.length;
  for (let i = 0; i < n; i++) diff |= (x[i] ?? 0) ^ (y[i] ?? 0);
  return diff === 0;
}

/** True when `presented` equals any of `tokens`; every token is compared, so timing says nothing. */
export function matchesAnyToken(presented: string, tokens: readonly string[]): boolean {
  let ok = false;
  for (const t of tokens) ok = constantTimeEqual(presented, t) || ok;
  return ok;
}

/** Checks HMAC-SHA256 signatures against one or more secrets. */
export interface HmacVerifier {
  /** True when any signature in `header` is a valid HMAC of `body` under any secret. */
  verify(body: Uint8Array, header: string | null): Promise<boolean>;
}

/** Imports the secrets once and returns a verifier. */
export async function createHmacVerifier(secrets: readonly string[]): Promise<HmacVerifier> {
  const keys = await Promise.all(
    secrets.map((s) =>
      crypto.subtle.importKey(
        "raw",
        encoder.encode(s),
        { name: "HMAC", hash: "SHA-256" },
        false,
        ["verify", "sign"],
      )
    ),
  );
  return {
    async verify(body, header) {
      if (header === null) return false;
      const sigs = parseSignatures(header);
      let ok = false;
      for (const sig of sigs) {
        for (const key of keys) {
          // crypto.subtle.verify compares in constant time.
          if (await crypto.subtle.verify("HMAC", key, sig as BufferSource, body as BufferSource)) {
            ok = true;
          }
        }
      }
      return ok;
    },
  };
}

/** Signs bytes with HMAC-SHA256 and returns lower-case hex (for the simulator and tests). */
export async function hmacHex(secret: string, body: Uint8Array): Promise<string> {
  const key = await crypto.subtle.importKey(
    "raw",
    encoder.encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, body as BufferSource));
  return Array.from(mac, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Parses a signature header: one or more signatures separated by spaces, each hex
 * or base64 (standard or URL-safe), optionally prefixed `sha256=` or `v1,`.
 * Anything that does not decode to 32 bytes is ignored.
 */
export function parseSignatures(header: string): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let part of header.trim().split(/\s+/).slice(0, 8)) {
    part = part.replace(/^(sha256=|v1,)/i, "");
    const bytes = /^[0-9a-f]{64}$/i.test(part) ? fromHex(part) : fromBase64(part);
    if (bytes?.length === 32) out.push(bytes);
  }
  return out;
}

function fromHex(s: string): Uint8Array {
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(i * 2, i * 2 + 2), 16);
  return out;
}

function fromBase64(s: string): Uint8Array | undefined {
  if (!/^[A-Za-z0-9+/_-]{42,44}={0,2}$/.test(s)) return undefined;
  try {
    const std = s.replace(/-/g, "+").replace(/_/g, "/");
    const padded = std + "=".repeat((4 - (std.length % 4)) % 4);
    const bin = atob(padded);
    return Uint8Array.from(bin, (c) => c.charCodeAt(0));
  } catch {
    return undefined;
  }
}
