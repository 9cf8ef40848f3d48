import { existsSync, readFileSync, rmSync } from "node:fs";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { serveClientData } from "./helpers/client-server.js";
import type { TestServer } from "./helpers/http-server.js";
import { clientFixtures, sqlite, Workspace } from "./helpers/workspace.js";

let server: TestServer;
let ws: Workspace;
let env: Record<string, string>;
let close: () => Promise<void>;

beforeEach(async () => {
  ({ server, ws, env, close } = await serveClientData());
});
afterEach(() => close());

const sales = readFileSync(path.join(clientFixtures, "ventes.csv"), "utf8");
const products = readFileSync(path.join(clientFixtures, "produits.csv"), "utf8");
const db = () => ws.path("output/sales.db");

interface Sample {
  line: number;
  column: string | null;
  reason: string;
  raw: string;
}
interface Report {
  ok: boolean;
  status: string;
  runId?: number;
  detail?: string;
  error?: { code: string; message: string };
  steps: { name: string; status: string; counts: Record<string, number>; rejections?: Sample[] }[];
}

async function runJson(argv: string[] = [], extraEnv: Record<string, string> = {}): Promise<Report & { code: number }> {
  const result = await ws.cli(["run", "--json", ...argv], { ...env, ...extraEnv });
  return { code: result.code, ...(JSON.parse(result.stdout) as Report) };
}

/** The client's pipeline with the products' price declared as an integer: "49.99" no longer casts. */
function declarePriceInteger(workspace: Workspace): void {
  const yaml = readFileSync(workspace.path("pipeline.yaml"), "utf8");
  const declared = 'price_cents: { type: decimal, scale: 2, required: true, description: "unit price in euro cents (49.99 € is 4999)" }';
  expect(yaml).toContain(declared);
  workspace.write("pipeline.yaml", yaml.replace(declared, "price_cents: { type: integer, required: true }"));
}

