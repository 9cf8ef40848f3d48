import { existsSync, mkdirSync, readFileSync, symlinkSync } from "node:fs";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { clientFileEnv, Workspace } from "./helpers/workspace.js";

let ws: Workspace;
afterEach(() => ws.remove());

describe("a report never overwrites the database, the configuration, an input or another output", () => {
  const pipeline = `version: 1
database: out.db
tables:
  t:
    columns:
      a: { type: text }
      b: { type: integer }
steps:
  - name: load_t
    type: load
    source: data.csv
    table: t
    mode: append
    columns: { a: a, b: b }
  - name: sheet
    type: report
    title: Sheet
    markdown: sheet.md
    html: sheet.html
    sections:
      - { title: Rows, show: table, file: sql/rows.sql }
`;
  beforeEach(() => {
    ws = new Workspace({ withClientPipeline: false });
    ws.write("data.csv", "a,b\nx,1\n");
    ws.write("sql/rows.sql", "SELECT a, b FROM t");
  });

  test.each([
    ["the database", "html: sheet.html", "html: out.db", "19:11", "html: out.db is the database out.db (database: in p.yaml)"],
    ["the database through ..", "html: sheet.html", "html: sql/../out.db", "19:11", "is the database out.db"],
    ["the database in another case", "html: sheet.html", "html: OUT.DB", "19:11", "is the database out.db"],
    ["the database through a symlink", "html: sheet.html", "html: link.db", "19:11", "is the database out.db"],
    ["the configuration", "markdown: sheet.md", "markdown: p.yaml", "18:15", "markdown: p.yaml is the configuration p.yaml"],
    ["a source file", "markdown: sheet.md", "markdown: ./data.csv", "18:15", "is the source of step load_t"],
    ["a SQL file", "html: sheet.html", "html: sql/rows.sql", "19:11", "is the SQL file of step sheet"],
    ["the lock", "html: sheet.html", "html: out.db.lock", "19:11", "is the lock of the database out.db"],
    ["the failed-runs journal", "html: sheet.html", "html: out.db.failed-runs.jsonl", "19:11", "journal of failed runs"],
    ["a SQLite journal", "html: sheet.html", "html: out.db-journal", "19:11", "SQLite journal"],
    ["a temporary file of the database", "html: sheet.html", "html: .out.db.tmp-1", "19:11", "temporary file"],
    [
      "the other output of the step",
      "html: sheet.html",
      "html: sheet.md",
      "19:11",
      "html: sheet.md is also written by step sheet (markdown:)",
    ],
  ])("%s is refused by validate with the place of the path", async (_what, from, to, place, message) => {
    symlinkSync("out.db", ws.path("link.db"));
    ws.write("p.yaml", pipeline.replace(from, to));
    const before = readFileSync(ws.path("p.yaml"));
    const result = await ws.cli(["validate", "-c", "p.yaml"]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(`p.yaml:${place} error E_CONFIG `);
    expect(result.stderr).toContain(message);
    expect((await ws.cli(["run", "-c", "p.yaml"])).code).toBe(2);
    expect(readFileSync(ws.path("p.yaml"))).toEqual(before);
    expect(readFileSync(ws.path("data.csv"), "utf8")).toBe("a,b\nx,1\n");
    expect(existsSync(ws.path("out.db"))).toBe(false);
  });

  test("two report steps writing the same file are refused", async () => {
    const second = pipeline
      .slice(pipeline.indexOf("  - name: sheet"))
      .replace("name: sheet", "name: other")
      .replace("sheet.md", "other.md");
    ws.write("p.yaml", pipeline + second);
    const result = await ws.cli(["validate", "-c", "p.yaml"]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("p.yaml:26:11 error E_CONFIG html: sheet.html is also written by step sheet (html:)");
  });

  test.each([
    ["the report itself", ["--db", "sheet.html"]],
    ["the report, through a symlink", ["--db", "db-link"]],
  ])("--db naming %s is refused before anything is written", async (_what, args) => {
    ws.write("p.yaml", pipeline);
    expect((await ws.cli(["run", "-c", "p.yaml"])).code).toBe(0);
    symlinkSync("sheet.html", ws.path("db-link"));
    const sheet = readFileSync(ws.path("sheet.html"));
    const result = await ws.cli(["run", "-c", "p.yaml", ...args]);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/p\.yaml:19:11 error E_CONFIG html: sheet\.html is the database \S*sheet\.html \(--db\)/);
    expect(readFileSync(ws.path("sheet.html"))).toEqual(sheet);
    expect(existsSync(ws.path("sheet.html.lock"))).toBe(false);
  });
});

describe("reports belong to their database", () => {
  beforeEach(() => {
    ws = new Workspace();
    ws.copyClientFiles();
  });

  test("a run with --db on another database refuses to replace the sheet of the configured one", async () => {
    expect((await ws.cli(["run"], clientFileEnv)).code).toBe(0);
    const sheet = ws.bytes("output/fiche-synthese.html");
    const other = ws.path("elsewhere/other.db");
    const result = await ws.cli(["run", "--db", other], clientFileEnv);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(
      `output/fiche-synthese.md was written from the database output/sales.db, not from ${other}: this run would replace it, so nothing was run`,
    );
    expect(result.stderr).toContain("give this database its own report paths");
    expect(ws.bytes("output/fiche-synthese.html")).toEqual(sheet);
    expect(existsSync(other)).toBe(false);
    expect(existsSync(ws.path("elsewhere/other.db.failed-runs.jsonl"))).toBe(false);
  });

  test("with its own report paths, a database given with --db writes and then updates its own sheet", async () => {
    expect((await ws.cli(["run"], clientFileEnv)).code).toBe(0);
    const sheet = ws.bytes("output/fiche-synthese.md");
    const env = { ...clientFileEnv, REPORT_DIR: "elsewhere/reports" };
    const other = ws.path("elsewhere/other.db");
    expect((await ws.cli(["run", "--db", other], env)).code).toBe(0);
    mkdirSync(ws.path("tests/fixtures/client"), { recursive: true });
    ws.write(
      "tests/fixtures/client/ventes.csv",
      readFileSync(ws.path("tests/fixtures/client/ventes.csv"), "utf8") + "\r\n2023-06-26,REF001,1,1",
    );
    const again = await ws.cli(["run", "--db", other], env);
    expect(again.stderr).toBe("");
    expect(again.code).toBe(0);
    expect(again.stdout).toContain("wrote elsewhere/reports/fiche-synthese.md");
    expect(ws.bytes("output/fiche-synthese.md")).toEqual(sheet);
  });

  test("the configured database still replaces its sheet, as before", async () => {
    expect((await ws.cli(["run"], clientFileEnv)).code).toBe(0);
    ws.write("output/fiche-synthese.md", "edited by hand");
    ws.write(
      "tests/fixtures/client/ventes.csv",
      readFileSync(ws.path("tests/fixtures/client/ventes.csv"), "utf8") + "\r\n2023-06-26,REF001,1,1",
    );
    expect((await ws.cli(["run"], clientFileEnv)).code).toBe(0);
    expect(readFileSync(ws.path("output/fiche-synthese.md"), "utf8")).toContain("Fiche synthèse");
  });
});
