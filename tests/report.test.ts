import { readFileSync } from "node:fs";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { formatValue } from "../steps/report.js";
import { tmpdir } from "node:os";
import { countPixels, findChromium, measureLayout, screenshot } from "./helpers/chromium.js";
import { clientFileEnv, root, sqlite, Workspace } from "./helpers/workspace.js";

let ws: Workspace;
const env = { ...clientFileEnv, REPORT_DIR: "reports" };
beforeEach(() => {
  ws = new Workspace();
  ws.copyClientFiles();
});
afterEach(() => ws.remove());

const read = (file: string) => readFileSync(file, "utf8");
/** The sheet with its generation date (the run's day) taken out, so a sheet made another day compares equal. */
const undated = (sheet: string) => sheet.replace(/(fiche établie le )\d{2}\/\d{2}\/\d{4}/g, "$1…");
/** An amount as fr-FR writes it: a narrow no-break space between thousands, a no-break space before €. */
const euros = (text: string) => text.replace(/(\d) (?=\d{3})/g, "$1\u202f").replace(/ €$/, "\u00a0€");

describe("the summary sheet (fiche synthèse)", () => {
  test("the committed sheet in docs/ is what the pipeline writes from the client's data", async () => {
    const run = await ws.cli(["run"], env);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain("wrote reports/fiche-synthese.md, reports/fiche-synthese.html");
    const hint = "regenerate with: npm run docs";
    expect(undated(read(ws.path("reports/fiche-synthese.md"))), hint).toBe(undated(read(path.join(root, "docs/fiche-synthese.md"))));
    expect(undated(read(ws.path("reports/fiche-synthese.html"))), hint).toBe(undated(read(path.join(root, "docs/fiche-synthese.html"))));
  });

  test("it says when it was made and how recent the data is", async () => {
    expect((await ws.cli(["run"], env)).code).toBe(0);
    const today = new Intl.DateTimeFormat("fr-FR", { year: "numeric", month: "2-digit", day: "2-digit", timeZone: "UTC" }).format(
      new Date(),
    );
    const newest = sqlite(ws.path("output/sales.db"), "SELECT max(date) FROM sales").split("-").reverse().join("/");
    expect(read(ws.path("reports/fiche-synthese.md"))).toContain(`_Ventes jusqu'au ${newest} · fiche établie le ${today}_`);
    expect(read(ws.path("reports/fiche-synthese.html"))).toContain(
      `<p class="byline">Ventes jusqu'au ${newest} · fiche établie le ${today}</p>`,
    );
  });

  test("it shows only words meant for the client: no file path, no note to ourselves", () => {
    for (const file of ["docs/fiche-synthese.md", "docs/fiche-synthese.html"]) {
      const sheet = read(path.join(root, file));
      expect(sheet).not.toMatch(/\b[\w-]+\/[\w.-]+\.(csv|sql|yaml)\b/);
      expect(sheet).not.toContain("partagé par le client");
      expect(sheet).not.toContain("export");
    }
  });

  test("it shows the reference figures of the client's README", () => {
    const sheet = read(path.join(root, "docs/fiche-synthese.md"));
    expect(sheet).toContain(`**Chiffre d'affaires total** : ${euros("5 268,78 €")}`);
    expect(euros("5 268,78 €")).toBe("5\u202f268,78\u00a0€");
    expect(sheet).toContain("**Unités vendues** : 122");
    const products = {
      "Produit D": "1 679,79 €",
      "Produit E": "1 399,65 €",
      "Produit A": "1 199,76 €",
      "Produit B": "539,73 €",
      "Produit C": "449,85 €",
    };
    for (const [name, amount] of Object.entries(products))
      expect(sheet).toMatch(new RegExp(`^\\| ${name} \\|.*\\| ${euros(amount)} \\|`, "m"));
    const cities = {
      Lyon: "1 059,79 €",
      Marseille: "1 009,73 €",
      Bordeaux: "829,81 €",
      Paris: "799,80 €",
      Nantes: "739,83 €",
      Strasbourg: "579,89 €",
      Lille: "249,93 €",
    };
    for (const [city, amount] of Object.entries(cities))
      expect(sheet).toMatch(new RegExp(`^\\| ${city} \\|.*\\| ${euros(amount)} \\|`, "m"));
    const html = read(path.join(root, "docs/fiche-synthese.html"));
    expect(html).toContain(`<dd>${euros("5 268,78 €")}</dd>`);
    expect(html).not.toMatch(/https?:\/\/(?!www\.w3\.org\/2000\/svg)/);
  });

  test("a failed run writes no report", async () => {
    const run = await ws.cli(["run"], { ...env, SALES_URL: "tests/fixtures/client/produits.csv" });
    expect(run.code).toBe(1);
    expect(ws.bytes("reports/fiche-synthese.md")).toBeUndefined();
  });

  test("a section that names a column its query does not return is reported before the run", async () => {
    ws.write("pipeline.yaml", read(ws.path("pipeline.yaml")).replace("chart: { label: city,", "chart: { label: cty,"));
    const result = await ws.cli(["validate"], env);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(
      /pipeline\.yaml:\d+:\d+ error E_CONFIG the query of section "Ventes par ville" returns no column cty \(did you mean "city"\?\)/,
    );
  });

  test.skipIf(!findChromium() && !process.env["CI"])("the HTML page renders in headless Chromium: text, tables and bar charts", () => {
    const chromium = findChromium();
    expect(chromium, "CI installs Debian's chromium (.ci/run)").toBeDefined();
    const png = screenshot(chromium!, path.join(root, "docs/fiche-synthese.html"), 1000, 1800);
    const { matching, inked } = countPixels(png, [0x2f, 0x6d, 0xb5]);
    expect(inked / (png.width * png.height)).toBeGreaterThan(0.03);
    // why: the heading rule and the bars are the only things in that blue; bars cover thousands of pixels.
    expect(matching).toBeGreaterThan(20_000);
  });

  // why: the screenshots are kept in the temp directory for a person to look at (their paths are printed).
  test.skipIf(!findChromium() && !process.env["CI"])(
    "on a 400 px phone and a 1200 px desk, no column is cut, tables fit, chart labels stay readable",
    () => {
      const chromium = findChromium()!;
      const sheet = path.join(root, "docs/fiche-synthese.html");
      for (const width of [400, 1200]) {
        const shot = path.join(tmpdir(), `fiche-synthese-${width}px.png`);
        screenshot(chromium, sheet, width, 2600, shot);
        console.log(`screenshot: ${shot}`);
        const layout = measureLayout(chromium, sheet, width);
        expect(layout.viewport).toBe(width);
        expect(layout.cut, `at ${width} px`).toEqual([]);
        expect(layout.pageWidth, `at ${width} px the page scrolls sideways`).toBeLessThanOrEqual(width);
        expect(layout.scrollingTables, `at ${width} px`).toBe(0);
        expect(layout.smallestChartText, `at ${width} px`).toBeGreaterThanOrEqual(12);
        // why: a header row on a desk; on a phone each row is a card whose values sit beside their labels.
        expect(layout.headerRowShown).toBe(width > 600);
      }
    },
  );
});

