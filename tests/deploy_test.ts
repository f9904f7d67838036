/**
 * Deployment artefacts: the `compile` task (same permissions as `start`, the journal worker
 * embedded), the systemd unit (systemd-analyze verify), the Dockerfile's invariants, and the
 * `healthcheck` command against a real server.
 */
import assert from "node:assert/strict";
import { loadConfig, SECRET_VARS } from "../src/config.ts";
import { ROOT, runMain, serveFlags, startServer } from "./helpers.ts";

/** Fails unless `text` contains `part`. */
function includes(text: string, part: string, message?: string): void {
  assert.ok(
    text.includes(part),
    message ?? `expected to find ${JSON.stringify(part)} in:\n${text}`,
  );
}

const denoJson = JSON.parse(Deno.readTextFileSync(`${ROOT}deno.json`));
const compileTask: string = denoJson.tasks.compile ?? "";
const compileWords = compileTask.trim().split(/\s+/);

/** Deno permission flags (long and short forms) among a task's words. */
function permissionFlags(words: string[]): string[] {
  return words.filter((w) =>
    /^--(allow|deny)-[a-z-]+(=.*)?$/.test(w) || /^--allow-all$/.test(w) ||
    /^-[ARWNESP]+$/.test(w) || /^--permission-set(=.*)?$/.test(w)
  );
}

/** The value of `--name value` or `--name=value` in a word list (every occurrence). */
function optionValues(words: string[], name: string): string[] {
  const out: string[] = [];
  words.forEach((w, i) => {
    if (w === name && i + 1 < words.length) out.push(words[i + 1]);
    else if (w.startsWith(`${name}=`)) out.push(w.slice(name.length + 1));
  });
  return out;
}

// ---- (a) the compile task -------------------------------------------------------------------

Deno.test("compile task: the start task's permission flags exactly, no -A", () => {
  assert.deepEqual(compileWords.slice(0, 2), ["deno", "compile"], `compile task: ${compileTask}`);
  const start = serveFlags();
  assert.ok(start.length > 0, "the start task has permission flags");
  const compile = permissionFlags(compileWords);
  assert.deepEqual([...compile].sort(), [...start].sort());
  for (const w of compileWords) {
    assert.ok(w !== "-A" && w !== "--allow-all", `compile task must not grant everything: ${w}`);
  }
  // Nothing after the entry point: embedded arguments would be prepended to every invocation,
  // so `ringhook healthcheck` would become `ringhook serve healthcheck`.
  assert.deepEqual(compileWords.at(-1), "main.ts");
});

Deno.test("compile task: embeds the journal worker and writes dist/ringhook", () => {
  assert.deepEqual(optionValues(compileWords, "--include"), ["src/journal/worker.ts"]);
  assert.deepEqual(optionValues(compileWords, "--output"), ["dist/ringhook"]);
  // The include must name the module remote.ts actually starts as a worker.
  const remote = Deno.readTextFileSync(`${ROOT}src/journal/remote.ts`);
  includes(remote, `new Worker(new URL("./worker.ts", import.meta.url)`);
  assert.ok(Deno.statSync(`${ROOT}src/journal/worker.ts`).isFile);
});

/** True when `file` contains the ASCII string `needle` (streamed: the binary is ~100 MB). */
async function fileContains(file: string, needle: string): Promise<boolean> {
  const dec = new TextDecoder("latin1"); // one char per byte; ASCII stays ASCII
  using f = await Deno.open(file);
  let carry = "";
  for await (const chunk of f.readable) {
    const text = carry + dec.decode(chunk);
    if (text.includes(needle)) return true;
    carry = text.slice(-(needle.length - 1));
  }
  return false;
}

