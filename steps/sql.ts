import type { SqlStepSpec } from "../engine/config/schema.js";
import { quoteIdent, type SqlDatabase } from "../engine/db/database.js";
import { isRequired } from "../engine/db/tables.js";
import { statementBody } from "../engine/db/split-sql.js";
import { didYouMean, PipelineError, type Diagnostic } from "../engine/errors.js";
import {
  checkScript,
  compileQuery,
  parametersHint,
  parametersOf,
  readSqlText,
  sqlFileProblem,
  unknownParameters,
} from "../engine/sql-source.js";
import type { CheckContext, StepDefinition, StepOutcome } from "../engine/step.js";
import { checkIncremental, runOnAppendedRows } from "./sql-incremental.js";

/** `type: sql`: runs a query from sql/ (or inline) and stores its rows `into:` a declared table. */
export const sqlStep: StepDefinition<SqlStepSpec> = {
  type: "sql",

  describe(step) {
    const what = step.file ?? "inline SQL";
    return step.into ? `sql ${what} -> ${step.into} (${step.mode ?? "replace"})` : `sql ${what}`;
  },

  details(step) {
    const details: [string, string][] = [["sql", step.file ?? (step.sql ?? "").trim().split("\n")[0]!]];
    if (step.into) details.push(["into", `${step.into} (${step.mode ?? "replace"})`]);
    const incremental = step.incremental;
    if (incremental)
      details.push([
        "incremental",
        `rows appended to ${incremental.appended}, merged on ${incremental.key.join(", ")}, adding ${incremental.add.join(", ")}`,
      ]);
    return details;
  },

  writes: (step) => (step.into ? [step.into] : []),
  writesUndeclared: (step) => step.into === undefined,
  inputs: (step) => (step.file ? [{ file: step.file, what: "the SQL file" }] : []),
  reads: (step, context) => context.tablesRead(readSqlText(step, context.baseDir)),
  queries: (step) => [{ label: `step ${step.name}`, file: step.file, sql: step.sql }],
  derived: true,

  check(step, context) {
    const problems: Diagnostic[] = [];
    const problem = (message: string, subpath: (string | number)[], key?: string, code: Diagnostic["code"] = "E_CONFIG") =>
      problems.push({ code, message, place: context.at(subpath, key) });
    if ((step.file === undefined) === (step.sql === undefined)) {
      problem("a sql step needs exactly one of file: or sql:", []);
      return problems;
    }
    const unreadable = step.file === undefined ? undefined : sqlFileProblem(step.file, context.config.baseDir);
    if (unreadable) {
      problem(unreadable, ["file"]);
      return problems;
    }
    if (step.mode !== undefined && step.into === undefined) problem("mode applies only with into:", [], "mode");
    const into = step.into === undefined ? undefined : context.pipeline.tables[step.into];
    if (step.into !== undefined && !into) {
      problem(`table "${step.into}" is not declared under tables:${didYouMean(step.into, Object.keys(context.pipeline.tables))}`, ["into"]);
      return problems;
    }
    const where = step.file ? ["file"] : ["sql"];
    const sql = readSqlText(step, context.config.baseDir);
    for (const name of unknownParameters(sql)) problem(`unknown parameter :${name} in ${step.file ?? "sql"}; ${parametersHint()}`, where);
    if (sql.trim() === "") problem(`${step.file ?? "sql"} holds no SQL`, where);
    if (into && step.mode === "history") {
      for (const [column, type] of Object.entries(historyStamps)) {
        if (into.columns[column]?.type !== type)
          problem(
            `with mode: history, table ${step.into} needs a column ${column} of type ${type}: the step fills it for every row it keeps`,
            ["into"],
          );
      }
    }
    const message = into ? checkQuery(context, sql, step.into!, step.file ?? "sql", step.mode === "history") : checkScript(context, sql);
    if (message) problem(`${step.file ?? "sql"}: ${message}`, where, undefined, "E_SQL");
    else if (step.incremental) problems.push(...checkIncremental(step, sql, context));
    return problems;
  },

  async execute(step, context) {
    const sql = readSqlText(step, context.config.baseDir);
    const values = { run_id: context.runId, run_started_at: context.startedAt };
    const { db } = context;
    try {
      if (!step.into) {
        db.runScript(sql, values);
        return { status: "success", counts: {} };
      }
      if (step.mode === "history") return keepHistory(db, step.into, sql, values);
      const merged = step.incremental && runOnAppendedRows(db, { ...step, into: step.into, incremental: step.incremental }, sql, context);
      if (merged && "status" in merged) return merged;
      const deleted = (step.mode ?? "replace") === "replace" ? db.run(`DELETE FROM ${quoteIdent(step.into)}`) : undefined;
      const inserted = db.run(insertSelect(db, step.into, sql), parametersOf(sql, values));
      const counts = deleted === undefined ? { inserted } : { deleted, inserted };
      if (!merged) return { status: "success", counts };
      return { status: "success", counts, detail: `in full: ${merged.full}`, incremental: merged };
    } catch (error) {
      if (error instanceof PipelineError) throw error;
      throw new PipelineError("E_SQL", `${step.file ?? "sql"}: ${(error as Error).message}`, { cause: error });
    }
  },
};

