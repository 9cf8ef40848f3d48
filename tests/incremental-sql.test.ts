import { readFileSync, writeFileSync } from "node:fs";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { loadPricedItems, pricedItemsTable, salesTable } from "./helpers/sales-pipeline.js";
import { clientFileEnv, sqlite, Workspace } from "./helpers/workspace.js";

// A sql step's declared incremental policy: each part of the proof that fails makes the step run its
// whole query (and say why), with the same result; each misdeclaration is refused by validate.

let ws: Workspace;
beforeEach(() => {
  ws = new Workspace({ withClientPipeline: false });
  ws.write("items.csv", "id,price\nA,1.50\nB,2.00\n");
  ws.write("sales.csv", "day,item,qty\n2024-01-01,A,3\n2024-01-02,B,1\n2024-01-03,A,2\n");
  ws.write("per_item.sql", perItem);
});
afterEach(() => ws.remove());

const perItem = `SELECT s.item, count(*) AS lines, sum(s.qty) AS qty, sum(s.qty) * i.price AS revenue
FROM sales AS s JOIN items AS i ON i.id = s.item
GROUP BY s.item, i.price
`;

interface Options {
  salesMode?: string;
  description?: string;
  incremental?: string;
  extraStep?: string;
}

const pipeline = (options: Options = {}) => `version: 1
description: ${options.description ?? "items and their sales"}
database: db.sqlite
tables:
${pricedItemsTable("items")}${salesTable({ item: "item" })}  per_item:
    columns:
      item: { type: text }
      lines: { type: integer, required: true }
      qty: { type: integer, required: true }
      revenue: { type: integer, required: true }
      last_day: { type: date }
      share: { type: real }
    primary_key: [item]
steps:
${loadPricedItems("items", "upsert")}  - { name: load_sales, type: load, source: sales.csv, table: sales, mode: ${options.salesMode ?? "insert_new"}, key: [day, item], columns: { day: day, item: item, qty: qty } }
  - name: per_item
    type: sql
    file: per_item.sql
    into: per_item
    incremental: ${options.incremental ?? "{ appended: sales, key: [item], add: [lines, qty, revenue] }"}
${options.extraStep ?? ""}`;

interface StepJson {
  name: string;
  counts: Record<string, number>;
  detail?: string;
  incremental?: { table?: string; appendedRows?: number; earlierFromRun?: number; full?: string };
}

const read = (file: string) => readFileSync(ws.path(file), "utf8");
const append = (...lines: string[]) => ws.write("sales.csv", read("sales.csv") + lines.join("\n") + "\n");

