import { execFileSync, spawn } from "node:child_process";
import { once } from "node:events";
import { cpSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir, totalmem } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { startServer } from "../helpers/http-server.js";
import { median } from "../helpers/median.js";

// npm run bench [-- --rows N --repeat K --out FILE --engine sqljs|native]: our runner (on each storage
// engine; both by default) against the sqlite3 CLI on the same machine, in the same run, on a synthetic
// data set in the client's format. Prints a table of medians and ratios per engine, and writes each
// engine's figures as JSON beside FILE (default bench-results.json -> bench-results.sqljs.json, .native.json).

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
const engines = process.argv.includes("--engine") ? [arg("engine", "sqljs")] : ["sqljs", "native"];
if (engines.some((engine) => engine !== "sqljs" && engine !== "native")) throw new Error(`--engine takes sqljs or native`);
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

const results =
  "SELECT count(*), sum(quantity) FROM sales; SELECT * FROM sales_by_store_product; SELECT * FROM revenue_total; SELECT * FROM sales_by_product; SELECT * FROM sales_by_city; SELECT * FROM sales_by_region;";
const readBack = (db: string) => execFileSync("sqlite3", ["-batch", db, results], { encoding: "utf8", maxBuffer: 64 << 20 });

const server = await startServer();
const work = mkdtempSync(path.join(tmpdir(), "bench-"));
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
  const fresh = (name: string) => {
    const db = path.join(work, name);
    for (const file of [db, `${db}.lock`, `${db}-wal`, `${db}-shm`, `${db}-journal`]) rmSync(file, { force: true });
    return db;
  };

  const baseFull: Measure[] = [];
  const baseIncremental: Measure[] = [];
  const byEngine = new Map(
    engines.map((engine) => [engine, { full: [] as Measure[], incremental: [] as Measure[], unchanged: [] as Measure[] }]),
  );
  for (let i = 0; i < repeat; i++) {
    for (const [engine, m] of byEngine) {
      const db = path.join(work, `ours-${engine}.db`);
      server.file("/sales.csv", data.sales);
      m.full.push(await ours(fresh(`ours-${engine}.db`), engine));
      m.unchanged.push(await ours(db, engine));
      server.file("/sales.csv", data.grown);
      m.incremental.push(await ours(db, engine));
    }
    baseFull.push(await sqliteCli(fresh("base.db"), baselineScript(work, path.join(work, "sales.csv"), false)));
    baseIncremental.push(await sqliteCli(path.join(work, "base.db"), baselineScript(work, path.join(work, "grown.csv"), true)));
  }
  const [bf, binc] = [baseFull, baseIncremental].map(medianOf) as [Measure, Measure];
  const baseline = readBack(path.join(work, "base.db"));
  const sqliteVersion = execFileSync("sqlite3", ["--version"], { encoding: "utf8" }).split(" ")[0];
  console.log(
    `bench: ${rows} sales rows (${(statSync(path.join(work, "sales.csv")).size / 1e6).toFixed(1)} MB), median of ${repeat}; load average ${loadavg()
      .map((load) => load.toFixed(2))
      .join(" ")}`,
  );
  for (const [engine, { full, incremental, unchanged }] of byEngine) {
    const agree = readBack(path.join(work, `ours-${engine}.db`)) === baseline;
    const [f, inc, un] = [full, incremental, unchanged].map(medianOf) as [Measure, Measure, Measure];
    const table = [
      [`measure (${engine})`, "ours", "sqlite3 CLI", "ratio"],
      ["full ingest + analyses (s)", f.seconds.toFixed(2), bf.seconds.toFixed(2), (f.seconds / bf.seconds).toFixed(2)],
      ["re-run, 1% new rows (s)", inc.seconds.toFixed(2), binc.seconds.toFixed(2), (inc.seconds / binc.seconds).toFixed(2)],
      ["re-run, unchanged (s)", un.seconds.toFixed(2), "", ""],
      ["peak RSS, full (MB)", f.maxRssMb.toFixed(0), bf.maxRssMb.toFixed(0), (f.maxRssMb / bf.maxRssMb).toFixed(2)],
      ["peak RSS, 1% re-run (MB)", inc.maxRssMb.toFixed(0), binc.maxRssMb.toFixed(0), (inc.maxRssMb / binc.maxRssMb).toFixed(2)],
    ];
    const widths = table[0]!.map((_, i) => Math.max(...table.map((r) => r[i]!.length)));
    for (const row of table) console.log(row.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  "));
    console.log(`results agree with the sqlite3 CLI (${engine}): ${agree ? "yes" : "NO"}`);
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
          sqlite3: { full: baseFull, incremental: baseIncremental, median: { full: bf, incremental: binc } },
          ratios: { full: f.seconds / bf.seconds, incremental: inc.seconds / binc.seconds, rss: f.maxRssMb / bf.maxRssMb },
          machine: {
            node: process.versions.node,
            sqliteCli: sqliteVersion,
            cpus: cpus().length,
            cpu: cpus()[0]?.model,
            memoryGb: Math.round(totalmem() / 2 ** 30),
            loadAverage: loadavg().map((load) => Math.round(load * 100) / 100),
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
  rmSync(work, { recursive: true, force: true });
}
