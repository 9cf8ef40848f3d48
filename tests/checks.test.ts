import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { sqlite, Workspace } from "./helpers/workspace.js";

let ws: Workspace;
beforeEach(() => {
  ws = new Workspace({ withClientPipeline: false });
  ws.write("products.csv", "id,price,category\nA,1.50,food\nB,2.00,drink\n");
  ws.write("sales.csv", "day,product,qty\n2024-01-02,A,3\n2024-01-03,B,1\n");
});
afterEach(() => ws.remove());

/** A pipeline with one check (YAML flow mapping) on `table`. */
const pipeline = (table: "products" | "sales", check: string) => `version: 1
database: db.sqlite
tables:
  products:
    columns:
      id: { type: text }
      price: { type: decimal, scale: 2, required: true }
      category: { type: text }
    primary_key: [id]
${table === "products" ? `    checks:\n      - ${check}\n` : ""}  sales:
    columns:
      day: { type: date, required: true }
      product: { type: text }
      qty: { type: integer, required: true }
${table === "sales" ? `    checks:\n      - ${check}\n` : ""}steps:
  - { name: load_products, type: load, source: products.csv, table: products, mode: replace, columns: { id: id, price: price, category: category } }
  - { name: load_sales, type: load, source: sales.csv, table: sales, mode: replace, columns: { day: day, product: product, qty: qty } }
`;

interface RunJson {
  ok: boolean;
  error?: { code: string; message: string };
  checks: { name: string; status: string; failingRows: number; samples: Record<string, unknown>[] }[];
}

/** Each kind of check: the check, a change to one file that breaks it, the failing rows it then counts and a value of its first sample. */
const kinds: [
  kind: string,
  table: "products" | "sales",
  check: string,
  file: string,
  bad: string,
  failing: number,
  sample: Record<string, unknown>,
][] = [
  ["not_null", "sales", "{ check: not_null, column: product }", "sales.csv", "2024-01-04,,2\n", 1, { qty: 2, product: null }],
  [
    "unique",
    "sales",
    "{ check: unique, columns: [day, product] }",
    "sales.csv",
    "2024-01-02,A,5\n2024-01-02,A,6\n",
    1,
    { day: "2024-01-02", rows: 3 },
  ],
  [
    "relationships",
    "sales",
    "{ check: relationships, column: product, to: products, field: id }",
    "sales.csv",
    "2024-01-04,Z,1\n2024-01-05,Y,1\n",
    2,
    { product: "Z" },
  ],
  [
    "accepted_values",
    "products",
    "{ check: accepted_values, column: category, values: [food, drink] }",
    "products.csv",
    "C,3.00,toys\n",
    1,
    { id: "C", category: "toys" },
  ],
  [
    "range",
    "sales",
    "{ check: range, column: qty, min: 0, inclusive: false }",
    "sales.csv",
    "2024-01-04,A,0\n2024-01-05,A,-2\n",
    2,
    { qty: 0 },
  ],
  [
    "expression",
    "products",
    "{ check: expression, expression: 'price < 1000' }",
    "products.csv",
    "C,12.00,food\n",
    1,
    { id: "C", price: 1200 },
  ],
  ["row_count", "sales", "{ check: row_count, min: 1, max: 2 }", "sales.csv", "2024-01-04,A,1\n", 1, { rows: 3 }],
  [
    "sql",
    "sales",
    "{ check: sql, sql: 'SELECT product, sum(qty) AS units FROM sales GROUP BY product HAVING sum(qty) > 20' }",
    "sales.csv",
    "2024-01-04,B,25\n",
    1,
    { product: "B", units: 26 },
  ],
];