describe.each(["sqljs", "native"] as const)("on the %s engine, an incremental sql step", (engine) => {
  const run = async (...args: string[]) => {
    const result = await ws.cli(["run", "--engine", engine, "--json", ...args]);
    expect(result.code, result.stdout + result.stderr).toBe(0);
    const report = JSON.parse(result.stdout) as { runId: number; steps: StepJson[] };
    return { runId: report.runId, step: report.steps.find((step) => step.name === "per_item")! };
  };
  const stored = () => sqlite(ws.path("db.sqlite"), "SELECT item, lines, qty, revenue, last_day FROM per_item ORDER BY item");
  const recomputed = (sql = perItem) =>
    sqlite(
      ws.path("db.sqlite"),
      `SELECT item, lines, qty, revenue, ${/last_day/.test(sql) ? "last_day" : "NULL"} FROM (${sql}) ORDER BY item`,
    );

  test("runs on the appended rows only, adds them to the stored figures, says so, and equals the whole query", async () => {
    ws.write("pipeline.yaml", pipeline());
    const first = await run();
    expect(first.step.incremental).toEqual({ full: "no earlier run" });
    append("2024-01-04,B,4", "2024-01-05,C,1");
    ws.write("items.csv", "id,price\nA,1.50\nB,2.00\n"); // unchanged
    const second = await run();
    expect(second.step.incremental).toEqual({ table: "sales", appendedRows: 2, earlierFromRun: first.runId });
    // why: C is no item yet, so the query's join leaves its sale out; B's line is added to B's figures.
    expect(second.step.counts).toEqual({ updated: 1, inserted: 0 });
    expect(stored()).toBe(recomputed());
    ws.write("items.csv", "id,price\nA,1.50\nB,2.00\nC,9.99\n");
    append("2024-01-06,A,1");
    await run(); // the price list changed: the whole query runs
    append("2024-01-07,C,2", "2024-01-08,A,5");
    const fourth = await run();
    expect(fourth.step.incremental).toMatchObject({ table: "sales", appendedRows: 2 });
    expect(fourth.step.counts).toEqual({ updated: 2, inserted: 0 });
    expect(stored()).toBe(recomputed());
    append("2024-01-09,A,1");
    const text = await ws.cli(["run", "--engine", engine]);
    expect(text.stdout).toMatch(/1 updated; on the 1 row\(s\) appended to sales, merged into run \d+'s/);
  });

  const fallbacks: [name: string, setup: Options, between: (options: { run: typeof run }) => Promise<string[] | void>, reason: RegExp][] = [
    [
      "an item's price changed",
      {},
      async () => void ws.write("items.csv", "id,price\nA,1.75\nB,2.00\n"),
      /^step load_items wrote items in this run$/,
    ],
    [
      "an old sale was edited (upsert)",
      { salesMode: "upsert" },
      async () => void ws.write("sales.csv", read("sales.csv").replace("2024-01-02,B,1", "2024-01-02,B,7")),
      /^step load_sales changed rows of sales \(not only inserted\)$/,
    ],
    [
      "another program deleted an old sale",
      {},
      async () => void sqlite(ws.path("db.sqlite"), "DELETE FROM sales WHERE day = '2024-01-01'"),
      /^no commit mark vouches for items \(another program wrote the file since run 2/,
    ],
    [
      "another program changed the stored result",
      {},
      async () => void sqlite(ws.path("db.sqlite"), "UPDATE per_item SET qty = qty + 100"),
      /^no commit mark vouches for items/,
    ],
    [
      "the configuration changed",
      {},
      async () => void ws.write("pipeline.yaml", pipeline({ description: "changed" })),
      /^the configuration changed since run 2$/,
    ],
    ["--full-refresh", {}, async () => ["--full-refresh"], /^--full-refresh$/],
    [
      "the last run left the step out (--select)",
      {},
      async ({ run: r }) => {
        append("2024-01-20,A,1");
        await r("--select", "load_sales");
      },
      /^run 3 did not run this step \(not_executed\)$/,
    ],
  ];

  test.each(fallbacks)("runs the whole query when %s, says why, and equals it", async (_name, setup, between, reason) => {
    ws.write("pipeline.yaml", pipeline(setup));
    await run();
    append("2024-01-10,A,2");
    expect((await run()).step.incremental).toMatchObject({ table: "sales", appendedRows: 1 });
    const args = (await between({ run })) ?? [];
    append("2024-01-11,B,3");
    const after = await run(...args);
    expect(after.step.incremental?.full).toMatch(reason);
    expect(after.step.detail).toBe(`in full: ${after.step.incremental!.full}`);
    expect(after.step.counts).toMatchObject({ deleted: expect.any(Number), inserted: expect.any(Number) });
    expect(stored()).toBe(recomputed(read("per_item.sql")));
  });

  test("runs the whole query when a column outside key and add would differ, and equals it", async () => {
    ws.write("per_item.sql", perItem.replace("AS revenue", "AS revenue, max(s.day) AS last_day"));
    ws.write("pipeline.yaml", pipeline());
    await run();
    append("2024-01-10,A,2");
    const second = await run();
    expect(second.step.incremental?.full).toBe(
      "last_day of a stored row differs from the appended rows' result (only add columns are added)",
    );
    expect(stored()).toBe(recomputed(read("per_item.sql")));
    append("2024-01-11,C,2"); // no item C: the query's join leaves it out, so no stored row differs
    const third = await run();
    expect(third.step.incremental).toMatchObject({ table: "sales", appendedRows: 1 });
    expect(third.step.counts).toEqual({ updated: 0, inserted: 0 });
  });

  test.each([
    [
      "names main.sales itself",
      perItem.replace("FROM sales AS s", "FROM main.sales AS s"),
      /^the query reads main\.sales itself, not only the appended rows$/,
    ],
    [
      "reads the clock",
      perItem.replace("GROUP BY", "WHERE s.day <= date('now') GROUP BY"),
      /^the query's result depends on more than its tables: it calls date\(\)$/,
    ],
  ])("runs the whole query every time when it %s", async (_name, sql, reason) => {
    ws.write("per_item.sql", sql);
    ws.write("pipeline.yaml", pipeline());
    await run();
    append("2024-01-10,A,2");
    const second = await run();
    expect(second.step.incremental?.full).toMatch(reason);
    expect(stored()).toBe(recomputed(sql));
  });

  test("runs the whole query when a later step writes a table the query reads", async () => {
    const extraStep = `  - { name: extra_sales, type: sql, sql: "SELECT date('2000-01-01', '+' || :run_id || ' days') AS day, 'A' AS item, 1 AS qty", into: sales, mode: append }\n`;
    ws.write("pipeline.yaml", pipeline({ extraStep }));
    await run();
    append("2024-01-10,A,2");
    expect((await run()).step.incremental?.full).toBe("step extra_sales, after this one, writes a table the query reads or per_item");
  });
});

describe.each(["sqljs", "native"] as const)("the client's pipeline on the %s engine", (engine) => {
  test("sums only the appended sales per store and product, and every analysis equals a fresh load's, to the cent", async () => {
    const client = new Workspace();
    try {
      client.copyClientFiles();
      const run = async (...args: string[]) => {
        const env = { ...clientFileEnv, REPORT_DIR: args.length > 0 ? "output/fresh" : "output" };
        const result = await client.cli(["run", "--engine", engine, "--json", ...args], env);
        expect(result.code, result.stdout + result.stderr).toBe(0);
        return (JSON.parse(result.stdout) as { steps: StepJson[] }).steps.find((step) => step.name === "sales_by_store_product")!;
      };
      await run();
      const sales = client.path(clientFileEnv.SALES_URL!);
      writeFileSync(
        sales,
        readFileSync(sales, "utf8").replace(/(\r\n)?$/, "\r\n") +
          "2023-06-20,REF001,4,1\r\n2023-06-20,REF005,2,7\r\n2023-06-21,REF003,1,2\r\n",
      );
      const step = await run();
      expect(step.incremental).toMatchObject({ table: "sales", appendedRows: 3 });
      expect((step.counts.updated ?? 0) + (step.counts.inserted ?? 0)).toBe(3);
      await run("--db", "output/fresh.db");
      for (const table of ["sales_by_store_product", "revenue_total", "sales_by_product", "sales_by_city", "sales_by_region"]) {
        const sql = `SELECT * FROM ${table} ORDER BY 1, 2`;
        expect(client.query(sql), table).toBe(client.query(sql, "output/fresh.db"));
      }
    } finally {
      client.remove();
    }
  });
});

describe("validate refuses a misdeclared incremental policy, naming the step and the key", () => {
  const base = pipeline();
  const edit = (from: string, to: string) => {
    if (!base.includes(from)) throw new Error(`fixture edit: ${from} not in base`);
    return base.replace(from, to);
  };
  const policy = (text: string) => edit("{ appended: sales, key: [item], add: [lines, qty, revenue] }", text);
  const at = (col: number) => `p.yaml:33:${col} error E_CONFIG step per_item: `;
  test.each([
    ["no into:", edit("    into: per_item\n", ""), "p.yaml:32:18 error E_CONFIG step per_item: incremental: needs into:"],
    [
      "mode: append",
      edit("    into: per_item\n", "    into: per_item\n    mode: append\n"),
      "p.yaml:34:18 error E_CONFIG step per_item: incremental: applies only with mode: replace",
    ],
    [
      "an undeclared table",
      policy("{ appended: sale, key: [item], add: [lines] }"),
      `${at(30)}incremental.appended: table "sale" is not declared under tables: (did you mean "sales"?)`,
    ],
    [
      "the into table",
      policy("{ appended: per_item, key: [item], add: [lines] }"),
      `${at(30)}incremental.appended: per_item is the table into: writes`,
    ],
    [
      "an unknown key column",
      policy("{ appended: sales, key: [itme], add: [lines] }"),
      `${at(43)}incremental.key.0: "itme" is not a column of table per_item (did you mean "item"?)`,
    ],
    [
      "a key that is not a key",
      policy("{ appended: sales, key: [item, lines], add: [qty] }"),
      `${at(42)}incremental.key [item, lines] is not the primary key or a unique key of table per_item (its keys: [item])`,
    ],
    [
      "an unknown add column",
      policy("{ appended: sales, key: [item], add: [lins] }"),
      `${at(56)}incremental.add.0: "lins" is not a column of table per_item (did you mean "lines"?)`,
    ],
    [
      "an add column in the key",
      policy("{ appended: sales, key: [item], add: [item] }"),
      `${at(56)}incremental.add: item is part of the key`,
    ],
    [
      "a real add column",
      policy("{ appended: sales, key: [item], add: [share] }"),
      `${at(56)}incremental.add: share is a real column of per_item; only integer and decimal sums stay exact when added in another order`,
    ],
    [
      "a date add column",
      policy("{ appended: sales, key: [item], add: [lines, last_day] }"),
      `${at(63)}incremental.add: last_day is a date column of per_item`,
    ],
    [
      "a shape error",
      policy("{ appended: sales, key: [item] }"),
      `p.yaml:33:18 error E_SCHEMA /steps/2/incremental is missing the required key "add"`,
    ],
  ])("%s", async (_name, yaml, expected) => {
    ws.write("p.yaml", yaml);
    const result = await ws.cli(["validate", "--config", "p.yaml"]);
    expect(result.code, result.stdout).toBe(2);
    expect(result.stderr, result.stderr).toContain(expected);
  });

  test("a table the query does not read", async () => {
    ws.write("p.yaml", pipeline({ incremental: "{ appended: items, key: [item], add: [lines] }" }));
    ws.write("per_item.sql", "SELECT item, count(*) AS lines, sum(qty) AS qty, sum(qty) AS revenue FROM sales GROUP BY item");
    const result = await ws.cli(["validate", "--config", "p.yaml"]);
    expect(result.stderr).toContain(
      "p.yaml:33:30 error E_CONFIG step per_item: incremental.appended: the query does not read table items (it reads sales)",
    );
  });

  test("a query whose rows cannot be added (HAVING)", async () => {
    ws.write("p.yaml", base);
    ws.write("per_item.sql", perItem.replace("GROUP BY s.item, i.price", "GROUP BY s.item, i.price HAVING count(*) > 1"));
    const result = await ws.cli(["validate", "--config", "p.yaml"]);
    expect(result.stderr).toContain("step per_item: incremental: the query uses HAVING");
  });

  test("a query that does not return an add column", async () => {
    ws.write(
      "p.yaml",
      pipeline({ incremental: "{ appended: sales, key: [item], add: [lines, qty, revenue] }" }).replace(
        "revenue: { type: integer, required: true }",
        "revenue: { type: integer }",
      ),
    );
    ws.write("per_item.sql", perItem.replace(", sum(s.qty) * i.price AS revenue", ""));
    const result = await ws.cli(["validate", "--config", "p.yaml"]);
    expect(result.stderr).toContain("step per_item: incremental: the query does not return revenue");
  });

  test("the base fixture itself is valid, so each case fails for its own reason", async () => {
    ws.write("p.yaml", base);
    expect(await ws.cli(["validate", "-c", "p.yaml"])).toMatchObject({ code: 0 });
  });
});
