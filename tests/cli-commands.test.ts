import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { clientFileEnv, sqlite, Workspace } from "./helpers/workspace.js";

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

/** Appends a line to one of the client's CSV copies in the workspace. */
async function appendTo(file: string, line: string): Promise<void> {
  const { appendFileSync, readFileSync } = await import("node:fs");
  const target = ws.path("tests/fixtures/client", file);
  appendFileSync(target, `${readFileSync(target, "utf8").endsWith("\n") ? "" : "\n"}${line}\n`);
}

interface RunJson {
  ok: boolean;
  status: string;
  steps: { name: string; status: string }[];
}

function statuses(stdout: string): Record<string, string> {
  return Object.fromEntries((JSON.parse(stdout) as RunJson).steps.map((step) => [step.name, step.status]));
}

describe("list", () => {
  test("names each step with its type, the tables it reads (from its SQL and foreign keys) and what it writes", async () => {
    const result = await ws.cli(["list", "--json"]);
    expect(result.code).toBe(0);
    const steps = (
      JSON.parse(result.stdout) as { steps: { name: string; type: string; reads: string[]; writes: string[]; files: string[] }[] }
    ).steps;
    const step = (name: string) => steps.find((s) => s.name === name)!;
    expect(step("load_products")).toMatchObject({ type: "load", reads: [], writes: ["products"] });
    expect(step("load_sales")).toMatchObject({ type: "load", reads: ["products", "stores"], writes: ["sales"] });
    expect(step("revenue_history")).toMatchObject({ type: "sql", reads: ["revenue_total"], writes: ["revenue_history"] });
    expect(step("fiche_synthese").type).toBe("report");
    expect(step("fiche_synthese").reads).toContain("revenue_total");
    expect(step("fiche_synthese").files).toContain("output/fiche-synthese.html");
    const text = await ws.cli(["list"]);
    expect(text.stdout).toMatch(/^4 +load_sales +load +products, stores +sales$/m);
  });
});

