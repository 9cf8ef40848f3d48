import { readFileSync } from "node:fs";
import path from "node:path";
import type { ServerResponse } from "node:http";
import { afterAll, beforeAll, beforeEach, afterEach, describe, expect, test } from "vitest";
import { serveClientData } from "./helpers/client-server.js";
import type { TestServer } from "./helpers/http-server.js";
import { startPostgres, type TestPostgres } from "./helpers/postgres.js";
import { spawnCli, waitFor } from "./helpers/spawn-cli.js";
import { clientFixtures, type Workspace } from "./helpers/workspace.js";

// The engine `postgres` against a real server started here (initdb in a temporary directory).
let pg: TestPostgres;
beforeAll(async () => {
  pg = await startPostgres();
}, 60_000);
afterAll(() => pg?.stop());

let ws: Workspace;
let server: TestServer;
let env: Record<string, string>;
let close: () => Promise<void>;
let database = 0;
let name: string;
beforeEach(async () => {
  ({ ws, env, close, server } = await serveClientData());
  name = `run_${++database}`;
  env = { ...env, DB_PATH: pg.createDatabase(name) };
});
afterEach(() => close());

const q = (sql: string) => pg.psql(name, sql);
const results = () =>
  q(
    "SELECT * FROM revenue_total; SELECT * FROM sales_by_product ORDER BY 1; SELECT * FROM sales_by_city ORDER BY 1; SELECT * FROM sales_by_region ORDER BY 1",
  );

describe("the client's pipeline on PostgreSQL", () => {
  test("loads 5 products, 7 stores, 30 sales and computes the figures to the cent, in explicit types", async () => {
    const run = await ws.cli(["run"], env);
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    expect(q("SELECT (SELECT count(*) FROM products), (SELECT count(*) FROM stores), (SELECT count(*) FROM sales)")).toBe("5|7|30");
    expect(q("SELECT revenue_cents, quantity, sales_lines, period_start, period_end FROM revenue_total")).toBe(
      "526878|122|30|2023-05-27|2023-06-25",
    );
    expect(q("SELECT name, revenue_cents FROM sales_by_product ORDER BY revenue_cents DESC")).toBe(
      ["Produit D|167979", "Produit E|139965", "Produit A|119976", "Produit B|53973", "Produit C|44985"].join("\n"),
    );
    expect(q("SELECT city, revenue_cents FROM sales_by_city ORDER BY revenue_cents DESC")).toBe(
      ["Lyon|105979", "Marseille|100973", "Bordeaux|82981", "Paris|79980", "Nantes|73983", "Strasbourg|57989", "Lille|24993"].join("\n"),
    );
    expect(q("SELECT sum(revenue_cents) FROM sales_by_region")).toBe("526878");
    expect(q("SELECT data_type FROM information_schema.columns WHERE table_name = 'products' AND column_name = 'price_cents'")).toBe(
      "bigint",
    );
    expect(q("SELECT data_type FROM information_schema.columns WHERE table_name = 'sales' AND column_name = 'date'")).toBe("date");
    expect(q("SELECT run_id, status FROM pipeline_runs")).toBe("1|succeeded");
    expect(run.stdout).not.toContain("sqlite");
  });

  test("a dry run prints the plan and creates nothing on the server", async () => {
    const dry = await ws.cli(["run", "--dry-run"], env);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toContain("would create tables: products, stores, city_regions, sales");
    expect(server.requests("/ventes.csv")).toHaveLength(0);
    expect(q("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")).toBe("0");
  });

  test("plan and test read the stored database on the server and change nothing", async () => {
    expect((await ws.cli(["run"], env)).code).toBe(0);
    const before = dataTables();
    const plan = await ws.cli(["plan"], env);
    expect(plan.code, plan.stderr).toBe(0);
    expect(plan.stdout).not.toContain("would create");
    const checked = await ws.cli(["test"], env);
    expect(checked.code, checked.stderr).toBe(0);
    expect(checked.stdout).toMatch(/Testing postgres:\/\/\*\*\*@127\.0\.0\.1:\d+\/run_\d+ \(run 1\)/);
    expect(checked.stdout).toContain("revenue_reconciles");
    expect(dataTables()).toBe(before);
  });

  test("a second run adds nothing and leaves every results table identical", async () => {
    expect((await ws.cli(["run"], env)).code).toBe(0);
    const before = results();
    const second = await ws.cli(["run", "--json"], env);
    expect(second.code).toBe(0);
    const report = JSON.parse(second.stdout) as { status: string; steps: { name: string; status: string }[] };
    expect(report.status).toBe("unchanged");
    for (const step of ["load_products", "load_stores", "load_sales"])
      expect(report.steps.find((s) => s.name === step)?.status).toBe("unchanged");
    expect(results()).toBe(before);
    expect(q("SELECT count(*) FROM sales")).toBe("30");
  });
});

