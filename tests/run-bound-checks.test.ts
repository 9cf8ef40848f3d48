import { afterEach, beforeEach, describe, expect, test } from "vitest";
import type { CheckResult as Check } from "../engine/checks.js";
import { Workspace } from "./helpers/workspace.js";

// A range check's bound may be the run's own day or start (`max: { run: date }`): it judges as the
// expression on :run_started_at it replaces, and since the engine knows the bound (recorded with the
// result), a re-run that only appended rows judges those alone while the bound only widened.
// Pipeline-level: on sqljs, native and PostgreSQL (whose commit mark is the runner's trigger log, engine/db/pg/outside-writes.ts).

const pipeline = (checks: string) => `version: 1
database: db.sqlite
tables:
  sales:
    columns:
      sale_id: { type: integer }
      day: { type: date }
      at: { type: text }
      qty: { type: integer, required: true }
    primary_key: [sale_id]
    checks:
${checks}steps:
  - { name: load_sales, type: load, source: sales.csv, table: sales, mode: insert_new, key: [sale_id], columns: { sale_id: id, day: day, at: at, qty: qty } }
`;

/** Each bound of the run beside the expression it replaces, all warn so that every result shows. */
const pairs = `      - { name: no_future_day, check: range, column: day, max: { run: date }, severity: warn }
      - { name: no_future_day_expr, check: expression, column: day, expression: "day <= date(:run_started_at)", severity: warn }
      - { name: no_future_at, check: range, column: at, max: { run: time }, inclusive: false, severity: warn }
      - { name: no_future_at_expr, check: expression, column: at, expression: "at < :run_started_at", severity: warn }
      - { name: after_the_run, check: range, column: day, min: { run: date }, inclusive: false, severity: warn }
      - { name: after_the_run_expr, check: expression, column: day, expression: "day > date(:run_started_at)", severity: warn }
`;

const noFutureDay = (severity: "error" | "warn") =>
  `      - { name: no_future_day, check: range, column: day, max: { run: date }, severity: ${severity} }\n`;
const afterTheRun = "      - { name: after_the_run, check: range, column: day, min: { run: date }, inclusive: false }\n";

interface RunJson {
  ok: boolean;
  status: string;
  runId?: number;
  checks: Check[];
  error?: { code: string; message: string };
}

const at = (iso: string) => () => new Date(iso);

let ws: Workspace;
beforeEach(() => (ws = new Workspace({ withClientPipeline: false })));
afterEach(() => ws.remove());

const header = "id,day,at,qty\n";
const append = (lines: string) => ws.write("sales.csv", `${ws.bytes("sales.csv")!.toString()}${lines}`);
async function run(now: string, expected = 0): Promise<RunJson> {
  const result = await ws.cli(["run", "--json"], {}, { now: at(now) });
  expect(result.code, result.stdout + result.stderr).toBe(expected);
  return JSON.parse(result.stdout) as RunJson;
}
const byName = (report: { checks: Check[] }) => new Map(report.checks.map((check) => [check.name, check]));
/** What running every check against the stored database gives at `now` (the test command carries nothing). */
async function tested(now: string): Promise<Map<string, Check>> {
  return byName(JSON.parse((await ws.cli(["test", "--json"], {}, { now: at(now) })).stdout) as { checks: Check[] });
}

