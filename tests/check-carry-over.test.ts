import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { loadPricedItems, pricedItemsTable, salesTable } from "./helpers/sales-pipeline.js";
import { sqlite, Workspace } from "./helpers/workspace.js";

let ws: Workspace;
beforeEach(() => {
  ws = new Workspace({ withClientPipeline: false });
  ws.write("products.csv", "id,price\nA,1.50\nB,2.00\nC,-1.00\n");
  ws.write("sales.csv", "day,product,qty\n2024-01-02,A,3\n2024-01-03,B,0\n2024-01-04,Z,1\n");
});
afterEach(() => ws.remove());

/** Steady checks on both tables (two warn with failing rows), one that reads the clock, one that reads a run parameter; `extra` goes under steps. */
const pipeline = (options: { description?: string; extraStep?: string } = {}) => `version: 1
database: db.sqlite
tables:
${pricedItemsTable("products", {
  description: options.description ?? "one row per product",
  checks: `    checks:
      - { name: prices_positive, check: range, column: price, min: 0, inclusive: false, severity: warn }
`,
})}${salesTable({
  item: "product",
  checks: `    checks:
      - { name: quantities_positive, check: range, column: qty, min: 0, inclusive: false, severity: warn }
      - { name: products_known, check: relationships, column: product, to: products, field: id, severity: warn }
      - { name: not_in_the_future, check: expression, expression: "day <= date('now')" }
      - { name: before_the_run, check: expression, expression: "day <= date(:run_started_at)" }
`,
})}steps:
${loadPricedItems("products", "replace")}  - { name: load_sales, type: load, source: sales.csv, table: sales, mode: insert_new, key: [day, product], columns: { day: day, product: product, qty: qty } }
${options.extraStep ?? ""}`;

interface Check {
  name: string;
  status: string;
  failingRows: number;
  samples: Record<string, unknown>[];
  carriedFromRun?: number;
  appendedRows?: { rows: number; earlierFromRun: number };
}
interface RunJson {
  ok: boolean;
  status: string;
  runId?: number;
  checks: Check[];
}

const steady = ["prices_positive", "quantities_positive", "products_known"];

