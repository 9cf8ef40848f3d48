import { execFileSync } from "node:child_process";
import { cpSync, readFileSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { interpolate } from "../engine/config/interpolate.js";
import { shapeValidatorFile, shapeValidatorSource } from "../engine/config/shape-validator-source.js";
import { root, Workspace } from "./helpers/workspace.js";

let ws: Workspace;
beforeEach(() => {
  ws = new Workspace({ withClientPipeline: false });
  cpSync(path.join(root, "tests/fixtures/invalid"), ws.dir, { recursive: true });
});
afterEach(() => ws.remove());

const base = `version: 1
database: out.db
tables:
  t:
    columns:
      a: { type: text }
      b: { type: integer }
    primary_key: [a]
  r:
    columns:
      a: { type: text }
steps:
  - name: load_t
    type: load
    source: data.csv
    table: t
    mode: upsert
    columns:
      a: a
      b: b
  - name: copy
    type: sql
    file: sql/one.sql
    into: r
`;

/** The base pipeline with one text replacement. */
const edit = (from: string, to: string) => {
  if (!base.includes(from)) throw new Error(`fixture edit: ${from} not in base`);
  return base.replace(from, to);
};

const cases: [name: string, yaml: string, expected: string[]][] = [
  ["YAML syntax", edit("database: out.db", 'database: "out.db'), ['p.yaml:25:1 error E_YAML Missing closing "quote']],
  ["duplicate key", edit("version: 1\n", "version: 1\nversion: 1\n"), ["p.yaml:2:1 error E_YAML Map keys must be unique"]],
  [
    "unknown key with a hint",
    edit("    primary_key:", "    primry_key: [a]\n    primary_key:"),
    ['p.yaml:8:5 error E_SCHEMA unknown key "primry_key" in /tables/t (did you mean "primary_key"?)'],
  ],
  [
    "wrong type",
    edit("mode: upsert", "mode: [upsert]"),
    ['p.yaml:17:11 error E_SCHEMA /steps/0/mode is "upsert", expected one of: replace, upsert, insert_new, append'],
  ],
  [
    "a misspelt enum",
    edit("mode: upsert", "mode: upsrt"),
    ['p.yaml:17:11 error E_SCHEMA /steps/0/mode is "upsrt", expected one of: replace, upsert, insert_new, append (did you mean "upsert"?)'],
  ],
  [
    "unknown step type",
    edit("type: sql", "type: sequel"),
    ['p.yaml:22:11 error E_SCHEMA /steps/1/type is "sequel", expected one of: load, sql'],
  ],
  ["missing required key", edit("    table: t\n", ""), ['p.yaml:13:5 error E_SCHEMA /steps/0 is missing the required key "table"']],
  [
    "a mapping of the wrong shape",
    edit("      b: b\n", "      b: { form: b }\n"),
    // why: the missing "from" is the misspelt "form"; saying it twice would send the reader looking for two problems.
    ['p.yaml:20:12 error E_SCHEMA unknown key "form" in /steps/0/columns/b (did you mean "from"?)'],
  ],
  [
    "a misspelt required key, reported once",
    edit("    table: t\n", "    tabel: t\n"),
    ['p.yaml:16:5 error E_SCHEMA unknown key "tabel" in /steps/0 (did you mean "table"?)'],
  ],
  [
    "a misspelt table declaration, reported once where the typo is",
    edit("  t:\n", "  tt:\n").replace(
      "  r:\n    columns:\n      a: { type: text }\n",
      "  r:\n    columns:\n      a: { type: text }\n    foreign_keys: [{ columns: [a], references: { table: t, columns: [a] } }]\n",
    ),
    [
      'p.yaml:4:3 error E_CONFIG table "tt" is declared but nothing uses it, while 2 places name table "t", which is not declared (lines 12, 17): rename "tt" to "t"',
    ],
  ],
  [
    "an unset variable",
    edit("database: out.db", "database: ${NO_SUCH_VARIABLE}"),
    ["p.yaml:2:11 error E_ENV environment variable NO_SUCH_VARIABLE is not set and has no default"],
  ],
  [
    "a dedup key that is not mapped",
    edit("mode: upsert", "mode: insert_new\n    key: [a, c]"),
    [
      'p.yaml:18:14 error E_CONFIG dedup key column "c" is not a mapped column of this step',
      "p.yaml:18:10 error E_CONFIG key (a, c) is neither the primary key nor a unique key of table t",
    ],
  ],
  [
    "a SQL file that does not exist",
    edit("sql/one.sql", "sql/two.sql"),
    ["p.yaml:23:11 error E_CONFIG SQL file sql/two.sql does not exist"],
  ],
  [
    "a foreign key to an undeclared table",
    edit(
      "    primary_key: [a]\n",
      "    primary_key: [a]\n    foreign_keys: [{ columns: [b], references: { table: parent, columns: [id] } }]\n",
    ),
    ['p.yaml:9:57 error E_CONFIG foreign key references table "parent", which is not declared'],
  ],
  [
    "a step that reads a table no earlier step writes",
    edit("file: sql/one.sql", "sql: SELECT a FROM r"),
    ["p.yaml:23:10 error E_SQL sql: reads table r, which no earlier step writes"],
  ],
  [
    "a query column the target table lacks",
    edit("file: sql/one.sql", "sql: SELECT a, b FROM t"),
    ["p.yaml:23:10 error E_SQL sql: the query returns column b, not in table r"],
  ],
  [
    "an unknown column in SQL",
    edit("file: sql/one.sql", "sql: SELECT aa AS a FROM t"),
    ["p.yaml:23:10 error E_SQL sql: no such column: aa"],
  ],
  [
    "a mapped column the table lacks",
    edit("      b: b\n", "      b: b\n      c: c\n"),
    ['p.yaml:21:7 error E_CONFIG column "c" is not a column of table t'],
  ],
  [
    "a missing source file",
    edit("source: data.csv", "source: nothing.csv"),
    ["p.yaml:15:13 error E_CONFIG source file nothing.csv does not exist"],
  ],
  [
    "a decimal without scale",
    edit("b: { type: integer }", "b: { type: decimal }"),
    ["p.yaml:7:10 error E_CONFIG decimal column t.b needs a scale"],
  ],
  [
    "a bad date format",
    edit("a: { type: text }\n      b", "a: { type: text }\n      d: { type: date }\n      b").replace(
      "      b: b\n",
      "      b: b\n      d: { from: d, format: dd/yy }\n",
    ),
    ['p.yaml:22:29 error E_CONFIG date format "dd/yy" must contain yyyy'],
  ],
];

describe("an invalid pipeline exits 2 and prints each problem with its line:col", () => {
  test.each(cases)("%s", async (_name, yaml, expected) => {
    ws.write("p.yaml", yaml);
    const result = await ws.cli(["validate", "--config", "p.yaml"]);
    expect(result.code).toBe(2);
    const lines = result.stderr.trimEnd().split("\n");
    expect(lines.at(-1)).toMatch(/^\d+ problems? found; nothing was run$/);
    for (const line of expected)
      expect(
        lines.some((l) => l.startsWith(line)),
        `${line}\n--- got:\n${result.stderr}`,
      ).toBe(true);
    expect(lines).toHaveLength(expected.length + 1);
    const run = await ws.cli(["run", "--config", "p.yaml"]);
    expect(run.code).toBe(2);
    expect(ws.bytes("out.db")).toBeUndefined();
  });

  test("every problem is reported at once", async () => {
    ws.write(
      "p.yaml",
      edit("source: data.csv", "source: nothing.csv")
        .replace("sql/one.sql", "sql/two.sql")
        .replace("      b: b\n", "      b: b\n      c: c\n"),
    );
    const result = await ws.cli(["validate", "-c", "p.yaml"]);
    expect(result.stderr).toContain("3 problems found");
  });

  test("the base fixture itself is valid, so each case fails for its own reason", async () => {
    ws.write("p.yaml", base);
    expect(await ws.cli(["validate", "-c", "p.yaml"])).toMatchObject({ code: 0, stdout: "p.yaml is valid: 2 steps, 2 tables\n" });
  });

  test("--json lists the diagnostics", async () => {
    ws.write("p.yaml", edit("mode: upsert", "mode: upsrt"));
    const result = await ws.cli(["validate", "-c", "p.yaml", "--json"]);
    expect(JSON.parse(result.stdout)).toMatchObject({
      ok: false,
      diagnostics: [{ code: "E_SCHEMA", place: { file: "p.yaml", line: 17, col: 11 } }],
    });
  });
});

describe("usage errors exit 2", () => {
  test.each([
    [["frobnicate"], 'unknown command "frobnicate"'],
    [["run", "--dryrun"], "Unknown option '--dryrun' (did you mean \"dry-run\"?)"],
    [["validate", "--config", "missing.yaml"], "cannot read the configuration missing.yaml: no such file"],
  ])("%j", async (argv, message) => {
    const result = await ws.cli(argv);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(message);
  });
});

describe("${VAR} substitution", () => {
  test.each([
    ["${A}", { A: "x" }, "x", []],
    ["${A:-d}", {}, "d", []],
    ["${A:-d}", { A: "" }, "d", []],
    ["${A}", { A: "" }, "", []],
    ["pre-${A}-${B:-b}-post", { A: "a" }, "pre-a-b-post", []],
    ["$${A}", { A: "x" }, "${A}", []],
    ["${A}/${B}", {}, "/", ["A", "B"]],
    ["${URL:-https://h/p?gid=0&x=1}", {}, "https://h/p?gid=0&x=1", []],
  ])("%s with %j", (text, env, value, missing) => {
    expect(interpolate(text, env)).toEqual({ value, missing });
  });
});

describe("the JSON Schema validator generated at build time", () => {
  test("matches the schema: after a change to engine/config/schema.ts, `npm run generate` rewrites it", () => {
    expect(readFileSync(path.join(root, shapeValidatorFile), "utf8")).toBe(shapeValidatorSource());
  });

  test("is compiled while its module loads, so that Node's compile cache keeps its bytecode for the next start", () => {
    const built = pathToFileURL(path.join(root, "dist", shapeValidatorFile.replace(/\.ts$/, ".js"))).href;
    // why: V8's test intrinsic; bit 18 of the status (kIsLazy) is set on a function not compiled yet.
    const lazy = (source: string) =>
      execFileSync(process.execPath, ["--allow-natives-syntax", "--input-type=module", "-e", source], { encoding: "utf8" }).trim();
    expect(
      lazy(`const { validate } = await import(${JSON.stringify(built)}); console.log((%GetOptimizationStatus(validate) >> 18) & 1);`),
    ).toBe("0");
    expect(lazy(`function notCalled() {} console.log((%GetOptimizationStatus(notCalled) >> 18) & 1);`)).toBe("1");
  });
});
