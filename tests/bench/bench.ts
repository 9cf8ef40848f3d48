import { execFileSync, spawn } from "node:child_process";
import { once } from "node:events";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir, totalmem } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { startServer } from "../helpers/http-server.js";
import { median } from "../helpers/median.js";
import { postgresBinDir, startPostgres, type TestPostgres } from "../helpers/postgres.js";

// npm run bench [-- --rows N --repeat K --out FILE --engine sqljs|native|postgres --keep DIR --cpu-prof DIR]: our runner (on each
// storage engine; sqljs and native by default) against the sqlite3 CLI on the same machine, in the same
// run, on a synthetic data set in the client's format; on postgres, against psql's \copy into the same
// keyed tables of a throwaway cluster (tests/helpers/postgres.ts) started here. Prints a table of medians
// and ratios per engine, and writes each engine's figures as JSON beside FILE (default
// bench-results.json -> bench-results.sqljs.json, .native.json, .postgres.json).

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const cli = path.join(root, "dist/engine/cli.js");
const arg = (name: string, fallback: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1]! : fallback;
};
const rows = Number(arg("rows", "1000000"));
const repeat = Number(arg("repeat", "3"));
const out = path.resolve(arg("out", "bench-results.json"));
// why: `--cpu-prof DIR` writes a CPU profile of each of our runs there (node --cpu-prof), to see where their time goes.
const profileDir = process.argv.includes("--cpu-prof") ? path.resolve(arg("cpu-prof", "profiles")) : undefined;
// why: `--keep DIR` leaves the generated files, pipeline and databases in DIR, to run or profile by hand afterwards.
const keep = process.argv.includes("--keep") ? path.resolve(arg("keep", "bench-data")) : undefined;
const engines = process.argv.includes("--engine") ? [arg("engine", "sqljs")] : ["sqljs", "native"];
if (engines.some((engine) => engine !== "sqljs" && engine !== "native" && engine !== "postgres")) {
  throw new Error(`--engine takes sqljs, native or postgres`);
}
/** Where one engine's figures go: FILE.json -> FILE.<engine>.json. */
const outFor = (engine: string) => out.replace(/(\.json)?$/, `.${engine}.json`);
const header = "Date,ID Référence produit,Quantité,ID Magasin";
const [productCount, storeCount] = [50, 20];

/** Products, stores and `count` sales in the client's CSV format, deterministic, in date order. */
function dataset(count: number, extra = 0) {
  const products = ["Nom,ID Référence produit,Prix,Stock"];
  for (let p = 1; p <= productCount; p++) products.push(`Produit ${p},REF${String(p).padStart(3, "0")},${(p % 90) + 9}.99,${p * 10}`);
  const cities = readFileSync(path.join(root, "data/city_regions.csv"), "utf8")
    .trim()
    .split("\n")
    .slice(1)
    .map((l) => l.split(",")[0]!);
  const stores = ["ID Magasin,Ville,Nombre de salariés"];
  for (let s = 1; s <= storeCount; s++) stores.push(`${s},${cities[s - 1]},${(s % 12) + 3}`);
  const lines = [header];
  let seed = 42;
  // why: 1 000 sales a day from 1950 stay in the past up to 27M rows (the pipeline's no_sale_in_the_future check); PERIOD_START follows.
  const day = new Date(Date.UTC(1950, 0, 1));
  const perDay = productCount * storeCount;
  for (let i = 0; i < count + extra; i++) {
    if (i > 0 && i % perDay === 0) day.setUTCDate(day.getUTCDate() + 1);
    seed = (seed * 1103515245 + 12345) % 2147483648;
    const product = (i % productCount) + 1;
    const store = (Math.floor(i / productCount) % storeCount) + 1;
    lines.push(`${day.toISOString().slice(0, 10)},REF${String(product).padStart(3, "0")},${(seed % 8) + 1},${store}`);
  }
  const crlf = (ls: string[]) => ls.join("\r\n");
  return { products: crlf(products), stores: crlf(stores), sales: crlf(lines.slice(0, count + 1)), grown: crlf(lines) };
}

interface Measure {
  seconds: number;
  maxRssMb: number;
}

