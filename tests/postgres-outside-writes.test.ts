import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from "vitest";
import type { CheckResult } from "../engine/checks.js";
import { postgresBinDir, startPostgres, type TestPostgres } from "./helpers/postgres.js";
import { spawnCli, waitFor } from "./helpers/spawn-cli.js";
import { Workspace } from "./helpers/workspace.js";

// On PostgreSQL a check keeps the last commit's result only when the runner's trigger proves that
// nobody wrote its tables since (engine/db/pg/outside-writes.ts). Each write below, made between two
// runs by another session, however it hides, must make the next run check again and find the bad row.

const pipeline = `version: 1
database: \${DB_PATH}
tables:
  sales:
    columns:
      day: { type: date, required: true }
      qty: { type: integer }
    checks:
      - { name: qty_positive, check: range, column: qty, min: 0, inclusive: false, severity: warn }
      - { name: three_sales, check: row_count, min: 3, max: 3, severity: warn }
steps:
  - { name: load_sales, type: load, source: sales.csv, table: sales, mode: replace, columns: { day: day, qty: qty } }
`;

let pg: TestPostgres;
let ws: Workspace;
let databases = 0;
let database: string;
let name: string;
beforeAll(async () => {
  pg = await startPostgres();
}, 60_000);
afterAll(() => pg?.stop());
beforeEach(() => {
  ws = new Workspace({ withClientPipeline: false });
  ws.write("pipeline.yaml", pipeline);
  ws.write("sales.csv", "day,qty\n2024-01-01,3\n2024-01-02,1\n2024-01-03,2\n");
  name = `outside_${++databases}`;
  database = pg.createDatabase(name);
});
afterEach(() => ws.remove());

async function run(): Promise<{ status: string; checks: CheckResult[]; stdout: string }> {
  const result = await ws.cli(["run", "--engine", "postgres", "--json"], { DB_PATH: database });
  expect(result.code, result.stdout + result.stderr).toBe(0);
  return { ...(JSON.parse(result.stdout) as { status: string; checks: CheckResult[] }), stdout: result.stdout };
}

const summary = (checks: CheckResult[]) =>
  checks.map((c) => `${c.name} ${c.status} ${c.failingRows}${c.carriedFromRun === undefined ? "" : ` carried from ${c.carriedFromRun}`}`);

/** Two runs (the second carries both results over), `outside` from another session, then the run whose checks must see it. */
async function afterOutside(outside: string): Promise<string[]> {
  await run();
  expect(summary((await run()).checks)).toEqual(["qty_positive passed 0 carried from 1", "three_sales passed 0 carried from 1"]);
  pg.psql(name, outside);
  return summary((await run()).checks);
}

/** The pipeline with a second table, regions, and two derived tables, then `steps` after the loads. */
function twoTables(steps: string): void {
  ws.write(
    "pipeline.yaml",
    `${pipeline.replace(
      "steps:",
      `  regions:
    columns:
      code: { type: text, required: true }
      rate: { type: integer }
    checks:
      - { name: rate_positive, check: range, column: rate, min: 0, inclusive: false, severity: warn }
  sales_total:
    columns: { qty: { type: integer } }
  rates_total:
    columns: { rate: { type: integer } }
  doubled_total:
    columns: { qty: { type: integer } }
steps:`,
    )}  - { name: load_regions, type: load, source: regions.csv, table: regions, mode: replace, columns: { code: code, rate: rate } }
${steps}`,
  );
  ws.write("regions.csv", "code,rate\nnorth,2\nsouth,3\n");
}

const steps = (report: string) =>
  (JSON.parse(report) as { steps: { name: string; status: string }[] }).steps.map((s) => `${s.name} ${s.status}`);

