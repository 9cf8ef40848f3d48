import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { runtimeChecks } from "../engine/doctor.js";
import { serveClientData } from "./helpers/client-server.js";
import type { TestServer } from "./helpers/http-server.js";
import { builtCli, systemNode20 } from "./helpers/spawn-cli.js";
import { sqlite, type Workspace } from "./helpers/workspace.js";

let server: TestServer;
let ws: Workspace;
let env: Record<string, string>;
let close: () => Promise<void>;

beforeEach(async () => {
  ({ server, ws, env, close } = await serveClientData());
});
afterEach(() => close());

/**
 * The built CLI run by `node` (with `nodeArgs` before it) in the workspace, against the test server.
 * why: asynchronous, so this process's test server can answer the child's requests.
 */
function runBuiltCli(node: string, nodeArgs: string[], args: string[]) {
  return new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(node, [...nodeArgs, builtCli, ...args], { cwd: ws.dir, env: { ...process.env, ...env, NO_COLOR: "1" } });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("close", (status) => resolve({ status, stdout, stderr }));
  });
}

test("doctor passes when every check passes, and writes nothing", async () => {
  const result = await ws.cli(["doctor"], env);
  expect(result.code).toBe(0);
  const lines = result.stdout.trimEnd().split("\n");
  expect(lines.map((l) => l.split(":")[0])).toEqual([
    "✓ node",
    "✓ pipeline-runner",
    "✓ sqlite (sql.js)",
    "✓ sqlite (native)",
    "✓ config",
    "✓ database",
    "✓ source load_products",
    "✓ source load_stores",
    "✓ source load_city_regions",
    "✓ source load_sales",
  ]);
  expect(result.stdout).toContain(`✓ source load_sales: ${server.url("/ventes.csv")} -> 200 OK`);
  expect(ws.bytes()).toBeUndefined();
  expect(server.requests("/ventes.csv")[0]).toBeDefined();
});

test("doctor exits 1 and says which source fails", async () => {
  const result = await ws.cli(["doctor"], { ...env, SALES_URL: server.url("/gone.csv") });
  expect(result.code).toBe(1);
  expect(result.stdout).toContain(`✗ source load_sales: ${server.url("/gone.csv")} -> 404 Not Found`);
});

test("doctor reports a database directory that cannot be written", async () => {
  ws.write("not-a-dir", "a file where the database directory should be");
  const result = await ws.cli(["doctor", "--db", "not-a-dir/sales.db"], env);
  expect(result.code).toBe(1);
  expect(result.stdout).toMatch(/✗ database: \S*not-a-dir is not writable: ENOTDIR/);
});

test("doctor exits 2 on an invalid configuration and shows its problems", async () => {
  ws.write("pipeline.yaml", readFileSync(ws.path("pipeline.yaml"), "utf8").replace("mode: upsert", "mode: upsrt"));
  const result = await ws.cli(["doctor"], env);
  expect(result.code).toBe(2);
  expect(result.stdout).toMatch(/✗ config: pipeline\.yaml:\d+:\d+ error E_SCHEMA \/steps\/0\/mode is "upsrt"/);
});

describe("doctor on a Node older than the pinned one", () => {
  test("Node 20 passes with a note: the sqljs engine works there, without node:sqlite's write lock", async () => {
    const [node] = await runtimeChecks("0.1.0", "sqljs", "20.20.2");
    expect(node).toMatchObject({ name: "node", ok: true });
    expect(node!.detail).toBe(
      "20.20.2 (works with the sqljs engine, though without node:sqlite (Node 22.5+) its save cannot hold SQLite's write lock, so a sqlite3 write in its last milliseconds can be lost, and the native engine is unavailable; the project pins and tests Node 24, see package.json engines)",
    );
  });

  test("Node 18 fails, saying what it lacks", async () => {
    const [node] = await runtimeChecks("0.1.0", "sqljs", "18.19.0");
    expect(node).toMatchObject({ name: "node", ok: false });
    expect(node!.detail).toMatch(/^18\.19\.0 \(the runner needs Node 20 or later; Node 24 is the pinned version\)$/);
  });

  // why: a real process is the proof that "works" is true.
  const system = systemNode20;
  test.skipIf(system === undefined)("a real Node 20 runs doctor (exit 0) and the client's pipeline", async () => {
    const run = (args: string[]) => runBuiltCli(system!, [], args);
    const doctor = await run(["doctor"]);
    expect(doctor.stdout).toMatch(/^✓ node: 20\.\d+\.\d+ \(works with the sqljs engine, though without node:sqlite/m);
    expect(doctor.status, doctor.stdout + doctor.stderr).toBe(0);
    const result = await run(["run"]);
    expect(result.status, result.stderr).toBe(0);
    expect(sqlite(ws.path("output/sales.db"), "SELECT revenue_cents FROM revenue_total")).toBe("526878");
    // A run that saves over the existing file: the sqljs save runs without node:sqlite's write lock there.
    const again = await run(["run", "--full-refresh"]);
    expect(again.status, again.stderr).toBe(0);
    expect(again.stdout).toMatch(/Run 2 succeeded/);
    // why: engine/cli.ts's guard against Node 20's hang at exit: no optimizing compiler, so V8 marks nothing for it
    // (validate alone marked 25 functions for TurboFan with it).
    const traced = await runBuiltCli(system!, ["--trace-opt"], ["validate"]);
    expect(traced.status, traced.stderr).toBe(0);
    expect(traced.stdout).toMatch(/is valid/);
    expect(traced.stdout).not.toMatch(/^\[(marking|compiling method)/m);
  });
});

// why: loadHttpClient keeps undici out only if nothing imports node:http as an ES module before it; a static
// import anywhere in the CLI's module graph would undo it silently (0.025-0.03 s a run), so the real commands are measured.
test("doctor, run and run --every over HTTP load no undici", async () => {
  const probe =
    "data:text/javascript,process.on('exit',()=>process.stderr.write('\\nUNDICI='+JSON.stringify(process.moduleLoadList.filter((m)=>m.includes('undici')))))";
  const run = (args: string[]) => runBuiltCli(process.execPath, ["--import", probe], args);
  for (const args of [["doctor"], ["run"], ["run", "--every", "1ms", "--max-runs", "2"]]) {
    const result = await run(args);
    expect(result.status, args.join(" ") + result.stderr).toBe(0);
    expect(result.stderr, args.join(" ")).toMatch(/UNDICI=\[\]\s*$/);
  }
  expect(server.requests("/ventes.csv").length).toBeGreaterThanOrEqual(3);
});
