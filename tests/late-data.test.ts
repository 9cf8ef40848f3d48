import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { serveClientData, type ClientServer } from "./helpers/client-server.js";
import { readFileSync } from "node:fs";
import path from "node:path";
import { eventsPipeline } from "./helpers/events-pipeline.js";
import { clientFixtures, Workspace } from "./helpers/workspace.js";

// Late data: a row rejected today because what it needs is not there yet is loaded by the run
// that follows its arrival, whatever shortcut that run takes (304, same content, tail read).

let client: ClientServer;
beforeEach(async () => {
  client = await serveClientData();
});
afterEach(() => client.close());

const fixture = (name: string) => readFileSync(path.join(clientFixtures, name), "utf8");
/** Runs SQL on the client's database, whatever the engine. */
const query = (sql: string) => client.ws.query(sql);
const revenue = () => query("SELECT revenue_cents, sales_lines FROM revenue_total");

interface Report {
  ok: boolean;
  status: string;
  exitCode: number;
  steps: { name: string; status: string; counts: Record<string, number>; detail?: string }[];
}

async function run(argv: string[] = [], env = client.env): Promise<Report> {
  const result = await client.ws.cli(["run", "--json", ...argv], env);
  return JSON.parse(result.stdout) as Report;
}

/** Revenue (cents and lines) of one run of these files on an empty database. */
async function freshRevenue(files: Record<string, string>): Promise<string> {
  const fresh = await serveClientData();
  try {
    for (const [name, body] of Object.entries(files)) fresh.server.file(`/${name}`, body);
    const result = await fresh.ws.cli(["run", "--json"], fresh.env);
    expect(result.code, result.stdout).toBe(0);
    return fresh.ws.query("SELECT revenue_cents, sales_lines FROM revenue_total");
  } finally {
    await fresh.close();
  }
}

const step = (report: Report, name: string) => report.steps.find((s) => s.name === name)!;
const lateSale = "\r\n2023-06-26,REF006,1,1";
const products = fixture("produits.csv");
const sales = fixture("ventes.csv");
const productsWithRef006 = products + "\r\nProduit F,REF006,20.00,5";

