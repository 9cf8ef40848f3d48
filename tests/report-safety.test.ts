import { readFileSync } from "node:fs";
import MarkdownIt from "markdown-it";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import type { ReportStepSpec } from "../engine/config/schema.js";
import { openSqlJs } from "../engine/db/sqljs.js";
import type { RunContext } from "../engine/step.js";
import { reportStep } from "../steps/report.js";
import { sqlite, Workspace } from "./helpers/workspace.js";

// What a hostile CSV value can do to the Markdown sheet, and what a report section's SQL may do.

let ws: Workspace;
beforeEach(() => {
  ws = new Workspace({ withClientPipeline: false });
});
afterEach(() => ws.remove());

/** Product names a hostile sheet could hold: HTML, an unclosed comment, line breaks that start blocks, links, pipes. */
const hostile = [
  "<script>alert(1)</script>",
  "<!-- everything after this is hidden",
  "Nice\n# Injected heading\n[click me](javascript:alert(1))",
  "a | b | c",
  "# top",
  "> quoted",
  "- item",
  "1. first",
  "<javascript:alert(2)>",
  "![img](x.png) *bold* _it_ `code` ~~del~~ &lt;b&gt; \\",
  "    indented\r\n\r\n===",
  "[ref]: javascript:alert(3)",
  "see https://example.com/x and www.example.com",
];

function csv(names: string[]): string {
  return ["Id,Name,Price", ...names.map((name, i) => `${i + 1},"${name.replaceAll('"', '""')}",${i + 1}.50`)].join("\n") + "\n";
}

function pipeline(sections: string): string {
  return `version: 1
database: db.sqlite
tables:
  products:
    columns:
      id: { type: integer }
      name: { type: text, required: true }
      price_cents: { type: decimal, scale: 2, required: true }
    primary_key: [id]
steps:
  - name: load_products
    type: load
    source: products.csv
    table: products
    mode: replace
    columns: { id: Id, name: Name, price_cents: Price }
  - name: sheet
    type: report
    title: Sheet
    markdown: out/sheet.md
    html: out/sheet.html
    sections:
${sections}`;
}

const sheetSections = `      - title: Figures
        show: figures
        sql: SELECT (SELECT name FROM products WHERE id = 3) AS top, count(*) AS products FROM products
        columns: { top: { label: Top }, products: { label: Products, format: integer } }
      - title: Table
        show: table
        sql: SELECT name, price_cents FROM products ORDER BY id
        columns: { name: { label: Name }, price_cents: { label: Price, format: cents } }
        chart: { label: name, value: price_cents }
      - title: Template
        show: text
        sql: SELECT name FROM products ORDER BY id
        text: "Best seller: {name}."
      - title: Lines
        show: text
        sql: SELECT name FROM products ORDER BY id
`;

/** The text a browser would show for an HTML fragment: tags dropped, entities decoded. */
function textOf(html: string): string {
  return html
    .replace(/<[^>]*>/g, "")
    .replaceAll("&lt;", "<")
    .replaceAll("&gt;", ">")
    .replaceAll("&quot;", '"')
    .replaceAll("&amp;", "&")
    .trim();
}

