import { readFileSync } from "node:fs";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { formatValue } from "../steps/report.js";
import { countPixels, findChromium, screenshot } from "./helpers/chromium.js";
import { clientFileEnv, root, Workspace } from "./helpers/workspace.js";

let ws: Workspace;
const env = { ...clientFileEnv, REPORT_DIR: "reports" };
beforeEach(() => {
  ws = new Workspace();
  ws.copyClientFiles();
});
afterEach(() => ws.remove());

const read = (file: string) => readFileSync(file, "utf8");

describe("the summary sheet (fiche synthèse)", () => {
  test("the committed sheet in docs/ is what the pipeline writes from the client's data", async () => {
    const run = await ws.cli(["run"], env);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain("wrote reports/fiche-synthese.md, reports/fiche-synthese.html");
    const hint = "regenerate with: npm run docs";
    expect(read(ws.path("reports/fiche-synthese.md")), hint).toBe(read(path.join(root, "docs/fiche-synthese.md")));
    expect(read(ws.path("reports/fiche-synthese.html")), hint).toBe(read(path.join(root, "docs/fiche-synthese.html")));
  });

  test("it shows the reference figures of the client's README", () => {
    const sheet = read(path.join(root, "docs/fiche-synthese.md"));
    expect(sheet).toContain("**Chiffre d'affaires total** : 5 268,78 €");
    expect(sheet).toContain("**Unités vendues** : 122");
    const products = {
      "Produit D": "1 679,79 €",
      "Produit E": "1 399,65 €",
      "Produit A": "1 199,76 €",
      "Produit B": "539,73 €",
      "Produit C": "449,85 €",
    };
    for (const [name, amount] of Object.entries(products)) expect(sheet).toMatch(new RegExp(`^\\| ${name} \\|.*\\| ${amount} \\|`, "m"));
    const cities = {
      Lyon: "1 059,79 €",
      Marseille: "1 009,73 €",
      Bordeaux: "829,81 €",
      Paris: "799,80 €",
      Nantes: "739,83 €",
      Strasbourg: "579,89 €",
      Lille: "249,93 €",
    };
    for (const [city, amount] of Object.entries(cities)) expect(sheet).toMatch(new RegExp(`^\\| ${city} \\|.*\\| ${amount} \\|`, "m"));
    const html = read(path.join(root, "docs/fiche-synthese.html"));
    expect(html).toContain("<dd>5 268,78 €</dd>");
    expect(html).not.toMatch(/https?:\/\/(?!www\.w3\.org\/2000\/svg)/);
  });

  test("a failed run writes no report", async () => {
    const run = await ws.cli(["run"], { ...env, SALES_URL: "tests/fixtures/client/produits.csv" });
    expect(run.code).toBe(1);
    expect(ws.bytes("reports/fiche-synthese.md")).toBeUndefined();
  });

  test("a section that names a column its query does not return is reported before the run", async () => {
    ws.write(
      "pipeline.yaml",
      read(ws.path("pipeline.yaml")).replace("chart: { label: city, value: revenue_cents }", "chart: { label: cty, value: revenue_cents }"),
    );
    const result = await ws.cli(["validate"], env);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(
      /pipeline\.yaml:\d+:\d+ error E_CONFIG the query of section "Ventes par ville" returns no column cty \(did you mean "city"\?\)/,
    );
  });

  test.skipIf(!findChromium() && !process.env["CI"])("the HTML page renders in headless Chromium: text, tables and bar charts", () => {
    const chromium = findChromium();
    expect(chromium, "CI installs Debian's chromium (.ci/run)").toBeDefined();
    const png = screenshot(chromium!, path.join(root, "docs/fiche-synthese.html"));
    const { matching, inked } = countPixels(png, [0x2f, 0x6d, 0xb5]);
    expect(inked / (png.width * png.height)).toBeGreaterThan(0.03);
    // why: the heading rule and the bars are the only things in that blue; bars cover thousands of pixels.
    expect(matching).toBeGreaterThan(20_000);
  });
});

describe("formatting values for people", () => {
  test.each([
    [526878, "cents", "fr-FR", "5 268,78 €"],
    [-5, "cents", "fr-FR", "-0,05 €"],
    [123456789012, "cents", "en-GB", "€1,234,567,890.12"],
    [1234567, "integer", "fr-FR", "1 234 567"],
    [31.875, "percent", "fr-FR", "31,88 %"],
    ["2023-05-27", "date", "fr-FR", "27/05/2023"],
    [null, "cents", "fr-FR", "–"],
  ] as const)("%s as %s (%s) -> %s", (value, format, locale, expected) => {
    expect(formatValue(value, format, locale)).toBe(expected);
  });
});