describe("run --select", () => {
  test("runs only the named step, and the next full run derives again from what it loaded", async () => {
    expect((await ws.cli(["run"], clientFileEnv)).code).toBe(0);
    const cities = () =>
      sqlite(ws.path("output/sales.db"), "SELECT group_concat(city, ',') FROM (SELECT city FROM sales_by_city ORDER BY city)");
    expect(cities()).not.toContain("Versailles");
    await appendTo("magasins.csv", "99,Versailles,3");
    const selected = await ws.cli(["run", "--select", "load_stores", "--json"], clientFileEnv);
    expect(selected.code, selected.stdout).toBe(0);
    const ran = statuses(selected.stdout);
    expect(ran["load_stores"]).toBe("success");
    expect(
      Object.entries(ran)
        .filter(([name]) => name !== "load_stores")
        .every(([, status]) => status === "not_executed"),
    ).toBe(true);
    expect(sqlite(ws.path("output/sales.db"), "SELECT city FROM stores WHERE store_id = '99'")).toBe("Versailles");
    expect(cities()).not.toContain("Versailles");
    const full = await ws.cli(["run", "--json"], clientFileEnv);
    expect(full.code).toBe(0);
    expect(statuses(full.stdout)["load_stores"]).toBe("unchanged");
    expect(statuses(full.stdout)["sales_by_city"]).toBe("success");
    expect(cities()).toContain("Versailles");
    expect(statuses((await ws.cli(["run", "--json"], clientFileEnv)).stdout)["sales_by_city"]).toBe("skipped");
  });

  test("a check that compares a loaded table with one derived from it fails when the deriving step is left out, and says to add +", async () => {
    expect((await ws.cli(["run"], clientFileEnv)).code).toBe(0);
    await appendTo("ventes.csv", "2023-06-26,REF001,7,1");
    const before = ws.bytes();
    const selected = await ws.cli(["run", "--select", "load_sales"], clientFileEnv);
    expect(selected.code).toBe(1);
    expect(selected.stderr).toContain("error E_CHECK");
    expect(selected.stdout).toContain("--select load_sales+");
    expect(ws.bytes()).toEqual(before);
    const plus = await ws.cli(["run", "--select", "load_sales+"], clientFileEnv);
    expect(plus.code, plus.stdout + plus.stderr).toBe(0);
    expect(sqlite(ws.path("output/sales.db"), "SELECT quantity FROM revenue_total")).toBe("129");
  });

  test("STEP+ adds every later step that reads what it writes, through other steps too", async () => {
    expect((await ws.cli(["run"], clientFileEnv)).code).toBe(0);
    await appendTo("produits.csv", "Produit Z,REF099,1.00,1");
    const result = await ws.cli(["run", "--select", "load_stores+", "--json"], clientFileEnv);
    expect(result.code).toBe(0);
    const ran = statuses(result.stdout);
    const executed = Object.keys(ran).filter((name) => ran[name] !== "not_executed");
    expect(executed).toEqual([
      "load_stores",
      "load_sales",
      "sales_by_store_product",
      "revenue_total",
      "sales_by_product",
      "sales_by_city",
      "sales_by_region",
      "revenue_history",
      "fiche_synthese",
    ]);
    const two = await ws.cli(["run", "--select", "revenue_total,load_city_regions+", "--json"], clientFileEnv);
    const ranTwo = statuses(two.stdout);
    expect(Object.keys(ranTwo).filter((name) => ranTwo[name] !== "not_executed")).toEqual([
      "load_city_regions",
      "revenue_total",
      "sales_by_city",
      "sales_by_region",
      "fiche_synthese",
    ]);
  });

  test("the pending rows of a step left out stay pending", async () => {
    await appendTo("ventes.csv", "2023-06-26,REF404,1,1");
    expect((await ws.cli(["run"], clientFileEnv)).code).toBe(0);
    const pending = async () =>
      (JSON.parse((await ws.cli(["rejections", "--json"])).stdout) as { rejections: unknown[] }).rejections.length;
    expect(await pending()).toBe(1);
    await appendTo("produits.csv", "Produit Z,REF099,1.00,1");
    const selected = await ws.cli(["run", "--select", "load_products", "--json"], clientFileEnv);
    expect(selected.code).toBe(0);
    expect(statuses(selected.stdout)["load_products"]).toBe("success");
    expect(await pending()).toBe(1);
  });

  test("an unknown step is a usage error that suggests the name meant, and nothing runs", async () => {
    const result = await ws.cli(["run", "--select", "load_salse"], clientFileEnv);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('error E_USAGE --select: unknown step "load_salse" (did you mean "load_sales"?)');
    expect(ws.bytes()).toBeUndefined();
    const plus = await ws.cli(["run", "--select", "nothing+", "--json"], clientFileEnv);
    expect(plus.code).toBe(2);
    expect(JSON.parse(plus.stdout)).toMatchObject({ ok: false, error: { code: "E_USAGE" } });
    expect((await ws.cli(["validate", "--select", "load_sales"])).code).toBe(2);
  });
});

describe("history", () => {
  test("lists the last runs, newest first, with status, counts, duration and error; --last N", async () => {
    expect(JSON.parse((await ws.cli(["history", "--json"])).stdout)).toMatchObject({ ok: true, runs: [] });
    expect((await ws.cli(["history"])).stdout).toContain("no run recorded yet");
    expect((await ws.cli(["run"], clientFileEnv)).code).toBe(0);
    await appendTo("magasins.csv", "99,Versailles,3");
    expect((await ws.cli(["run", "--select", "load_stores"], clientFileEnv)).code).toBe(0);
    await appendTo("ventes.csv", "2023-06-27,REF001,not a number,1");
    expect((await ws.cli(["run"], clientFileEnv)).code).toBe(0);
    const result = await ws.cli(["history", "--json"]);
    expect(result.code).toBe(0);
    const runs = (
      JSON.parse(result.stdout) as {
        runs: { runId: number; status: string; steps: string[]; inserted: number; read: number; rejectedRows: number }[];
      }
    ).runs;
    expect(runs.map((run) => run.runId)).toEqual([3, 2, 1]);
    expect(runs.map((run) => run.status)).toEqual(["succeeded_with_rejections", "succeeded", "succeeded"]);
    expect(runs[1]).toMatchObject({ steps: ["load_stores"], inserted: 1 });
    expect(runs[0]!.rejectedRows).toBe(1);
    expect(runs[2]!.steps).toHaveLength(11);
    const last = await ws.cli(["history", "--last", "1"]);
    expect(last.stdout.trim().split("\n")).toHaveLength(2);
    expect(last.stdout).toMatch(/^3 +\S+ +succeeded_with_rejections +\d+\.\d s +11 /m);
    expect((await ws.cli(["history", "--last", "0"])).code).toBe(2);
  });
});