describe("the Markdown sheet with hostile values", () => {
  test("a hostile product name renders as its own text: no HTML, comment, heading, link, list or broken table", async () => {
    ws.write("products.csv", csv(hostile));
    ws.write("pipeline.yaml", pipeline(sheetSections));
    const run = await ws.cli(["run"]);
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    const markdown = readFileSync(ws.path("out/sheet.md"), "utf8");
    // why: GitHub-like settings: raw HTML allowed, so only escaping keeps it out.
    const html = new MarkdownIt({ html: true, linkify: false }).render(markdown);
    expect(html).not.toMatch(/<script|<!--|<a |<img |<blockquote|<ol|<pre|<code|<em|<strong>(?!Top|Products)|<s>|<del>|<hr/);
    expect(html.match(/<li>/g)).toHaveLength(2);
    expect(html.match(/<h\d>[^<]*<\/h\d>/g)).toEqual([
      "<h1>Sheet</h1>",
      "<h2>Figures</h2>",
      "<h2>Table</h2>",
      "<h2>Template</h2>",
      "<h2>Lines</h2>",
    ]);
    const shown = (name: string) => name.replace(/\r?\n/g, " ").trim();
    const rows = [...html.matchAll(/<tr>([\s\S]*?)<\/tr>/g)].slice(1).map((row) => [...row[1]!.matchAll(/<td[^>]*>([\s\S]*?)<\/td>/g)]);
    expect(rows.map((cells) => cells.length)).toEqual(hostile.map(() => 3));
    expect(rows.map((cells) => textOf(cells[0]![1]!))).toEqual(hostile.map(shown));
    const paragraphs = [...html.matchAll(/<p>([\s\S]*?)<\/p>/g)].map((p) => textOf(p[1]!));
    expect(paragraphs).toEqual([...hostile.map((name) => `Best seller: ${shown(name)}.`), ...hostile.map(shown)]);
    expect(textOf(html)).toContain(`Top : ${shown(hostile[2]!)}`);
    // why: renderers that autolink bare URLs (GFM) still may; such a link shows its own address, and only http(s) ones exist.
    const linked = new MarkdownIt({ html: true, linkify: true }).render(markdown);
    const anchors = [...linked.matchAll(/<a href="([^"]*)">([^<]*)<\/a>/g)];
    expect(anchors.length).toBeGreaterThan(0);
    expect(anchors.filter(([, href, text]) => !href!.endsWith(text!))).toEqual([]);
    expect(linked).not.toMatch(/href="(?!https?:)/);
  });
});

describe("report queries are read-only", () => {
  const writing = [
    "DELETE FROM products RETURNING name",
    "WITH gone AS (SELECT 1) DELETE FROM products RETURNING name",
    "UPDATE products SET price_cents = 0 RETURNING name",
    "INSERT INTO products (id, name, price_cents) VALUES (99, 'x', 1) RETURNING name",
  ];
  test.each(writing)("validate refuses a section whose SQL writes: %s", async (sql) => {
    ws.write("products.csv", csv(["A", "B"]));
    ws.write("pipeline.yaml", pipeline(`      - title: Gone\n        show: table\n        sql: ${sql}\n`));
    for (const argv of [["validate"], ["run"]]) {
      const result = await ws.cli(argv);
      expect(result.code, argv[0]).toBe(2);
      expect(result.stderr).toMatch(
        /pipeline\.yaml:\d+:\d+ error E_SQL sql: a report section must only read: this statement writes to the database/,
      );
    }
    expect(ws.bytes("db.sqlite")).toBeUndefined();
  });

  test("a read-only query is accepted, and the run leaves the table as loaded", async () => {
    ws.write("products.csv", csv(["A", "B"]));
    ws.write(
      "pipeline.yaml",
      pipeline(
        `      - title: All\n        show: table\n        sql: WITH p AS (SELECT * FROM products) SELECT name FROM p ORDER BY name\n`,
      ),
    );
    const run = await ws.cli(["run"]);
    expect(run.code).toBe(0);
    expect(sqlite(ws.path("db.sqlite"), "SELECT count(*) FROM products")).toBe("2");
  });

  test("at run time too, the report step refuses a section that would write, and the rows stay", async () => {
    const db = await openSqlJs();
    db.exec("CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO products VALUES (1, 'A'), (2, 'B')");
    const step = {
      type: "report",
      name: "sheet",
      title: "Sheet",
      markdown: "sheet.md",
      sections: [{ title: "Gone", show: "table", sql: "DELETE FROM products RETURNING name" }],
    } as ReportStepSpec;
    // why: a real database and the real step; only the parts of the run a report does not read are left out.
    const context = { db, runId: 1, startedAt: "", config: { baseDir: ws.dir } } as unknown as RunContext;
    await expect(reportStep.execute(step, context)).rejects.toThrow(
      /sql of section "Gone": a report section must only read: this statement writes to the database/,
    );
    expect(db.all("SELECT count(*) AS n FROM products")).toEqual([{ n: 2 }]);
    db.close();
  });
});
