import { statSync } from "node:fs";
import path from "node:path";
import type { SqlDatabase, SqlValue } from "./db/database.js";
import { didYouMean } from "./errors.js";
import { systemTableNames } from "./history.js";
import { fileKind, readRegularFileSync } from "./paths.js";
import type { CheckContext } from "./step.js";

/** Named parameters SQL in a step may use. */
export const sqlParameters = ["run_id", "run_started_at"] as const;

/** The values of the named parameters during a run. */
export type SqlParameterValues = Record<(typeof sqlParameters)[number], SqlValue>;

/** The parameters' values where no run gives them: to compile a query or read its program. */
export const noRunValues: SqlParameterValues = { run_id: 0, run_started_at: "" };

/** The SQL of a step: from `file` (relative to the pipeline file) or inline `sql`. */
export function readSqlText(spec: { file?: string | undefined; sql?: string | undefined }, baseDir: string): string {
  return spec.file === undefined ? (spec.sql ?? "") : readRegularFileSync(path.resolve(baseDir, spec.file));
}

/** Why a step's SQL file cannot be read (missing, a FIFO, a directory...), or undefined when it is a regular file. */
export function sqlFileProblem(file: string, baseDir: string): string | undefined {
  try {
    // why: stat never blocks, even on a FIFO; reading one would wait for a writer forever.
    const info = statSync(path.resolve(baseDir, file));
    return info.isFile() ? undefined : `SQL file ${file} is ${fileKind(info)}, not a regular file; name a .sql file`;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return `SQL file ${file} does not exist (relative paths start at ${baseDir})`;
    return `SQL file ${file} cannot be read: ${(error as Error).message}`;
  }
}

/** The parameters a statement uses, with their values. */
export function parametersOf(sql: string, values: SqlParameterValues): Record<string, SqlValue> {
  const used: Record<string, SqlValue> = {};
  for (const [, name] of sql.matchAll(/[:@$]([A-Za-z_]\w*)/g)) {
    if (name && name in values) used[name] = values[name as keyof typeof values];
  }
  return used;
}

/** `:names` in the SQL that are not parameters the runner provides. */
export function unknownParameters(sql: string): string[] {
  const names = [...sql.matchAll(/(?<![\w'"]):([A-Za-z_]\w*)/g)].map((m) => m[1]!);
  return names.filter((name) => !(sqlParameters as readonly string[]).includes(name));
}

/** A message listing the parameters available. */
export function parametersHint(): string {
  return `available: ${sqlParameters.map((p) => ":" + p).join(", ")}`;
}

/** Compiles one query against the scratch database: its result columns, or why it does not compile (undefined: reported elsewhere). */
export function compileQuery(context: CheckContext, sql: string, label: string): { columns: string[] } | { error: string | undefined } {
  try {
    const statements = context.scratch.statements(sql);
    if (statements.length !== 1) return { error: `${label} must hold exactly one SELECT; it holds ${statements.length} statements` };
    const compiled = context.scratch.prepare(statements[0]!);
    const columns = compiled.columnNames();
    compiled.free();
    if (columns.length === 0) return { error: `${label} must be a query that returns rows` };
    return { columns };
  } catch (error) {
    return { error: explainCompileError(context, (error as Error).message) };
  }
}

/** Opcodes only a statement that changes the database compiles to: b-tree, schema, journal and virtual-table writes. */
const writeOpcodes = new Set([
  "OpenWrite",
  "JournalMode",
  "Vacuum",
  "Checkpoint",
  "VUpdate",
  "VCreate",
  "VDestroy",
  "CreateBtree",
  "Destroy",
  "Clear",
  "ParseSchema",
  "SetCookie",
]);

/**
 * Whether one statement would change the database, read from its compiled program (EXPLAIN): a
 * write transaction (`Transaction` with P2 > 0, as sqlite3_stmt_readonly reads it; sql.js does not
 * expose that call) or a writing opcode. Nothing runs. A SELECT's temporary b-trees (ORDER BY,
 * DISTINCT) are not the database and do not count.
 */
export function writesDatabase(db: SqlDatabase, statement: string): boolean {
  if (/^\s*EXPLAIN\b/i.test(statement)) return false; // why: an EXPLAIN only describes its statement; it never runs it.
  if (db.dialect) return db.dialect.writesDatabase(db, statement);
  return db
    .all(`EXPLAIN ${statement}`)
    .some((op) => (op["opcode"] === "Transaction" && op["p2"] !== 0) || writeOpcodes.has(String(op["opcode"])));
}

/** Checks a script by running it on the scratch database, then rolling it back. */
export function checkScript(context: CheckContext, sql: string): string | undefined {
  context.scratch.exec("SAVEPOINT check_script");
  try {
    context.scratch.runScript(sql, noRunValues);
    return undefined;
  } catch (error) {
    return explainCompileError(context, (error as Error).message);
  } finally {
    context.scratch.exec("ROLLBACK TO check_script; RELEASE check_script");
  }
}

/** Says why SQL does not compile against the tables earlier steps write; undefined when already reported elsewhere. */
export function explainCompileError(context: CheckContext, message: string): string | undefined {
  const missing = /no such table: (?:main\.)?(\S+)/.exec(message)?.[1];
  if (!missing) return message;
  if (context.written.has(missing)) return undefined; // why: its declaration is broken, and reported as such.
  if (missing in context.pipeline.tables || systemTableNames.has(missing)) return `reads table ${missing}, which no earlier step writes`;
  return `${message}${didYouMean(missing, [...context.written, ...systemTableNames])}`;
}