describe("a range check with a bound of the run", () => {
  test("gives the verdicts of the expression on :run_started_at it replaces: counts, samples, NULLs, inclusive or not", async () => {
    ws.write("pipeline.yaml", pipeline(pairs));
    ws.write(
      "sales.csv",
      `${header}1,2024-05-31,2024-05-31T23:59:59.999Z,1\n2,2024-06-01,2024-06-01T09:59:59.999Z,1\n3,2024-06-01,2024-06-01T10:00:00.000Z,1\n` +
        `4,2024-06-02,2024-06-01T10:00:00.001Z,1\n5,,,1\n6,2999-01-01,2999-01-01T00:00:00.000Z,1\n7,2024-06-03,2024-06-02T00:00:00.000Z,1\n`,
    );
    const checks = byName(await run("2024-06-01T10:00:00.000Z"));
    for (const name of ["no_future_day", "no_future_at", "after_the_run"]) {
      const { name: _, column: __, kind, runBounds, ...range } = checks.get(name)!;
      const { name: ___, column: ____, kind: expressionKind, ...expression } = checks.get(`${name}_expr`)!;
      expect([kind, expressionKind]).toEqual(["range", "expression"]);
      expect(range, name).toEqual(expression);
      expect(runBounds, name).toEqual(
        name === "after_the_run" ? { min: "2024-06-01" } : { max: name === "no_future_day" ? "2024-06-01" : "2024-06-01T10:00:00.000Z" },
      );
    }
    // why: the comparison above means something only where each finds rows on both sides of its bound.
    expect([...checks.values()].map((c) => `${c.name} ${c.failingRows}`)).toEqual([
      "no_future_day 3",
      "no_future_day_expr 3",
      "no_future_at 4",
      "no_future_at_expr 4",
      "after_the_run 3",
      "after_the_run_expr 3",
    ]);
    expect(ws.query("SELECT check_name, run_bounds FROM pipeline_check_results WHERE run_bounds IS NOT NULL ORDER BY 1", "db.sqlite")).toBe(
      ['after_the_run|{"min":"2024-06-01"}', 'no_future_at|{"max":"2024-06-01T10:00:00.000Z"}', 'no_future_day|{"max":"2024-06-01"}'].join(
        "\n",
      ),
    );
  });

  test("judges only the appended rows while the run's day moves forward, equals the whole check, and still catches a sale after the run's day", async () => {
    ws.write("pipeline.yaml", pipeline(noFutureDay("error")));
    ws.write("sales.csv", `${header}1,2024-05-30,,1\n2,2024-06-01,,1\n`);
    expect(byName(await run("2024-06-01T10:00:00.000Z")).get("no_future_day")).toMatchObject({ status: "passed", failingRows: 0 });
    append("3,2024-06-02,,1\n4,2024-06-02,,2\n");
    const second = byName(await run("2024-06-02T08:00:00.000Z")).get("no_future_day")!;
    expect(second.appendedRows).toEqual({ rows: 2, earlierFromRun: 1 });
    const { appendedRows: _, ...result } = second;
    expect(result).toEqual((await tested("2024-06-02T08:00:00.000Z")).get("no_future_day"));
    expect(result.runBounds).toEqual({ max: "2024-06-02" });
    // why: nothing appended, a later day: the pass on every row under 2024-06-02 holds under 2024-06-03.
    expect(byName(await run("2024-06-03T08:00:00.000Z")).get("no_future_day")).toMatchObject({ status: "passed", carriedFromRun: 2 });
    append("5,2024-06-09,,1\n");
    const failed = await run("2024-06-04T08:00:00.000Z", 1);
    expect(failed.error?.code).toBe("E_CHECK");
    expect(byName(failed).get("no_future_day")).toMatchObject({
      status: "failed",
      failingRows: 1,
      samples: [{ sale_id: 5, day: "2024-06-09" }],
    });
    expect(byName(failed).get("no_future_day")?.appendedRows).toBeUndefined();
  });

  test("judges every row when the clock moved back since the last run, and catches an old row now after the run's day", async () => {
    ws.write("pipeline.yaml", pipeline(noFutureDay("error")));
    ws.write("sales.csv", `${header}1,2024-06-04,,1\n2,2024-06-08,,1\n`);
    await run("2024-06-10T10:00:00.000Z");
    // why: the bound is now 2024-06-05, below the 2024-06-10 the old rows passed under; the appended row alone passes.
    append("3,2024-06-01,,1\n");
    const failed = await run("2024-06-05T10:00:00.000Z", 1);
    expect(byName(failed).get("no_future_day")).toMatchObject({
      status: "failed",
      failingRows: 1,
      samples: [{ sale_id: 2, day: "2024-06-08" }],
    });
    expect(failed.error?.message).toContain("no_future_day on sales: 1 failing row(s)");
  });

  test("judges every row, and carries nothing over, when the clock moved back even if every row still passes", async () => {
    ws.write("pipeline.yaml", pipeline(noFutureDay("error")));
    ws.write("sales.csv", `${header}1,2024-06-04,,1\n`);
    await run("2024-06-10T10:00:00.000Z");
    append("2,2024-06-01,,1\n");
    const back = byName(await run("2024-06-05T10:00:00.000Z")).get("no_future_day")!;
    expect(back).toMatchObject({ status: "passed", runBounds: { max: "2024-06-05" } });
    expect(back.appendedRows).toBeUndefined();
    const unchanged = byName(await run("2024-06-04T10:00:00.000Z")).get("no_future_day")!;
    expect(unchanged.status).toBe("passed");
    expect(unchanged.carriedFromRun).toBeUndefined();
  });

  test("judges every row when the last result had failing rows (warn): a row the moving day lets pass counts no more", async () => {
    ws.write("pipeline.yaml", pipeline(noFutureDay("warn")));
    ws.write("sales.csv", `${header}1,2024-06-03,,1\n`);
    expect(byName(await run("2024-06-01T10:00:00.000Z")).get("no_future_day")).toMatchObject({ status: "warned", failingRows: 1 });
    // why: nothing changed, but the day moved past the failing row: carrying "1 failing row" over would be wrong.
    const unchanged = byName(await run("2024-06-03T10:00:00.000Z")).get("no_future_day")!;
    expect(unchanged).toMatchObject({ status: "passed", failingRows: 0 });
    expect(unchanged.carriedFromRun).toBeUndefined();
    append("2,2024-06-10,,1\n");
    expect(byName(await run("2024-06-05T10:00:00.000Z")).get("no_future_day")).toMatchObject({ status: "warned", failingRows: 1 });
    append("3,2024-05-01,,1\n");
    const still = byName(await run("2024-06-06T10:00:00.000Z")).get("no_future_day")!;
    expect(still).toMatchObject({ status: "warned", failingRows: 1, samples: [{ sale_id: 2 }] });
    expect(still.appendedRows).toBeUndefined();
    append("4,2024-05-02,,1\n");
    const last = await run("2024-06-11T10:00:00.000Z");
    const passed = byName(last).get("no_future_day")!;
    expect(passed).toMatchObject({ status: "passed", failingRows: 0 });
    expect(passed.appendedRows).toBeUndefined();
    expect(byName(await run("2024-06-12T10:00:00.000Z")).get("no_future_day")?.carriedFromRun).toBe(last.runId);
  });

  test("with a lower bound, judges only the appended rows when the run's day moved back, every row when it moved forward", async () => {
    ws.write("pipeline.yaml", pipeline(afterTheRun));
    ws.write("sales.csv", `${header}1,2024-06-20,,1\n`);
    await run("2024-06-10T10:00:00.000Z");
    append("2,2024-06-15,,1\n");
    expect(byName(await run("2024-06-08T10:00:00.000Z")).get("after_the_run")?.appendedRows).toEqual({ rows: 1, earlierFromRun: 1 });
    append("3,2024-06-25,,1\n");
    const forward = byName(await run("2024-06-16T10:00:00.000Z", 1)).get("after_the_run")!;
    expect(forward).toMatchObject({ status: "failed", failingRows: 1, samples: [{ sale_id: 2, day: "2024-06-15" }] });
  });

  test("is refused on a column it cannot be compared with, and a bound of the run is date or time", async () => {
    ws.write("sales.csv", header);
    ws.write(
      "pipeline.yaml",
      pipeline(`      - { check: range, column: qty, max: { run: date } }
      - { check: range, column: day, max: { run: time } }
`),
    );
    const wrongColumn = await ws.cli(["validate"]);
    expect(wrongColumn.code).toBe(2);
    expect(wrongColumn.stderr).toContain(
      "pipeline.yaml:12:50 error E_CONFIG { run: date } is compared with a date or text column; qty is integer",
    );
    expect(wrongColumn.stderr).toContain(
      "pipeline.yaml:13:50 error E_CONFIG { run: time } is compared with a text column (a date column takes { run: date }); day is date",
    );
    ws.write("pipeline.yaml", pipeline("      - { check: range, column: day, max: { run: today } }\n"));
    const misspelt = await ws.cli(["validate"]);
    expect(misspelt.code).toBe(2);
    expect(misspelt.stderr).toContain("E_SCHEMA");
  });
});
