import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { hostname } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { serveClientData, type ClientServer } from "./helpers/client-server.js";
import { clientFixtures, sqlite } from "./helpers/workspace.js";

let client: ClientServer;
beforeEach(async () => {
  client = await serveClientData();
});
afterEach(async () => client.close());

/** A fixed clock: the client's sheet covers 2023-05-27 to 2023-06-25. */
const july2023 = () => new Date("2023-07-01T09:00:00Z");

interface Report {
  ok: boolean;
  deep?: boolean;
  saved: boolean;
  status: string;
  error?: { code: string; message: string };
  steps: { name: string; status: string; counts: Record<string, number>; rejections?: { line: number; reason: string }[] }[];
  checks: { name: string; status: string; failingRows: number }[];
  changedTables?: string[];
  plannedFiles?: string[];
}

/** Every file under the workspace's output directory and beside the database, with its bytes' hash: what "nothing written" compares. */
function snapshot(): Record<string, string> {
  const files: Record<string, string> = {};
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const file = path.join(dir, name);
      if (statSync(file).isDirectory()) walk(file);
      else files[path.relative(client.ws.dir, file)] = createHash("sha256").update(readFileSync(file)).digest("hex");
    }
  };
  walk(client.ws.dir);
  return files;
}

const cli = async (...argv: string[]) => {
  const result = await client.ws.cli([...argv, "--json"], client.env, { now: july2023 });
  return { ...result, report: JSON.parse(result.stdout) as Report };
};

/** What a deep plan and a run are compared on: each step's status, counts and first rejected rows, and each check's outcome. */
const outcome = (report: Report) => ({
  steps: report.steps.map(({ name, status, counts, rejections }) => ({ name, status, counts, rejections })),
  checks: report.checks.map(({ name, status, failingRows }) => ({ name, status, failingRows })),
});

const sales = () => readFileSync(path.join(clientFixtures, "ventes.csv"), "utf8");