const fixture = (file: string) => readFileSync(path.join(clientFixtures, file), "utf8");
const dataTables = () =>
  q(
    "SELECT * FROM products ORDER BY 1, 2; SELECT * FROM stores ORDER BY 1; SELECT * FROM sales ORDER BY 1, 2, 3; " +
      "SELECT * FROM revenue_total; SELECT * FROM sales_by_product ORDER BY 1; SELECT count(*) FROM pipeline_rejected_rows",
  );

/** Serves the sales file's first line, then holds the response open until `release` is called (later requests get the whole file). */
function stallSales(): { release: () => void; started: () => boolean } {
  let held: ServerResponse | undefined;
  server.route("/ventes.csv", (_request, response) => {
    response.writeHead(200, { "content-type": "text/csv" });
    response.write(fixture("ventes.csv").split("\r\n")[0] + "\r\n");
    held = response;
  });
  return {
    started: () => held !== undefined,
    release: () => {
      server.file("/ventes.csv", fixture("ventes.csv"));
      held?.end(fixture("ventes.csv").split("\r\n").slice(1).join("\r\n"));
    },
  };
}

describe("validate on PostgreSQL", () => {
  test("compiles every query against the server's planner, rolled back: the client's pipeline is valid and nothing is created", async () => {
    const result = await ws.cli(["validate"], env);
    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
    expect(q("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")).toBe("0");
  });

  test("a query SQLite accepts but the server refuses is an E_SQL error at its file:line:col", async () => {
    const file = ws.path("sql/sales_by_product.sql");
    const text = readFileSync(file, "utf8").replace(
      "  revenue_cents / 100.0 AS revenue,",
      "  strftime('%s', 'now') * 0 + revenue_cents / 100.0 AS revenue,",
    );
    ws.write("sql/sales_by_product.sql", text);
    const line = text.split("\n").findIndex((l) => l.includes("strftime")) + 1;
    const result = await ws.cli(["validate"], env);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(
      new RegExp(
        `sql/sales_by_product\\.sql:${line}:3 .*E_SQL .*the server refuses it: function strftime\\(unknown, unknown\\) does not exist`,
      ),
    );
    expect(q("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")).toBe("0");
  });

  test("a report's byline query the server refuses is an E_SQL error naming it, as its sections' are", async () => {
    const yaml = readFileSync(ws.path("pipeline.yaml"), "utf8");
    ws.write(
      "pipeline.yaml",
      yaml.replace("sql: SELECT max(date) AS data_date FROM sales", "sql: SELECT strftime('%Y', max(date)) AS data_date FROM sales"),
    );
    const result = await ws.cli(["validate"], env);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(
      /E_SQL byline of fiche_synthese: the server refuses it: function strftime\(unknown, date\) does not exist/,
    );
  });
});

describe("doctor on PostgreSQL", () => {
  test("connects to the server and names its version; an unreachable one fails the check without the password", async () => {
    const result = await ws.cli(["doctor"], env);
    expect(result.code, result.stdout).toBe(0);
    expect(result.stdout).toMatch(/✓ postgres: client pg \d+\.\d+\.\d+ .*, in use/);
    expect(result.stdout).toContain(`✓ database: ${env["DB_PATH"]!.replace("postgres@", "***@")} answers: PostgreSQL 1`);
    const down = await ws.cli(["doctor"], { ...env, DB_PATH: "postgres://loader:s3cret-pw@127.0.0.1:1/sales" });
    expect(down.code).toBe(1);
    expect(down.stdout).toMatch(/✗ database: .*postgres:\/\/\*\*\*@127\.0\.0\.1:1\/sales.*ECONNREFUSED/);
    expect(down.stdout + down.stderr).not.toContain("s3cret-pw");
  });
});

