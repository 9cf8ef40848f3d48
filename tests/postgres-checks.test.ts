import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from "vitest";
import { parse } from "yaml";
import { declaredChecks, runCheck, type CheckResult } from "../engine/checks.js";
import type { Pipeline } from "../engine/config/schema.js";
import { readDatabase } from "../engine/db/session.js";
import { startPostgres, type TestPostgres } from "./helpers/postgres.js";
import { Workspace } from "./helpers/workspace.js";

// On PostgreSQL the one pass over a table (engine/checks.ts, runChecksInOnePass) counts a relationship
// through a join to the parent's distinct keys instead of a subquery per row; each result must still be
// exactly what the check's own query gives, whatever the parent holds: repeated keys, NULLs, no key at all.

const pipeline = `version: 1
database: \${DB_PATH}
tables:
  channels:
    columns:
      name: { type: text }
      kind: { type: text }
  regions:
    columns:
      code: { type: integer }
  sales:
    columns:
      day: { type: date, required: true }
      channel: { type: text }
      region: { type: integer }
      qty: { type: integer }
    checks:
      - { name: channel_listed, check: relationships, column: channel, to: channels, field: name, severity: warn }
      - { name: region_listed, check: relationships, column: region, to: regions, field: code, severity: warn }
      - { name: region_listed_again, check: relationships, column: region, to: regions, field: code }
      - { name: qty_positive, check: range, column: qty, min: 0, inclusive: false, severity: warn }
      - { name: sales_listed_as_channels, check: relationships, column: channel, to: sales, field: channel }
steps:
  - { name: load_channels, type: load, source: channels.csv, table: channels, mode: replace, columns: { name: name, kind: kind } }
  - { name: load_regions, type: load, source: regions.csv, table: regions, mode: replace, columns: { code: code } }
  - { name: load_sales, type: load, source: sales.csv, table: sales, mode: replace, columns: { day: day, channel: channel, region: region, qty: qty } }
`;

// why: "web" listed twice and a channel with no name (a NULL key must not match, nor hide a missing one);
// regions listed once each; the sales hold a channel nobody lists, NULL channels and regions, and rows that pass.
const files = {
  "channels.csv": "name,kind\nshop,store\nweb,online\nweb,online\n,unnamed\n",
  "regions.csv": "code\n1\n2\n",
  "sales.csv":
    "day,channel,region,qty\n2024-01-01,shop,1,3\n2024-01-02,web,2,1\n2024-01-03,phone,1,2\n2024-01-04,,2,-1\n2024-01-05,web,,4\n",
};

let pg: TestPostgres;
let ws: Workspace;
let databases = 0;
beforeAll(async () => {
  pg = await startPostgres();
}, 60_000);
afterAll(() => pg?.stop());
beforeEach(() => {
  ws = new Workspace({ withClientPipeline: false });
  ws.write("pipeline.yaml", pipeline);
  for (const [file, text] of Object.entries(files)) ws.write(file, text);
});
afterEach(() => ws.remove());

/** Each declared check run alone, with its own query, against the stored database. */
async function eachAlone(database: string, runId: number): Promise<CheckResult[]> {
  const checks = declaredChecks(parse(pipeline) as Pipeline);
  return readDatabase(database, "postgres", 5000, (db) => {
    const startedAt = String(db.all("SELECT started_at FROM pipeline_runs WHERE run_id = ?", [runId])[0]?.["started_at"]);
    return checks.map((check) => runCheck(db, check, ws.dir, { run_id: runId, run_started_at: startedAt }));
  });
}

describe("checks judged in one pass on PostgreSQL", () => {
  test("count relationships through a join with the result of each check's own query: repeated and NULL parent keys", async () => {
    const database = pg.createDatabase(`checks_${++databases}`);
    const result = await ws.cli(["run", "--engine", "postgres", "--json"], { DB_PATH: database });
    expect(result.code, result.stdout + result.stderr).toBe(0);
    const run = JSON.parse(result.stdout) as { runId: number; checks: CheckResult[] };
    expect(run.checks).toEqual(await eachAlone(database, run.runId));
    expect(run.checks.map((c) => `${c.name} ${c.status} ${c.failingRows}`)).toEqual([
      "channel_listed warned 1",
      "region_listed passed 0",
      "region_listed_again passed 0",
      "qty_positive warned 1",
      "sales_listed_as_channels passed 0",
    ]);
    expect(run.checks[0]!.samples).toEqual([{ day: "2024-01-03", channel: "phone", region: 1, qty: 2 }]);
  });

  test("a relationship that fails with severity error stops the run with the check's own error", async () => {
    const database = pg.createDatabase(`checks_${++databases}`);
    ws.write("sales.csv", `${files["sales.csv"]}2024-01-06,web,3,1\n`);
    const result = await ws.cli(["run", "--engine", "postgres", "--json"], { DB_PATH: database });
    expect(result.code).toBe(1);
    const run = JSON.parse(result.stdout) as { checks: CheckResult[]; error: { code: string; message: string } };
    expect(run.error.code).toBe("E_CHECK");
    expect(run.error.message).toContain(
      'region_listed_again on sales: 1 failing row(s), first {"day":"2024-01-06","channel":"web","region":3',
    );
    expect(run.checks.find((c) => c.name === "region_listed")).toMatchObject({ status: "warned", failingRows: 1 });
  });
});
