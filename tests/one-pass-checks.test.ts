import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from "vitest";
import { parse } from "yaml";
import { declaredChecks, runCheck, type CheckResult } from "../engine/checks.js";
import type { Pipeline } from "../engine/config/schema.js";
import type { EngineName } from "../engine/db/engines/engine.js";
import { readDatabase } from "../engine/db/session.js";
import { startPostgres, type TestPostgres } from "./helpers/postgres.js";
import { sqlite, Workspace } from "./helpers/workspace.js";

// The row-by-row checks of a table are judged in one pass over it (engine/checks.ts, runChecksInOnePass);
// each result must be exactly what the check's own query gives (runCheck, one query per check).

const pipeline = `version: 1
database: \${DB_PATH:-db.sqlite}
tables:
  products:
    columns:
      id: { type: text }
    primary_key: [id]
  stores:
    columns:
      id: { type: integer }
    primary_key: [id]
  sales:
    columns:
      day: { type: date, required: true }
      product: { type: text }
      store: { type: integer }
      qty: { type: integer }
      channel: { type: text }
    foreign_keys:
      - { columns: [store], references: { table: stores, columns: [id] } }
    checks:
      - { name: qty_positive, check: range, column: qty, min: 0, inclusive: false, severity: warn }
      - { name: qty_present, check: not_null, column: qty, severity: warn }
      - { name: product_present, check: not_null, column: product, severity: warn }
      - { name: channel_known, check: accepted_values, column: channel, values: [shop, web], severity: warn }
      - { name: product_known, check: relationships, column: product, to: products, field: id, severity: warn }
      - { name: store_known, check: relationships, column: store, to: stores, field: id }
      - { name: days_from_2024, check: range, column: day, min: "2024-01-01" }
      - { name: before_the_run, check: expression, expression: "day <= date(:run_started_at)", severity: warn }
      - { name: qty_small, check: expression, expression: "qty < 100" }
      - { name: no_repeat, check: unique, columns: [day, product, store], severity: warn }
steps:
  - { name: load_products, type: load, source: products.csv, table: products, mode: replace, columns: { id: id } }
  - { name: load_stores, type: load, source: stores.csv, table: stores, mode: replace, columns: { id: id } }
  - name: load_sales
    type: load
    source: sales.csv
    table: sales
    mode: replace
    columns: { day: day, product: product, store: store, qty: qty, channel: channel }
`;

// why: failing and passing checks mixed; NULLs a check skips (channel, product) or counts (qty); more failing rows than samples kept.
const sales = `day,product,store,qty,channel
2024-01-02,A,1,3,shop
2024-01-03,B,2,-1,web
2024-01-04,Z,1,0,shop
2024-01-05,A,2,,phone
2024-01-06,B,1,-2,
2024-01-07,A,1,-3,shop
2024-01-08,B,2,-4,web
2024-01-09,A,1,-5,web
2999-01-01,A,2,2,shop
2024-01-10,,1,1,shop
`;

let ws: Workspace;
beforeEach(() => {
  ws = new Workspace({ withClientPipeline: false });
  ws.write("pipeline.yaml", pipeline);
  ws.write("products.csv", "id\nA\nB\n");
  ws.write("stores.csv", "id\n1\n2\n");
  ws.write("sales.csv", sales);
});
afterEach(() => ws.remove());

let pg: TestPostgres | undefined;
let databases = 0;
afterAll(() => pg?.stop());

/** Each declared check run alone, with its own query, against the stored database, with the parameters of run `runId`. */
async function eachAlone(engine: EngineName, database: string, runId: number): Promise<CheckResult[]> {
  const checks = declaredChecks(parse(pipeline) as Pipeline);
  return readDatabase(database, engine, 5000, (db) => {
    const startedAt = String(db.all("SELECT started_at FROM pipeline_runs WHERE run_id = ?", [runId])[0]?.["started_at"]);
    return checks.map((check) => runCheck(db, check, ws.dir, { run_id: runId, run_started_at: startedAt }));
  });
}

const summary = (checks: readonly CheckResult[]) => checks.map((c) => `${c.name} ${c.status} ${c.failingRows}`);