describe("a sale typed before its product", () => {
  test("is loaded by the run after the product arrives, when the sales file grew (tail read)", async () => {
    client.server.file("/ventes.csv", sales + lateSale);
    const first = await run();
    expect(first.status).toBe("succeeded_with_rejections");
    expect(step(first, "load_sales").counts.rejected).toBe(1);

    client.server.file("/produits.csv", productsWithRef006);
    client.server.file("/ventes.csv", sales + lateSale + "\r\n2023-06-26,REF001,1,2");
    const second = await run();
    expect(second.status).toBe("succeeded");
    expect(step(second, "load_sales").detail).toMatch(/file grew/);
    const final = { "produits.csv": productsWithRef006, "ventes.csv": sales + lateSale + "\r\n2023-06-26,REF001,1,2" };
    expect(revenue()).toBe(await freshRevenue(final));
    expect(revenue()).toBe("533877|32");
    expect(query("SELECT status, resolved_run_id IS NOT NULL FROM pipeline_rejected_rows")).toBe("resolved|1");
  });

  test("is loaded when the sales file did not change at all (304)", async () => {
    client.server.file("/ventes.csv", sales + lateSale);
    await run();
    client.server.file("/produits.csv", productsWithRef006);
    const second = await run();
    expect(step(second, "load_sales").counts).toMatchObject({ retried: 1, inserted: 1 });
    expect(second.status).toBe("succeeded");
    expect(revenue()).toBe(await freshRevenue({ "produits.csv": productsWithRef006, "ventes.csv": sales + lateSale }));
  });

  test("is loaded when the sales file is served again with the same content (no ETag)", async () => {
    const body = sales + lateSale;
    const plain = (b: string) => (_: unknown, response: import("node:http").ServerResponse) =>
      response.writeHead(200, { "content-type": "text/csv" }).end(b);
    client.server.route("/ventes.csv", plain(body));
    await run();
    client.server.file("/produits.csv", productsWithRef006);
    const second = await run();
    expect(step(second, "load_sales").counts).toMatchObject({ retried: 1, inserted: 1 });
    expect(revenue()).toBe("528878|31");
  });

  test("stays pending, and is listed by the rejections command, while its product is missing", async () => {
    client.server.file("/ventes.csv", sales + lateSale);
    await run();
    const again = await run();
    expect(again.status).toBe("unchanged");
    const listed = await client.ws.cli(["rejections"], client.env);
    expect(listed.code).toBe(0);
    expect(listed.stdout).toMatch(/load_sales\s+32\s+product_id\s+REF006\s+.*not in products/);
    const json = JSON.parse((await client.ws.cli(["rejections", "--json"], client.env)).stdout) as {
      rejections: { step: string; line: number; column: string; value: string; reason: string; kind: string }[];
    };
    expect(json.rejections).toEqual([
      expect.objectContaining({ step: "load_sales", line: 32, column: "product_id", value: "REF006", kind: "reference" }),
    ]);
  });

  test("a row removed from the file while pending is never loaded later", async () => {
    client.server.file("/ventes.csv", sales + lateSale);
    await run();
    client.server.file("/ventes.csv", sales + "\r\n2023-06-27,REF001,1,2");
    await run();
    client.server.file("/produits.csv", productsWithRef006);
    await run();
    expect(revenue()).toBe(await freshRevenue({ "produits.csv": productsWithRef006, "ventes.csv": sales + "\r\n2023-06-27,REF001,1,2" }));
    expect(query("SELECT count(*) FROM pipeline_rejected_rows WHERE status = 'pending'")).toBe("0");
  });

  test("a pending row that a full read of a changed file loads is marked resolved, not left pending", async () => {
    client.server.file("/ventes.csv", sales + lateSale);
    await run();
    client.server.file("/produits.csv", productsWithRef006);
    // An edit above the pending row (a space the cast trims): the file did not only grow, so it is read in full.
    client.server.file("/ventes.csv", sales.replace("\r\n2023-05-27,", "\r\n2023-05-27 ,") + lateSale);
    const second = await run();
    expect(step(second, "load_sales").detail ?? "").not.toMatch(/file grew/);
    expect(query("SELECT status, resolved_run_id FROM pipeline_rejected_rows WHERE raw LIKE '%REF006%'")).toBe("resolved|2");
    expect(query("SELECT count(*) FROM pipeline_rejected_rows WHERE status = 'pending'")).toBe("0");
  });

  test("a price fixed after its product was rejected brings back that product's sales, though the sales file is unchanged", async () => {
    client.server.file("/produits.csv", products.replace("49.99", "49,99"));
    const first = await run();
    expect(step(first, "load_products").counts.rejected).toBe(1);
    expect(step(first, "load_sales").counts.rejected).toBeGreaterThan(0);
    client.server.file("/produits.csv", products);
    const second = await run();
    expect(step(second, "load_sales").status).toBe("success");
    expect(revenue()).toBe("526878|30");
  });
});

describe("tail reads", () => {
  const variants: [string, string][] = [
    ["a blank first line", "\r\n" + sales],
    ["a header cell with a quoted newline", sales.replace("Date,", '"Date\r\n(jour)",').replace(/^/, "")],
  ];
  test.each(variants)("a file with %s that grows is read incrementally, with the file's own line numbers", async (_, body) => {
    const yaml = client.ws.path("pipeline.yaml");
    if (body.startsWith('"Date')) {
      client.ws.write("pipeline.yaml", readFileSync(yaml, "utf8").replace("from: Date,", 'from: "Date\\r\\n(jour)",'));
    }
    client.server.file("/ventes.csv", body);
    const first = await run();
    expect(first.ok, JSON.stringify(first)).toBe(true);
    const grown = body + "\r\n2023-06-26,REF001,1,1\r\n2023-06-26,REF002,x,1";
    client.server.file("/ventes.csv", grown);
    const second = await run();
    expect(second.ok, JSON.stringify(second)).toBe(true);
    expect(step(second, "load_sales").detail).toMatch(/file grew/);
    const lines = grown.split(/\r\n|\r|\n/);
    const badLine = lines.findIndex((l) => l === "2023-06-26,REF002,x,1") + 1;
    expect(query("SELECT line, raw FROM pipeline_rejected_rows")).toBe(`${badLine}|2023-06-26,REF002,x,1`);
  });

  test("line numbers of a CR-only file with quoted fields are the file's own", async () => {
    const body = sales.replaceAll("\r\n", "\r").replace("2023-05-27", '"2023-05-27"') + "\r2023-06-26,REF002,x,1";
    client.server.file("/ventes.csv", body);
    await run();
    expect(query("SELECT line FROM pipeline_rejected_rows")).toBe("32");
  });
});