/** Runs a command under /usr/bin/time: wall seconds and peak RSS. */
async function measure(
  command: string,
  args: string[],
  options: { env?: NodeJS.ProcessEnv; input?: string; cwd?: string } = {},
): Promise<Measure> {
  const child = spawn("/usr/bin/time", ["-f", "%e %M", command, ...args], {
    env: options.env ?? process.env,
    cwd: options.cwd ?? root,
    stdio: ["pipe", "pipe", "pipe"],
  });
  let stderr = "";
  let stdout = "";
  child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
  child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
  child.stdin.end(options.input ?? "");
  const [code] = (await once(child, "close")) as [number];
  if (code !== 0) throw new Error(`${command} ${args.join(" ")} exited ${code}:\n${stdout.slice(-2000)}\n${stderr.slice(-2000)}`);
  const [seconds, kb] = stderr.trim().split("\n").at(-1)!.split(" ").map(Number);
  return { seconds: seconds!, maxRssMb: kb! / 1024 };
}

const medianOf = (ms: Measure[]): Measure => ({ seconds: median(ms.map((m) => m.seconds)), maxRssMb: median(ms.map((m) => m.maxRssMb)) });

const analysesSql = ["sales_by_store_product", "revenue_total", "sales_by_product", "sales_by_city", "sales_by_region"]
  .map((name) => {
    const select = readFileSync(path.join(root, `sql/${name}.sql`), "utf8")
      .trim()
      .replace(/;\s*$/, "");
    return `DELETE FROM ${name}; INSERT INTO ${name} ${select.replace(/^(--.*\n)+/, "")};`;
  })
  .join("\n");

/** The sqlite3 CLI's side: the same tables, `.import` into a staging table, then the same analyses. */
function baselineScript(dir: string, file: string, incremental: boolean): string {
  const create = incremental
    ? ""
    : `
CREATE TABLE products (product_id TEXT PRIMARY KEY, name TEXT NOT NULL, price_cents INTEGER NOT NULL, stock INTEGER) STRICT;
CREATE TABLE stores (store_id INTEGER PRIMARY KEY, city TEXT NOT NULL, employees INTEGER) STRICT;
CREATE TABLE city_regions (city TEXT PRIMARY KEY, region TEXT NOT NULL, region_code TEXT) STRICT;
CREATE TABLE sales (date TEXT NOT NULL, product_id TEXT NOT NULL REFERENCES products, store_id INTEGER NOT NULL REFERENCES stores, quantity INTEGER NOT NULL, UNIQUE (date, product_id, store_id)) STRICT;
CREATE TABLE sales_by_store_product (store_id INTEGER, product_id TEXT, sales_lines INTEGER NOT NULL, quantity INTEGER NOT NULL, revenue_cents INTEGER NOT NULL, PRIMARY KEY (store_id, product_id)) STRICT;
CREATE TABLE revenue_total (period_start TEXT, period_end TEXT, sales_lines INTEGER NOT NULL, quantity INTEGER NOT NULL, revenue_cents INTEGER NOT NULL, revenue REAL NOT NULL) STRICT;
CREATE TABLE sales_by_product (product_id TEXT PRIMARY KEY, name TEXT NOT NULL, unit_price_cents INTEGER NOT NULL, sales_lines INTEGER NOT NULL, quantity INTEGER NOT NULL, revenue_cents INTEGER NOT NULL, revenue REAL NOT NULL, revenue_share_pct REAL NOT NULL) STRICT;
CREATE TABLE sales_by_city (city TEXT PRIMARY KEY, region TEXT NOT NULL, stores INTEGER NOT NULL, sales_lines INTEGER NOT NULL, quantity INTEGER NOT NULL, revenue_cents INTEGER NOT NULL, revenue REAL NOT NULL, revenue_share_pct REAL NOT NULL) STRICT;
CREATE TABLE sales_by_region (region TEXT PRIMARY KEY, cities INTEGER NOT NULL, sales_lines INTEGER NOT NULL, quantity INTEGER NOT NULL, revenue_cents INTEGER NOT NULL, revenue REAL NOT NULL, revenue_share_pct REAL NOT NULL) STRICT;
CREATE TEMP TABLE products_raw (c1 TEXT, c2 TEXT, c3 TEXT, c4 TEXT);
CREATE TEMP TABLE stores_raw (c1 TEXT, c2 TEXT, c3 TEXT);
CREATE TEMP TABLE regions_raw (c1 TEXT, c2 TEXT, c3 TEXT);
.import --csv --skip 1 ${path.join(dir, "products.csv")} products_raw
.import --csv --skip 1 ${path.join(dir, "stores.csv")} stores_raw
.import --csv --skip 1 ${path.join(root, "data/city_regions.csv")} regions_raw
INSERT INTO products SELECT c2, c1, CAST(round(c3 * 100) AS INTEGER), CAST(c4 AS INTEGER) FROM products_raw;
INSERT INTO stores SELECT CAST(c1 AS INTEGER), c2, CAST(c3 AS INTEGER) FROM stores_raw;
INSERT INTO city_regions SELECT c1, c2, c3 FROM regions_raw;
DROP TABLE products_raw; DROP TABLE stores_raw; DROP TABLE regions_raw;`;
  return `.bail on
CREATE TEMP TABLE sales_raw (c1 TEXT, c2 TEXT, c3 TEXT, c4 TEXT);
BEGIN;${create}
.import --csv --skip 1 ${file} sales_raw
INSERT OR IGNORE INTO sales SELECT c1, c2, CAST(c4 AS INTEGER), CAST(c3 AS INTEGER) FROM sales_raw;
${analysesSql}
COMMIT;
`;
}