describe("plan --deep", () => {
  test("the deep plan's counts equal what the following run does, and it writes nothing", async () => {
    const before = snapshot();
    const deep = await cli("plan", "--deep");
    expect(deep.code).toBe(0);
    expect(deep.report).toMatchObject({ ok: true, deep: true, saved: false });
    expect(snapshot()).toEqual(before);
    expect(client.ws.bytes()).toBeUndefined();
    const run = await cli("run");
    expect(run.code).toBe(0);
    expect(outcome(deep.report)).toEqual(outcome(run.report));
    expect(deep.report.steps.find((s) => s.name === "load_sales")?.counts["inserted"]).toBeGreaterThan(0);
    expect(deep.report.plannedFiles).toEqual(expect.arrayContaining(["output/fiche-synthese.md", "output/fiche-synthese.html"]));

    // the sheet grows: some rows load, two are rejected; the unchanged sources answer 304 to the deep plan's conditional GETs
    const grown = `${sales().trimEnd()}\n2023-06-25,REF001,2,1\n2023-06-25,REF001,deux,1\n2023-06-25,NOPE,1,1\n`;
    client.server.file("/ventes.csv", grown);
    const saved = snapshot();
    const products = client.server.requests("/produits.csv").length;
    const second = await cli("run", "--dry-run", "--deep");
    expect(second.code).toBe(0);
    expect(snapshot()).toEqual(saved);
    expect(client.server.requests("/produits.csv").slice(products)[0]?.["if-none-match"]).toBeDefined();
    const load = second.report.steps.find((s) => s.name === "load_sales")!;
    expect(load.counts["rejected"]).toBe(2);
    expect(load.rejections?.map((r) => r.reason)).toHaveLength(2);
    expect(second.report.changedTables).toContain("sales");
    const real = await cli("run");
    expect(real.code).toBe(0);
    expect(outcome(second.report)).toEqual(outcome(real.report));
    expect(sqlite(client.ws.path("output/sales.db"), "SELECT count(*) FROM pipeline_runs")).toBe("2");

    // nothing changed since: the deep plan says so, like the run
    const unchanged = await cli("plan", "--deep");
    const after = await cli("run");
    expect(outcome(unchanged.report)).toEqual(outcome(after.report));
    expect(unchanged.report.changedTables).toEqual([]);
  });

  const file = (name: string) => readFileSync(path.join(clientFixtures, `${name}.csv`), "utf8");
  const appended = (name: string, line: string) => `${file(name).trimEnd()}\n${line}\n`;
  test.each<[string, Record<string, string>]>([
    ["a product's price changed", { produits: file("produits").replace("49.99", "52.50") }],
    ["a store moved to another city", { magasins: file("magasins").replace("2,Marseille", "2,Lyon") }],
    ["a sale entered twice with another quantity", { ventes: appended("ventes", "2023-05-27,REF001,6,1") }],
    ["a sale of a product not in the catalogue", { ventes: appended("ventes", "2023-06-25,REF999,1,1") }],
    ["the sheet lost its last line", { ventes: file("ventes").trimEnd().split("\n").slice(0, -1).join("\n") + "\n" }],
    [
      "a new product and its first sale",
      { produits: appended("produits", "Produit Z,REF050,3.10,7"), ventes: appended("ventes", "2023-06-25,REF050,2,1") },
    ],
  ])("%s: the deep plan's counts equal the run's, and nothing is written", async (_what, served) => {
    expect((await cli("run")).code).toBe(0);
    for (const [name, text] of Object.entries(served)) client.server.file(`/${name}.csv`, text);
    const before = snapshot();
    const deep = await cli("plan", "--deep");
    expect(snapshot()).toEqual(before);
    const run = await cli("run");
    expect(deep.code).toBe(run.code);
    expect(outcome(deep.report)).toEqual(outcome(run.report));
    expect(deep.report.error).toEqual(run.report.error);
    expect(deep.report.status).toBe(run.report.status);
  });

  test("a failing error check is reported by the deep plan without saving, and the run then fails the same way", async () => {
    expect((await cli("run")).code).toBe(0);
    client.server.file("/ventes.csv", `${sales().trimEnd()}\n2023-06-26,REF001,0,1\n`);
    const before = snapshot();
    const deep = await cli("plan", "--deep");
    expect(deep.code).toBe(1);
    expect(deep.report.error?.code).toBe("E_CHECK");
    expect(deep.report.checks.filter((c) => c.status === "failed").map((c) => c.name)).toEqual(["quantities_positive"]);
    expect(snapshot()).toEqual(before);
    const run = await cli("run");
    expect(run.code).toBe(1);
    expect(run.report.error).toEqual(deep.report.error);
    expect(outcome(run.report)).toEqual(outcome(deep.report));
    expect(Object.keys(snapshot()).filter((file) => file.endsWith(".failed-runs.jsonl"))).toHaveLength(1);
  });

  test("the deep plan leaves the journal of failed runs for the next real run", async () => {
    expect((await cli("run")).code).toBe(0);
    client.server.file("/ventes.csv", `${sales().trimEnd()}\n2023-06-26,REF001,0,1\n`);
    expect((await cli("run")).code).toBe(1);
    client.server.file("/ventes.csv", sales());
    const before = snapshot();
    const deep = await cli("plan", "--deep");
    expect(deep.code).toBe(0);
    expect(snapshot()).toEqual(before);
    expect((await cli("run")).code).toBe(0);
    expect(sqlite(client.ws.path("output/sales.db"), "SELECT group_concat(status) FROM pipeline_runs")).toBe("succeeded,failed,succeeded");

    // a line a crash cut short, and nothing changed: the run empties the journal, the deep plan leaves it
    client.ws.write("output/sales.db.failed-runs.jsonl", '{"startedAt":"2023-');
    const cut = snapshot();
    const unchanged = await cli("plan", "--deep");
    expect(unchanged.report.status).toBe("unchanged");
    expect(snapshot()).toEqual(cut);
  });

  test("the readable deep plan names the rows, the first rejections, the tables and the checks", async () => {
    client.server.file("/ventes.csv", `${sales().trimEnd()}\n2023-06-25,REF001,deux,1\n`);
    const { code, stdout } = await client.ws.cli(["plan", "--deep"], client.env, { now: july2023 });
    expect(code).toBe(0);
    expect(stdout).toMatch(/load_sales {2}would read \d+, insert \d+, reject 1/);
    expect(stdout).toMatch(/⚠ line \d+, .*deux/);
    expect(stdout).toMatch(/tables that would change: .*sales/);
    expect(stdout).toContain("quantities_positive");
    expect(stdout).toContain("nothing was written");
    expect(client.ws.bytes()).toBeUndefined();
  });

  test("a table its step empties and fills again with the same rows is not a table that would change", async () => {
    expect((await cli("run")).code).toBe(0);
    client.server.file("/ventes.csv", `${sales().trimEnd()}\n2023-06-25,REF001,deux,1\n`);
    const deep = await cli("plan", "--deep");
    expect(deep.code).toBe(0);
    expect(deep.report.steps.find((s) => s.name === "sales_by_city")?.counts["inserted"]).toBeGreaterThan(0);
    expect(deep.report.changedTables).toEqual([]);
    client.server.file("/ventes.csv", `${sales().trimEnd()}\n2023-06-25,REF001,2,1\n`);
    const grown = await cli("plan", "--deep");
    expect(grown.report.changedTables).toEqual(expect.arrayContaining(["sales", "sales_by_product", "revenue_total"]));
  });

  test("the deep plan takes the run's lock: while a run holds it, it waits, then gives up with exit 3", async () => {
    expect((await cli("run")).code).toBe(0);
    const lock = client.ws.write(
      "output/sales.db.lock",
      JSON.stringify({ pid: process.pid, host: hostname(), started_at: "2026-11-22T10:00:00.000Z" }),
    );
    const before = snapshot();
    const deep = await client.ws.cli(["plan", "--deep", "--lock-timeout", "300ms"], client.env);
    expect(deep.code).toBe(3);
    expect(deep.stderr + deep.stdout).toContain("is in use by another run");
    expect(snapshot()).toEqual(before);
    rmSync(lock);
    expect((await client.ws.cli(["plan", "--deep"], client.env)).code).toBe(0);
    expect(existsSync(lock)).toBe(false);
  });

  test("--deep goes with plan or run --dry-run", async () => {
    const { code, stderr } = await client.ws.cli(["run", "--deep"], client.env);
    expect(code).toBe(2);
    expect(stderr).toContain("--deep goes with plan or run --dry-run");
  });
});