describe("keys that cannot duplicate", () => {
  let ws: Workspace;
  beforeEach(() => {
    ws = new Workspace({ withClientPipeline: false });
  });
  afterEach(() => ws.remove());

  test("validate refuses a unique key over a column that may be empty, at the key's line", async () => {
    ws.write(
      "pipeline.yaml",
      `version: 1
database: db.sqlite
tables:
  t:
    columns:
      a: { type: text, required: true }
      b: { type: text }
      n: { type: integer }
    unique:
      - [a, b]
steps:
  - { name: l, type: load, source: t.csv, table: t, mode: insert_new, columns: { a: A, b: B, n: N } }
`,
    );
    ws.write("t.csv", "A,B,N\na,,1\n");
    const result = await ws.cli(["validate"]);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/pipeline\.yaml:10:\d+ error E_CONFIG .*t\.b.*may be empty.*required: true/);
  });

  test("validate refuses a load whose foreign key points at a table a later step loads", async () => {
    ws.write(
      "pipeline.yaml",
      `version: 1
database: db.sqlite
tables:
  p:
    columns: { id: { type: integer } }
    primary_key: [id]
  c:
    columns: { id: { type: integer }, p: { type: integer, required: true } }
    primary_key: [id]
    foreign_keys: [{ columns: [p], references: { table: p, columns: [id] } }]
steps:
  - { name: load_c, type: load, source: c.csv, table: c, mode: upsert, columns: { id: Id, p: P } }
  - { name: load_p, type: load, source: p.csv, table: p, mode: upsert, columns: { id: Id } }
`,
    );
    ws.write("c.csv", "Id,P\n1,1\n");
    ws.write("p.csv", "Id\n1\n");
    const result = await ws.cli(["validate"]);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/pipeline\.yaml:12:\d+ error E_CONFIG .*load_p.*later/);
  });
});

describe("a pending row and a later line with the same key", () => {
  let ws: Workspace;
  beforeEach(() => {
    ws = new Workspace({ withClientPipeline: false });
  });
  afterEach(() => ws.remove());

  const yaml = (mode: string) => eventsPipeline(mode);
  const events = "Day,Slot,Item,Qty\n2024-01-01,1,9,1\n2024-01-01,1,1,2\n";

  /** The events table and its pending rejections after the runs, for comparison with a fresh load. */
  const state = (file: string) =>
    [
      ws.query("SELECT day, slot, item_id, qty FROM events ORDER BY day, slot", file),
      ws.query("SELECT line, kind FROM pipeline_rejected_rows WHERE status = 'pending' ORDER BY line", file),
    ].join("\n--\n");

  test.each([
    ["insert_new", "2024-01-01|1|9|1\n--\n3|conflict"],
    ["upsert", "2024-01-01|1|1|2\n--\n"],
  ])("under %s, loading it later gives what file order gives on a fresh load", async (mode, expected) => {
    ws.write("pipeline.yaml", yaml(mode));
    ws.write("items.csv", "Id\n1\n");
    ws.write("events.csv", events);
    expect((await ws.cli(["run"])).code).toBe(0);
    ws.write("items.csv", "Id\n1\n9\n");
    expect((await ws.cli(["run"])).code).toBe(0);
    const incremental = state("db.sqlite");
    expect(incremental).toBe(expected);
    expect((await ws.cli(["run", "--db", "fresh.sqlite"])).code).toBe(0);
    expect(incremental).toBe(state("fresh.sqlite"));
  });
});