describe("types on PostgreSQL", () => {
  test("a table created otherwise on the server is refused (E_DRIFT) naming the column, and nothing is written", async () => {
    q("CREATE TABLE products (product_id text PRIMARY KEY, name text NOT NULL, price_cents numeric NOT NULL, stock bigint)");
    const run = await ws.cli(["run"], env);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(
      /E_DRIFT table products in the database does not match its declaration: column price_cents is stored as numeric NOT NULL, declared as bigint NOT NULL/,
    );
    expect(q("SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename NOT LIKE 'pipeline_%'")).toBe("1");
    expect(q("SELECT count(*) FROM products")).toBe("0");
    expect(q("SELECT status FROM pipeline_runs")).toBe("failed");
  });

  test("a trigger planted on a declared table is refused (E_DRIFT) naming it and the statement that drops it", async () => {
    expect((await ws.cli(["run"], env)).code).toBe(0);
    q(
      "CREATE FUNCTION zero_price() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.price_cents := 0; RETURN NEW; END $$; " +
        "CREATE TRIGGER planted BEFORE INSERT OR UPDATE ON products FOR EACH ROW EXECUTE FUNCTION zero_price()",
    );
    const before = dataTables();
    server.file("/produits.csv", fixture("produits.csv") + "\r\nProduit F,REF006,20.00,5");
    const run = await ws.cli(["run"], env);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(
      /E_DRIFT .*holds 1 object\(s\) .*trigger "planted" on table products \(DROP TRIGGER "planted" ON "products";\)/,
    );
    expect(dataTables()).toBe(before);
  });

  test("schema shows the types the server stores: bigint for exact cents, date, boolean, double precision", async () => {
    const schema = await ws.cli(["schema"], env);
    expect(schema.code, schema.stderr).toBe(0);
    expect(schema.stdout).toContain("Types are PostgreSQL's");
    expect(schema.stdout).toMatch(/\| price_cents \| bigint NOT NULL \|/);
    expect(schema.stdout).toMatch(/\| date \| date NOT NULL \|/);
    expect(schema.stdout).toMatch(/\| run_id \| bigint NOT NULL \|/);
    await ws.cli(["run"], env);
    expect(q("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'products' ORDER BY ordinal_position")).toBe(
      schema.stdout
        .split("## products")[1]!
        .split("\n## ")[0]!
        .split("\n")
        .filter((line) => /^\| [a-z_]+ \| /.test(line) && !line.startsWith("| column"))
        .map((line) => line.split(" | ").slice(0, 2).join("|").replace("| ", "").replace(" NOT NULL", ""))
        .join("\n"),
    );
  });
});

