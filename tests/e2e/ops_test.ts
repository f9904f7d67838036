/** Operations: SIGHUP secret reload on a live connection; OpenTelemetry spans over OTLP. */
import assert from "node:assert/strict";
import { fixture, startServer } from "../helpers.ts";

const event = fixture("telephony-inbound-answered-03-alice-ringing-proceeding.json");

/** One keep-alive HTTP/1.1 connection that sends requests one after another. */
async function connection(port: number) {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const reader = conn.readable.getReader();
  let buf = "";
  const dec = new TextDecoder();
  return {
    async post(body: string, token: string): Promise<number> {
      const bytes = new TextEncoder().encode(body);
      const head = `POST /webhook HTTP/1.1\r\nHost: x\r\nVerification-Token: ${token}\r\n` +
        `Content-Length: ${bytes.length}\r\n\r\n`;
      const w = conn.writable.getWriter();
      await w.write(new Uint8Array([...new TextEncoder().encode(head), ...bytes]));
      w.releaseLock();
      while (true) {
        const end = buf.indexOf("\r\n\r\n");
        if (end >= 0) {
          const len = Number(buf.slice(0, end).match(/content-length: (\d+)/i)?.[1] ?? 0);
          if (buf.length >= end + 4 + len) {
            const status = Number(buf.slice(9, 12));
            buf = buf.slice(end + 4 + len);
            return status;
          }
        }
        const { value, done } = await reader.read();
        if (done) throw new Error("connection closed");
        buf += dec.decode(value);
      }
    },
    close() {
      reader.releaseLock();
      conn.close();
    },
  };
}

Deno.test("SIGHUP reloads rotated secrets from files without dropping a connection", async () => {
  const dir = await Deno.makeTempDir();
  const tokenFile = `${dir}/token`;
  const adminFile = `${dir}/admin`;
  await Deno.writeTextFile(tokenFile, "old-token-aaaa\n");
  await Deno.writeTextFile(adminFile, "admin-one-1111\n");
  const s = await startServer({
    RINGHOOK_VERIFICATION_TOKEN_FILE: tokenFile,
    RINGHOOK_ADMIN_TOKEN_FILE: adminFile,
    // At debug the first bytes of each body are logged: a body that carries the rotated
    // token shows whether the reloaded token joined the scrub list.
    RINGHOOK_LOG_LEVEL: "debug",
  });
  const admin = (token: string) =>
    fetch(`${s.url}/api/v1/status`, { headers: { Authorization: `Bearer ${token}` } }).then(
      async (r) => (await r.body?.cancel(), r.status),
    );
  const c = await connection(s.port);
  try {
    const body = (uuid: string) => JSON.stringify({ ...event, uuid });
    assert.equal(await c.post(body("hup-1"), "old-token-aaaa"), 200);
    assert.equal(await admin("admin-one-1111"), 200);
    // Rotation, step 1: both tokens; the admin token changes too.
    await Deno.writeTextFile(tokenFile, "old-token-aaaa,new-token-bbbb\n");
    await Deno.writeTextFile(adminFile, "admin-two-2222\n");
    s.proc.kill("SIGHUP");
    await s.waitFor(/Secrets reloaded: 2 verification token/);
    assert.equal(await c.post(body("hup-2"), "new-token-bbbb"), 200);
    assert.equal(await c.post(body("echo-new-token-bbbb"), "new-token-bbbb"), 200);
    assert.equal(await c.post(body("hup-3"), "old-token-aaaa"), 200);
    assert.equal(await admin("admin-one-1111"), 401);
    assert.equal(await admin("admin-two-2222"), 200);
    // Step 2: only the new one; the same connection is still open.
    await Deno.writeTextFile(tokenFile, "new-token-bbbb\n");
    s.proc.kill("SIGHUP");
    await s.waitFor(/Secrets reloaded: 1 verification token/);
    assert.equal(await c.post(body("hup-4"), "old-token-aaaa"), 401);
    assert.equal(await c.post(body("hup-5"), "new-token-bbbb"), 200);
    // A broken reload keeps the old secrets and says why.
    await Deno.remove(tokenFile);
    s.proc.kill("SIGHUP");
    await s.waitFor(/Reload refused/);
    assert.equal(await c.post(body("hup-6"), "new-token-bbbb"), 200);
    const out = s.lines.join("\n");
    assert.match(out, /echo-\[redacted\]/, "the body was logged, the rotated token scrubbed");
    assert.ok(!out.includes("new-token-bbbb"), "the token never reaches the log");
  } finally {
    c.close();
    await s.stop();
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(s.dataDir, { recursive: true });
  }
});

Deno.test("OTEL_DENO=true exports ringhook's spans (accept, journal write, call tracking) over OTLP", async () => {
  const spans: string[] = [];
  const collector = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, async (req) => {
    const body = await req.text();
    if (new URL(req.url).pathname === "/v1/traces") {
      for (const m of body.matchAll(/"name":\s*"([^"]+)"/g)) spans.push(m[1]);
    }
    return new Response("{}", { headers: { "Content-Type": "application/json" } });
  });
  const s = await startServer({
    RINGHOOK_VERIFICATION_TOKEN: "otel-token",
    OTEL_DENO: "true",
    OTEL_SERVICE_NAME: "ringhook",
    OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${collector.addr.port}`,
    OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
    OTEL_BSP_SCHEDULE_DELAY: "200",
  });
  try {
    const res = await fetch(`${s.url}/webhook`, {
      method: "POST",
      headers: { "Verification-Token": "otel-token" },
      body: JSON.stringify(event),
    });
    assert.equal(res.status, 200);
    await res.body?.cancel();
    const t0 = Date.now();
    const want = ["ringhook.accept", "ringhook.journal.write", "ringhook.calls.track"];
    while (!want.every((n) => spans.includes(n)) && Date.now() - t0 < 20_000) {
      await new Promise((r) => setTimeout(r, 200));
    }
    for (const n of want) assert.ok(spans.includes(n), `span ${n} exported; got ${spans}`);
    assert.ok(spans.some((n) => n === "POST"), "Deno.serve's own request span is there too");
  } finally {
    await s.stop();
    await collector.shutdown();
    await Deno.remove(s.dataDir, { recursive: true });
  }
});