describe.each(kinds)("a %s check", (kind, table, check, file, bad, failing, sample) => {
  const breakData = () => ws.write(file, `${(ws.bytes(file) ?? "").toString()}${bad}`);

  test("passes on good data and its result is recorded with the run", async () => {
    ws.write("pipeline.yaml", pipeline(table, check));
    const run = await ws.cli(["run", "--json"]);
    expect(run.code, run.stdout + run.stderr).toBe(0);
    const report = JSON.parse(run.stdout) as RunJson;
    expect(report.checks.map((c) => [c.status, c.failingRows])).toEqual([["passed", 0]]);
    expect(report.checks[0]!.name.startsWith(`${kind}_${table}`)).toBe(true);
    expect(sqlite(ws.path("db.sqlite"), "SELECT run_id, kind, severity, status, failing_rows FROM pipeline_check_results")).toBe(
      `1|${kind}|error|passed|0`,
    );
  });

  test("with severity error, fails the run and leaves the database byte-identical", async () => {
    ws.write("pipeline.yaml", pipeline(table, check));
    expect((await ws.cli(["run"])).code).toBe(0);
    const before = ws.bytes("db.sqlite");
    breakData();
    const run = await ws.cli(["run", "--json"]);
    expect(run.code).toBe(1);
    const report = JSON.parse(run.stdout) as RunJson;
    expect(report.error?.code).toBe("E_CHECK");
    expect(report.error?.message).toContain(`${failing} failing row(s)`);
    expect(report.checks.map((c) => [c.status, c.failingRows])).toEqual([["failed", failing]]);
    expect(report.checks[0]!.samples[0]).toMatchObject(sample);
    expect(ws.bytes("db.sqlite")!.equals(before!)).toBe(true);
    // why: the text log says which check failed, with its table, as the last word before the verdict.
    const text = await ws.cli(["run"]);
    expect(text.stdout).toContain(`check ✗ error ${report.checks[0]!.name} on ${table}: ${failing} failing row(s)`);
    expect(text.stderr).toContain("error E_CHECK 1 check(s) with severity error failed, so nothing was saved");
  });

  test("with severity warn, is recorded and shown, and the run saves", async () => {
    ws.write("pipeline.yaml", pipeline(table, check.replace(/ }$/, ", severity: warn }")));
    breakData();
    const run = await ws.cli(["run"]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(new RegExp(`check ⚠ warn ${kind}_${table}\\S* on ${table}: ${failing} failing row\\(s\\)`));
    expect(run.stdout).toContain("1 check(s): 0 passed, 1 warned");
    const db = ws.path("db.sqlite");
    expect(sqlite(db, "SELECT severity, status, failing_rows FROM pipeline_check_results")).toBe(`warn|warned|${failing}`);
    const samples = JSON.parse(sqlite(db, "SELECT samples FROM pipeline_check_results")) as Record<string, unknown>[];
    expect(samples[0]).toMatchObject(sample);
  });
});

describe("the test command", () => {
  const check = "{ check: relationships, column: product, to: products, field: id }";

  test("runs the checks against the stored database without loading anything, and never writes the file", async () => {
    ws.write("pipeline.yaml", pipeline("sales", check.replace(/ }$/, ", severity: warn }")));
    ws.write("sales.csv", "day,product,qty\n2024-01-02,A,3\n2024-01-03,Z,1\n");
    expect((await ws.cli(["run"])).code).toBe(0);
    const before = ws.bytes("db.sqlite")!;
    // why: with the sources gone, anything but reading the database would fail.
    ws.write("sales.csv", "not,the,header\n");
    ws.write("products.csv", "");
    const warned = await ws.cli(["test"]);
    expect(warned.code, warned.stderr).toBe(0);
    expect(warned.stdout).toContain("Testing db.sqlite (run 1)");
    expect(warned.stdout).toContain(
      'check ⚠ warn relationships_sales_product on sales: 1 failing row(s), first {"day":"2024-01-03","product":"Z","qty":1}',
    );
    ws.write("pipeline.yaml", pipeline("sales", check));
    const failed = await ws.cli(["test", "--json"]);
    expect(failed.code).toBe(1);
    const report = JSON.parse(failed.stdout) as RunJson & { runId: number };
    expect(report).toMatchObject({ ok: false, runId: 1, error: { code: "E_CHECK" } });
    expect(report.checks.map((c) => [c.name, c.status, c.failingRows])).toEqual([["relationships_sales_product", "failed", 1]]);
    expect(ws.bytes("db.sqlite")!.equals(before)).toBe(true);
    expect(sqlite(ws.path("db.sqlite"), "SELECT count(*) FROM pipeline_check_results")).toBe("1");
  });

  test("says to run first when there is no database yet", async () => {
    ws.write("pipeline.yaml", pipeline("sales", check));
    const result = await ws.cli(["test"]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("error E_DB db.sqlite does not exist yet; run the pipeline first, then test it");
    expect(ws.bytes("db.sqlite")).toBeUndefined();
  });
});