describe.each(["sqljs", "native"] as const)("on the %s engine, a check's result", (engine) => {
  const run = async (...args: string[]) => {
    const result = await ws.cli(["run", "--engine", engine, ...args]);
    expect(result.code, result.stdout + result.stderr).toBe(0);
    return result;
  };
  const runJson = async () => JSON.parse((await run("--json")).stdout) as RunJson;
  const byName = (report: { checks: Check[] }) => new Map(report.checks.map((check) => [check.name, check]));
  /** What running every check against the stored database gives now (the test command runs them all, carries nothing). */
  const rerun = async () => {
    const result = await ws.cli(["test", "--engine", engine, "--json"]);
    return byName(JSON.parse(result.stdout) as { checks: Check[] });
  };

  test("is carried over from the last commit when nothing it reads changed, says so, and equals running the check again", async () => {
    ws.write("pipeline.yaml", pipeline());
    const first = await runJson();
    expect(first.runId).toBe(1);
    const second = await runJson();
    expect(second.status).toBe("unchanged");
    const checks = byName(second);
    for (const name of steady) expect(checks.get(name)?.carriedFromRun, name).toBe(1);
    // why: the clock and the run's start decide these two; they always run.
    expect(checks.get("not_in_the_future")?.carriedFromRun).toBeUndefined();
    expect(checks.get("before_the_run")?.carriedFromRun).toBeUndefined();
    const fresh = await rerun();
    for (const name of steady) {
      const { carriedFromRun: _, ...carried } = checks.get(name)!;
      expect(carried, name).toEqual(fresh.get(name));
    }
    expect(checks.get("products_known")).toMatchObject({ status: "warned", failingRows: 1, samples: [{ product: "Z" }] });
    const text = await run();
    expect(text.stdout).toContain("check ⚠ warn products_known on sales: 1 failing row(s)");
    expect(text.stdout).toContain("(carried over from run 1)");
    // why: the names wrap under their heading, each line short.
    expect(text.stdout.replace(/\s+/g, " ")).toContain(
      "carried over from run 1 (nothing they read changed since): prices_positive, quantities_positive, products_known",
    );
    for (const line of text.stdout.split("\n")) expect(line.length).toBeLessThan(220);
  });

  test("of a table a run changed is not carried over; that of an untouched table is, from the run that ran it", async () => {
    ws.write("pipeline.yaml", pipeline());
    await run();
    ws.write("sales.csv", `${ws.bytes("sales.csv")!.toString()}2024-01-05,Y,-4\n`);
    const second = byName(await runJson());
    expect(second.get("prices_positive")?.carriedFromRun).toBe(1);
    expect(second.get("quantities_positive")).toMatchObject({ failingRows: 2 });
    expect(second.get("quantities_positive")?.carriedFromRun).toBeUndefined();
    expect(second.get("products_known")).toMatchObject({ failingRows: 2 });
    expect(second.get("products_known")?.carriedFromRun).toBeUndefined();
    // why: a result carried over is recorded with the run that carried it, naming the run that ran the check.
    expect(
      sqlite(
        ws.path("db.sqlite"),
        "SELECT carried_from_run FROM pipeline_check_results WHERE run_id = 2 AND check_name = 'prices_positive'",
      ),
    ).toBe("1");
    const third = byName(await runJson());
    expect(third.get("prices_positive")?.carriedFromRun).toBe(1);
    expect(third.get("quantities_positive")).toMatchObject({ failingRows: 2, carriedFromRun: 2 });
  });

  test("is not carried over when another program wrote a table it reads (sqlite3) between runs", async () => {
    ws.write("pipeline.yaml", pipeline());
    await run();
    sqlite(ws.path("db.sqlite"), "INSERT INTO sales (day, product, qty) VALUES ('2024-01-09', 'A', -7)");
    const second = byName(await runJson());
    expect(second.get("quantities_positive")).toMatchObject({ failingRows: 2 });
    for (const name of steady) expect(second.get(name)?.carriedFromRun, name).toBeUndefined();
    expect(second).toEqual(await rerun());
  });

  test("is not carried over when the configuration changed", async () => {
    ws.write("pipeline.yaml", pipeline());
    await run();
    ws.write("pipeline.yaml", pipeline({ description: "one row per product, as the sheet lists them" }));
    const second = await runJson();
    for (const check of second.checks) expect(check.carriedFromRun, check.name).toBeUndefined();
    const third = byName(await runJson());
    expect(third.get("prices_positive")?.carriedFromRun).toBe(2);
  });

  test("is not carried over when it reads the runner's own tables, which every run writes", async () => {
    const runs =
      "      - { name: one_run_so_far, check: sql, severity: warn, sql: 'SELECT count(*) AS runs FROM pipeline_runs HAVING count(*) > 1' }\n";
    ws.write("pipeline.yaml", pipeline().replace("    checks:\n", `    checks:\n${runs}`));
    expect(byName(await runJson()).get("one_run_so_far")).toMatchObject({ status: "passed" });
    const second = byName(await runJson());
    expect(second.get("prices_positive")?.carriedFromRun).toBe(1);
    expect(second.get("one_run_so_far")).toMatchObject({ status: "warned", failingRows: 1, samples: [{ runs: 2 }] });
  });

  test("is not carried over when a step may write tables it does not declare (a sql script)", async () => {
    const script = '  - { name: tidy, type: sql, sql: "UPDATE sales SET qty = qty WHERE 0" }\n';
    ws.write("pipeline.yaml", pipeline({ extraStep: script }));
    await run();
    ws.write("products.csv", `${ws.bytes("products.csv")!.toString()}D,4.00\n`);
    const second = await runJson();
    for (const check of second.checks) expect(check.carriedFromRun, check.name).toBeUndefined();
  });
});