describe("formatting values for people", () => {
  const [nnbsp, nbsp] = ["\u202f", "\u00a0"];
  test.each([
    [526878, "cents", "fr-FR", "EUR", `5${nnbsp}268,78${nbsp}€`],
    [-5, "cents", "fr-FR", "EUR", `-0,05${nbsp}€`],
    [123456789012, "cents", "en-GB", "EUR", "€1,234,567,890.12"],
    [123456789012, "cents", "de-CH", "CHF", `CHF${nbsp}1'234'567'890.12`],
    [526878, "cents", "en-US", "USD", "$5,268.78"],
    [526878, "cents", "en", undefined, "5,268.78"],
    // why: 2^53 - 1 cents: a float of euros (90071992547409.91) would print ...409.9 or round; the cents are exact.
    [Number.MAX_SAFE_INTEGER, "cents", "fr-FR", "EUR", `90${nnbsp}071${nnbsp}992${nnbsp}547${nnbsp}409,91${nbsp}€`],
    [1234567, "integer", "fr-FR", undefined, `1${nnbsp}234${nnbsp}567`],
    [31.875, "percent", "fr-FR", undefined, `31,88${nbsp}%`],
    [0.125, "percent", "en-GB", undefined, "0.13%"],
    ["2023-05-27", "date", "fr-FR", undefined, "27/05/2023"],
    ["2023-05-27", "date", "en-US", undefined, "05/27/2023"],
    ["2026-12-01T23:59:00.000Z", "date", "fr-FR", undefined, "01/12/2026"],
    [null, "cents", "fr-FR", "EUR", "–"],
  ] as const)("%s as %s (%s %s) -> %s", (value, format, locale, currency, expected) => {
    expect(formatValue(value, format, locale, currency)).toBe(expected);
  });

  test("amounts never break across lines: every separator inside one is a no-break space", () => {
    for (const locale of ["fr-FR", "de-CH", "nb-NO", "en-IN", "pl-PL"])
      expect(formatValue(123456789, "cents", locale, "EUR"), locale).not.toMatch(/[ \t]/);
  });
});