/** `INSERT INTO into (columns of the query) <query>`, with the columns named by the query itself. */
function insertSelect(db: SqlDatabase, into: string, select: string): string {
  const statement = db.prepare(select);
  const columns = statement.columnNames();
  statement.free();
  const body = statementBody(select);
  return `INSERT INTO ${quoteIdent(into)} (${columns.map(quoteIdent).join(", ")}) ${body}`;
}

/** The columns a `mode: history` step fills itself, with their declared type. */
const historyStamps = { run_id: "integer", run_started_at: "text" } as const;

/**
 * `mode: history`: adds the query's rows stamped with the run and its start time, only when they
 * differ from the rows the last stamped run kept (compared as sets, column by column), so the table
 * holds one snapshot per run that changed the figures.
 */
function keepHistory(db: SqlDatabase, into: string, sql: string, values: { run_id: number; run_started_at: string }): StepOutcome {
  const statement = db.prepare(sql);
  const columns = statement.columnNames();
  statement.free();
  // why: every subquery in FROM is named and the stamps are cast, so that PostgreSQL compiles the same text.
  const query = `SELECT * FROM (\n${statementBody(sql)}\n) AS query`;
  const table = quoteIdent(into);
  const last = db.all(`SELECT max(run_id) AS last FROM ${table}`)[0]?.["last"];
  if (last !== null && last !== undefined) {
    const stored = `SELECT ${columns.map(quoteIdent).join(", ")} FROM ${table} WHERE run_id = ${Number(last)}`;
    const compare = `SELECT (SELECT count(*) FROM (${query}) AS q) = (SELECT count(*) FROM (${stored}) AS s)
      AND NOT EXISTS (${query} EXCEPT ${stored}) AND NOT EXISTS (${stored} EXCEPT ${query}) AS same`;
    if (db.all(compare, parametersOf(compare, values))[0]?.["same"] === 1)
      return { status: "unchanged", counts: { inserted: 0 }, detail: `figures unchanged since run ${Number(last)}` };
  }
  const insert = `INSERT INTO ${table} ("run_id", "run_started_at", ${columns.map(quoteIdent).join(", ")})
    SELECT CAST(:run_id AS BIGINT), CAST(:run_started_at AS TEXT), * FROM (${query}) AS rows`;
  return { status: "success", counts: { inserted: db.run(insert, parametersOf(insert, values)) } };
}

/** Checks that a query for into: compiles and returns the target table's columns (with `stamped`, all but run_id and run_started_at, which the step fills). */
function checkQuery(context: CheckContext, sql: string, into: string, label: string, stamped = false): string | undefined {
  const compiled = compileQuery(context, sql, `with into:, ${label}`);
  if ("error" in compiled) return compiled.error;
  const { columns } = compiled;
  const table = context.pipeline.tables[into]!;
  const stamps = stamped ? columns.filter((c) => c in historyStamps) : [];
  if (stamps.length > 0)
    return `with mode: history, the step fills ${stamps.join(" and ")} itself; do not select ${stamps.length > 1 ? "them" : "it"}`;
  const unknown = columns.filter((c) => !(c in table.columns));
  if (unknown.length > 0) {
    return `the query returns column${unknown.length > 1 ? "s" : ""} ${unknown.join(", ")}, not in table ${into}${didYouMean(unknown[0]!, Object.keys(table.columns))}`;
  }
  const missing = Object.keys(table.columns).filter(
    (c) => isRequired(table, c) && !columns.includes(c) && !(stamped && c in historyStamps),
  );
  if (missing.length > 0)
    return `the query does not return required column${missing.length > 1 ? "s" : ""} ${missing.join(", ")} of table ${into}`;
  return undefined;
}
