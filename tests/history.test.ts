import { readFileSync } from "node:fs";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { serveClientData, type ClientServer } from "./helpers/client-server.js";
import { clientFixtures, sqlite } from "./helpers/workspace.js";

let client: ClientServer;
beforeEach(async () => {
  client = await serveClientData();
});
afterEach(() => client.close());

const fixture = (name: string) => readFileSync(path.join(clientFixtures, name), "utf8");

/** The revenue of the first `count` sales of the client's file, in cents, computed here from the CSV text. */
function revenueOfFirst(count: number): number {
  const prices = new Map(
    fixture("produits.csv")
      .trim()
      .split("\n")
      .slice(1)
      .map((line) => line.split(","))
      .map(([, id, price]) => [id!, Math.round(Number(price) * 100)]),
  );
  return fixture("ventes.csv")
    .trim()
    .split("\n")
    .slice(1, count + 1)
    .map((line) => line.split(","))
    .reduce((sum, [, product, quantity]) => sum + Number(quantity) * prices.get(product!)!, 0);
}

const clock = (iso: string) => () => new Date(iso);

describe("figures over time (mode: history)", () => {
  test("across three runs, the total is kept once per run that changed it, and the summary sheet shows the trend", async () => {
    const { server, ws, env } = client;
    const [header, ...rows] = fixture("ventes.csv").trim().split("\n");
    const db = ws.path("output/sales.db");

    server.file("/ventes.csv", [header, ...rows.slice(0, 28)].join("\n") + "\n");
    const first = await ws.cli(["run"], env, { now: clock("2023-06-24T18:00:00Z") });
    expect(first.code, first.stderr).toBe(0);
    // why: one point is no trend; the section is left out.
    expect(readFileSync(ws.path("output/fiche-synthese.md"), "utf8")).not.toContain("Évolution du chiffre d'affaires");

    server.file("/ventes.csv", [header, ...rows].join("\n") + "\n");
    const second = await ws.cli(["run"], env, { now: clock("2023-06-25T18:30:00Z") });
    expect(second.code, second.stderr).toBe(0);

    // why: a product's stock changes: the run saves, but the total does not move, so no point is added.
    server.file("/produits.csv", fixture("produits.csv").replace("Produit A,REF001,49.99,100", "Produit A,REF001,49.99,90"));
    const third = await ws.cli(["run"], env, { now: clock("2023-06-26T08:00:00Z") });
    expect(third.code, third.stderr).toBe(0);
    expect(third.stdout).toContain("= unchanged figures unchanged since run 2");
    expect(sqlite(db, "SELECT count(*) FROM pipeline_runs")).toBe("3");

    expect(sqlite(db, "SELECT run_id, run_started_at, sales_lines, revenue_cents FROM revenue_history ORDER BY run_id")).toBe(
      [`1|2023-06-24T18:00:00.000Z|28|${revenueOfFirst(28)}`, `2|2023-06-25T18:30:00.000Z|30|${revenueOfFirst(30)}`].join("\n"),
    );
    expect(revenueOfFirst(30)).toBe(Number(sqlite(db, "SELECT revenue_cents FROM revenue_total")));

    const sheet = readFileSync(ws.path("output/fiche-synthese.md"), "utf8");
    const trend = sheet.slice(sheet.indexOf("## Évolution du chiffre d'affaires"));
    // fr-FR groups digits with a narrow no-break space and puts a no-break space before the euro sign.
    const euros = (cents: number) =>
      `${Math.floor(cents / 100)
        .toString()
        .replace(/\B(?=(\d{3})+(?!\d))/g, "\u202f")},${String(cents % 100).padStart(2, "0")}\u00a0€`;
    expect(trend).toContain(`| 24/06/2023 18:00 UTC | ${euros(revenueOfFirst(28))} |  |`);
    expect(trend).toContain(
      `| 25/06/2023 18:30 UTC | ${euros(revenueOfFirst(30))} | \\+${euros(revenueOfFirst(30) - revenueOfFirst(28))} |`,
    );
    const html = readFileSync(ws.path("output/fiche-synthese.html"), "utf8");
    expect(html).toMatch(/<svg class="chart trend"[^>]*><polyline points="[\d.]+,[\d.]+ [\d.]+,[\d.]+"/);
  });

  test("validate asks for the stamp columns, and refuses a query that selects them", async () => {
    const { ws } = client;
    const yaml = readFileSync(ws.path("pipeline.yaml"), "utf8");
    ws.write(
      "pipeline.yaml",
      yaml.replace('      run_started_at: { type: text, required: true, description: "when that run started (UTC, ISO 8601)" }\n', ""),
    );
    const missing = await ws.cli(["validate"]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(
      /pipeline\.yaml:\d+:11 error E_CONFIG with mode: history, table revenue_history needs a column run_started_at of type text: the step fills it for every row it keeps/,
    );
    ws.write(
      "pipeline.yaml",
      yaml.replace("sql: SELECT period_start, period_end,", "sql: SELECT :run_id AS run_id, period_start, period_end,"),
    );
    const stamped = await ws.cli(["validate"]);
    expect(stamped.stderr).toContain("error E_SQL sql: with mode: history, the step fills run_id itself; do not select it");
  });
});
