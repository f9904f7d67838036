/** Verification primitives: constant-time comparison, token lists, HMAC parsing. */
import assert from "node:assert/strict";
import {
  constantTimeEqual,
  createHmacVerifier,
  hmacHex,
  matchesAnyToken,
  parseSignatures,
} from "../src/verify.ts";

Deno.test("constantTimeEqual", () => {
  assert.equal(constantTimeEqual("abc", "abc"), true);
  assert.equal(constantTimeEqual("abc", "abd"), false);
  assert.equal(constantTimeEqual("abc", "abcd"), false);
  assert.equal(constantTimeEqual("", ""), true);
  assert.equal(constantTimeEqual("", "a"), false);
  assert.equal(constantTimeEqual("é", "e"), false);
});

Deno.test("matchesAnyToken checks every configured token", () => {
  assert.equal(matchesAnyToken("b", ["a", "b", "c"]), true);
  assert.equal(matchesAnyToken("d", ["a", "b", "c"]), false);
  assert.equal(matchesAnyToken("a", []), false);
});

Deno.test("parseSignatures: hex, base64, base64url, prefixes, several, junk", () => {
  const hex = "a".repeat(64);
  const bytes = new Uint8Array(32).fill(0xaa);
  const b64 = btoa(String.fromCharCode(...bytes));
  assert.deepEqual(parseSignatures(hex), [bytes]);
  assert.deepEqual(parseSignatures(`sha256=${hex}`), [bytes]);
  assert.deepEqual(parseSignatures(`SHA256=${hex.toUpperCase()}`), [bytes]);
  assert.deepEqual(parseSignatures(b64), [bytes]);
  assert.deepEqual(parseSignatures(`v1,${b64}`), [bytes]);
  assert.deepEqual(parseSignatures(b64.replace(/=+$/, "")), [bytes]);
  assert.equal(parseSignatures(`${hex} v1,${b64}`).length, 2);
  assert.deepEqual(parseSignatures("sha256=abc"), []);
  assert.deepEqual(parseSignatures(""), []);
  assert.deepEqual(parseSignatures("!".repeat(64)), []);
});

Deno.test("HMAC verifier: any secret, any signature; raw bytes only", async () => {
  const v = await createHmacVerifier(["one", "two"]);
  const body = new TextEncoder().encode('{"a":1}');
  const good = await hmacHex("two", body);
  assert.equal(await v.verify(body, good), true);
  assert.equal(await v.verify(body, `sha256=${"0".repeat(64)} sha256=${good}`), true);
  assert.equal(await v.verify(body, await hmacHex("three", body)), false);
  assert.equal(await v.verify(new TextEncoder().encode('{"a": 1}'), good), false);
  assert.equal(await v.verify(body, null), false);
  // A known vector (RFC 4231 test case 2).
  assert.equal(
    await hmacHex("Jefe", new TextEncoder().encode("what do ya want for nothing?")),
    "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
  );
});