describe("the report's locale, currency and byline live in pipeline.yaml", () => {
  const edited = (from: string, to: string) => {
    const yaml = read(ws.path("pipeline.yaml"));
    if (!yaml.includes(from)) throw new Error(`fixture edit: ${from} not in pipeline.yaml`);
    ws.write("pipeline.yaml", yaml.replace(from, to));
  };

  test.each([
    ["    locale: fr-FR\n", "    locale: fr_FR\n", 'locale "fr_FR" is not a BCP 47 language tag'],
    ["    currency: EUR\n", "    currency: EUX\n", 'currency "EUX" is not an ISO 4217 code this Node knows'],
    ["    currency: EUR\n", "    currency: euro\n", '/currency is "euro"'],
    [
      "{data_date|date}",
      "{data_day|date}",
      'the byline names {data_day}, which is neither generated_at nor a column of its sql (did you mean "data_date"?)',
    ],
    [
      "SELECT max(date) AS data_date FROM sales",
      "DELETE FROM sales RETURNING date AS data_date",
      "byline sql: a report section must only read",
    ],
  ])("%j -> %j is refused before the run: %s", async (from, to, message) => {
    edited(from, to);
    const result = await ws.cli(["validate"], env);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/^pipeline\.yaml:\d+:\d+ error E_(CONFIG|SCHEMA|SQL) /);
    expect(result.stderr).toContain(message);
  });

  test("without locale or currency, the engine writes plain English numbers: no client's language, no currency assumed", async () => {
    edited("    locale: fr-FR\n    currency: EUR\n", "");
    expect((await ws.cli(["run"], env)).code).toBe(0);
    const sheet = read(ws.path("reports/fiche-synthese.md"));
    expect(sheet).toContain("**Chiffre d'affaires total** : 5,268.78\n");
    expect(sheet).toContain("| Produit D | 79\\.99 | 21 | 6 | 1,679.79 | 31\\.88% | ████████████████████ |");
    expect(read(ws.path("reports/fiche-synthese.html"))).toContain('<html lang="en">');
  });

  test("the chart's accessible name is the pipeline's title for it, else the section's title", async () => {
    edited(', title: "Chiffre d\'affaires par ville" }', " }");
    expect((await ws.cli(["run"], env)).code).toBe(0);
    const html = read(ws.path("reports/fiche-synthese.html"));
    expect(html).toContain(`<figure class="chart" aria-label="Chiffre d'affaires par produit">`);
    expect(html).toContain('<figure class="chart" aria-label="Ventes par ville">');
  });
});
