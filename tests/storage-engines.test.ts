import { execFile, spawn } from "node:child_process";
import { chmodSync, linkSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { serveClientData } from "./helpers/client-server.js";
import type { TestServer } from "./helpers/http-server.js";
import { spawnCli, waitFor } from "./helpers/spawn-cli.js";
import { clientFixtures, sqlite, Workspace } from "./helpers/workspace.js";

const execFileAsync = promisify(execFile);
const sales = readFileSync(path.join(clientFixtures, "ventes.csv"), "utf8");

/** One sqlite3 CLI write, waiting up to 30 s for a lock (as `.timeout` lets it); resolves whether it committed. */
async function outsideWrite(database: string, sql: string): Promise<boolean> {
  try {
    await execFileAsync("sqlite3", ["-cmd", ".timeout 30000", "-bail", database, sql]);
    return true;
  } catch {
    return false;
  }
}

describe("client pipeline, concurrent sqlite3 writers", () => {
  let server: TestServer;
  let ws: Workspace;
  let env: Record<string, string>;
  let close: () => Promise<void>;
  beforeEach(async () => {
    ({ server, ws, env, close } = await serveClientData());
  });
  afterEach(() => close());
  const db = () => ws.path("output/sales.db");

  test("native: sqlite3 CLI writes hammering the file during a run all survive, and the run succeeds", async () => {
    expect((await ws.cli(["run", "--engine", "native"], env)).code).toBe(0);
    sqlite(db(), "CREATE TABLE outside_writes (writer INTEGER, n INTEGER)");
    server.route("/ventes.csv", (_q, r) => {
      r.writeHead(200, { "content-type": "text/csv" });
      setTimeout(() => r.end(sales + "\r\n2023-06-26,REF001,1,1"), 1500);
    });
    let running = true;
    const committed: string[] = [];
    const hammer = async (writer: number) => {
      for (let n = 0; running || n < 3; n++) {
        if (await outsideWrite(db(), `INSERT INTO outside_writes VALUES (${writer}, ${n})`)) committed.push(`${writer}|${n}`);
      }
    };
    const writers = [hammer(1), hammer(2), hammer(3)];
    const run = spawnCli(["run", "--engine", "native", "--full-refresh"], ws.dir, env);
    const result = await run.done;
    running = false;
    await Promise.all(writers);
    expect(result.code, result.stderr).toBe(0);
    expect(committed.length).toBeGreaterThan(9);
    const stored = sqlite(db(), "SELECT writer || '|' || n FROM outside_writes ORDER BY writer, n").split("\n");
    expect(stored.sort()).toEqual([...committed].sort());
    expect(sqlite(db(), "SELECT count(*) FROM sales; PRAGMA integrity_check;")).toBe("31\nok");
  });

  test("sqljs: a hard link to the database (a backup) keeps the old content, readable", async () => {
    expect((await ws.cli(["run"], env)).code).toBe(0);
    linkSync(db(), ws.path("backup.db"));
    server.file("/ventes.csv", sales + "\r\n2023-06-26,REF001,1,1");
    expect((await ws.cli(["run", "--engine", "sqljs"], env)).code).toBe(0);
    expect(sqlite(ws.path("backup.db"), "SELECT count(*) FROM sales; PRAGMA integrity_check;")).toBe("30\nok");
    expect(sqlite(db(), "SELECT count(*) FROM sales;")).toBe("31");
  });

  test.each([
    ["a chmod", (file: string) => chmodSync(file, 0o640)],
    ["a hard-link backup", (file: string) => linkSync(file, `${file}.bak`)],
  ])("sqljs: %s of the database during a run (no byte written) does not refuse the run as changed", async (_what, touch) => {
    expect((await ws.cli(["run"], env)).code).toBe(0);
    server.route("/ventes.csv", (_q, r) => {
      r.writeHead(200, { "content-type": "text/csv" });
      setTimeout(() => r.end(sales + "\r\n2023-06-26,REF001,1,1"), 1500);
    });
    const run = spawnCli(["run", "--engine", "sqljs"], ws.dir, env);
    await waitFor(() => server.requests("/ventes.csv").length === 2);
    touch(db());
    const result = await run.done;
    expect({ code: result.code, stderr: result.stderr }).toEqual({ code: 0, stderr: "" });
    expect(sqlite(db(), "SELECT count(*) FROM sales")).toBe("31");
  });

  test("sqljs: a sqlite3 session that had the file open before the run replaced it gets an error, never a write into the replaced file", async () => {
    expect((await ws.cli(["run"], env)).code).toBe(0);
    const session = spawn("sqlite3", ["-batch", db()], { stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    session.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()));
    session.stderr.on("data", (chunk: Buffer) => (out += chunk.toString()));
    session.stdin.write("SELECT 'opened', count(*) FROM stores;\n");
    await waitFor(() => out.includes("opened|"));
    server.file("/ventes.csv", sales + "\r\n2023-06-26,REF001,1,1");
    const run = await ws.cli(["run", "--engine", "sqljs"], env);
    expect(run.code, run.stderr).toBe(0);
    session.stdin.write("SELECT 'read', count(*) FROM sales;\nUPDATE stores SET employees = 99 WHERE store_id = 1;\nSELECT 'done';\n");
    await waitFor(() => out.includes("done"));
    session.stdin.end();
    // why: a read of the replaced file fails instead of showing the old rows as current; the write fails either way.
    expect(out).not.toContain("read|");
    expect(out).toMatch(/file is not a database/);
    expect(
      sqlite(db(), "SELECT employees FROM stores WHERE store_id = 1; SELECT count(*) FROM sales; PRAGMA integrity_check;"),
    ).not.toMatch(/^99\n/);
    expect(sqlite(db(), "SELECT count(*) FROM sales; PRAGMA integrity_check;")).toBe("31\nok");
  });
});

describe("sqljs over a large load: writes aimed at the end of the run", () => {
  // why: PIPELINE_TEST_LATE_ROWS=1000000 runs it at the scale (minutes); the default keeps it near 30 s.
  const rows = Number(process.env["PIPELINE_TEST_LATE_ROWS"] ?? 150_000);
  let ws: Workspace;
  beforeEach(() => {
    ws = new Workspace({ withClientPipeline: false });
    ws.write(
      "pipeline.yaml",
      `version: 1
database: big.db
tables:
  items:
    columns:
      id: { type: integer }
      label: { type: text, required: true }
      qty: { type: integer }
    primary_key: [id]
steps:
  - name: load_items
    type: load
    source: items.csv
    table: items
    mode: replace
    columns: { id: id, label: label, qty: qty }
`,
    );
    const lines = ["id,label,qty"];
    for (let i = 1; i <= rows; i++) lines.push(`${i},item number ${i},${i % 97}`);
    writeFileSync(ws.path("items.csv"), lines.join("\n") + "\n");
  });
  afterEach(() => ws.remove());

  test("every sqlite3 write that committed is in the file afterwards", async () => {
    const database = ws.path("big.db");
    expect((await spawnCli(["run", "--engine", "sqljs"], ws.dir).done).code).toBe(0);
    sqlite(database, "CREATE TABLE outside_writes (n INTEGER)");
    const committed: number[] = [];
    const codes: number[] = [];
    for (let attempt = 0; attempt < 10; attempt++) {
      const run = spawnCli(["run", "--engine", "sqljs", "--full-refresh"], ws.dir);
      // why: the load's last line is printed when only the run's end remains: checks, export, staging, the rename.
      await waitFor(() => run.output().includes("inserted"), 60_000);
      await new Promise((resolve) => setTimeout(resolve, (attempt * 29) % 250));
      if (await outsideWrite(database, `INSERT INTO outside_writes VALUES (${attempt})`)) committed.push(attempt);
      const result = await run.done;
      codes.push(result.code ?? -1);
      if (result.code !== 0) expect(result.stderr).toContain("E_CHANGED");
    }
    const stored = sqlite(database, "SELECT n FROM outside_writes ORDER BY n").split("\n").filter(Boolean).map(Number);
    expect({ stored, codes }).toEqual({ stored: committed, codes });
    expect(committed.length).toBeGreaterThan(0);
    expect(sqlite(database, `SELECT count(*) FROM items; PRAGMA integrity_check;`)).toBe(`${rows}\nok`);
  }, 180_000);
});

describe("choosing the engine", () => {
  let ws: Workspace;
  beforeEach(() => {
    ws = new Workspace({ withClientPipeline: false });
    ws.write("items.csv", "id,label\n1,one\n2,two\n");
  });
  afterEach(() => ws.remove());
  const pipeline = (database: string) => `version: 1
database: ${database}
tables:
  items:
    columns: { id: { type: integer }, label: { type: text } }
    primary_key: [id]
steps:
  - name: load_items
    type: load
    source: items.csv
    table: items
    mode: upsert
    columns: { id: id, label: label }
`;

  test("database: { path, engine: native } runs in place: an outside write made during a session held open is kept", async () => {
    ws.write("pipeline.yaml", pipeline("{ path: data.db, engine: native }"));
    expect((await ws.cli(["run", "--json"])).code).toBe(0);
    // A sqljs run would be refused here: the -wal holds committed changes not in the main file.
    sqlite(ws.path("data.db"), "PRAGMA journal_mode = WAL");
    ws.write("items.csv", "id,label\n1,one\n2,two\n3,three\n");
    const plan = await ws.cli(["plan"]);
    expect(plan.code).toBe(0);
    const run = await ws.cli(["run"]);
    expect(run.code, run.stderr).toBe(0);
    expect(sqlite(ws.path("data.db"), "PRAGMA journal_mode; SELECT count(*) FROM items")).toBe("wal\n3");
    expect((await ws.cli(["rejections", "--json"])).code).toBe(0);
  });

  test("doctor names the engine in use: database: { engine: native }, unless --engine says otherwise", async () => {
    ws.write("pipeline.yaml", pipeline("{ path: data.db, engine: native }"));
    const native = await ws.cli(["doctor"]);
    expect(native.code, native.stdout).toBe(0);
    expect(native.stdout).toMatch(/✓ sqlite \(native\): 3\.\d+\.\d+ \(node:sqlite\), in use\n/);
    expect(native.stdout).not.toMatch(/sql\.js\), in use/);
    const sqljs = await ws.cli(["doctor", "--engine", "sqljs"]);
    expect(sqljs.stdout).toMatch(/✓ sqlite \(sql\.js\): 3\.\d+\.\d+ \(sql\.js\), in use\n/);
  });

  test("--engine overrides database: { engine: }, and a wrong name is refused with the names", async () => {
    ws.write("pipeline.yaml", pipeline("{ path: data.db, engine: native }"));
    const wrong = await ws.cli(["run", "--engine", "mysql"]);
    expect(wrong.code).toBe(2);
    expect(wrong.stderr).toContain('--engine takes sqljs or native or postgres, not "mysql"');
    const fileForServer = await ws.cli(["run", "--engine", "postgres"]);
    expect(fileForServer.code).toBe(2);
    expect(fileForServer.stderr).toContain("the postgres engine needs a postgres:// URL as the database, not data.db");
    const badEnv = await ws.cli(["run"], { PIPELINE_ENGINE: "sqlite" });
    expect(badEnv.code).toBe(0);
    ws.write("pipeline.yaml", pipeline("data.db"));
    const refused = await ws.cli(["run"], { PIPELINE_ENGINE: "sqlite" });
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('PIPELINE_ENGINE takes sqljs or native or postgres, not "sqlite"');
  });

  test("an unknown engine in pipeline.yaml is a validation error with its line", async () => {
    ws.write("pipeline.yaml", pipeline("{ path: data.db, engine: sqlite }"));
    const result = await ws.cli(["validate"]);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/pipeline\.yaml:2:\d+/);
    expect(result.stderr).toMatch(/sqljs.*native|native.*sqljs/);
  });

  test("a dry-run on native creates no file and a failed first run leaves none", async () => {
    ws.write("pipeline.yaml", pipeline("data.db"));
    expect((await ws.cli(["run", "--dry-run", "--engine", "native"])).code).toBe(0);
    expect(ws.bytes("data.db")).toBeUndefined();
    ws.write("items.csv", "id,label\nx,one\n");
    ws.write("pipeline.yaml", pipeline("data.db").replace("upsert", "upsert\n    max_rejected: 0"));
    expect((await ws.cli(["run", "--engine", "native"])).code).toBe(1);
    expect(ws.bytes("data.db")).toBeUndefined();
  });
});