describe("check results carried over on PostgreSQL", () => {
  test("a derived step whose source did not change runs again once another session wrote the table it reads", async () => {
    const totals = "  totals:\n    columns: { qty: { type: integer } }\nsteps:";
    ws.write(
      "pipeline.yaml",
      `${pipeline.replace("steps:", totals)}  - { name: total, type: sql, sql: "SELECT sum(qty) AS qty FROM sales", into: totals }\n`,
    );
    await run();
    expect(steps((await run()).stdout)).toEqual(["load_sales unchanged", "total skipped"]);
    pg.psql(name, "INSERT INTO sales VALUES ('2024-01-04', 10)");
    expect(steps((await run()).stdout)).toEqual(["load_sales unchanged", "total success"]);
    expect(pg.psql(name, "SELECT qty FROM totals")).toBe("16");
  });

  test("an outside write to one table voids that table's proof alone: the other's checks are carried over and its derived step skipped", async () => {
    twoTables(`  - { name: total_sales, type: sql, sql: "SELECT sum(qty) AS qty FROM sales", into: sales_total }
  - { name: total_rates, type: sql, sql: "SELECT sum(rate) AS rate FROM regions", into: rates_total }
`);
    await run();
    pg.psql(name, "INSERT INTO sales VALUES ('2024-01-04', -10)");
    const after = await run();
    expect(steps(after.stdout)).toEqual(["load_sales unchanged", "load_regions unchanged", "total_sales success", "total_rates skipped"]);
    expect(summary(after.checks)).toEqual(["qty_positive warned 1", "three_sales warned 1", "rate_positive passed 0 carried from 1"]);
    const notes = (JSON.parse(after.stdout) as { notes: string[] }).notes.join("\n");
    expect(notes).toMatch(/not proven as the last commit left them: sales;/);
    expect(notes).not.toMatch(/regions/);
    expect(pg.psql(name, "SELECT (SELECT qty FROM sales_total) || ',' || (SELECT rate FROM rates_total)")).toBe("-4,5");
    // The run marked sales again: the next one carries every result over and skips both derived steps.
    const next = await run();
    expect(steps(next.stdout)).toEqual(["load_sales unchanged", "load_regions unchanged", "total_sales skipped", "total_rates skipped"]);
    expect(summary(next.checks)).toEqual([
      "qty_positive warned 1 carried from 2",
      "three_sales warned 1 carried from 2",
      "rate_positive passed 0 carried from 1",
    ]);
  });

  test("after an outside write to one table, a derived step runs again when it reads a table a step run again wrote, or when what it reads cannot be told", async () => {
    twoTables(`  - { name: total_sales, type: sql, sql: "SELECT sum(qty) AS qty FROM sales", into: sales_total }
  - { name: doubled, type: sql, sql: "SELECT qty * 2 AS qty FROM sales_total", into: doubled_total }
  - { name: recount, type: sql, sql: "SELECT count(*) AS rate FROM regions WHERE CAST(rate AS text) <> ''", into: rates_total }
`);
    await run();
    pg.psql(name, "INSERT INTO sales VALUES ('2024-01-04', 10)");
    const after = await run();
    expect(steps(after.stdout)).toEqual([
      "load_sales unchanged",
      "load_regions unchanged",
      "total_sales success",
      "doubled success",
      "recount success",
    ]);
    const notes = (JSON.parse(after.stdout) as { notes: string[] }).notes.join("\n");
    expect(notes).toMatch(/step total_sales runs again: it reads sales/);
    expect(notes).toMatch(/step doubled runs again: it reads sales_total/);
    expect(notes).toMatch(/step recount runs again: which tables it reads is not known \(.*converts to text/);
    expect(pg.psql(name, "SELECT qty FROM doubled_total")).toBe("32");
  });

  test("a write another session rolled back voids no proof: every result is carried over (before 2026-12-02, every table was checked again)", async () => {
    const checks = await afterOutside("BEGIN; INSERT INTO sales VALUES ('2024-01-04', -1); ROLLBACK");
    expect(checks).toEqual(["qty_positive passed 0 carried from 1", "three_sales passed 0 carried from 1"]);
  });

  test("the log's rows cannot be removed by another session; removed with the runner's trigger on the log set aside, every table is checked again", async () => {
    await run();
    pg.psql(name, "INSERT INTO sales VALUES ('2024-01-04', -1)");
    expect(() => pg.psql(name, "DELETE FROM pipeline_outside_writes")).toThrow(/only the pipeline runner removes or changes rows/);
    expect(() => pg.psql(name, "TRUNCATE pipeline_outside_writes")).toThrow(/only the pipeline runner/);
    expect(() => pg.psql(name, "UPDATE pipeline_outside_writes SET table_oid = 0")).toThrow(/only the pipeline runner/);
    pg.psql(
      name,
      `ALTER TABLE pipeline_outside_writes DISABLE TRIGGER pipeline_keep_outside_writes; DELETE FROM pipeline_outside_writes;
       ALTER TABLE pipeline_outside_writes ENABLE ALWAYS TRIGGER pipeline_keep_outside_writes`,
    );
    expect(summary((await run()).checks)).toEqual(["qty_positive warned 1", "three_sales warned 1"]);
  });

  test("the log of outside writes keeps no row a later run would not read, and a write after a commit is still seen", async () => {
    await run();
    pg.psql(name, "INSERT INTO sales VALUES ('2024-01-04', 5); UPDATE sales SET qty = 4 WHERE qty = 5");
    expect(pg.psql(name, "SELECT count(*) FROM pipeline_outside_writes")).toBe("2");
    ws.write("sales.csv", "day,qty\n2024-01-01,3\n2024-01-02,1\n2024-01-03,2\n2024-01-05,6\n");
    expect((await run()).status).toBe("succeeded");
    expect(pg.psql(name, "SELECT count(*) FROM pipeline_outside_writes")).toBe("0");
    pg.psql(name, "UPDATE sales SET qty = -1 WHERE qty = 6");
    expect(summary((await run()).checks)).toEqual(["qty_positive warned 1", "three_sales warned 1"]);
  });

  test("another role that may write a table cannot list its transaction as the runner's", async () => {
    await run();
    pg.psql(
      name,
      `DO $$ BEGIN CREATE ROLE intruder; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
       GRANT USAGE ON SCHEMA public TO intruder; GRANT SELECT, UPDATE ON sales TO intruder`,
    );
    expect(() =>
      pg.psql(name, "SET ROLE intruder; INSERT INTO pipeline_runner_transactions (xid) VALUES (pg_current_xact_id()::text)"),
    ).toThrow(/permission denied/);
    pg.psql(name, "SET ROLE intruder; UPDATE sales SET qty = -1 WHERE qty = 1");
    expect(summary((await run()).checks)).toEqual(["qty_positive warned 1", "three_sales passed 0"]);
    expect(pg.psql(name, "SELECT count(*) FROM pipeline_runner_transactions")).toBe("0");
  });

  test("a run on tables nobody wrote keeps the last commit's results, and says so", async () => {
    await run();
    const second = await run();
    expect(second.status).toBe("unchanged");
    expect(summary(second.checks)).toEqual(["qty_positive passed 0 carried from 1", "three_sales passed 0 carried from 1"]);
  });

  test.each([
    ["an INSERT", "INSERT INTO sales VALUES ('2024-01-04', -1)", ["qty_positive warned 1", "three_sales warned 1"]],
    ["an UPDATE", "UPDATE sales SET qty = -1 WHERE qty = 1", ["qty_positive warned 1", "three_sales passed 0"]],
    ["a DELETE", "DELETE FROM sales WHERE qty = 1", ["qty_positive passed 0", "three_sales warned 1"]],
    ["a TRUNCATE", "TRUNCATE sales", ["qty_positive passed 0", "three_sales warned 1"]],
    [
      "an UPDATE with triggers off for replication",
      "SET session_replication_role = replica; UPDATE sales SET qty = -1 WHERE qty = 1",
      ["qty_positive warned 1", "three_sales passed 0"],
    ],
    [
      "an UPDATE with the trigger disabled, then enabled again",
      "ALTER TABLE sales DISABLE TRIGGER ALL; UPDATE sales SET qty = -1 WHERE qty = 1; ALTER TABLE sales ENABLE ALWAYS TRIGGER pipeline_outside_write",
      ["qty_positive warned 1", "three_sales passed 0"],
    ],
    [
      "an UPDATE in a transaction that calls itself the runner's through a setting (the marker before 2026-12-02)",
      "BEGIN; SELECT set_config('pipeline.writer', pg_current_xact_id()::text, true); UPDATE sales SET qty = -1 WHERE qty = 1; COMMIT",
      ["qty_positive warned 1", "three_sales passed 0"],
    ],
    [
      // why: the log names the table it wrote by oid, which a rename keeps; a name logged as "sales_aside" would miss sales.
      "an INSERT while the table was renamed, then named back",
      "ALTER TABLE sales RENAME TO sales_aside; INSERT INTO sales_aside VALUES ('2024-01-04', -1); ALTER TABLE sales_aside RENAME TO sales",
      ["qty_positive warned 1", "three_sales warned 1"],
    ],
    [
      "a DELETE cascading from a table of another schema's foreign key (the cascade fires the runner's trigger on sales)",
      `CREATE SCHEMA aside; CREATE TABLE aside.days (day date PRIMARY KEY); INSERT INTO aside.days SELECT day FROM sales;
       ALTER TABLE sales ADD FOREIGN KEY (day) REFERENCES aside.days ON DELETE CASCADE; DELETE FROM aside.days WHERE day = '2024-01-02';
       ALTER TABLE sales DROP CONSTRAINT sales_day_fkey`,
      ["qty_positive passed 0", "three_sales warned 1"],
    ],
    [
      "an UPDATE through a view",
      "CREATE VIEW sales_view AS SELECT * FROM sales; UPDATE sales_view SET qty = -1 WHERE qty = 1; DROP VIEW sales_view",
      ["qty_positive warned 1", "three_sales passed 0"],
    ],
    [
      "an UPDATE with the trigger dropped",
      "DROP TRIGGER pipeline_outside_write ON sales; UPDATE sales SET qty = -1 WHERE qty = 1",
      ["qty_positive warned 1", "three_sales passed 0"],
    ],
  ])("after %s from another session, the checks run again and see it", async (_what, outside, expected) => {
    const checks = await afterOutside(outside);
    // why: the write voids the proof: no result is carried over, and each check finds what the table holds.
    expect(checks).toEqual(expected);
  });

  test("an UPDATE with the trigger dropped and created again as it was: the checks run again", async () => {
    await run();
    const definition = pg.psql(
      name,
      "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgname = 'pipeline_outside_write' AND tgrelid = 'sales'::regclass",
    );
    const checks = await afterOutside(
      `DROP TRIGGER pipeline_outside_write ON sales; UPDATE sales SET qty = -1 WHERE qty = 1; ${definition};
       ALTER TABLE sales ENABLE ALWAYS TRIGGER pipeline_outside_write`,
    );
    expect(checks).toEqual(["qty_positive warned 1", "three_sales passed 0"]);
  });

  test("an UPDATE with the function emptied, then put back as it was: the checks run again", async () => {
    await run();
    const definition = pg.psql(name, "SELECT pg_get_functiondef('pipeline_note_outside_write'::regproc)");
    const checks = await afterOutside(
      `CREATE OR REPLACE FUNCTION pipeline_note_outside_write() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
       UPDATE sales SET qty = -1 WHERE qty = 1; ${definition}`,
    );
    expect(checks).toEqual(["qty_positive warned 1", "three_sales passed 0"]);
  });

  test("the table dropped and made again with other rows, trigger and comment included: the checks run again", async () => {
    await run();
    const definition = pg.psql(
      name,
      "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgname = 'pipeline_outside_write' AND tgrelid = 'sales'::regclass",
    );
    const checks = await afterOutside(
      `ALTER TABLE sales RENAME TO sales_old; CREATE TABLE sales (LIKE sales_old INCLUDING ALL);
       INSERT INTO sales SELECT day, CASE WHEN qty = 1 THEN -1 ELSE qty END FROM sales_old;
       DO $$ BEGIN EXECUTE format('COMMENT ON TABLE sales IS %L', obj_description('sales_old'::regclass, 'pg_class')); END $$;
       DROP TABLE sales_old; ${definition.replace("sales_old", "sales")}; ALTER TABLE sales ENABLE ALWAYS TRIGGER pipeline_outside_write;
       ALTER TABLE pipeline_outside_writes DISABLE TRIGGER pipeline_keep_outside_writes; DELETE FROM pipeline_outside_writes;
       ALTER TABLE pipeline_outside_writes ENABLE ALWAYS TRIGGER pipeline_keep_outside_writes`,
    );
    expect(checks).toEqual(["qty_positive warned 1", "three_sales passed 0"]);
  });

  test("a trigger of that name calling another function is refused as planted (E_DRIFT)", async () => {
    await run();
    pg.psql(
      name,
      `CREATE FUNCTION sneaky() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
       DROP TRIGGER pipeline_outside_write ON sales;
       CREATE TRIGGER pipeline_outside_write AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON sales FOR EACH STATEMENT EXECUTE FUNCTION sneaky();
       ALTER TABLE sales ENABLE ALWAYS TRIGGER pipeline_outside_write`,
    );
    const result = await ws.cli(["run", "--engine", "postgres"], { DB_PATH: database });
    expect(result.code).not.toBe(0);
    expect(result.stdout + result.stderr).toMatch(/E_DRIFT[\s\S]*pipeline_outside_write/);
  });

  test("a run that only appended judges the appended rows alone, and finds a bad one; after an outside write, all rows again", async () => {
    ws.write(
      "pipeline.yaml",
      pipeline
        .replace("mode: replace", "mode: insert_new, key: [day]")
        .replace("      qty: { type: integer }\n", "      qty: { type: integer }\n    unique: [[day]]\n")
        .replace("min: 3, max: 3", "min: 3"),
    );
    await run();
    ws.write("sales.csv", "day,qty\n2024-01-01,3\n2024-01-02,1\n2024-01-03,2\n2024-01-04,5\n2024-01-05,-2\n");
    const appended = (await run()).checks.find((c) => c.name === "qty_positive")!;
    expect(appended).toMatchObject({ status: "warned", failingRows: 1, samples: [{ day: "2024-01-05", qty: -2 }] });
    expect(appended.appendedRows).toBeUndefined(); // why: a failing row on the appended rows runs the whole check.
    ws.write("sales.csv", "day,qty\n2024-01-06,4\n2024-01-07,6\n");
    pg.psql(name, "UPDATE sales SET qty = 1 WHERE qty = -2");
    // why: the outside write voids the proof: the whole table is checked (no appended-rows result), and its fix is seen.
    const afterOutside = (await run()).checks.find((c) => c.name === "qty_positive")!;
    expect(afterOutside).toMatchObject({ status: "passed", failingRows: 0 });
    expect(afterOutside.appendedRows).toBeUndefined();
    ws.write("sales.csv", "day,qty\n2024-01-08,7\n2024-01-09,8\n2024-01-10,9\n");
    const only = (await run()).checks.find((c) => c.name === "qty_positive")!;
    expect(only).toMatchObject({ status: "passed", failingRows: 0, appendedRows: { rows: 3, earlierFromRun: 3 } });
    expect(pg.psql(name, "SELECT count(*), sum(qty) FROM sales")).toBe("10|46");
  });
});

// A run locks no table it only reads: another session writes it while the run works, and the commit
// confirms the proof again (engine/db/pg/outside-writes.ts). A table the run writes is locked against
// other writers from the moment a step is about to write it. To make the timing certain, the run's
// last step waits at a gate while the outside session acts: another session holds its table
// sales_total locked against writers, so the run waits there, after load_sales wrote sales.

const gated = `version: 1
database: \${DB_PATH}
tables:
  regions:
    columns:
      code: { type: text, required: true }
      rate: { type: integer }
    checks:
      - { name: rate_positive, check: range, column: rate, min: 0, inclusive: false, severity: warn }
  sales:
    columns:
      day: { type: date, required: true }
      qty: { type: integer }
    unique: [[day]]
  sales_total:
    columns:
      qty: { type: integer }
  notes:
    columns:
      note: { type: text }
steps:
  - { name: load_regions, type: load, source: regions.csv, table: regions, mode: replace, columns: { code: code, rate: rate } }
  - { name: load_sales, type: load, source: sales.csv, table: sales, mode: insert_new, key: [day], columns: { day: day, qty: qty } }
  - name: wait_at_gate
    type: sql
    sql: "SELECT sum(qty) AS qty FROM sales"
    into: sales_total
`;

describe("other sessions' writes during a run on PostgreSQL", () => {
  let gate: ChildProcess | undefined;
  beforeEach(() => {
    ws.write("pipeline.yaml", gated);
    ws.write("regions.csv", "code,rate\nnorth,2\nsouth,3\n");
  });
  afterEach(() => {
    gate?.kill("SIGKILL");
    gate = undefined;
    pg.psql(name, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'gate'");
  });

  /** Closes the gate (an outside session holds sales_total locked against writers), starts a run, and waits until it waits there. */
  async function runToGate() {
    gate = spawn(
      path.join(postgresBinDir()!, "psql"),
      ["-X", "-q", "-d", database, "-c", "BEGIN; LOCK TABLE sales_total IN ROW EXCLUSIVE MODE; SELECT pg_sleep(120)"],
      { stdio: "ignore", env: { ...process.env, PGAPPNAME: "gate" } },
    );
    await waitFor(() => gateLocks(true) !== "0", 20_000);
    const running = spawnCli(["run", "--engine", "postgres", "--json", "--lock-timeout", "60s"], ws.dir, { DB_PATH: database });
    // why: the run waits for the lock its sql step takes before writing sales_total, not for the commit's.
    await waitFor(() => gateLocks(false, "ShareRowExclusiveLock") !== "0", 30_000);
    return running;
  }
  /** How many locks on sales_total (of `mode`, when given) are held (`granted`) or waited for. */
  const gateLocks = (granted: boolean, mode = "") =>
    pg.psql(
      name,
      `SELECT count(*) FROM pg_locks WHERE relation = 'sales_total'::regclass AND granted = ${granted} AND mode LIKE '${mode}%'`,
    );
  /** Opens the gate: the run goes on to its commit. */
  function openGate() {
    pg.psql(name, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'gate'");
  }
  /** Runs `sql` in another session that gives up on a table lock after 2 s; its error, or undefined when it went through. */
  function outside(sql: string): string | undefined {
    try {
      pg.psql(name, `SET lock_timeout = '2s'; ${sql}`);
      return undefined;
    } catch (error) {
      return String((error as { stderr?: string }).stderr ?? error);
    }
  }

  test("a table the run only reads takes another session's write mid-run; the run, whose check result rested on it, saves nothing and says why", async () => {
    ws.write("sales.csv", "day,qty\n2024-01-01,3\n");
    await run();
    ws.write("sales.csv", "day,qty\n2024-01-01,3\n2024-01-02,4\n");
    const running = await runToGate();
    // why: regions' load step found its source unchanged and wrote nothing; its check's result is carried from run 1, unlocked.
    expect(outside("INSERT INTO regions VALUES ('west', -5)")).toBeUndefined();
    expect(gateLocks(false)).toBe("1"); // why: the run is still at the gate, its transaction open.
    openGate();
    const result = await running.done;
    expect(result.code).not.toBe(0);
    expect(result.stdout + result.stderr).toMatch(/E_CHANGED[\s\S]*another session wrote regions during the run[\s\S]*nothing was saved/);
    expect(pg.psql(name, "SELECT count(*) FROM sales")).toBe("1");
    expect(pg.psql(name, "SELECT count(*) FROM pipeline_runs WHERE status = 'succeeded'")).toBe("1");
    // The next run relies on nothing regions' mark vouched for: it checks regions in full, finds the row, and saves.
    const next = await run();
    expect(summary(next.checks)).toEqual(["rate_positive warned 1"]);
    expect(pg.psql(name, "SELECT count(*) FROM sales")).toBe("2");
  }, 90_000);

  test("a write another session rolls back mid-run on a table the run relies on does not fail the run (before 2026-12-02: E_CHANGED)", async () => {
    ws.write("sales.csv", "day,qty\n2024-01-01,3\n");
    await run();
    ws.write("sales.csv", "day,qty\n2024-01-01,3\n2024-01-02,4\n");
    const running = await runToGate();
    expect(outside("BEGIN; INSERT INTO regions VALUES ('west', -5); ROLLBACK")).toBeUndefined();
    openGate();
    const result = await running.done;
    expect(result.code, result.stdout + result.stderr).toBe(0);
    expect(summary((JSON.parse(result.stdout) as { checks: CheckResult[] }).checks)).toEqual(["rate_positive passed 0 carried from 1"]);
    expect(pg.psql(name, "SELECT count(*) FROM sales")).toBe("2");
  }, 90_000);

  test("under REPEATABLE READ (a statement does not see later commits), a committed write mid-run on a table the run relies on still fails it", async () => {
    pg.psql(name, `ALTER DATABASE ${name} SET default_transaction_isolation = 'repeatable read'`);
    ws.write("sales.csv", "day,qty\n2024-01-01,3\n");
    await run();
    ws.write("sales.csv", "day,qty\n2024-01-01,3\n2024-01-02,4\n");
    const running = await runToGate();
    expect(outside("INSERT INTO regions VALUES ('west', -5)")).toBeUndefined();
    openGate();
    const result = await running.done;
    expect(result.code).not.toBe(0);
    expect(result.stdout + result.stderr).toMatch(/E_CHANGED[\s\S]*another session wrote regions during the run/);
  }, 90_000);

  test("a table the run writes is locked against other writers from its step on; readers go on, and the run saves", async () => {
    ws.write("sales.csv", "day,qty\n2024-01-01,3\n");
    await run();
    ws.write("sales.csv", "day,qty\n2024-01-01,3\n2024-01-02,4\n");
    const running = await runToGate();
    expect(outside("INSERT INTO sales VALUES ('2024-01-03', 9)")).toMatch(/lock timeout/);
    expect(outside("SELECT count(*) FROM sales")).toBeUndefined();
    // why: a write to a table the run neither writes nor relies on goes through, and only costs that table its mark.
    expect(outside("INSERT INTO notes VALUES ('by hand')")).toBeUndefined();
    openGate();
    const result = await running.done;
    expect(result.code, result.stdout + result.stderr).toBe(0);
    expect(summary((JSON.parse(result.stdout) as { checks: CheckResult[] }).checks)).toEqual(["rate_positive passed 0 carried from 1"]);
    expect(pg.psql(name, "SELECT qty FROM sales_total")).toBe("7");
    expect(
      pg.psql(
        name,
        "SELECT string_agg(table_name, ',' ORDER BY table_name) FROM pipeline_table_marks WHERE table_name NOT LIKE 'pipeline%'",
      ),
    ).toBe("regions,sales");
  }, 90_000);

  test("a script step (sql without into:) locks every table against other writers before it runs, so what it wrote stays locked to the commit", async () => {
    // why: the script writes regions, then waits at a gate of its own: a row of sales another session holds locked (FOR UPDATE,
    // which blocks no table lock; load_sales only appends). Before 2026-12-02 the script took no lock of the runner's: its UPDATE's ROW EXCLUSIVE let others write.
    ws.write(
      "pipeline.yaml",
      gated.replace(
        "  - name: wait_at_gate",
        `  - { name: script, type: sql, sql: "UPDATE regions SET rate = rate + 1; UPDATE sales SET qty = qty" }
  - name: wait_at_gate`,
      ),
    );
    ws.write("sales.csv", "day,qty\n2024-01-01,3\n");
    await run();
    ws.write("sales.csv", "day,qty\n2024-01-01,3\n2024-01-02,4\n");
    gate = spawn(
      path.join(postgresBinDir()!, "psql"),
      ["-X", "-q", "-d", database, "-c", "BEGIN; SELECT * FROM sales FOR UPDATE; SELECT pg_sleep(120)"],
      { stdio: "ignore", env: { ...process.env, PGAPPNAME: "gate" } },
    );
    await waitFor(
      () =>
        pg.psql(
          name,
          "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'gate' AND state = 'active' AND wait_event = 'PgSleep'",
        ) !== "0",
      20_000,
    );
    const running = spawnCli(["run", "--engine", "postgres", "--json", "--lock-timeout", "60s"], ws.dir, { DB_PATH: database });
    const runner = `(SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'pipeline-runner%' AND state <> 'idle')`;
    // why: the script waits for the gate's row, having updated regions.
    await waitFor(() => pg.psql(name, `SELECT count(*) FROM pg_locks WHERE NOT granted AND pid IN ${runner}`) !== "0", 30_000);
    const held = pg.psql(
      name,
      `SELECT string_agg(relation::regclass::text, ',' ORDER BY relation::regclass::text) FROM pg_locks
       WHERE granted AND mode = 'ShareRowExclusiveLock' AND pid IN ${runner}`,
    );
    expect(held.split(",")).toEqual(expect.arrayContaining(["notes", "regions", "sales", "sales_total"]));
    expect(outside("INSERT INTO regions VALUES ('west', 5)")).toMatch(/lock timeout/);
    expect(outside("SELECT count(*) FROM regions")).toBeUndefined();
    openGate();
    const result = await running.done;
    expect(result.code, result.stdout + result.stderr).toBe(0);
    expect(pg.psql(name, "SELECT string_agg(rate::text, ',' ORDER BY code) FROM regions")).toBe("4,5");
  }, 90_000);
});
