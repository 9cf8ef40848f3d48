import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { clientFileEnv, Workspace } from "./helpers/workspace.js";

let ws: Workspace;
beforeEach(() => {
  ws = new Workspace();
  ws.copyClientFiles();
});
afterEach(() => ws.remove());

/** Replaces the first occurrence of `from` in the workspace's pipeline.yaml. */
async function editPipeline(from: string, to: string): Promise<void> {
  const { readFileSync, writeFileSync } = await import("node:fs");
  const text = readFileSync(ws.path("pipeline.yaml"), "utf8");
  expect(text).toContain(from);
  writeFileSync(ws.path("pipeline.yaml"), text.replace(from, to));
}

describe("the small things of the command line", () => {
  test("help names --max-runs", async () => {
    const help = await ws.cli(["help"]);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/--max-runs N/);
  });

  test("--max-runs without --every is a usage error", async () => {
    const result = await ws.cli(["run", "--max-runs", "2"], clientFileEnv);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("error E_USAGE --max-runs goes with --every");
    expect(ws.bytes()).toBeUndefined();
  });

  test("--every 0 is a usage error", async () => {
    for (const every of ["0", "0s", "0ms"]) {
      const result = await ws.cli(["run", "--every", every, "--max-runs", "1"], clientFileEnv);
      expect(result.code, every).toBe(2);
      expect(result.stderr).toContain(`error E_USAGE --every takes a duration longer than zero, not "${every}"`);
    }
    expect(ws.bytes()).toBeUndefined();
  });

  test("schema --json prints JSON: each table with its columns, keys and references", async () => {
    const result = await ws.cli(["schema", "--json"]);
    expect(result.code).toBe(0);
    const schema = JSON.parse(result.stdout) as { ok: boolean; command: string; tables: { name: string; columns: { name: string }[] }[] };
    expect(schema).toMatchObject({ ok: true, command: "schema" });
    const sales = schema.tables.find((table) => table.name === "sales");
    expect(sales?.columns.map((column) => column.name)).toContain("quantity");
    expect(schema.tables.map((table) => table.name)).toContain("pipeline_runs");
  });

  test("a missing key is reported once", async () => {
    await editPipeline("  - name: load_products\n    type: load", "  - type: load");
    const result = await ws.cli(["validate"]);
    expect(result.code).toBe(2);
    expect(result.stderr.match(/missing the required key "name"/g)).toHaveLength(1);
    expect(result.stderr).toContain("1 problem found");
  });
});

describe("--json: exactly one JSON document on stdout, for every command and every error", () => {
  const cases: [string, string[], number][] = [
    ["help", ["help", "--json"], 0],
    ["version", ["--version", "--json"], 0],
    ["validate", ["validate", "--json"], 0],
    ["plan", ["plan", "--json"], 0],
    ["run", ["run", "--json"], 0],
    ["schema", ["schema", "--json"], 0],
    ["profile", ["profile", "--json"], 0],
    ["rejections", ["rejections", "--json"], 0],
    ["test, before any run", ["test", "--json"], 1],
    ["doctor", ["doctor", "--json"], 0],
    ["an unknown command", ["nonsense", "--json"], 2],
    ["an unknown option", ["run", "--jsno", "--json"], 2],
    ["a bad duration", ["run", "--every", "soon", "--json"], 2],
    ["a missing pipeline file", ["validate", "-c", "missing.yaml", "--json"], 2],
  ];
  for (const [what, argv, code] of cases) {
    test(what, async () => {
      const result = await ws.cli(argv, clientFileEnv);
      expect(result.code, result.stdout + result.stderr).toBe(code);
      const document = JSON.parse(result.stdout) as { ok: boolean };
      expect(document.ok).toBe(code === 0);
    });
  }

  test("an invalid pipeline and a failed run", async () => {
    await editPipeline("    table: products\n", "");
    const invalid = await ws.cli(["run", "--json"], clientFileEnv);
    expect(invalid.code).toBe(2);
    expect(JSON.parse(invalid.stdout)).toMatchObject({ ok: false, diagnostics: [{ code: "E_SCHEMA" }] });
    await editPipeline("    mode: upsert\n", "    table: products\n    mode: upsert\n");
    const failed = await ws.cli(["run", "--json"], { ...clientFileEnv, SALES_URL: ws.write("wrong.csv", "a,b\n1,2\n") });
    expect(failed.code).toBe(1);
    expect(JSON.parse(failed.stdout)).toMatchObject({ ok: false, status: "failed" });
  });

  test("test, after a run", async () => {
    expect((await ws.cli(["run"], clientFileEnv)).code).toBe(0);
    const result = await ws.cli(["test", "--json"], clientFileEnv);
    expect(result.code).toBe(0);
    expect(JSON.parse(result.stdout)).toMatchObject({ ok: true });
  });

  test("run --every prints one document per run, one per line", async () => {
    const result = await ws.cli(["run", "--every", "1ms", "--max-runs", "2", "--json"], clientFileEnv);
    expect(result.code).toBe(0);
    const lines = result.stdout.trimEnd().split("\n");
    expect(lines).toHaveLength(2);
    expect(lines.map((line) => (JSON.parse(line) as { command: string }).command)).toEqual(["run", "run"]);
  });
});
