import { spawn } from "node:child_process";
import { once } from "node:events";
import { DatabaseSync } from "node:sqlite";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { nodeOnly } from "../engine/db/scratch.js";
import { openSqlJs } from "../engine/db/sqljs.js";
import { Workspace } from "./helpers/workspace.js";

let ws: Workspace;
beforeEach(() => {
  ws = new Workspace({ withClientPipeline: false });
});
afterEach(() => ws.remove());

const pipeline = (steps: string) => `version: 1
database: db.sqlite
tables:
  numbers:
    columns: { n: { type: integer } }
    primary_key: [n]
  totals:
    columns:
      total: { type: real }
steps:
  - { name: load, type: load, source: n.csv, table: numbers, mode: upsert, columns: { n: n } }
${steps}`;

describe("validation on the sqljs engine, compiled on node:sqlite first", () => {
  test("node:sqlite stands in for exactly what sql.js's build has: what only node:sqlite has is listed", async () => {
    const sqlJs = await openSqlJs();
    const node = new DatabaseSync(":memory:");
    const names = (sql: string) => ({
      sqlJs: new Set(sqlJs.all(sql).map((row) => String(Object.values(row)[0]))),
      node: new Set(
        node
          .prepare(sql)
          .all()
          .map((row) => String(Object.values(row)[0])),
      ),
    });
    const functions = names("SELECT DISTINCT name FROM pragma_function_list");
    const modules = names("SELECT name FROM pragma_module_list");
    expect([...functions.node].filter((name) => !functions.sqlJs.has(name)).sort()).toEqual(nodeOnly.functions);
    expect([...modules.node].filter((name) => !modules.sqlJs.has(name)).sort()).toEqual(nodeOnly.modules);
    sqlJs.close();
    node.close();
  });

  test.each([
    ["percentile(n, 50)", "no such function: percentile"],
    ["stdev(n)", undefined],
  ])("%s is judged as sql.js judges it", async (expression, error) => {
    ws.write("n.csv", "n\n1\n2\n");
    ws.write("pipeline.yaml", pipeline(`  - { name: spread, type: sql, sql: 'SELECT ${expression} AS total FROM numbers', into: totals }`));
    const result = await ws.cli(["validate", "--engine", "sqljs"]);
    if (error === undefined) expect(result.code, result.stderr).toBe(0);
    else {
      expect(result.code).toBe(2);
      expect(result.stderr).toContain(error);
    }
  });
});

describe("a sqljs run that finds it writes after reading", () => {
  /** What the engine's tables and the pipeline's hold, without the clock's columns. */
  const contents = (file: string) =>
    ws.rows(
      `SELECT 'runs' AS t, run_id AS a, status AS b, rejected_rows AS c, error AS d FROM pipeline_runs
       UNION ALL SELECT 'steps', run_id || ':' || step_index, step || ':' || status, coalesce(inserted, '') || ':' || coalesce(updated, '') || ':' || coalesce(unchanged, ''), detail FROM pipeline_run_steps
       UNION ALL SELECT 'sources', step, content_sha256, bytes, run_id FROM pipeline_sources
       UNION ALL SELECT 'rejections', rejection_id, status || ':' || kind, last_run_id || ':' || coalesce(resolved_run_id, ''), line FROM pipeline_rejected_rows
       UNION ALL SELECT 'numbers', n, NULL, NULL, NULL FROM numbers
       UNION ALL SELECT 'totals', total, NULL, NULL, NULL FROM totals
       ORDER BY 1, 2, 3`,
      file,
    );

  test("saves what the native engine saves, run after run: unchanged, a source changed, a failed run journaled, then recorded", async () => {
    ws.write(
      "pipeline.yaml",
      pipeline(`  - { name: sum, type: sql, sql: 'SELECT sum(n) AS total FROM numbers', into: totals }`).replace(
        "database: db.sqlite",
        "database: ${DB}",
      ),
    );
    // why: run 5 fails (its column is missing) and is journaled; run 6 finds the sources as run 4 left them, and saves only to record it.
    const runs = ["n\n1\n2\n", "n\n1\n2\n", "n\n1\n2\n3\n", "n\n1\nx\n", "m\n1\n", "n\n1\nx\n", "n\n5\nx\n"];
    const statuses: string[] = [];
    for (const csv of runs) {
      ws.write("n.csv", csv);
      const codes = [];
      for (const engine of ["sqljs", "native"]) {
        const result = await ws.cli(["run", "--engine", engine, "--json"], { DB: `${engine}.sqlite` });
        codes.push(result.code);
        if (engine === "sqljs") statuses.push((JSON.parse(result.stdout) as { status: string }).status);
      }
      expect(codes[0]).toBe(codes[1]);
      expect(contents("sqljs.sqlite")).toEqual(contents("native.sqlite"));
    }
    expect(statuses).toEqual([
      "succeeded",
      "unchanged",
      "succeeded",
      "succeeded_with_rejections",
      "failed",
      "succeeded_with_rejections",
      "succeeded_with_rejections",
    ]);
    expect(contents("sqljs.sqlite").filter((row) => row["t"] === "runs")).toHaveLength(6);
  });
});

describe("a sqljs run reads with sql.js's SQL until it writes", () => {
  // why: the run reads through node:sqlite until it writes; what sql.js's build takes and node:sqlite's does not must not fail there.
  test.each([
    ['a double-quoted string (sql.js takes "..." for a string where no column has that name)', `date('now') > \\"2000-01-01\\"`],
    ["a function only sql.js's build has (its extension functions: square, stdev, reverse...)", "square(n) >= 0"],
  ])("a check with %s, valid on sql.js, passes an unchanged run as it passes the first", async (_, expression) => {
    ws.write(
      "pipeline.yaml",
      pipeline("").replace(
        "primary_key: [n]",
        `primary_key: [n]
    checks:
      - { name: holds, check: expression, expression: "${expression}" }`,
      ),
    );
    ws.write("n.csv", "n\n1\n2\n");
    expect((await ws.cli(["validate", "--engine", "sqljs"])).code).toBe(0);
    for (const status of ["succeeded", "unchanged"]) {
      const result = await ws.cli(["run", "--engine", "sqljs", "--json"]);
      expect(result.code, result.stderr).toBe(0);
      expect((JSON.parse(result.stdout) as { status: string }).status).toBe(status);
    }
  });
});

describe("a sqljs run that reads first, while another program holds the file", () => {
  test("a lock held past --lock-timeout is the lock error (exit 3), not an unreadable database", async () => {
    ws.write("pipeline.yaml", pipeline(""));
    ws.write("n.csv", "n\n1\n2\n");
    expect((await ws.cli(["run", "--engine", "sqljs"])).code).toBe(0);
    // why: the real sqlite3 CLI holds an EXCLUSIVE lock (as a long write does) until its input ends.
    const holder = spawn("sqlite3", ["-batch", ws.path("db.sqlite")], { stdio: ["pipe", "pipe", "inherit"] });
    holder.stdin.write("BEGIN EXCLUSIVE; SELECT 'held';\n");
    await once(holder.stdout, "data");
    try {
      const result = await ws.cli(["run", "--engine", "sqljs", "--lock-timeout", "1s"]);
      expect(result.stderr).toMatch(/^error E_LOCK .* is being written by another program; waited 1 s/);
      expect(result.code).toBe(3);
    } finally {
      holder.stdin.end("COMMIT;\n");
      await once(holder, "exit");
    }
  });
});
