import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { inject } from "vitest";
import { main, type Io } from "../../engine/main.js";
import { postgresBinDir } from "./postgres.js";

/** The repository root. */
export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
/** The client's files, byte-exact. */
export const clientFixtures = path.join(root, "tests/fixtures/client");
/**
 * The suite's own copy of the client's pipeline (pipeline.yaml, sql/, data/): the one at the root is
 * the user's example to edit, so an edit there never breaks a test (docs/regenerate.sh uses this copy too).
 */
export const clientPipeline = path.join(root, "tests/fixtures/client-pipeline");

/** The pipeline's URL variables pointing at the client's files inside a workspace, once {@link Workspace.copyClientFiles} put them there. */
export const clientFileEnv: Readonly<Record<string, string>> = {
  PRODUCTS_URL: "tests/fixtures/client/produits.csv",
  STORES_URL: "tests/fixtures/client/magasins.csv",
  SALES_URL: "tests/fixtures/client/ventes.csv",
};

/** The storage engines the pipeline-level tests run on. */
export type TestEngine = "sqljs" | "native" | "postgres";

/**
 * The storage engine the pipeline-level tests run on: PIPELINE_ENGINE (the vitest projects set it),
 * sqljs by default. On postgres each workspace gets its own databases on the project's cluster
 * (tests/helpers/postgres-global.ts), and {@link Workspace.cli} points the CLI at them with --db.
 */
export const testEngine: TestEngine = ((engine) => (engine === "native" || engine === "postgres" ? engine : "sqljs"))(
  process.env["PIPELINE_ENGINE"],
);

/** Whether the tests run against the PostgreSQL server rather than a SQLite file. */
export const onPostgres = testEngine === "postgres";

let databasesMade = 0;

/** What one in-process CLI call printed and returned. */
export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** A temporary directory holding a copy of the client's pipeline (pipeline.yaml, sql/, data/) from {@link clientPipeline}. */
export class Workspace {
  readonly dir: string;
  /** On postgres: the database standing for each file name a test uses ("" for the pipeline's own), created on first use. */
  private readonly databases = new Map<string, string>();

  constructor(options: { withClientPipeline?: boolean } = {}) {
    this.dir = mkdtempSync(path.join(tmpdir(), "pipeline-test-"));
    if (options.withClientPipeline ?? true) {
      cpSync(clientPipeline, this.dir, { recursive: true });
    }
  }

  /** Copies the client's three files to tests/fixtures/client/ inside the workspace, where {@link clientFileEnv} points. */
  copyClientFiles(): void {
    cpSync(clientFixtures, this.path("tests/fixtures/client"), { recursive: true });
  }

  path(...parts: string[]): string {
    return path.join(this.dir, ...parts);
  }

  write(file: string, text: string): string {
    const target = this.path(file);
    mkdirSync(path.dirname(target), { recursive: true });
    writeFileSync(target, text);
    return target;
  }

  /**
   * On postgres, the URL of the database that stands for `file` in this workspace (one database on
   * the cluster per name; "" is the pipeline's own database), created on first use.
   */
  databaseUrl(file = ""): string {
    const known = this.databases.get(file);
    if (known) return known;
    // why: vitest loads this module afresh for each test file of a worker, so the count alone may repeat.
    const name = `ws_${process.pid}_${++databasesMade}_${randomBytes(4).toString("hex")}`;
    const server = inject("postgresUrl");
    psql(server, `CREATE DATABASE ${name}`);
    const url = server.replace(/\/postgres$/, `/${name}`);
    this.databases.set(file, url);
    return url;
  }

  /**
   * The command line as the engine under test needs it: on postgres, `--db FILE` becomes that
   * file's own database on the server, and without --db the workspace's database is added.
   */
  argv(argv: readonly string[]): string[] {
    if (!onPostgres) return [...argv];
    const at = argv.indexOf("--db");
    if (at < 0) return [...argv, "--db", this.databaseUrl()];
    const named = argv[at + 1] ?? "";
    return /^postgres(ql)?:\/\//.test(named) ? [...argv] : argv.map((arg, i) => (i === at + 1 ? this.databaseUrl(named) : arg));
  }

  /**
   * Runs SQL on the database a run wrote, whatever the engine: the sqlite3 CLI on `file` (relative
   * to the workspace), or psql on the database standing for it on postgres (the one given to --db
   * under that name, else the workspace's own). The output is normalised so one assertion holds on
   * both: `|` between columns, booleans as 1/0, numbers without trailing zeros (5268.780 and 1999.0
   * read 5268.78 and 1999).
   */
  query(sql: string, file = "output/sales.db"): string {
    const out = onPostgres ? psql(this.databases.get(file) ?? this.databaseUrl(), sql) : sqlite(this.path(file), sql);
    return out
      .split("\n")
      .map((line) =>
        line
          .split("|")
          .map(onPostgres ? (cell) => normaliseCell(cell.replace(/^t$/, "1").replace(/^f$/, "0")) : normaliseCell)
          .join("|"),
      )
      .join("\n");
  }

