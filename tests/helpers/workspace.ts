import { execFileSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { main, type Io } from "../../engine/main.js";

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

/** The storage engine the pipeline-level tests run on: PIPELINE_ENGINE (the vitest projects set it), sqljs by default. */
export const testEngine: "sqljs" | "native" = process.env["PIPELINE_ENGINE"] === "native" ? "native" : "sqljs";

/** What one in-process CLI call printed and returned. */
export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** A temporary directory holding a copy of the client's pipeline (pipeline.yaml, sql/, data/) from {@link clientPipeline}. */
export class Workspace {
  readonly dir: string;

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

  /** Runs the CLI in-process with this directory as cwd and the given environment (and, when given, a fixed clock). */
  async cli(argv: string[], env: Record<string, string | undefined> = {}, options: { now?: () => Date } = {}): Promise<CliResult> {
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

  remove(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Runs SQL with the real sqlite3 CLI and returns its output (`-separator |`, no header). */
export function sqlite(database: string, sql: string): string {
  return execFileSync("sqlite3", ["-batch", "-bail", database, sql], { encoding: "utf8", maxBuffer: 256 * 1024 * 1024 }).trimEnd();
}