/** psql's side on the server: the same tables in the engine's types, `\copy` straight into the keyed sales table, then the same analyses. */
function psqlScript(dir: string, file: string, incremental: boolean): string {
  if (incremental) {
    // why: like the sqlite3 CLI's re-run, the whole grown file, its stored keys left alone.
    return `CREATE TEMP TABLE sales_raw (c1 text, c2 text, c3 text, c4 text);
\\copy sales_raw FROM '${file}' CSV HEADER
INSERT INTO sales SELECT c1::date, c2, c4::bigint, c3::bigint FROM sales_raw ON CONFLICT DO NOTHING;
${analysesSql}
`;
  }
  const fk = "DEFERRABLE INITIALLY DEFERRED";
  return `CREATE TABLE products (product_id text PRIMARY KEY, name text NOT NULL, price_cents bigint NOT NULL, stock bigint);
CREATE TABLE stores (store_id bigint PRIMARY KEY, city text NOT NULL, employees bigint);
CREATE TABLE city_regions (city text PRIMARY KEY, region text NOT NULL, region_code text);
CREATE TABLE sales (date date NOT NULL, product_id text NOT NULL REFERENCES products ${fk}, store_id bigint NOT NULL REFERENCES stores ${fk}, quantity bigint NOT NULL, UNIQUE (date, product_id, store_id));
CREATE TABLE sales_by_store_product (store_id bigint REFERENCES stores ${fk}, product_id text REFERENCES products ${fk}, sales_lines bigint NOT NULL, quantity bigint NOT NULL, revenue_cents bigint NOT NULL, PRIMARY KEY (store_id, product_id));
CREATE TABLE revenue_total (period_start date, period_end date, sales_lines bigint NOT NULL, quantity bigint NOT NULL, revenue_cents bigint NOT NULL, revenue double precision NOT NULL);
CREATE TABLE sales_by_product (product_id text PRIMARY KEY, name text NOT NULL, unit_price_cents bigint NOT NULL, sales_lines bigint NOT NULL, quantity bigint NOT NULL, revenue_cents bigint NOT NULL, revenue double precision NOT NULL, revenue_share_pct double precision NOT NULL);
CREATE TABLE sales_by_city (city text PRIMARY KEY, region text NOT NULL, stores bigint NOT NULL, sales_lines bigint NOT NULL, quantity bigint NOT NULL, revenue_cents bigint NOT NULL, revenue double precision NOT NULL, revenue_share_pct double precision NOT NULL);
CREATE TABLE sales_by_region (region text PRIMARY KEY, cities bigint NOT NULL, sales_lines bigint NOT NULL, quantity bigint NOT NULL, revenue_cents bigint NOT NULL, revenue double precision NOT NULL, revenue_share_pct double precision NOT NULL);
CREATE TEMP TABLE products_raw (c1 text, c2 text, c3 text, c4 text);
CREATE TEMP TABLE stores_raw (c1 text, c2 text, c3 text);
\\copy products_raw FROM '${path.join(dir, "products.csv")}' CSV HEADER
\\copy stores_raw FROM '${path.join(dir, "stores.csv")}' CSV HEADER
\\copy city_regions FROM '${path.join(root, "data/city_regions.csv")}' CSV HEADER
INSERT INTO products SELECT c2, c1, round(c3::numeric * 100)::bigint, c4::bigint FROM products_raw;
INSERT INTO stores SELECT c1::bigint, c2, c3::bigint FROM stores_raw;
\\copy sales (date, product_id, quantity, store_id) FROM '${file}' CSV HEADER
${analysesSql}
`;
}

