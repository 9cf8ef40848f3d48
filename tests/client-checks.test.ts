import { readFileSync } from "node:fs";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { clientFileEnv, clientFixtures, sqlite, Workspace } from "./helpers/workspace.js";

let ws: Workspace;
beforeEach(() => {
  ws = new Workspace();
  ws.copyClientFiles();
});
afterEach(() => ws.remove());

/** A fixed clock: the client's sheet covers 2023-05-27 to 2023-06-25. */
const july2023 = () => new Date("2023-07-01T09:00:00Z");
const sales = () => readFileSync(path.join(clientFixtures, "ventes.csv"), "utf8");

interface RunJson {
  ok: boolean;
  error?: { code: string; message: string };
  checks: { name: string; status: string; failingRows: number; samples: Record<string, unknown>[] }[];
}

const run = async () => {
  const result = await ws.cli(["run", "--json"], clientFileEnv, { now: july2023 });
  return { ...result, report: JSON.parse(result.stdout) as RunJson };
};

describe("the client's checks", () => {
  test("the client's data passes every check, and the figures stay exact", async () => {
    const { code, report } = await run();
    expect(code).toBe(0);
    expect(report.checks.map((c) => `${c.name} ${c.status}`)).toEqual([
      "prices_positive passed",
      "store_cities_have_a_region passed",
      "quantities_positive passed",
      "sales_products_present passed",
      "sales_stores_present passed",
      "sale_dates_from_period_start passed",
      "no_sale_in_the_future passed",
      "one_total_row passed",
      "revenue_reconciles passed",
    ]);
    const db = ws.path("output/sales.db");
    expect(sqlite(db, "SELECT revenue_cents, printf('%.2f', revenue) FROM revenue_total")).toBe("526878|5268.78");
    expect(sqlite(db, "SELECT count(*), sum(status = 'passed') FROM pipeline_check_results WHERE run_id = 1")).toBe("9|9");
  });

  test.each([
    ["a sale of 0 units", (csv: string) => `${csv.trimEnd()}\n2023-06-26,REF001,0,1\n`, "quantities_positive", 1],
    ["a sale dated after the day of the run", (csv: string) => `${csv.trimEnd()}\n2023-07-02,REF001,1,1\n`, "no_sale_in_the_future", 1],
    [
      "a sale typed with a wrong year, before the period",
      (csv: string) => `${csv.trimEnd()}\n1023-06-01,REF001,1,1\n`,
      "sale_dates_from_period_start",
      1,
    ],
  ])("%s fails the run and saves nothing", async (_what, change, check, failing) => {
    expect((await run()).code).toBe(0);
    const before = ws.bytes()!;
    ws.write("tests/fixtures/client/ventes.csv", change(sales()));
    const { code, report } = await run();
    expect(code).toBe(1);
    expect(report.error?.code).toBe("E_CHECK");
    expect(report.checks.filter((c) => c.status !== "passed").map((c) => [c.name, c.failingRows])).toEqual([[check, failing]]);
    expect(ws.bytes()!.equals(before)).toBe(true);
    expect(ws.bytes("output/fiche-synthese.md")).toBeDefined();
  });

  test("a re-run that appends sales judges no_sale_in_the_future on the new sales only, the others having passed before that day", async () => {
    expect((await run()).code).toBe(0);
    ws.write("tests/fixtures/client/ventes.csv", `${sales().trimEnd()}\n2023-06-26,REF001,1,1\n2023-06-27,REF002,2,1\n`);
    const { code, report } = await run();
    expect(code).toBe(0);
    const check = report.checks.find((c) => c.name === "no_sale_in_the_future");
    expect(check).toMatchObject({ status: "passed", appendedRows: { rows: 2, earlierFromRun: 1 }, runBounds: { max: "2023-07-01" } });
  });

  test("a product priced 0 fails the run before any analysis", async () => {
    const products = readFileSync(path.join(clientFixtures, "produits.csv"), "utf8").replace(/,49\.99,/, ",0,");
    expect(products).toContain(",0,");
    ws.write("tests/fixtures/client/produits.csv", products);
    const { code, report } = await run();
    expect(code).toBe(1);
    expect(report.checks.map((c) => `${c.name} ${c.status}`)).toEqual(["prices_positive failed"]);
    expect(ws.bytes()).toBeUndefined();
  });

  test("an analysis that loses a city's sales breaks the reconciliation, to the cent", async () => {
    ws.write(
      "sql/sales_by_city.sql",
      readFileSync(ws.path("sql/sales_by_city.sql"), "utf8").replace("GROUP BY st.city", "WHERE st.city <> 'Lille' GROUP BY st.city"),
    );
    const { code, report } = await run();
    expect(code).toBe(1);
    const result = report.checks.find((c) => c.name === "revenue_reconciles")!;
    expect(result.status).toBe("failed");
    expect(result.samples).toEqual([
      expect.objectContaining({ breakdown: "sales_by_city", total_revenue_cents: 526878, breakdown_revenue_cents: 526878 - 24993 }),
    ]);
    expect(ws.bytes()).toBeUndefined();
    expect(ws.bytes("output/fiche-synthese.md")).toBeUndefined();
  });
});
