import { existsSync, readFileSync } from "node:fs";
import { main } from "../engine/main.js";
import { spawnCli, waitFor } from "./helpers/spawn-cli.js";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { sqlite, Workspace } from "./helpers/workspace.js";

let ws: Workspace;
beforeEach(() => {
  ws = new Workspace({ withClientPipeline: false });
  ws.write("data.csv", "a,b\nx,1\n");
});
afterEach(() => ws.remove());

/** A pipeline of one table `t` (columns a, b) loaded from data.csv, with `extra` tables appended under tables:. */
const pipeline = (extra = "", table = "t") => `version: 1
database: out.db
tables:
  ${table}:
    columns:
      a: { type: text }
      b: { type: integer }
${extra}steps:
  - name: load
    type: load
    source: data.csv
    table: ${table}
    mode: append
    columns: { a: a, b: b }
`;

async function validate(yaml: string) {
  ws.write("p.yaml", yaml);
  return ws.cli(["validate", "-c", "p.yaml"]);
}

describe("names SQLite would confuse are refused by validate, at their key", () => {
  test.each([
    [
      "two tables that differ only in case",
      pipeline("  T:\n    columns:\n      a: { type: text }\n"),
      "p.yaml:8:3 error E_CONFIG table T is the same as table t to SQLite, which ignores case in names; rename one",
    ],
    [
      "two columns that differ only in case",
      pipeline().replace("      b: { type: integer }\n", "      b: { type: integer }\n      B: { type: text }\n"),
      "p.yaml:8:7 error E_CONFIG column t.B is the same as column t.b to SQLite, which ignores case in names; rename one",
    ],
    [
      "a table named like SQLite's own",
      pipeline("  sqlite_stat1:\n    columns:\n      a: { type: text }\n"),
      "p.yaml:8:3 error E_CONFIG table name sqlite_stat1 is reserved: names starting with sqlite_ belong to SQLite",
    ],
    [
      "a table named like SQLite's own, in another case",
      pipeline("  SQLite_Master2:\n    columns:\n      a: { type: text }\n"),
      "p.yaml:8:3 error E_CONFIG table name SQLite_Master2 is reserved: names starting with sqlite_ belong to SQLite",
    ],
    [
      "a table named like the runner's own, in another case",
      pipeline("  Pipeline_Runs:\n    columns:\n      a: { type: text }\n"),
      "p.yaml:8:3 error E_CONFIG table name Pipeline_Runs is reserved for the runner's own tables",
    ],
    [
      "a step writing an undeclared table named like an object method",
      pipeline().replace("    table: t\n", "    table: toString\n"),
      'p.yaml:12:12 error E_CONFIG table "toString" is not declared under tables:',
    ],
    [
      "a step writing an undeclared table named constructor",
      pipeline().replace("    table: t\n", "    table: constructor\n"),
      'p.yaml:12:12 error E_CONFIG table "constructor" is not declared under tables:',
    ],
    [
      "a mapped column named like an object method",
      pipeline().replace("columns: { a: a, b: b }", "columns: { a: a, b: b, hasOwnProperty: c }"),
      'p.yaml:14:28 error E_CONFIG column "hasOwnProperty" is not a column of table t',
    ],
    [
      "a table name that is not a valid name",
      pipeline("  bad-name:\n    columns:\n      a: { type: text }\n"),
      'p.yaml:8:3 error E_SCHEMA "bad-name" in /tables is not a valid name',
    ],
  ])("%s", async (_what, yaml, expected) => {
    const result = await validate(yaml);
    expect(result.stderr).not.toContain("E_INTERNAL");
    expect(result.code).toBe(2);
    const lines = result.stderr.trimEnd().split("\n");
    expect(lines[0]).toContain(expected);
    expect(lines).toHaveLength(2);
  });

  test("tables and columns named constructor, toString and __proto__ are plain names: they validate, load and read back", async () => {
    const yaml = pipeline("", "constructor")
      .replace(
        "      a: { type: text }\n      b: { type: integer }\n",
        "      toString: { type: text }\n      __proto__: { type: integer }\n",
      )
      .replace("columns: { a: a, b: b }", "columns: { toString: a, __proto__: b }");
    ws.write("p.yaml", yaml);
    expect(await ws.cli(["validate", "-c", "p.yaml"])).toMatchObject({ code: 0, stderr: "" });
    const run = await ws.cli(["run", "-c", "p.yaml"]);
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    expect(sqlite(ws.path("out.db"), 'SELECT "toString", "__proto__" FROM "constructor"')).toBe("x|1");
  });
});

test("a mapping where a name or a choice is expected is named, not a crash", async () => {
  const result = await validate(pipeline().replace("mode: append", "mode: { x: 1 }").replace("    table: t\n", "    table: { y: 2 }\n"));
  expect(result.stderr).not.toContain("E_INTERNAL");
  expect(result.code).toBe(2);
  expect(result.stderr).toContain(
    'p.yaml:13:11 error E_SCHEMA /steps/0/mode is "{"x":1}", expected one of: replace, upsert, insert_new, append',
  );
});

