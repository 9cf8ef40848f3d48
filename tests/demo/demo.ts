import { execFileSync, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { startServer } from "../helpers/http-server.js";

// The brief's demo, in a terminal: an empty database, the pipeline run with its logs, the tables
// and results read back with the sqlite3 CLI, a second run that imports nothing, then a new sale.
// Usage: npm run demo [-- --pause MS]

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const fixtures = path.join(root, "tests/fixtures/client");
const cli = path.join(root, "dist/engine/cli.js");
const pauseArg = process.argv.indexOf("--pause");
const pause = pauseArg > 0 ? Number(process.argv[pauseArg + 1]) : process.stdout.isTTY ? 1500 : 0;
const bold = (text: string) => (process.stdout.isTTY && !process.env["NO_COLOR"] ? `\x1b[1m${text}\x1b[0m` : text);

const server = await startServer();
for (const name of ["produits", "magasins", "ventes"]) server.file(`/${name}.csv`, readFileSync(path.join(fixtures, `${name}.csv`)));
const work = mkdtempSync(path.join(tmpdir(), "demo-"));
const database = path.join(work, "sales.db");
const env = {
  ...process.env,
  PRODUCTS_URL: server.url("/produits.csv"),
  STORES_URL: server.url("/magasins.csv"),
  SALES_URL: server.url("/ventes.csv"),
  DB_PATH: database,
  REPORT_DIR: path.join(work, "reports"),
};

async function chapter(title: string): Promise<void> {
  await sleep(pause);
  console.log(`\n${bold(`== ${title} ==`)}  (${new Date().toLocaleString("fr-FR", { timeZone: "Europe/Paris" })})\n`);
}

/** Runs a command with its output on this terminal; async, so this process's HTTP server keeps answering. */
async function shell(command: string, args: string[]): Promise<void> {
  console.log(`$ ${command} ${args.map((a) => (/[\s*;()']/.test(a) ? `"${a}"` : a)).join(" ")}`);
  const child = spawn(command, args, { stdio: "inherit", env, cwd: root });
  const [code] = (await once(child, "exit")) as [number | null];
  if (code !== 0) throw new Error(`${command} exited ${code}`);
}

const sqlite = (sql: string) => shell("sqlite3", ["-box", database, sql]);

try {
  console.log(bold("Démo : analyser les ventes d'une PME"));
  console.log(`Les trois exports du client sont servis en local : ${server.url("/")}{produits,magasins,ventes}.csv`);
  console.log(`Base de données : ${database}`);

  await chapter("1. La base de données, vide");
  execFileSync("sqlite3", [database, "VACUUM"]);
  await sqlite(".tables");
  console.log("(aucune table)");

  await chapter("2. Le pipeline : import HTTP, chargement, analyses");
  await shell("node", [cli, "run"]);

  await chapter("3. Les tables et les résultats, lus avec le CLI sqlite3");
  await sqlite(".tables");
  await sqlite(
    "SELECT (SELECT count(*) FROM products) AS produits, (SELECT count(*) FROM stores) AS magasins, (SELECT count(*) FROM sales) AS ventes;",
  );
  await sqlite("SELECT period_start, period_end, sales_lines, quantity, revenue FROM revenue_total;");
  await sqlite("SELECT name, quantity, revenue, revenue_share_pct FROM sales_by_product;");
  await sqlite("SELECT city, region, quantity, revenue FROM sales_by_city;");
  await sqlite("SELECT region, quantity, revenue FROM sales_by_region;");

  await chapter("4. Deuxième exécution : rien de nouveau, rien n'est importé");
  await shell("node", [cli, "run"]);
  await sqlite("SELECT count(*) AS ventes FROM sales; SELECT run_id, status, started_at FROM pipeline_runs;");

  await chapter("5. Le fichier des ventes s'actualise : deux nouvelles ventes");
  server.file(
    "/ventes.csv",
    readFileSync(path.join(fixtures, "ventes.csv"), "utf8") + "\r\n2023-06-26,REF004,3,1\r\n2023-06-26,REF002,2,5",
  );
  await shell("node", [cli, "run"]);
  await sqlite("SELECT count(*) AS ventes, (SELECT revenue FROM revenue_total) AS chiffre_affaires FROM sales;");
  console.log(`\nLa fiche synthèse : ${path.join(work, "reports/fiche-synthese.html")}`);
  console.log(bold("\nFin de la démo."));
} finally {
  await server.close();
  if (!process.argv.includes("--keep")) rmSync(work, { recursive: true, force: true });
}
