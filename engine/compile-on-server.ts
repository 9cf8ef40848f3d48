import path from "node:path";
import type { Pipeline, StepSpec, TableSpec } from "./config/schema.js";
import { isConstraintViolation } from "./db/database.js";
import type { EngineName } from "./db/engines/index.js";
import { PgServerError } from "./db/pg/sync-connection.js";
import { preview } from "./db/session.js";
import { splitStatements } from "./db/split-sql.js";
import { ensureTables } from "./db/tables.js";
import type { Diagnostic } from "./errors.js";
import { systemTables } from "./history.js";
import { readSqlText } from "./sql-source.js";
import type { StepDefinition } from "./step.js";

/** One piece of SQL the pipeline runs, with where it is written. */
interface QueryText {
  label: string;
  file?: string | undefined;
  sql: string;
}

/** The SQL texts a pipeline runs: each step's queries and the sql checks, in order. */
function queryTexts(pipeline: Pipeline, baseDir: string, typeOf: (step: StepSpec) => StepDefinition): QueryText[] {
  const texts: QueryText[] = [];
  const add = (label: string, spec: { file?: string | undefined; sql?: string | undefined }) =>
    texts.push({ label: spec.file ?? label, file: spec.file, sql: readSqlText(spec, baseDir) });
  for (const step of pipeline.steps) for (const query of typeOf(step).queries?.(step) ?? []) add(query.label, query);
  for (const [table, spec] of Object.entries(pipeline.tables as Record<string, TableSpec>)) {
    for (const check of spec.checks ?? []) if (check.check === "sql") add(`check on ${table}`, check);
  }
  return texts;
}

/**
 * Compiles every query of the pipeline against the server's own planner: the tables are created
 * and each statement run (every parameter NULL) on them, in one transaction that is always rolled
 * back. Returns one E_SQL diagnostic per statement the server refuses, at its file:line:col.
 */
export async function compileOnServer(
  pipeline: Pipeline,
  baseDir: string,
  database: string,
  engine: EngineName,
  lockTimeoutMs: number,
  typeOf: (step: StepSpec) => StepDefinition,
): Promise<Diagnostic[]> {
  const texts = queryTexts(pipeline, baseDir, typeOf);
  return preview(database, engine, lockTimeoutMs, (db) => {
    ensureTables(db, pipeline.tables as Record<string, TableSpec>);
    ensureTables(db, systemTables as Record<string, TableSpec>, { addColumns: true });
    const diagnostics: Diagnostic[] = [];
    for (const text of texts) {
      let from = 0;
      for (const statement of splitStatements(text.sql)) {
        const offset = text.sql.indexOf(statement, from);
        from = offset + statement.length;
        db.exec("SAVEPOINT compile");
        try {
          db.run(statement, {});
        } catch (error) {
          if (isConstraintViolation(db, error)) continue; // why: it compiled; only the NULL parameters broke a constraint.
          const position = error instanceof PgServerError && error.position !== undefined ? offset + error.position - 1 : offset;
          const before = text.sql.slice(0, position).split("\n");
          diagnostics.push({
            code: "E_SQL",
            message: `${text.label}: the server refuses it: ${(error as Error).message}`,
            ...(text.file !== undefined
              ? { place: { file: path.resolve(baseDir, text.file), line: before.length, col: before.at(-1)!.length + 1 } }
              : {}),
          });
        } finally {
          db.exec("ROLLBACK TO compile; RELEASE compile");
        }
      }
    }
    return diagnostics;
  });
}