const results =
  "SELECT count(*), sum(quantity) FROM sales; SELECT * FROM sales_by_store_product; SELECT * FROM revenue_total; SELECT * FROM sales_by_product; SELECT * FROM sales_by_city; SELECT * FROM sales_by_region;";
const readBack = (db: string) => execFileSync("sqlite3", ["-batch", db, results], { encoding: "utf8", maxBuffer: 64 << 20 });

const server = await startServer();
const work = keep ? (mkdirSync(keep, { recursive: true }), keep) : mkdtempSync(path.join(tmpdir(), "bench-"));
const loadAtStart = loadavg().map((load) => Number(load.toFixed(2)));
const cluster: TestPostgres | undefined = engines.includes("postgres") ? await startPostgres() : undefined;
try {
  const data = dataset(rows, Math.max(1, Math.round(rows / 100)));
  for (const [name, body] of Object.entries({ products: data.products, stores: data.stores, sales: data.sales, grown: data.grown })) {
    writeFileSync(path.join(work, `${name}.csv`), body);
  }
  server.file("/products.csv", data.products);
  server.file("/stores.csv", data.stores);
  cpSync(path.join(root, "sql"), path.join(work, "sql"), { recursive: true });
  cpSync(path.join(root, "data"), path.join(work, "data"), { recursive: true });
  // why: the client's pipeline without the report step, which no baseline has.
  const pipeline = readFileSync(path.join(root, "pipeline.yaml"), "utf8").split("\n  - name: fiche_synthese")[0]!;
  writeFileSync(path.join(work, "pipeline.yaml"), pipeline + "\n");
  const env = (db: string) => ({
    ...process.env,
    NO_COLOR: "1",
    PRODUCTS_URL: server.url("/products.csv"),
    STORES_URL: server.url("/stores.csv"),
    SALES_URL: server.url("/sales.csv"),
    DB_PATH: db,
    PERIOD_START: "1950-01-01",
  });
  const ours = (db: string, engine: string) =>
    measure(
      process.execPath,
      [...(profileDir ? ["--cpu-prof", "--cpu-prof-dir", profileDir] : []), cli, "run", "--json", "--engine", engine],
      { env: env(db), cwd: work },
    );
  const sqliteCli = (db: string, script: string) => measure("sqlite3", [db], { input: script });
  const psqlBin = path.join(postgresBinDir() ?? "/usr/bin", "psql");
  const psql = (url: string, script: string) =>
    measure(psqlBin, ["-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", "-d", url, "-f", "-"], { input: script });
  /** A database of the engine, empty: a file removed, or a database dropped and created again on the cluster. */
  const fresh = (name: string, engine = "sqljs") => {
    if (engine === "postgres") {
      if (cluster!.psql("postgres", `SELECT count(*) FROM pg_database WHERE datname = '${name}'`) === "1") {
        cluster!.psql("postgres", `DROP DATABASE ${name} WITH (FORCE)`);
      }
      return cluster!.createDatabase(name);
    }
    const db = path.join(work, name);
    for (const file of [db, `${db}.lock`, `${db}-wal`, `${db}-shm`, `${db}-journal`]) rmSync(file, { force: true });
    return db;
  };
  const pgResults = (url: string) =>
    cluster!.psql(
      new URL(url).pathname.slice(1),
      "SELECT count(*), sum(quantity) FROM sales; SELECT * FROM sales_by_store_product ORDER BY 1, 2; SELECT * FROM revenue_total; " +
        "SELECT * FROM sales_by_product ORDER BY 1; SELECT * FROM sales_by_city ORDER BY 1; SELECT * FROM sales_by_region ORDER BY 1",
    );

  const baseFull: Measure[] = [];
  const baseIncremental: Measure[] = [];
  const psqlFull: Measure[] = [];
  const psqlIncremental: Measure[] = [];
  const byEngine = new Map(
    engines.map((engine) => [engine, { full: [] as Measure[], incremental: [] as Measure[], unchanged: [] as Measure[] }]),
  );
  const sqliteEngines = engines.some((engine) => engine !== "postgres");
  let oursUrl = "";
  let baseUrl = "";
  for (let i = 0; i < repeat; i++) {
    for (const [engine, m] of byEngine) {
      const name = engine === "postgres" ? "ours_postgres" : `ours-${engine}.db`;
      server.file("/sales.csv", data.sales);
      const db = fresh(name, engine);
      if (engine === "postgres") oursUrl = db;
      m.full.push(await ours(db, engine));
      m.unchanged.push(await ours(db, engine));
      server.file("/sales.csv", data.grown);
      m.incremental.push(await ours(db, engine));
    }
    if (sqliteEngines) {
      baseFull.push(await sqliteCli(fresh("base.db"), baselineScript(work, path.join(work, "sales.csv"), false)));
      baseIncremental.push(await sqliteCli(path.join(work, "base.db"), baselineScript(work, path.join(work, "grown.csv"), true)));
    }
    if (cluster) {
      baseUrl = fresh("base_psql", "postgres");
      psqlFull.push(await psql(baseUrl, psqlScript(work, path.join(work, "sales.csv"), false)));
      psqlIncremental.push(await psql(baseUrl, psqlScript(work, path.join(work, "grown.csv"), true)));
    }
  }
  const baseline = sqliteEngines ? readBack(path.join(work, "base.db")) : "";
  const sqliteVersion = execFileSync("sqlite3", ["--version"], { encoding: "utf8" }).split(" ")[0];
  const psqlVersion = cluster ? execFileSync(psqlBin, ["--version"], { encoding: "utf8" }).trim() : undefined;
  console.log(
    `bench: ${rows} sales rows (${(statSync(path.join(work, "sales.csv")).size / 1e6).toFixed(1)} MB), median of ${repeat}; load average ${loadavg()
      .map((load) => load.toFixed(2))
      .join(" ")}`,
  );
  for (const [engine, { full, incremental, unchanged }] of byEngine) {
    const onServer = engine === "postgres";
    const [baseName, bFull, bIncremental] = onServer
      ? (["psql \\copy", psqlFull, psqlIncremental] as const)
      : (["sqlite3 CLI", baseFull, baseIncremental] as const);
    const agree = onServer ? pgResults(oursUrl) === pgResults(baseUrl) : readBack(path.join(work, `ours-${engine}.db`)) === baseline;
    const [bf, binc] = [bFull, bIncremental].map(medianOf) as [Measure, Measure];
    const [f, inc, un] = [full, incremental, unchanged].map(medianOf) as [Measure, Measure, Measure];
    const table = [
      [`measure (${engine})`, "ours", baseName, "ratio"],
      ["full ingest + analyses (s)", f.seconds.toFixed(2), bf.seconds.toFixed(2), (f.seconds / bf.seconds).toFixed(2)],
      ["re-run, 1% new rows (s)", inc.seconds.toFixed(2), binc.seconds.toFixed(2), (inc.seconds / binc.seconds).toFixed(2)],
      ["re-run, unchanged (s)", un.seconds.toFixed(2), "", ""],
      ["peak RSS, full (MB)", f.maxRssMb.toFixed(0), bf.maxRssMb.toFixed(0), (f.maxRssMb / bf.maxRssMb).toFixed(2)],
      ["peak RSS, 1% re-run (MB)", inc.maxRssMb.toFixed(0), binc.maxRssMb.toFixed(0), (inc.maxRssMb / binc.maxRssMb).toFixed(2)],
    ];
    const widths = table[0]!.map((_, i) => Math.max(...table.map((r) => r[i]!.length)));
    for (const row of table) console.log(row.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  "));
    console.log(`results agree with the ${baseName} (${engine}): ${agree ? "yes" : "NO"}`);
    writeFileSync(
      outFor(engine),
      JSON.stringify(
        {
          engine,
          rows,
          repeat,
          bytes: statSync(path.join(work, "sales.csv")).size,
          agree,
          ours: { full, incremental, unchanged, median: { full: f, incremental: inc, unchanged: un } },
          [onServer ? "psql" : "sqlite3"]: { full: bFull, incremental: bIncremental, median: { full: bf, incremental: binc } },
          ratios: { full: f.seconds / bf.seconds, incremental: inc.seconds / binc.seconds, rss: f.maxRssMb / bf.maxRssMb },
          machine: {
            node: process.versions.node,
            ...(onServer ? { psql: psqlVersion } : { sqliteCli: sqliteVersion }),
            cpus: cpus().length,
            cpu: cpus()[0]?.model,
            memoryGb: Math.round(totalmem() / 2 ** 30),
            loadAverage: { start: loadAtStart, end: loadavg().map((load) => Number(load.toFixed(2))) },
          },
          date: new Date().toISOString(),
        },
        null,
        2,
      ) + "\n",
    );
    console.log(`figures written to ${path.relative(process.cwd(), outFor(engine)) || outFor(engine)}`);
    if (!agree) process.exitCode = 1;
  }
} finally {
  await server.close();
  cluster?.stop();
  if (!keep) rmSync(work, { recursive: true, force: true });
}