describe("loud rejections", () => {
  const badSales = () =>
    server.file(
      "/ventes.csv",
      sales +
        "\r\n2023-06-26,REF001,x,1" +
        `\r\n2023-06-27,REF002,${"y".repeat(5000)},1` +
        "\r\n2023-06-28,REF001,\x1b[31m,1" +
        "\r\n2023-06-29,REF999,1,1",
    );

  test("a load step with rejected rows shows ⚠ and its first reasons inline, clipped", async () => {
    expect((await ws.cli(["run"], env)).code).toBe(0);
    badSales();
    const run = await ws.cli(["run"], env);
    expect(run.code).toBe(0);
    const lines = run.stdout.split("\n");
    const at = lines.findIndex((line) => line.includes("load_sales"));
    expect(lines[at + 1]).toMatch(/^ {6}⚠ 4 read, 4 rejected; /);
    expect(lines[at + 2]).toBe('        line 32, quantity: "x" is not an integer — 2023-06-26,REF001,x,1');
    // The reason quotes the value clipped (cast.ts); the line then clips the reason and the raw text in their middle.
    expect(lines[at + 3]).toMatch(/^ {8}line 33, quantity: "y{10,}….*" is not an integer — 2023-06-27,REF002,y{10,}…y+,1$/);
    expect(lines[at + 4]).toMatch(/^ {8}line 34, quantity: ".*" is not an integer — 2023-06-28,REF001,\\x1b\[31m,1$/);
    expect(lines[at + 5]).toMatch(/^ {8}… and 1 more in pipeline_rejected_rows$/);
    expect(lines[at + 6]).toMatch(/^\[5\/11\]/);
    expect(run.stdout).not.toContain("\x1b");
    for (const line of lines) expect(line.length).toBeLessThan(220);
    expect(run.stdout).toMatch(/\nRun 2 succeeded with rejections in /);
  });

  test("the JSON report carries the first rejected rows of each step", async () => {
    expect((await ws.cli(["run"], env)).code).toBe(0);
    badSales();
    const report = await runJson();
    expect(report.code).toBe(0);
    const step = report.steps.find((s) => s.name === "load_sales")!;
    expect(step.rejections).toHaveLength(3);
    expect(step.rejections![0]).toEqual({ line: 32, column: "quantity", reason: '"x" is not an integer', raw: "2023-06-26,REF001,x,1" });
    expect(step.rejections![1]!.raw.length).toBeLessThan(220);
    expect(step.rejections![1]!.reason.length).toBeLessThan(220);
    expect(step.rejections!.map((r) => r.line)).toEqual([32, 33, 34]);
    expect(report.steps.find((s) => s.name === "load_products")!.rejections).toBeUndefined();
  });
});

describe("a step that rejects every row fails the run", () => {
  test("a price declared integer rejects all 5 products: the run fails, names the source, the count and the first reasons, and saves nothing", async () => {
    declarePriceInteger(ws);
    const run = await ws.cli(["run"], env);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(
      `error E_REJECTED ${env["PRODUCTS_URL"]}: all 5 rows read were rejected; first: line 2, price_cents: "49.99" is not an integer — Produit A,REF001,49.99,100; line 3, price_cents: "19.99" is not an integer — `,
    );
    expect(run.stdout).toMatch(/\[1\/11\] load_products .*\n {6}✗ failed/);
    expect(ws.bytes()).toBeUndefined();
    expect(existsSync(ws.path("output/fiche-synthese.html"))).toBe(false);
    expect(existsSync(ws.path("output/fiche-synthese.md"))).toBe(false);
  });

  test("the summary sheet is never written from tables a failed check left empty", async () => {
    expect((await ws.cli(["run"], env)).code).toBe(0);
    const before = { db: ws.bytes(), html: ws.bytes("output/fiche-synthese.html"), md: ws.bytes("output/fiche-synthese.md") };
    declarePriceInteger(ws);
    const report = await runJson();
    expect(report.code).toBe(1);
    expect(report.error?.code).toBe("E_REJECTED");
    expect(report.steps.find((s) => s.name === "fiche_synthese")?.status).toBe("not_executed");
    expect(ws.bytes()).toEqual(before.db);
    expect(ws.bytes("output/fiche-synthese.html")).toEqual(before.html);
    expect(ws.bytes("output/fiche-synthese.md")).toEqual(before.md);
    expect(ws.bytes("output/fiche-synthese.html")!.toString()).not.toContain("0,00 €");
  });

  test("every sale rejected on its foreign key fails the run too", async () => {
    server.file("/produits.csv", products.replaceAll("REF00", "XREF00"));
    const report = await runJson();
    expect(report.code).toBe(1);
    expect(report.error?.message).toMatch(/ventes\.csv: all 30 rows read were rejected; first: line 2, product_id: /);
    expect(ws.bytes()).toBeUndefined();
  });

  test("one late row in a file that only grew is a rejection, not a failure", async () => {
    expect((await ws.cli(["run"], env)).code).toBe(0);
    server.file("/ventes.csv", sales + "\r\n2023-06-26,REF006,1,1");
    const report = await runJson();
    expect(report.code).toBe(0);
    expect(report.status).toBe("succeeded_with_rejections");
    expect(report.steps.find((s) => s.name === "load_sales")?.counts).toMatchObject({ read: 1, rejected: 1 });
  });
});

describe("max_rejected", () => {
  const withMaxRejected = (value: string) =>
    ws.write(
      "pipeline.yaml",
      readFileSync(ws.path("pipeline.yaml"), "utf8").replace("    table: sales\n", `    table: sales\n    max_rejected: ${value}\n`),
    );
  // why: 3 bad rows among the 33 a full read of the file gives: 9.1 %.
  const threeBad = () => sales + "\r\n2023-06-26,REF001,x,1\r\n2023-06-27,REF001,y,1\r\n2023-06-28,REF001,z,1";

  test.each([
    [
      "5%",
      1,
      /ventes\.csv: 3 of 33 rows rejected, more than max_rejected \(5% of the rows read, that is 1\); first: line 32, quantity: "x" is not an integer/,
    ],
    ["2", 1, /ventes\.csv: 3 of 33 rows rejected, more than max_rejected \(2\); first: line 32/],
    ['"10%"', 0, undefined],
    ["3", 0, undefined],
  ])("max_rejected: %s", async (value, code, message) => {
    withMaxRejected(value);
    server.file("/ventes.csv", threeBad());
    const report = await runJson();
    expect(report.code).toBe(code);
    if (message) {
      expect(report.error?.code).toBe("E_REJECTED");
      expect(report.error?.message).toMatch(message);
      expect(ws.bytes()).toBeUndefined();
    } else {
      expect(report.status).toBe("succeeded_with_rejections");
      expect(sqlite(db(), "SELECT count(*) FROM sales; SELECT count(*) FROM pipeline_rejected_rows")).toBe("30\n3");
    }
  });

  test.each([
    ['"5 %"', /pipeline\.yaml:\d+:19 error E_SCHEMA \/steps\/3\/max_rejected is "5 %"; expected .*a count .* or a percentage/],
    ['"150%"', /pipeline\.yaml:\d+:19 error E_SCHEMA \/steps\/3\/max_rejected is "150%"; expected/],
    ["-1", /pipeline\.yaml:\d+:19 error E_SCHEMA \/steps\/3\/max_rejected must be >= 0/],
    ["true", /pipeline\.yaml:\d+:19 error E_SCHEMA \/steps\/3\/max_rejected must be integer,string/],
  ])("validate refuses max_rejected: %s with its line:col", async (value, message) => {
    withMaxRejected(value);
    const run = await ws.cli(["validate"], env);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(message);
  });
});

describe("garbage lines", () => {
  test("garbage appended to a good file fails the run past the default cap of rejected rows, and saves nothing", async () => {
    expect((await ws.cli(["run"], env)).code).toBe(0);
    const before = ws.bytes();
    let garbage = "";
    for (let i = 0; i < 10_050; i++) garbage += ["x", "#", "??", "a;b", "~~~"][i % 5] + "\n";
    server.file("/ventes.csv", sales + "\r\n" + garbage);
    const report = await runJson();
    expect(report.code).toBe(1);
    expect(report.error?.message).toMatch(
      /ventes\.csv: 10050 of 10050 rows rejected, more than max_rejected \(10000 by default; declare max_rejected on the step to allow more\); first: line 32: expected 4 fields as in the header, found 1 — x;/,
    );
    expect(ws.bytes()).toEqual(before);
  });
});

describe("garbage lines stop the read", () => {
  test("past the cap, the source is not read to its end: memory stays bounded by the cap, not by the garbage", async () => {
    expect((await ws.cli(["run"], env)).code).toBe(0);
    const lines = 120_000;
    server.file("/ventes.csv", sales + "\r\n" + "x\n".repeat(lines));
    const report = await runJson();
    expect(report.code).toBe(1);
    const match =
      /ventes\.csv: (\d+) of the first (\d+) rows rejected, more than max_rejected \(10000 by default; .*\); reading stopped there; first: line 32: /.exec(
        report.error?.message ?? "",
      );
    expect(match, report.error?.message).not.toBeNull();
    expect(Number(match![2])).toBeLessThan(lines);
    expect(Number(match![1])).toBe(Number(match![2]));
  });
});

describe("run --strict", () => {
  test("a run that saved with rejected rows exits 4, having saved exactly what a plain run saves", async () => {
    const plain = new Workspace();
    try {
      for (const workspace of [ws, plain]) expect((await workspace.cli(["run"], env)).code).toBe(0);
      server.file("/ventes.csv", sales + "\r\n2023-06-26,REF001,x,1\r\n2023-06-27,REF002,2,3");
      expect((await plain.cli(["run"], env)).code).toBe(0);
      const strict = await ws.cli(["run", "--strict"], env);
      expect(strict.code).toBe(4);
      expect(strict.stdout).toMatch(/Run 2 succeeded with rejections in /);
      const content = (file: string) =>
        sqlite(
          file,
          "SELECT * FROM products; SELECT * FROM stores; SELECT * FROM sales; SELECT * FROM revenue_total; SELECT * FROM sales_by_product;" +
            " SELECT * FROM sales_by_city; SELECT * FROM sales_by_region; SELECT run_id, status, rejected_rows FROM pipeline_runs;" +
            " SELECT run_id, step, line, raw, column, reason FROM pipeline_rejected_rows;",
        );
      expect(content(db())).toBe(content(plain.path("output/sales.db")));
      expect(sqlite(db(), "SELECT count(*) FROM sales")).toBe("31");
    } finally {
      plain.remove();
    }
  });

  test("an unchanged run exits 4 while rejected rows are still pending; a clean run exits 0", async () => {
    expect((await ws.cli(["run", "--strict"], env)).code).toBe(0);
    server.file("/ventes.csv", sales + "\r\n2023-06-26,REF001,x,1");
    expect((await ws.cli(["run", "--strict"], env)).code).toBe(4);
    const unchanged = await ws.cli(["run", "--strict", "--json"], env);
    expect(unchanged.code).toBe(4);
    expect(JSON.parse(unchanged.stdout)).toMatchObject({
      status: "unchanged",
      detail: "nothing changed since run 2; 1 rejected row(s) still pending (see the rejections command); the database was not rewritten",
    });
    expect((await ws.cli(["run"], env)).code).toBe(0);
    server.file("/ventes.csv", sales + "\r\n2023-06-26,REF001,1,1");
    expect((await ws.cli(["run", "--strict"], env)).code).toBe(0);
    expect((await ws.cli(["run", "--strict"], env)).code).toBe(0);
  });

  test("--strict goes with the run command", async () => {
    const run = await ws.cli(["validate", "--strict"], env);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain("--strict goes with the run command");
  });
});

describe("run --full-refresh", () => {
  const conditional = (file: string) => server.requests(file).map((headers) => headers["if-none-match"] !== undefined);

  test("re-reads every source in full and recomputes the derived steps", async () => {
    expect((await ws.cli(["run"], env)).code).toBe(0);
    const report = await runJson(["--full-refresh"]);
    expect(report.code).toBe(0);
    for (const file of ["/produits.csv", "/magasins.csv", "/ventes.csv"]) expect(conditional(file)).toEqual([false, false]);
    expect(report.steps.find((s) => s.name === "load_sales")).toMatchObject({ status: "success", counts: { read: 30, unchanged: 30 } });
    expect(report.steps.find((s) => s.name === "load_city_regions")).toMatchObject({ status: "success", counts: { read: 47 } });
    expect(report.steps.find((s) => s.name === "revenue_total")?.status).toBe("success");
    expect(report.runId).toBe(2);
    expect(sqlite(db(), "SELECT count(*) FROM sales; SELECT revenue_cents FROM revenue_total")).toBe("30\n526878");
  });

  test("re-reads only the named load steps", async () => {
    expect((await ws.cli(["run"], env)).code).toBe(0);
    const report = await runJson(["--full-refresh", "load_sales"]);
    expect(report.code).toBe(0);
    expect(conditional("/ventes.csv")).toEqual([false, false]);
    expect(conditional("/produits.csv")).toEqual([false, true]);
    expect(report.steps.find((s) => s.name === "load_products")?.status).toBe("unchanged");
    expect(report.steps.find((s) => s.name === "load_sales")?.status).toBe("success");
    expect(report.steps.find((s) => s.name === "sales_by_city")?.status).toBe("success");
  });

  test("reads a grown file in full, not only its tail", async () => {
    expect((await ws.cli(["run"], env)).code).toBe(0);
    server.file("/ventes.csv", sales + "\r\n2023-06-26,REF001,1,1");
    const report = await runJson(["--full-refresh", "load_sales"]);
    expect(report.steps.find((s) => s.name === "load_sales")).toMatchObject({ counts: { read: 31, inserted: 1, unchanged: 30 } });
  });

  test.each([
    [["run", "--full-refresh", "load_sale"], 'unknown step "load_sale" (did you mean "load_sales"?)'],
    [["run", "--full-refresh", "revenue_total"], "revenue_total derives from earlier steps"],
    [["run", "--dry-run", "--full-refresh", "load_sale"], 'unknown step "load_sale" (did you mean "load_sales"?)'],
    [["validate", "--full-refresh"], "--full-refresh goes with the run command"],
    [["run", "load_sales"], 'unexpected argument "load_sales"'],
  ])("%j is a usage error", async (argv, message) => {
    const run = await ws.cli(argv, env);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain(message);
    expect(ws.bytes()).toBeUndefined();
  });

  test("a report file missing on disk is written again, even when nothing else changed", async () => {
    expect((await ws.cli(["run"], env)).code).toBe(0);
    const html = readFileSync(ws.path("output/fiche-synthese.html"), "utf8");
    rmSync(ws.path("output/fiche-synthese.html"));
    const run = await ws.cli(["run"], env);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain("output/fiche-synthese.html");
    const written = readFileSync(ws.path("output/fiche-synthese.html"), "utf8");
    expect(written).toContain("5\u202f268,78\u00a0€");
    expect(written.length).toBe(html.length);
    const again = await runJson();
    expect(again.status).toBe("unchanged");
  });
});