describe("when checks run", () => {
  test("after the last step that writes a table the check reads, before the steps after it", async () => {
    ws.write(
      "pipeline.yaml",
      pipeline(
        "products",
        "{ check: sql, severity: warn, sql: 'SELECT p.id FROM products AS p WHERE NOT EXISTS (SELECT 1 FROM sales AS s WHERE s.product = p.id)' }",
      ),
    );
    ws.write("products.csv", "id,price,category\nA,1.50,food\nB,2.00,drink\nC,3.00,food\n");
    const run = await ws.cli(["run"]);
    expect(run.code, run.stderr).toBe(0);
    // why: declared on products, it reads sales too, so it waits for load_sales (and sees C unsold, not all three).
    expect(run.stdout).toMatch(
      /\[2\/2\] load_sales[^\n]*\n[^\n]*\n {6}check ⚠ warn sql_products on products: 1 failing row\(s\), first \{"id":"C"\}/,
    );
  });

  test("an older database gets pipeline_check_results in place, its rows kept", async () => {
    ws.write("pipeline.yaml", pipeline("sales", "{ check: not_null, column: product }"));
    expect((await ws.cli(["run"])).code).toBe(0);
    const db = ws.path("db.sqlite");
    sqlite(db, "DROP TABLE pipeline_check_results");
    ws.write("sales.csv", "day,product,qty\n2024-01-02,A,3\n2024-01-03,B,1\n2024-01-04,A,2\n");
    const run = await ws.cli(["run"]);
    expect(run.code, run.stderr).toBe(0);
    expect(sqlite(db, "SELECT run_id, check_name, status FROM pipeline_check_results")).toBe("2|not_null_sales_product|passed");
    expect(sqlite(db, "SELECT count(*) FROM sales")).toBe("3");
  });
});

describe("validate compiles every check before anything runs", () => {
  test.each([
    [
      "{ check: range, column: qtty, min: 1 }",
      'pipeline.yaml:16:33 error E_CONFIG "qtty" is not a column of table sales (did you mean "qty"?)',
    ],
    [
      "{ check: relationships, column: product, to: prodcts, field: id }",
      'pipeline.yaml:16:54 error E_CONFIG table "prodcts" is not declared under tables: (did you mean "products"?)',
    ],
    ["{ check: expression, expression: 'qty > nope' }", "pipeline.yaml:16:42 error E_SQL check expression_sales: no such column: nope"],
    [
      "{ check: sql, sql: 'DELETE FROM products RETURNING *' }",
      "pipeline.yaml:16:28 error E_SQL check sql_sales (sql): a check must be one SELECT that only reads",
    ],
    [
      "{ check: sql, sql: 'SELECT * FROM sale' }",
      'pipeline.yaml:16:28 error E_SQL check sql_sales (sql): no such table: sale (did you mean "sales"?)',
    ],
    [
      "{ check: not_nul, column: qty }",
      'pipeline.yaml:16:18 error E_SCHEMA /tables/sales/checks/0/check is "not_nul", expected one of: not_null, unique, relationships, accepted_values, range, expression, row_count, sql (did you mean "not_null"?)',
    ],
    ["{ check: row_count }", "pipeline.yaml:16:9 error E_CONFIG a row_count check needs min:, max:, or both"],
    ["{ check: sql, file: sql/missing.sql }", "pipeline.yaml:16:29 error E_CONFIG SQL file sql/missing.sql does not exist"],
  ])("%s", async (check, expected) => {
    ws.write("pipeline.yaml", pipeline("sales", check));
    const result = await ws.cli(["validate"]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(expected);
    expect(ws.bytes("db.sqlite")).toBeUndefined();
  });
});