describe("issue 14 leftovers", () => {
  test("plan (shallow) lists the checks that will run, each after the step it follows", async () => {
    const text = await client.ws.cli(["plan"], client.env);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/checks that will run:\n(.*\n)*\s+quantities_positive \(error\) on sales, after load_sales\n/);
    expect(text.stdout).toMatch(/revenue_reconciles \(error\) on revenue_total, after \w+/);
    const json = await client.ws.cli(["plan", "--json"], client.env);
    const checks = (JSON.parse(json.stdout) as { checks: { name: string; table: string; severity: string; after: string }[] }).checks;
    expect(checks.find((c) => c.name === "quantities_positive")).toEqual({
      name: "quantities_positive",
      table: "sales",
      kind: "range",
      severity: "error",
      after: "load_sales",
    });
    // the reconciliation reads every breakdown: it runs after the last step writing one of them
    const steps = (JSON.parse(json.stdout) as { steps: { name: string; writes: string[] }[] }).steps;
    const lastBreakdown = steps
      .filter((s) => s.writes.some((t) => ["sales_by_product", "sales_by_city", "sales_by_region", "revenue_total"].includes(t)))
      .at(-1);
    expect(checks.find((c) => c.name === "revenue_reconciles")?.after).toBe(lastBreakdown?.name);
    expect(client.ws.bytes()).toBeUndefined();
  });

  test("editing only a sql check's file is a new run, not an unchanged one", async () => {
    expect((await cli("run")).code).toBe(0);
    const file = client.ws.path("sql/check_reconciliation.sql");
    client.ws.write("sql/check_reconciliation.sql", `-- reviewed\n${readFileSync(file, "utf8")}`);
    const again = await cli("run");
    expect(again.code).toBe(0);
    expect(again.report.status).toBe("succeeded");
    expect(sqlite(client.ws.path("output/sales.db"), "SELECT count(*) FROM pipeline_runs")).toBe("2");
  });

  test("a sql check's file may end with a comment after its semicolon", async () => {
    const file = client.ws.path("sql/check_reconciliation.sql");
    client.ws.write("sql/check_reconciliation.sql", `${readFileSync(file, "utf8").trimEnd()}\n-- reviewed; nothing to add\n`);
    const run = await cli("run");
    expect(run.stdout).not.toContain("syntax error");
    expect(run.code).toBe(0);
    expect(run.report.checks.find((c) => c.name === "revenue_reconciles")?.status).toBe("passed");
  });

  test("a failed run's check results reach the journal, then pipeline_check_results", async () => {
    expect((await cli("run")).code).toBe(0);
    client.server.file("/ventes.csv", `${sales().trimEnd()}\n2023-06-26,REF001,0,1\n`);
    expect((await cli("run")).code).toBe(1);
    const journal = JSON.parse(readFileSync(client.ws.path("output/sales.db.failed-runs.jsonl"), "utf8").trim()) as {
      checks?: { name: string; status: string; failingRows: number }[];
    };
    expect(journal.checks?.filter((c) => c.status === "failed").map((c) => [c.name, c.failingRows])).toEqual([["quantities_positive", 1]]);
    client.server.file("/ventes.csv", sales());
    expect((await cli("run")).code).toBe(0);
    const db = client.ws.path("output/sales.db");
    expect(
      sqlite(
        db,
        "SELECT c.check_name, c.status, c.failing_rows FROM pipeline_check_results AS c JOIN pipeline_runs AS r USING (run_id) WHERE r.status = 'failed' AND c.status = 'failed'",
      ),
    ).toBe("quantities_positive|failed|1");
  });
});
