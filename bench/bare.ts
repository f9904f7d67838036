/**
 * The baseline for bench.ts: a bare Deno.serve that reads the body and answers
 * 200 {"status":"received"}, nothing else. Listens on 127.0.0.1:$BARE_PORT (0 = any)
 * and prints one JSON line with the port.
 *
 * Run: deno run --allow-net --allow-env=BARE_PORT bench/bare.ts
 */

const BODY = '{"status":"received"}';

if (import.meta.main) {
  const port = Number(Deno.env.get("BARE_PORT") ?? "0");
  const server = Deno.serve({
    port,
    hostname: "127.0.0.1",
    onListen: (addr) => console.log(JSON.stringify({ msg: "bare listening", port: addr.port })),
  }, async (req) => {
    await req.arrayBuffer();
    return new Response(BODY, { status: 200, headers: { "Content-Type": "application/json" } });
  });
  const stop = () => server.shutdown();
  Deno.addSignalListener("SIGTERM", stop);
  Deno.addSignalListener("SIGINT", stop);
  await server.finished;
}