test("on the native engine, a database in WAL mode never has a check's result carried over", async () => {
  ws.write("pipeline.yaml", pipeline());
  const run = async () => {
    const result = await ws.cli(["run", "--engine", "native", "--json"]);
    expect(result.code, result.stderr).toBe(0);
    return JSON.parse(result.stdout) as RunJson;
  };
  await run();
  expect(sqlite(ws.path("db.sqlite"), "PRAGMA journal_mode = WAL")).toBe("wal");
  for (let i = 0; i < 2; i++) {
    const again = await run();
    expect(again.status).toBe("unchanged");
    for (const check of again.checks) expect(check.carriedFromRun, check.name).toBeUndefined();
  }
  // why: a commit in WAL mode leaves the main file as it was; no mark can prove what it holds.
  ws.write("sales.csv", `${ws.bytes("sales.csv")!.toString()}2024-01-05,A,2\n`);
  expect((await run()).runId).toBe(2);
  for (const check of (await run()).checks) expect(check.carriedFromRun, check.name).toBeUndefined();
});

/** Row-by-row checks on sales (all passing on the first data), keyed sales for insert_new, or an upsert on an integer key. */
const appendPipeline = (mode: "insert_new" | "upsert") => `version: 1
database: db.sqlite
tables:
${pricedItemsTable("products")}${salesTable({
  item: "product",
  bySaleId: true,
  checks: `    checks:
      - { name: quantities_positive, check: range, column: qty, min: 0, inclusive: false, severity: warn }
      - { name: products_known, check: relationships, column: product, to: products, field: id, severity: warn }
      - { name: small_orders, check: expression, expression: "qty < 100", severity: warn }
      - { name: one_sale_at_least, check: row_count, min: 1 }
`,
})}steps:
${loadPricedItems("products", "replace")}  - { name: load_sales, type: load, source: sales.csv, table: sales, mode: ${mode}, key: [sale_id], columns: { sale_id: id, day: day, product: product, qty: qty } }
`;
const rowByRow = ["quantities_positive", "products_known", "small_orders"];

describe.each(["sqljs", "native"] as const)("on the %s engine, a row-by-row check after a run that only appended rows", (engine) => {
  const runJson = async () => {
    const result = await ws.cli(["run", "--engine", engine, "--json"]);
    expect(result.code, result.stdout + result.stderr).toBe(0);
    return JSON.parse(result.stdout) as RunJson;
  };
  const fresh = async () => {
    const result = await ws.cli(["test", "--engine", engine, "--json"]);
    return new Map((JSON.parse(result.stdout) as { checks: Check[] }).checks.map((check) => [check.name, check]));
  };
  const append = (file: string, lines: string) => ws.write(file, `${ws.bytes(file)!.toString()}${lines}`);
  beforeEach(() => ws.write("sales.csv", "id,day,product,qty\n10,2024-01-02,A,3\n20,2024-01-03,B,1\n30,2024-01-04,A,2\n"));

  test("judges only the appended rows, says so, and equals running the whole check", async () => {
    ws.write("pipeline.yaml", appendPipeline("insert_new"));
    await runJson();
    append("sales.csv", "40,2024-01-05,B,4\n50,2024-01-06,A,5\n");
    const second = await runJson();
    expect(second.runId).toBe(2);
    const checks = new Map(second.checks.map((check) => [check.name, check]));
    const expected = await fresh();
    for (const name of rowByRow) {
      expect(checks.get(name)?.appendedRows, name).toEqual({ rows: 2, earlierFromRun: 1 });
      const { appendedRows: _, ...result } = checks.get(name)!;
      expect(result, name).toEqual(expected.get(name));
    }
    // why: a count over the whole table is not row by row; it runs whole.
    expect(checks.get("one_sale_at_least")?.appendedRows).toBeUndefined();
    append("sales.csv", "60,2024-01-07,A,6\n");
    const text = await ws.cli(["run", "--engine", engine]);
    expect(text.stdout.replace(/\s+/g, " ")).toContain(
      "judged only the rows this run added (the others passed in run 2 and did not change since): quantities_positive (1 row(s)), products_known (1 row(s)), small_orders (1 row(s))",
    );
  });

  test("judges the whole table when an appended row fails, so the count and samples are the whole check's", async () => {
    ws.write("pipeline.yaml", appendPipeline("insert_new"));
    await runJson();
    append("sales.csv", "40,2024-01-05,Z,-4\n");
    const checks = new Map((await runJson()).checks.map((check) => [check.name, check]));
    expect(checks.get("quantities_positive")).toMatchObject({ status: "warned", failingRows: 1, samples: [{ qty: -4 }] });
    expect(checks.get("quantities_positive")?.appendedRows).toBeUndefined();
    expect(checks.get("small_orders")?.appendedRows).toEqual({ rows: 1, earlierFromRun: 1 });
  });

  test("judges the whole table when another program changed an old row between runs (sqlite3)", async () => {
    ws.write("pipeline.yaml", appendPipeline("insert_new"));
    await runJson();
    sqlite(ws.path("db.sqlite"), "UPDATE sales SET qty = 500 WHERE sale_id = 10");
    append("sales.csv", "40,2024-01-05,B,4\n");
    const checks = new Map((await runJson()).checks.map((check) => [check.name, check]));
    expect(checks.get("small_orders")).toMatchObject({ status: "warned", failingRows: 1, samples: [{ sale_id: 10, qty: 500 }] });
    for (const name of rowByRow) expect(checks.get(name)?.appendedRows, name).toBeUndefined();
  });

  test("judges the whole table when a step updated old rows (upsert)", async () => {
    ws.write("pipeline.yaml", appendPipeline("upsert"));
    await runJson();
    ws.write("sales.csv", "id,day,product,qty\n10,2024-01-02,A,300\n20,2024-01-03,B,1\n30,2024-01-04,A,2\n40,2024-01-05,B,4\n");
    const checks = new Map((await runJson()).checks.map((check) => [check.name, check]));
    expect(checks.get("small_orders")).toMatchObject({ status: "warned", failingRows: 1, samples: [{ sale_id: 10, qty: 300 }] });
    expect(checks.get("small_orders")?.appendedRows).toBeUndefined();
  });

  test("judges the whole table when appended rows took row ids below the last one (an integer key)", async () => {
    ws.write("pipeline.yaml", appendPipeline("insert_new"));
    await runJson();
    append("sales.csv", "5,2024-01-05,B,700\n60,2024-01-06,A,1\n");
    const checks = new Map((await runJson()).checks.map((check) => [check.name, check]));
    expect(checks.get("small_orders")).toMatchObject({ status: "warned", failingRows: 1, samples: [{ sale_id: 5, qty: 700 }] });
    for (const name of rowByRow) expect(checks.get(name)?.appendedRows, name).toBeUndefined();
  });
});