  /** The rows of a query as objects (`sqlite3 -json`, or psql's json_agg on postgres); see {@link Workspace.query} for `file`. */
  rows(sql: string, file = "output/sales.db"): Record<string, unknown>[] {
    const out = onPostgres
      ? psql(this.databases.get(file) ?? this.databaseUrl(), `SELECT coalesce(json_agg(r), '[]') FROM (${sql}) r`)
      : execFileSync("sqlite3", ["-json", "-bail", this.path(file), sql], { encoding: "utf8", maxBuffer: 256 * 1024 * 1024 }).trim();
    return out === "" ? [] : (JSON.parse(out) as Record<string, unknown>[]);
  }

  /**
   * What the database holds, to compare before and after: the file's bytes on SQLite (undefined
   * when absent); on postgres every table's rows but the records of failed runs, which the server
   * keeps at once where SQLite journals them beside the file (undefined when no declared table exists
   * and no row but those).
   */
  state(file = "output/sales.db"): Buffer | string | undefined {
    if (!onPostgres) return this.bytes(file);
    const url = this.databases.get(file) ?? this.databaseUrl();
    // why: on the server a failed run is recorded at once (its run, steps and checks) where SQLite journals it beside the file.
    const union = psql(
      url,
      `SELECT string_agg(format('SELECT %L || '': '' || t::text FROM %I t', tablename, tablename) || CASE tablename
         WHEN 'pipeline_runs' THEN ' WHERE ${notFailed}' WHEN 'pipeline_run_steps' THEN ' WHERE ${notFailed}'
         WHEN 'pipeline_check_results' THEN ' WHERE ${notFailed}' ELSE '' END,
       ' UNION ALL ') FROM pg_tables WHERE schemaname = 'public'`,
    );
    const others = psql(url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename NOT LIKE 'pipeline\\_%'");
    const rows = union === "" ? "" : psql(url, `${union} ORDER BY 1`);
    return others === "0" && rows === "" ? undefined : rows;
  }

  /** Runs the CLI in-process with this directory as cwd and the given environment (and, when given, a fixed clock); see {@link Workspace.argv}. */
  async cli(argv: string[], env: Record<string, string | undefined> = {}, options: { now?: () => Date } = {}): Promise<CliResult> {
    argv = this.argv(argv);
    let stdout = "";
    let stderr = "";
    const io: Io = {
      stdout: { write: (text: string) => (stdout += text) },
      stderr: { write: (text: string) => (stderr += text) },
      env: { NO_COLOR: "1", PIPELINE_ENGINE: testEngine, ...env },
      cwd: this.dir,
      ...(options.now ? { now: options.now } : {}),
    };
    const code = await main(argv, io);
    return { code, stdout, stderr };
  }

  /** The database file's bytes, or undefined when it does not exist. */
  bytes(file = "output/sales.db"): Buffer | undefined {
    return existsSync(this.path(file)) ? readFileSync(this.path(file)) : undefined;
  }

  /** Removes the directory, and on postgres the workspace's databases. */
  remove(): void {
    rmSync(this.dir, { recursive: true, force: true });
    if (onPostgres) {
      const server = inject("postgresUrl");
      for (const url of this.databases.values())
        psql(server, `DROP DATABASE IF EXISTS ${url.slice(url.lastIndexOf("/") + 1)} WITH (FORCE)`);
      this.databases.clear();
    }
  }
}

/** Runs SQL with the real sqlite3 CLI and returns its output (`-separator |`, no header). */
export function sqlite(database: string, sql: string): string {
  return execFileSync("sqlite3", ["-batch", "-bail", database, sql], { encoding: "utf8", maxBuffer: 256 * 1024 * 1024 }).trimEnd();
}

/** Runs SQL with the real psql client on a database URL and returns its output (unaligned, no header, `|` between columns). */
export function psql(url: string, sql: string): string {
  const bin = postgresBinDir();
  if (!bin) throw new Error("PostgreSQL is not installed (apt-get install postgresql); .ci/run installs it");
  return execFileSync(path.join(bin, "psql"), ["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql], {
    encoding: "utf8",
    maxBuffer: 256 * 1024 * 1024,
  }).trimEnd();
}

/** A condition (quoted for format()) keeping the rows of runs that did not fail or stop. */
const notFailed = "run_id NOT IN (SELECT run_id FROM pipeline_runs WHERE status IN (''failed'', ''interrupted''))";

/** A number written with a fractional part loses its trailing zeros (and its point when nothing is left after it). */
function normaliseCell(cell: string): string {
  return /^-?\d+\.\d+$/.test(cell) ? cell.replace(/0+$/, "").replace(/\.$/, "") : cell;
}