describe("init", () => {
  let empty: Workspace;
  beforeEach(() => {
    empty = new Workspace({ withClientPipeline: false });
    empty.copyClientFiles();
  });
  afterEach(() => empty.remove());
  const sources = ["tests/fixtures/client/produits.csv", "tests/fixtures/client/magasins.csv", "tests/fixtures/client/ventes.csv"];

  test("drafts a pipeline.yaml from the client's three CSVs that validates and runs", async () => {
    const init = await empty.cli(["init", ...sources]);
    expect(init.code, init.stderr).toBe(0);
    expect(init.stdout).toContain("wrote pipeline.yaml: 3 table(s)");
    const { readFileSync } = await import("node:fs");
    const text = readFileSync(empty.path("pipeline.yaml"), "utf8");
    expect(text.split("\n")[0]).toMatch(/^# yaml-language-server: \$schema=\S*pipeline\.schema\.json$/);
    expect(text).toContain("      prix: { type: decimal, scale: 2 }");
    expect(text).toContain("    primary_key: [id_reference_produit]");
    expect(text).toContain("      - { columns: [id_magasin], references: { table: magasins, columns: [id_magasin] } }");
    expect(text).toContain('      id_reference_produit: "ID Référence produit"');
    expect((await empty.cli(["validate"])).code).toBe(0);
    const run = await empty.cli(["run"]);
    expect(run.code, run.stdout + run.stderr).toBe(0);
    expect(sqlite(empty.path("output/pipeline.db"), "SELECT count(*), sum(quantite) FROM ventes")).toBe("30|122");
    expect(sqlite(empty.path("output/pipeline.db"), "SELECT prix FROM produits WHERE id_reference_produit = 'REF001'")).toBe("4999");
  });

  test("a column whose name is its header needs no mapping", async () => {
    empty.write("data/cities.csv", "city,region,opened\nParis,IDF,01/02/2020\nLyon,ARA,15/03/2021\n");
    const init = await empty.cli(["init", "data/cities.csv", "--json"]);
    expect(init.code, init.stdout).toBe(0);
    expect(JSON.parse(init.stdout)).toMatchObject({ ok: true, command: "init", file: "pipeline.yaml" });
    const { readFileSync } = await import("node:fs");
    const text = readFileSync(empty.path("pipeline.yaml"), "utf8");
    expect(text).toContain('    columns:\n      city:\n      region:\n      opened: { format: "dd/MM/yyyy" }\n');
    expect((await empty.cli(["run"])).code).toBe(0);
    expect(sqlite(empty.path("output/pipeline.db"), "SELECT city, region, opened FROM cities ORDER BY city")).toBe(
      "Lyon|ARA|2021-03-15\nParis|IDF|2020-02-01",
    );
    empty.write("data/cities.csv", "town,region,opened\nParis,IDF,01/02/2020\n");
    const wrong = await empty.cli(["run"]);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain('missing "city" (for cities.city)');
  });

  test("never replaces an existing file, and needs a source", async () => {
    empty.write("pipeline.yaml", "# mine\n");
    const refused = await empty.cli(["init", ...sources]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain("error E_USAGE pipeline.yaml already exists");
    const { readFileSync } = await import("node:fs");
    expect(readFileSync(empty.path("pipeline.yaml"), "utf8")).toBe("# mine\n");
    expect((await empty.cli(["init", "-c", "other.yaml", sources[0]!])).code).toBe(0);
    expect((await empty.cli(["validate", "-c", "other.yaml"])).code).toBe(0);
    const none = await empty.cli(["init", "-c", "third.yaml"]);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain("init needs the CSV sources");
    const missing = await empty.cli(["init", "-c", "fourth.yaml", "nowhere.csv", "--json"]);
    expect(missing.code).toBe(2);
    expect(JSON.parse(missing.stdout)).toMatchObject({ ok: false, error: { code: "E_USAGE" } });
    expect(empty.bytes("fourth.yaml")).toBeUndefined();
  });
});