describe.each(["sqljs", "native"] as const)("on the %s engine, a derived step whose sources did not change", (engine) => {
  const totals = `version: 1
database: db.sqlite
tables:
  sales:
    columns: { day: { type: date }, product: { type: text }, qty: { type: integer, required: true } }
    primary_key: [day, product]
  totals:
    columns: { lines: { type: integer, required: true }, qty: { type: integer, required: true } }
    checks:
      - { name: totals_match_sales, check: sql, sql: "SELECT * FROM totals WHERE qty <> (SELECT sum(qty) FROM sales)" }
steps:
  - { name: load_sales, type: load, source: sales.csv, table: sales, mode: insert_new, key: [day, product], columns: { day: day, product: product, qty: qty } }
  - { name: total, type: sql, sql: "SELECT count(*) AS lines, sum(qty) AS qty FROM sales", into: totals }
`;
  const run = async () =>
    JSON.parse((await ws.cli(["run", "--engine", engine, "--json"])).stdout) as RunJson & { steps: { name: string; status: string }[] };

  test("runs again when another program wrote a table since the last commit (sqlite3), as a fresh run over that table would", async () => {
    ws.write("pipeline.yaml", totals);
    expect((await run()).ok).toBe(true);
    expect((await run()).steps.find((step) => step.name === "total")?.status).toBe("skipped");
    sqlite(ws.path("db.sqlite"), "INSERT INTO sales (day, product, qty) VALUES ('2024-01-09', 'A', 7)");
    const after = await run();
    expect(after.ok, JSON.stringify(after)).toBe(true);
    expect(after.steps.find((step) => step.name === "total")?.status).toBe("success");
    expect(sqlite(ws.path("db.sqlite"), "SELECT lines, qty FROM totals")).toBe("4|11");
  });
});