Deno.test({
  name: "compile task: the worker and the SQLite engine are in the executable",
  // deno compile downloads its runtime (denort) unless DENORT_BIN names one. This machine cannot
  // download it, so the deno binary stands in as the base: the module graph, the embedded files
  // and the permission flags are built exactly as for a real build, only the base differs.
  fn: async () => {
    const out = await Deno.makeTempDir({ prefix: "ringhook-compile-" });
    try {
      const args = compileWords.slice(1).map((w, i, a) =>
        a[i - 1] === "--output" ? `${out}/ringhook` : w
      );
      const r = await new Deno.Command(Deno.execPath(), {
        args,
        cwd: ROOT,
        env: { DENORT_BIN: Deno.execPath(), NO_COLOR: "1" },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const log = new TextDecoder().decode(r.stdout) + new TextDecoder().decode(r.stderr);
      assert.deepEqual(r.code, 0, log);
      // One string from the worker, one from the engine only the worker imports: without
      // --include (checked with Deno 2.9.6) neither is embedded and the journal cannot start.
      for (
        const [file, marker] of [
          ["src/journal/worker.ts", "the journal is not open"],
          ["src/journal/sqlite.ts", "class SqliteEngine"],
          ["src/admin/openapi.json", "getOpenApi"],
        ]
      ) {
        includes(Deno.readTextFileSync(`${ROOT}${file}`), marker);
        assert.ok(
          await fileContains(`${out}/ringhook`, marker),
          `${file} is not embedded:\n${log}`,
        );
      }
    } finally {
      await Deno.remove(out, { recursive: true });
    }
  },
});

// ---- (b) the systemd unit -------------------------------------------------------------------

const UNIT = Deno.readTextFileSync(`${ROOT}deploy/ringhook.service`);
const systemdAnalyze = (() => {
  for (const p of ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]) {
    try {
      if (Deno.statSync(p).isFile) return p;
    } catch {
      // not here
    }
  }
  return undefined;
})();

/** The unit's settings: section -> key -> every value (comments and blank lines dropped). */
function unitSettings(text: string): Map<string, Map<string, string[]>> {
  const sections = new Map<string, Map<string, string[]>>();
  let current: Map<string, string[]> | undefined;
  for (const raw of text.replace(/\\\n/g, " ").split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const sec = line.match(/^\[(.+)\]$/);
    if (sec) {
      current = new Map();
      sections.set(sec[1], current);
      continue;
    }
    const eq = line.indexOf("=");
    assert.ok(
      current !== undefined && eq > 0,
      `unit line outside a section or without '=': ${line}`,
    );
    const key = line.slice(0, eq).trim();
    current.set(key, [...(current.get(key) ?? []), line.slice(eq + 1).trim()]);
  }
  return sections;
}

/** Runs systemd-analyze verify on a copy of `unitText` whose ringhook binary exists. */
async function verifyUnit(unitText: string): Promise<{ code: number; problems: string[] }> {
  const dir = await Deno.makeTempDir({ prefix: "ringhook-unit-" });
  try {
    const bin = `${dir}/ringhook`;
    await Deno.writeTextFile(bin, "#!/bin/sh\nexit 0\n", { mode: 0o755 });
    await Deno.chmod(bin, 0o755);
    const unit = unitText.replaceAll("/usr/local/bin/ringhook", bin);
    assert.ok(unit !== unitText, "the unit runs /usr/local/bin/ringhook");
    await Deno.writeTextFile(`${dir}/ringhook.service`, unit);
    const r = await new Deno.Command(systemdAnalyze!, {
      args: ["verify", "--man=no", `${dir}/ringhook.service`],
      env: { SYSTEMD_LOG_COLOR: "0", NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const lines = (new TextDecoder().decode(r.stdout) + new TextDecoder().decode(r.stderr))
      .split("\n").filter((l) => l.trim() !== "");
    // Verification also reports on unrelated units of the host; keep the lines about ours.
    const problems = lines.filter((l) => l.includes("ringhook") || l.includes(dir));
    return { code: r.code, problems };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test({
  name: "systemd unit: systemd-analyze verify reports nothing",
  ignore: systemdAnalyze === undefined,
  fn: async () => {
    const { code, problems } = await verifyUnit(UNIT);
    assert.deepEqual(problems, []);
    assert.deepEqual(code, 0);
    // The check itself must be able to fail: a misspelt key and a bad value are reported.
    const broken = UNIT.replace(/^ProtectHome=yes$/m, "ProtectHom=yes")
      .replace(/^RestartSec=.*$/m, "RestartSec=soon");
    assert.ok(broken !== UNIT);
    const bad = await verifyUnit(broken);
    assert.deepEqual(bad.problems.length, 2, bad.problems.join("\n"));
  },
});

Deno.test("systemd unit: hardening, readiness, reload and state directory", () => {
  const s = unitSettings(UNIT);
  const service = s.get("Service")!;
  assert.ok(service, "a [Service] section");
  const one = (key: string) => {
    const v = service.get(key);
    assert.ok(v !== undefined, `${key}= is set`);
    return v.at(-1)!;
  };
  const expected: Record<string, string> = {
    ExecStart: "/usr/local/bin/ringhook serve",
    ExecStartPost: "/usr/local/bin/ringhook healthcheck --wait 30",
    ExecReload: "/bin/kill -HUP $MAINPID",
    StateDirectory: "ringhook",
    EnvironmentFile: "-/etc/ringhook/ringhook.env",
    Restart: "on-failure",
    RestartSec: "2",
    TimeoutStopSec: "30",
    KillSignal: "SIGTERM",
    LimitNOFILE: "65536",
    ProtectSystem: "strict",
    ProtectHome: "yes",
    PrivateTmp: "yes",
    NoNewPrivileges: "yes",
    PrivateDevices: "yes",
    ProtectKernelTunables: "yes",
    ProtectKernelModules: "yes",
    ProtectKernelLogs: "yes",
    ProtectControlGroups: "yes",
    RestrictAddressFamilies: "AF_INET AF_INET6 AF_UNIX",
    RestrictNamespaces: "yes",
    LockPersonality: "yes",
    CapabilityBoundingSet: "",
    SystemCallArchitectures: "native",
    // V8's JIT needs writable-then-executable memory.
    MemoryDenyWriteExecute: "no",
  };
  for (const [key, value] of Object.entries(expected)) assert.deepEqual(one(key), value, key);
  // Never root: a dedicated user or a dynamic one.
  const user = service.get("User")?.at(-1);
  const dynamic = service.get("DynamicUser")?.at(-1);
  assert.ok(dynamic === "yes" || (user !== undefined && !["root", "0"].includes(user)));
  // The secret the unit requires is the one ringhook reads.
  const secrets = [
    ...(service.get("Environment") ?? []),
    ...(service.get("LoadCredential") ?? []),
  ].join(" ");
  assert.match(secrets, /RINGHOOK_VERIFICATION_TOKEN(_FILE=|:)\/etc\/ringhook\/verification-token/);
  assert.deepEqual(s.get("Install")?.get("WantedBy"), ["multi-user.target"]);
});

Deno.test("ringhook.env.example: every variable is one ringhook reads, and the values load", () => {
  const text = Deno.readTextFileSync(`${ROOT}deploy/ringhook.env.example`);
  const config = Deno.readTextFileSync(`${ROOT}src/config.ts`);
  const env: Record<string, string> = {};
  let names = 0;
  for (const line of text.split("\n")) {
    const m = line.match(/^#?([A-Z][A-Z0-9_]*)=(.*)$/);
    if (!m) continue;
    names++;
    const [, name, value] = m;
    if (["HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY"].includes(name)) continue;
    const secretFile = name.endsWith("_FILE") &&
      (SECRET_VARS as readonly string[]).includes(name.slice(0, -5));
    assert.ok(secretFile || config.includes(`"${name}"`), `ringhook does not read ${name}`);
    if (!secretFile) env[name] = value;
  }
  assert.ok(names >= 10, "the example documents the settings");
  const r = loadConfig({ ...env, RINGHOOK_VERIFICATION_TOKEN: "example-token" }, () => "");
  assert.ok(r.ok, r.ok ? "" : r.errors.join("\n"));
});

// ---- (c) the Dockerfile ---------------------------------------------------------------------

interface Instruction {
  op: string;
  args: string;
  stage: number;
}

/** The Dockerfile as instructions (continuations joined, comments dropped), with stage numbers. */
function dockerInstructions(text: string): Instruction[] {
  const out: Instruction[] = [];
  let stage = -1;
  const lines = text.split("\n").filter((l) => !/^\s*#/.test(l));
  for (const line of lines.join("\n").replace(/\\\n/g, " ").split("\n")) {
    const m = line.trim().match(/^([A-Za-z]+)\s+(.*)$/);
    if (!m) continue;
    const op = m[1].toUpperCase();
    if (op === "FROM") stage++;
    out.push({ op, args: m[2].trim().replace(/\s+/g, " "), stage });
  }
  return out;
}

Deno.test("Dockerfile: pinned multi-stage build of the compile task, non-root run stage", () => {
  const ins = dockerInstructions(Deno.readTextFileSync(`${ROOT}Dockerfile`));
  const froms = ins.filter((i) => i.op === "FROM");
  assert.ok(froms.length >= 2, "multi-stage");
  const last = froms.length - 1;
  const inStage = (n: number, op: string) => ins.filter((i) => i.stage === n && i.op === op);

  // The build stage: Deno pinned to the version CI tests with.
  const ci = Deno.readTextFileSync(`${ROOT}.ci/run`).match(/deno@(\d+\.\d+\.\d+)/);
  assert.ok(ci, ".ci/run pins a Deno version");
  const build = froms[0].args.match(/^denoland\/deno:(\S+) AS (\S+)$/i);
  assert.ok(build, `build stage: ${froms[0].args}`);
  assert.deepEqual(build[1], ci[1]);
  const buildName = build[2];

  // Dependencies are installed before the sources are copied (layer caching).
  const b = ins.filter((i) => i.stage === 0);
  const at = (pred: (i: Instruction) => boolean) => b.findIndex(pred);
  const copyLock = at((i) =>
    i.op === "COPY" && /deno\.json/.test(i.args) && /deno\.lock/.test(i.args)
  );
  const install = at((i) => i.op === "RUN" && /\bdeno install\b/.test(i.args));
  const copySrc = at((i) => i.op === "COPY" && /\bsrc\/?\b/.test(i.args));
  const compile = at((i) => i.op === "RUN" && /\bdeno task compile\b/.test(i.args));
  assert.ok(copyLock >= 0 && copyLock < install && install < copySrc && copySrc < compile);
  includes(b[compile].args, "dist/ringhook");

  // The run stage: another, pinned base; the binary from the build stage; a numeric non-root user.
  const runBase = froms[last].args.split(" ")[0];
  assert.ok(!runBase.startsWith("denoland/deno"), "the run stage does not ship Deno's toolchain");
  assert.match(runBase, /(:[\w.-]+|@sha256:[0-9a-f]{64})$/);
  assert.ok(!runBase.endsWith(":latest"));
  const copies = inStage(last, "COPY");
  assert.ok(
    copies.some((c) =>
      c.args.includes(`--from=${buildName}`) && c.args.endsWith(" /usr/local/bin/ringhook")
    ),
  );
  const users = inStage(last, "USER");
  assert.ok(users.length > 0, "USER in the run stage");
  const uid = users.at(-1)!.args.split(":")[0];
  assert.ok(!["root", "0"].includes(uid), `USER ${uid}`);
  // /data exists in the image, owned by that user, so a fresh named volume is writable.
  assert.ok(
    copies.some((c) => c.args.includes(`--chown=${uid}`) && c.args.endsWith(" /data")),
    "COPY --chown=<user> ... /data",
  );
  assert.deepEqual(inStage(last, "VOLUME").map((v) => v.args), ["/data"]);

  const env = inStage(last, "ENV").map((e) => e.args).join(" ");
  includes(env, "RINGHOOK_DATA_DIR=/data");
  includes(env, "RINGHOOK_HOSTNAME=0.0.0.0");
  const port = env.match(/RINGHOOK_PORT=(\d+)/)?.[1];
  assert.deepEqual(inStage(last, "EXPOSE").map((e) => e.args), [port]);

  const health = inStage(last, "HEALTHCHECK").at(-1)?.args ?? "";
  assert.match(health, /CMD \["\/usr\/local\/bin\/ringhook", ?"healthcheck"\]$/);
  assert.deepEqual(inStage(last, "ENTRYPOINT").at(-1)?.args, `["/usr/local/bin/ringhook"]`);
  assert.deepEqual(inStage(last, "CMD").at(-1)?.args, `["serve"]`);
  assert.deepEqual(inStage(last, "STOPSIGNAL").at(-1)?.args, "SIGTERM");
});

Deno.test(".dockerignore: local state stays out, the sources stay in", () => {
  const ignored = Deno.readTextFileSync(`${ROOT}.dockerignore`).split("\n")
    .map((l) => l.trim().replace(/\/$/, ""))
    .filter((l) => l !== "" && !l.startsWith("#"));
  for (const p of ["node_modules", "data", "dist", ".git", "bench/results"]) {
    assert.ok(ignored.includes(p), `.dockerignore lists ${p}`);
  }
  for (const p of ["main.ts", "src", "deno.json", "deno.lock"]) {
    assert.ok(!ignored.includes(p) && !ignored.includes(`!${p}`), `${p} is in the build context`);
  }
});

// ---- (d) the healthcheck command ------------------------------------------------------------

/** Runs `main.ts healthcheck` with the start task's permission flags. */
async function healthcheck(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; out: string }> {
  const r = await runMain(["healthcheck", ...args], env);
  return { code: r.code, out: r.stdout + r.stderr };
}

/** A TCP port nothing listens on (bound, then released). */
function closedPort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

Deno.test("healthcheck: 0 against a ready server, 1 against a closed port", async () => {
  const server = await startServer();
  try {
    const ok = await healthcheck(["--url", `${server.url}/readyz`]);
    assert.deepEqual(ok.code, 0, ok.out);
    includes(ok.out, "ready:");
    // Without --url: the port comes from the same environment `serve` reads.
    const fromEnv = await healthcheck([], { RINGHOOK_PORT: String(server.port) });
    assert.deepEqual(fromEnv.code, 0, fromEnv.out);
    // A non-200 answer is not ready.
    const notFound = await healthcheck(["--url", `${server.url}/no-such-path`]);
    assert.deepEqual(notFound.code, 1, notFound.out);
  } finally {
    await server.stop();
    await Deno.remove(server.dataDir, { recursive: true });
  }
  const port = closedPort();
  const closed = await healthcheck(["--url", `http://127.0.0.1:${port}/readyz`]);
  assert.deepEqual(closed.code, 1, closed.out);
  includes(closed.out, "not ready");
  const viaEnv = await healthcheck([], { RINGHOOK_PORT: String(port) });
  assert.deepEqual(viaEnv.code, 1, viaEnv.out);
});

Deno.test("healthcheck --wait: waits for a server that starts later, gives up on time", async () => {
  const port = closedPort();
  const started = Date.now();
  const waiting = healthcheck(["--wait", "30"], { RINGHOOK_PORT: String(port) })
    .catch((e: Error) => e);
  await new Promise((r) => setTimeout(r, 700));
  const server = await startServer({ RINGHOOK_PORT: String(port) });
  try {
    const r = await waiting;
    if (r instanceof Error) throw r;
    assert.deepEqual(r.code, 0, r.out);
    assert.ok(Date.now() - started < 30_000);
  } finally {
    await server.stop();
    await Deno.remove(server.dataDir, { recursive: true });
  }
  const t0 = Date.now();
  const gaveUp = await healthcheck(["--wait", "1", "--url", `http://127.0.0.1:${closedPort()}/`]);
  assert.deepEqual(gaveUp.code, 1, gaveUp.out);
  const took = Date.now() - t0;
  assert.ok(took >= 1000 && took < 10_000, `gave up after ${took} ms`);
});

Deno.test("healthcheck: --help exits 0, bad usage exits 1 (never Docker's reserved 2)", async () => {
  const help = await healthcheck(["--help"]);
  assert.deepEqual(help.code, 0, help.out);
  includes(help.out, "--wait SECONDS");
  const bad = await healthcheck(["--bogus"]);
  assert.deepEqual(bad.code, 1, bad.out);
  const badWait = await healthcheck(["--wait", "soon"]);
  assert.deepEqual(badWait.code, 1, badWait.out);
});