describe("YAML", () => {
  test("more than 100 aliases is a YAML error with a line, exit 2", async () => {
    const aliases = Array.from({ length: 120 }, (_, i) => `  - *anchor # ${i}`).join("\n");
    const result = await validate(`${pipeline()}x_anchor: &anchor [1, 2, 3]\nx_aliases:\n${aliases}\n`);
    expect(result.stderr).not.toContain("E_INTERNAL");
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/^p\.yaml:\d+:\d+ error E_YAML too many aliases/m);
  });
});

describe("${VAR:-default} with a variable in the default", () => {
  const nested = pipeline().replace("database: out.db", "database: ${DB:-${BASE}/x.db}");

  test("the default's variable is substituted, not left as a directory named ${BASE", async () => {
    ws.write("p.yaml", nested);
    const run = await ws.cli(["run", "-c", "p.yaml"], { BASE: ws.path("base") });
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    expect(sqlite(ws.path("base/x.db"), "SELECT count(*) FROM t")).toBe("1");
    expect(existsSync(ws.path("${BASE"))).toBe(false);
  });

  test("a default that is not used needs none of its variables", async () => {
    ws.write("p.yaml", nested);
    const run = await ws.cli(["run", "-c", "p.yaml"], { DB: ws.path("chosen.db") });
    expect(run.code).toBe(0);
    expect(sqlite(ws.path("chosen.db"), "SELECT count(*) FROM t")).toBe("1");
  });

  test("an unset variable inside the default used is named at its place", async () => {
    const result = await validate(nested);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("p.yaml:2:17 error E_ENV environment variable BASE is not set and has no default");
  });

  test.each([
    ["a reference that is not closed", 'database: "${DB:-${BASE}/x.db"', "p.yaml:2:12 error E_ENV ${DB is not closed"],
    ["a form the runner does not know", "database: ${DB:=x.db}", "p.yaml:2:11 error E_ENV ${DB:=x.db} is not a form the runner knows"],
  ])("%s is refused with E_ENV at its place", async (_what, line, expected) => {
    const result = await validate(pipeline().replace("database: out.db", line));
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(expected);
    expect(existsSync(ws.path("${DB"))).toBe(false);
  });
});

describe("a configuration with thousands of problems", () => {
  /** A load step mapping `n` columns, each with a misspelt key: two problems each (no `from`, unknown `form`). */
  const badMappings = (n: number) =>
    pipeline().replace(
      "columns: { a: a, b: b }",
      "columns:\n" + Array.from({ length: n }, (_, i) => `      c${i}: { form: x, trimm: y }`).join("\n"),
    );

  test("validate prints the first 100 problems and how many more, --json lists them all", { timeout: 120_000 }, async () => {
    const n = 20_000;
    const result = await validate(badMappings(n));
    expect(result.code).toBe(2);
    const lines = result.stderr.trimEnd().split("\n");
    expect(lines).toHaveLength(102);
    expect(lines[0]).toBe('p.yaml:15:13 error E_SCHEMA unknown key "form" in /steps/0/columns/c0 (did you mean "from"?)');
    expect(lines[1]).toBe('p.yaml:15:22 error E_SCHEMA unknown key "trimm" in /steps/0/columns/c0 (did you mean "trim"?)');
    expect(lines[100]).toBe(`… and ${2 * n - 100} more (the first 100 are shown; --json lists them all)`);
    expect(lines[101]).toBe(`${2 * n} problems found; nothing was run`);
    const json = JSON.parse((await ws.cli(["validate", "-c", "p.yaml", "--json"])).stdout) as { diagnostics: unknown[] };
    expect(json.diagnostics).toHaveLength(2 * n);
  });

  test("SIGTERM stops a long validation: exit 130", { timeout: 120_000 }, async () => {
    // why: about 1 MB, as large as a pipeline file may be; it takes about 2 s of CPU to validate.
    ws.write("p.yaml", badMappings(28_500));
    const run = spawnCli(["validate", "-c", "p.yaml"], ws.dir);
    // why: the signal must come once the CLI handles it (during start-up it would end node outright), while validation runs:
    // after 0.6 s of CPU time (start-up takes 0.2 s, the whole validation over 2 s), however loaded the machine.
    const cpuTicks = () => {
      const fields = readFileSync(`/proc/${run.child.pid}/stat`, "utf8").split(") ")[1]!.split(" ");
      return Number(fields[11]) + Number(fields[12]);
    };
    await waitFor(() => cpuTicks() >= 60, 60_000);
    run.child.kill("SIGTERM");
    const result = await run.done;
    expect(result.stderr).toContain("SIGTERM: stopping");
    expect(result.stderr).toMatch(/E_ABORTED interrupted \(SIGTERM\)/);
    expect(result.code).toBe(130);
  });

  test("an interrupt that came before validation stops it, before anything runs", async () => {
    ws.write("p.yaml", badMappings(10));
    const controller = new AbortController();
    controller.abort("SIGINT");
    let stderr = "";
    const code = await main(["run", "-c", "p.yaml"], {
      stdout: { write: () => true },
      stderr: { write: (text: string) => ((stderr += text), true) },
      env: { NO_COLOR: "1" },
      cwd: ws.dir,
      signal: controller.signal,
    });
    expect(stderr).toContain("E_ABORTED interrupted (SIGINT)");
    expect(code).toBe(130);
  });
});
