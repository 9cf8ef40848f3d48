import { readFileSync } from "node:fs";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { serveClientData } from "./helpers/client-server.js";
import type { TestServer } from "./helpers/http-server.js";
import { clientFixtures, onPostgres, sqlite, Workspace } from "./helpers/workspace.js";

let server: TestServer;
let ws: Workspace;
let env: Record<string, string>;
let close: () => Promise<void>;

beforeEach(async () => {
  ({ server, ws, env, close } = await serveClientData());
});
afterEach(() => close());

const results = () =>
  ws.query(
    "SELECT * FROM revenue_total; SELECT * FROM sales_by_product ORDER BY 1; SELECT * FROM sales_by_city ORDER BY 1; SELECT * FROM sales_by_region ORDER BY 1;",
  );

describe("the client's pipeline over HTTP", () => {
  test("loads 5 products, 7 stores, 30 sales and computes the reference figures", async () => {
    const run = await ws.cli(["run"], env);
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    expect(ws.query("SELECT (SELECT count(*) FROM products), (SELECT count(*) FROM stores), (SELECT count(*) FROM sales)")).toBe("5|7|30");
    expect(ws.query("SELECT revenue, revenue_cents, quantity, sales_lines, period_start, period_end FROM revenue_total")).toBe(
      "5268.78|526878|122|30|2023-05-27|2023-06-25",
    );
    expect(ws.query("SELECT name, revenue_cents FROM sales_by_product ORDER BY revenue_cents DESC")).toBe(
      ["Produit D|167979", "Produit E|139965", "Produit A|119976", "Produit B|53973", "Produit C|44985"].join("\n"),
    );
    expect(ws.query("SELECT city, revenue_cents, revenue FROM sales_by_city ORDER BY revenue_cents DESC")).toBe(
      [
        "Lyon|105979|1059.79",
        "Marseille|100973|1009.73",
        "Bordeaux|82981|829.81",
        "Paris|79980|799.8",
        "Nantes|73983|739.83",
        "Strasbourg|57989|579.89",
        "Lille|24993|249.93",
      ].join("\n"),
    );
    // why: every euro figure is an exact sum of cents, so summing the parts gives the total to the cent.
    expect(ws.query("SELECT sum(revenue_cents) FROM sales_by_region")).toBe("526878");
    expect(ws.query("SELECT region FROM sales_by_region WHERE region LIKE '(%'")).toBe("");
    expect(ws.query("SELECT price_cents FROM products WHERE product_id = 'REF003'")).toBe("2999");
    expect(ws.query("SELECT revenue FROM sales_by_product WHERE product_id = 'REF003'")).toBe("449.85");
  });

  test("a second run adds nothing, leaves every results table identical, and does not rewrite the file", async () => {
    expect((await ws.cli(["run"], env)).code).toBe(0);
    const before = results();
    const state = ws.state();
    const second = await ws.cli(["run", "--json"], env);
    expect(second.code).toBe(0);
    const report = JSON.parse(second.stdout) as { status: string; detail: string; steps: { name: string; status: string }[] };
    expect(report.status).toBe("unchanged");
    expect(report.detail).toBe("nothing changed since run 1; the database was not rewritten");
    for (const name of ["load_products", "load_stores", "load_sales"]) {
      expect(report.steps.find((s) => s.name === name)?.status).toBe("unchanged");
    }
    expect(report.steps.find((s) => s.name === "sales_by_city")?.status).toBe("skipped");
    expect(ws.state()).toEqual(state);
    expect(results()).toBe(before);
    expect(ws.query("SELECT run_id, status FROM pipeline_runs")).toBe("1|succeeded");
  });

  test("a changed SQL file makes the analyses run again, even with unchanged sources", async () => {
    expect((await ws.cli(["run"], env)).code).toBe(0);
    ws.write("sql/revenue_total.sql", readFileSync(ws.path("sql/revenue_total.sql"), "utf8") + "\n-- a comment changes the fingerprint\n");
    const second = await ws.cli(["run", "--json"], env);
    const report = JSON.parse(second.stdout) as { runId: number; steps: { name: string; status: string }[] };
    expect(report.runId, second.stdout + second.stderr).toBe(2);
    expect(report.steps.find((s) => s.name === "revenue_total")?.status, second.stdout).toBe("success");
    expect(report.steps.find((s) => s.name === "revenue_total")?.status).toBe("success");
  });

  test("new sales rows are imported, stored ones are not duplicated, and a changed quantity is kept aside", async () => {
    expect((await ws.cli(["run"], env)).code).toBe(0);
    const original = readFileSync(path.join(clientFixtures, "ventes.csv"), "utf8");
    const changed =
      original.replace("2023-05-27,REF001,5,1", "2023-05-27,REF001,9,1") + "\r\n2023-06-26,REF002,2,5\r\n2023-06-26,REF003,1,6";
    server.file("/ventes.csv", changed);
    const run = await ws.cli(["run", "--json"], env);
    expect(run.code).toBe(0);
    const report = JSON.parse(run.stdout) as { status: string; steps: { name: string; counts: Record<string, number> }[] };
    expect(report.status).toBe("succeeded_with_rejections");
    expect(report.steps.find((s) => s.name === "load_sales")?.counts).toEqual({
      read: 32,
      inserted: 2,
      updated: 0,
      unchanged: 29,
      rejected: 0,
      conflicting: 1,
    });
    expect(ws.query("SELECT count(*), sum(quantity) FROM sales")).toBe("32|125");
    expect(ws.query("SELECT quantity FROM sales WHERE date = '2023-05-27' AND product_id = 'REF001'")).toBe("5");
    expect(ws.query("SELECT line, raw, reason, stored_values, new_values FROM pipeline_rejected_rows")).toBe(
      '2|2023-05-27,REF001,9,1|key already stored with different values|{"date":"2023-05-27","product_id":"REF001","quantity":5,"store_id":1}|{"date":"2023-05-27","product_id":"REF001","quantity":9,"store_id":1}',
    );
    expect(ws.query("SELECT revenue FROM revenue_total")).toBe(String((526878 + 2 * 1999 + 2999) / 100));
  });

  // SQLite only: PRAGMA integrity_check and foreign_key_check (the server checks its own pages and keys).
  test.skipIf(onPostgres)("the database passes integrity and foreign key checks", async () => {
    expect((await ws.cli(["run"], env)).code).toBe(0);
    expect(sqlite(ws.path("output/sales.db"), "PRAGMA integrity_check; PRAGMA foreign_key_check;")).toBe("ok");
  });

  test("a dry run prints the plan, fetches nothing and writes nothing", async () => {
    const absent = await ws.cli(["run", "--dry-run"], env);
    expect(absent.code).toBe(0);
    expect(absent.stdout).toContain("4. load_sales");
    expect(absent.stdout).toContain("insert_new");
    expect(absent.stdout).toContain("would create tables: products, stores, city_regions, sales");
    expect(ws.state()).toBeUndefined();
    expect(server.requests("/ventes.csv")).toHaveLength(0);

    expect((await ws.cli(["run"], env)).code).toBe(0);
    const before = ws.state();
    const requests = server.requests("/ventes.csv").length;
    const again = await ws.cli(["plan"], env);
    expect(again.code).toBe(0);
    expect(again.stdout).not.toContain("would create");
    expect(ws.state()).toEqual(before);
    expect(server.requests("/ventes.csv")).toHaveLength(requests);
  });

  test("--db overrides the database path of the config", async () => {
    expect((await ws.cli(["run", "--db", "elsewhere/x.db"], env)).code).toBe(0);
    expect(ws.query("SELECT count(*) FROM sales", "elsewhere/x.db")).toBe("30");
    expect(ws.state()).toBeUndefined();
  });
});