describe("the same promises on PostgreSQL", () => {
  test("late data: a sale typed before its product is loaded by the run after the product arrives (tail read)", async () => {
    const sales = fixture("ventes.csv");
    const lateSale = "\r\n2023-06-26,REF006,1,1";
    server.file("/ventes.csv", sales + lateSale);
    const first = JSON.parse((await ws.cli(["run", "--json"], env)).stdout) as { status: string };
    expect(first.status).toBe("succeeded_with_rejections");
    expect(q("SELECT status, kind FROM pipeline_rejected_rows")).toBe("pending|reference");
    const listed = await ws.cli(["rejections"], env);
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stdout).toMatch(/load_sales\s+32\s+product_id\s+REF006\s+.*not in products/);
    server.file("/produits.csv", fixture("produits.csv") + "\r\nProduit F,REF006,20.00,5");
    server.file("/ventes.csv", sales + lateSale + "\r\n2023-06-26,REF001,1,2");
    const second = JSON.parse((await ws.cli(["run", "--json"], env)).stdout) as {
      status: string;
      steps: { name: string; detail?: string }[];
    };
    expect(second.status).toBe("succeeded");
    expect(second.steps.find((s) => s.name === "load_sales")?.detail).toMatch(/file grew/);
    expect(q("SELECT revenue_cents, sales_lines FROM revenue_total")).toBe("533877|32");
    expect(q("SELECT status, resolved_run_id IS NOT NULL FROM pipeline_rejected_rows")).toBe("resolved|t");
  });

  test("a changed quantity under a stored key is kept aside; new rows are loaded", async () => {
    expect((await ws.cli(["run"], env)).code).toBe(0);
    const changed =
      fixture("ventes.csv").replace("2023-05-27,REF001,5,1", "2023-05-27,REF001,9,1") +
      "\r\n2023-06-26,REF002,2,5\r\n2023-06-26,REF003,1,6";
    server.file("/ventes.csv", changed);
    const run = await ws.cli(["run", "--json"], env);
    expect(run.code).toBe(0);
    const report = JSON.parse(run.stdout) as { status: string; steps: { name: string; counts: Record<string, number> }[] };
    expect(report.status).toBe("succeeded_with_rejections");
    expect(report.steps.find((s) => s.name === "load_sales")?.counts).toEqual({
      read: 32,
      inserted: 2,
      updated: 0,
      unchanged: 29,
      rejected: 0,
      conflicting: 1,
    });
    expect(q("SELECT count(*), sum(quantity) FROM sales")).toBe("32|125");
    expect(q("SELECT quantity FROM sales WHERE date = '2023-05-27' AND product_id = 'REF001'")).toBe("5");
    expect(q("SELECT line, reason FROM pipeline_rejected_rows")).toBe("2|key already stored with different values");
    expect(q("SELECT revenue_cents FROM revenue_total")).toBe(String(526878 + 2 * 1999 + 2999));
  });

  test("a failed run changes no table and is recorded in pipeline_runs at once", async () => {
    expect((await ws.cli(["run"], env)).code).toBe(0);
    const before = dataTables();
    server.file("/produits.csv", fixture("produits.csv") + "\r\nProduit F,REF006,20.00,5");
    server.route("/ventes.csv", (_request, response) => response.writeHead(404).end());
    const run = await ws.cli(["run"], env);
    expect(run.code).not.toBe(0);
    expect(run.stderr).toMatch(/404/);
    expect(dataTables()).toBe(before);
    // why: a rolled-back run used an id of the sequence, so ids increase with gaps on a server.
    expect(q("SELECT status FROM pipeline_runs ORDER BY run_id")).toBe("succeeded\nfailed");
    expect(
      q("SELECT count(*) FROM pipeline_run_steps WHERE run_id = (SELECT max(run_id) FROM pipeline_runs) AND step = 'load_products'"),
    ).toBe("1");
  });

  test("a second runner waits for the first (advisory lock), then both land", async () => {
    const stall = stallSales();
    const first = spawnCli(["run", "--json"], ws.dir, env);
    await waitFor(stall.started, 20_000);
    const second = spawnCli(["run", "--json"], ws.dir, env);
    await waitFor(
      () =>
        q(
          `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND application_name = 'pipeline-runner pid ${second.child.pid}'`,
        ) === "1",
      20_000,
    );
    stall.release();
    const [a, b] = await Promise.all([first.done, second.done]);
    expect(a.code, a.stderr).toBe(0);
    expect(b.code, b.stderr).toBe(0);
    expect((JSON.parse(b.stdout) as { status: string }).status).toBe("unchanged");
    expect(q("SELECT revenue_cents FROM revenue_total")).toBe("526878");
    expect(q("SELECT count(*) FROM sales")).toBe("30");
  }, 60_000);

  test("past --lock-timeout, the second runner exits 3 and says who holds the lock", async () => {
    const stall = stallSales();
    const first = spawnCli(["run"], ws.dir, env);
    await waitFor(stall.started, 20_000);
    const second = await spawnCli(["run", "--lock-timeout", "1s"], ws.dir, env).done;
    expect(second.code).toBe(3);
    expect(second.stderr).toMatch(
      new RegExp(`E_LOCK .*locked by another run \\(held by "pipeline-runner pid ${first.child.pid}" from 127\\.0\\.0\\.1`),
    );
    stall.release();
    expect((await first.done).code).toBe(0);
  }, 60_000);

  test("SIGKILL mid-run: the server rolls the run back and releases its lock, tables as before", async () => {
    expect((await ws.cli(["run"], env)).code).toBe(0);
    const before = dataTables();
    server.file("/produits.csv", fixture("produits.csv") + "\r\nProduit F,REF006,20.00,5");
    const stall = stallSales();
    const run = spawnCli(["run"], ws.dir, env);
    await waitFor(stall.started, 20_000);
    run.child.kill("SIGKILL");
    expect((await run.done).signal).toBe("SIGKILL");
    await waitFor(() => q("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'pipeline-runner%'") === "0", 10_000);
    expect(dataTables()).toBe(before);
    server.file("/ventes.csv", fixture("ventes.csv"));
    const next = await ws.cli(["run", "--lock-timeout", "2s"], env);
    expect(next.code, next.stderr).toBe(0);
    expect(q("SELECT count(*) FROM products")).toBe("6");
  }, 60_000);

  test("SIGTERM mid-run stops cleanly: exit 130, rolled back, the failure recorded, the lock released", async () => {
    expect((await ws.cli(["run"], env)).code).toBe(0);
    const before = dataTables();
    server.file("/produits.csv", fixture("produits.csv") + "\r\nProduit F,REF006,20.00,5");
    const stall = stallSales();
    const run = spawnCli(["run"], ws.dir, env);
    await waitFor(stall.started, 20_000);
    run.child.kill("SIGTERM");
    const done = await run.done;
    expect(done.code, done.stderr).toBe(130);
    expect(dataTables()).toBe(before);
    expect(q("SELECT status FROM pipeline_runs ORDER BY run_id")).toBe("succeeded\ninterrupted");
    expect(q("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'pipeline-runner%'")).toBe("0");
  }, 60_000);

  test("the password is never printed: a server that cannot be reached is an error naming the URL without it", async () => {
    const url = pg.url.replace("postgres@", "postgres:s3cret-pw@").replace("127.0.0.1", "127.0.0.1");
    const run = await ws.cli(["run"], { ...env, DB_PATH: url.replace(/:\d+\//, ":1/") });
    expect(run.code).not.toBe(0);
    expect(run.stdout + run.stderr).not.toContain("s3cret-pw");
    expect(run.stderr).toMatch(/postgres:\/\/\*\*\*@127\.0\.0\.1:1\//);
  });
});