describe.each(["sqljs", "native", "postgres"] as const)("on the %s engine, checks judged in one pass", (engine) => {
  let env: Record<string, string> = {};
  let database = "";
  beforeAll(async () => {
    if (engine === "postgres") pg ??= await startPostgres();
  }, 60_000);
  beforeEach(() => {
    database = engine === "postgres" ? pg!.createDatabase(`one_pass_${++databases}`) : ws.path("db.sqlite");
    env = engine === "postgres" ? { DB_PATH: database } : {};
  });

  test("give each check exactly the result of its own query: counts, samples, statuses, warn and error", async () => {
    const result = await ws.cli(["run", "--engine", engine, "--json"], env);
    expect(result.code, result.stdout + result.stderr).toBe(0);
    const run = JSON.parse(result.stdout) as { runId: number; checks: CheckResult[] };
    const alone = await eachAlone(engine, database, run.runId);
    expect(run.checks).toEqual(alone);
    // why: the comparison above means something only if the mix is there: failing and passing, more failures than samples.
    expect(summary(run.checks)).toEqual([
      "qty_positive warned 6",
      "qty_present warned 1",
      "product_present warned 1",
      "channel_known warned 1",
      "product_known warned 1",
      "store_known passed 0",
      "days_from_2024 passed 0",
      "before_the_run warned 1",
      "qty_small passed 0",
      "no_repeat passed 0",
    ]);
    expect(run.checks[0]!.samples).toHaveLength(5);
  });

  test.skipIf(engine === "postgres")(
    "count rows that break a foreign key (written by sqlite3 without it) as the relationship's own query does",
    async () => {
      expect((await ws.cli(["run", "--engine", engine], env)).code).toBe(0);
      // why: the sqlite3 CLI does not enforce foreign keys by default; a NULL reference is not a failure.
      sqlite(database, "INSERT INTO sales VALUES ('2024-02-01', 'A', 7, 1, 'web'), ('2024-02-02', 'B', NULL, 1, 'web')");
      const result = await ws.cli(["test", "--engine", engine, "--json"], env);
      expect(result.code, result.stdout).toBe(1);
      const tested = JSON.parse(result.stdout) as { checks: CheckResult[]; error: { code: string; message: string } };
      expect(tested.checks).toEqual(await eachAlone(engine, database, 1));
      expect(tested.checks.find((c) => c.name === "store_known")).toMatchObject({
        status: "failed",
        failingRows: 1,
        samples: [{ day: "2024-02-01", store: 7 }],
      });
      expect(tested.error.code).toBe("E_CHECK");
    },
  );

  test.runIf(engine === "postgres")("leave a check whose query fails on the server to fail alone, with its own error", async () => {
    // why: on PostgreSQL an integer division by zero is an error (SQLite gives NULL); the shared query fails first, and must not abort the run's transaction.
    const check = '      - { name: qty_divides, check: expression, expression: "qty / (qty - qty) >= 0" }\n';
    ws.write("pipeline.yaml", pipeline.replace("steps:\n", `${check}steps:\n`));
    const result = await ws.cli(["run", "--engine", engine, "--json"], env);
    expect(result.code).toBe(1);
    const run = JSON.parse(result.stdout) as { error: { code: string; message: string } };
    expect(run.error.code).toBe("E_SQL");
    expect(run.error.message).toContain("check qty_divides on sales: division by zero");
  });

  test("stop the run on a failing error check with the same error as the check alone", async () => {
    ws.write("sales.csv", `${sales}2023-12-31,A,1,1,shop\n`);
    const result = await ws.cli(["run", "--engine", engine, "--json"], env);
    expect(result.code).toBe(1);
    const run = JSON.parse(result.stdout) as { checks: CheckResult[]; error: { code: string; message: string } };
    expect(run.error.code).toBe("E_CHECK");
    expect(run.error.message).toContain('days_from_2024 on sales: 1 failing row(s), first {"day":"2023-12-31"');
    expect(summary(run.checks)).toContain("days_from_2024 failed 1");
    expect(summary(run.checks)).toContain("qty_positive warned 6");
  });
});
