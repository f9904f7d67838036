/** Crash safety and failure modes of the journal, through a real ringhook process. */
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { type Child, crashAndRetry, fixture, startServer } from "../helpers.ts";

const TOKEN = "durability-token-1";
const template = fixture("telephony-inbound-answered-04-alice-answered.json");

function post(url: string, uuid: string): Promise<Response> {
  return fetch(`${url}/webhook`, {
    method: "POST",
    headers: { "Verification-Token": TOKEN, "Content-Type": "application/json" },
    body: JSON.stringify({ ...template, uuid }),
  });
}

function storedUuids(dataDir: string): Map<string, number> {
  const db = new DatabaseSync(`${dataDir}/ringhook.db`, { readOnly: true });
  try {
    const rows = db.prepare("SELECT uuid, count(*) AS n FROM events GROUP BY uuid").all() as Array<
      { uuid: string; n: number }
    >;
    return new Map(rows.map((r) => [r.uuid, Number(r.n)]));
  } finally {
    db.close();
  }
}

Deno.test("crash: SIGKILL mid-stream loses no acked event; client retries dedupe", async () => {
  const first = await startServer({ RINGHOOK_VERIFICATION_TOKEN: TOKEN });
  const dataDir = first.dataDir;
  let second: Child | undefined;
  try {
    second = await crashAndRetry({
      first,
      startSecond: () => startServer({ RINGHOOK_VERIFICATION_TOKEN: TOKEN }, { dataDir }),
      post: async (url, uuid) => {
        const res = await post(url, uuid);
        const body = await res.json();
        return res.status === 200 ? body.status : `${res.status}`;
      },
      stored: () => storedUuids(dataDir),
    });
  } finally {
    await second?.stop();
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("e2e: the same uuid sent 50 times at once stores one event, all answered 200", async () => {
  const s = await startServer({ RINGHOOK_VERIFICATION_TOKEN: TOKEN });
  try {
    const uuid = `dup-${crypto.randomUUID()}`;
    const answers = await Promise.all(
      Array.from({ length: 50 }, async () => {
        const res = await post(s.url, uuid);
        return [res.status, (await res.json()).status] as const;
      }),
    );
    assert.ok(answers.every(([st]) => st === 200));
    assert.equal(answers.filter(([, b]) => b === "received").length, 1);
    assert.equal(answers.filter(([, b]) => b === "duplicate").length, 49);
    assert.equal(storedUuids(s.dataDir).get(uuid), 1);
    const metrics = await fetch(`${s.url}/metrics`).then((r) => r.text());
    assert.match(metrics, /ringhook_events_total\{outcome="duplicate"\} 49/);
  } finally {
    await s.stop();
    await Deno.remove(s.dataDir, { recursive: true });
  }
});

/** Can this process mount a tmpfs (root in CI and here)? */
function canMount(): boolean {
  try {
    const dir = Deno.makeTempDirSync();
    const ok = new Deno.Command("mount", { args: ["-t", "tmpfs", "-o", "size=1m", "tmpfs", dir] })
      .outputSync().success;
    if (ok) new Deno.Command("umount", { args: [dir] }).outputSync();
    Deno.removeSync(dir);
    return ok;
  } catch {
    return false;
  }
}

function sh(cmd: string, ...args: string[]) {
  const out = new Deno.Command(cmd, { args, stderr: "piped" }).outputSync();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
}

Deno.test({
  name: "e2e: a full disk mid-run gives 503 and not-ready, then recovers by itself",
  ignore: !canMount(),
  fn: async () => {
    const dataDir = await Deno.makeTempDir({ prefix: "ringhook-tmpfs-" });
    sh("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", dataDir);
    const s = await startServer({ RINGHOOK_VERIFICATION_TOKEN: TOKEN }, { dataDir });
    try {
      const ok = async (uuid: string) => {
        const res = await post(s.url, uuid);
        return [res.status, (await res.json()).status];
      };
      assert.deepEqual(await ok("disk-1"), [200, "received"]);

      // Disk full: fill the file system, then events get 503, handshakes still work.
      const filler = `${dataDir}/filler`;
      try {
        sh("dd", "if=/dev/zero", `of=${filler}`, "bs=64k", "count=100");
      } catch {
        // dd stops with ENOSPC: that is the point.
      }
      let refused = 0;
      for (let i = 0; i < 40; i++) {
        const res = await post(s.url, `full-${i}-`);
        await res.body?.cancel();
        if (res.status === 503) {
          refused = i + 1;
          break;
        }
      }
      assert.ok(refused > 0, "an event was refused with 503 on a full disk");
      const ready = await fetch(`${s.url}/readyz`);
      assert.equal(ready.status, 503);
      assert.equal((await ready.json()).status, "not_ready");
      const hs = await fetch(`${s.url}/webhook`, {
        method: "POST",
        headers: { "Validation-Token": "still-works" },
      });
      assert.equal(hs.status, 200);
      assert.equal(hs.headers.get("validation-token"), "still-works");
      await Deno.remove(filler);
      await waitReady(s.url);
      assert.deepEqual(await ok("disk-2"), [200, "received"]);

      const stored = storedUuids(dataDir);
      assert.ok(stored.has("disk-1") && stored.has("disk-2"));
      const refusedUuid = `full-${refused - 1}-`;
      assert.ok(!stored.has(refusedUuid), "the refused event was not stored");
    } finally {
      await s.stop();
      sh("umount", dataDir);
      await Deno.remove(dataDir, { recursive: true });
    }
  },
});

async function waitReady(url: string) {
  const t0 = Date.now();
  while (Date.now() - t0 < 10_000) {
    const r = await fetch(`${url}/readyz`);
    await r.body?.cancel();
    if (r.status === 200) return;
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new Error("ringhook did not become ready again");
}
