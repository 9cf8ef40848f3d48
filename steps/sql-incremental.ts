import { steadyInputs, tablesRead } from "../engine/checks.js";
import type { SqlStepSpec } from "../engine/config/schema.js";
import { quoteIdent, type SqlDatabase } from "../engine/db/database.js";
import { statementBody } from "../engine/db/split-sql.js";
import { didYouMean, type Diagnostic } from "../engine/errors.js";
import type { CheckContext, IncrementalResult, RunContext, StepOutcome } from "../engine/step.js";

/** A sql step with a declared incremental policy. */
export type IncrementalSqlStep = SqlStepSpec & { into: string; incremental: NonNullable<SqlStepSpec["incremental"]> };

/** Words whose query is not a sum over rows grouped by key: its result on the appended rows cannot be added to the stored one. */
const notAdditive = ["HAVING", "LIMIT", "OFFSET", "DISTINCT", "OVER", "EXCEPT", "INTERSECT"];

/** The column types a sum stays exact in (decimal is stored as an integer of its smallest unit). */
const exactTypes = new Set(["integer", "decimal"]);

/**
 * Checks an `incremental:` policy before anything runs: with `into:` and mode replace, `appended` a
 * declared table the query reads (not `into`), `key` the primary key or a unique key of `into`,
 * `add` integer columns of `into` outside the key, both returned by the query, and a query that
 * sums over rows (no HAVING, LIMIT, DISTINCT, window, EXCEPT or INTERSECT).
 */
export function checkIncremental(step: SqlStepSpec, sql: string, context: CheckContext): Diagnostic[] {
  const problems: Diagnostic[] = [];
  const policy = step.incremental!;
  const problem = (message: string, subpath: (string | number)[] = []) =>
    problems.push({ code: "E_CONFIG", message: `step ${step.name}: ${message}`, place: context.at(["incremental", ...subpath]) });
  const into = step.into === undefined ? undefined : context.pipeline.tables[step.into];
  if (!into) {
    problem("incremental: needs into: (the table the merged rows are kept in)");
    return problems;
  }
  if ((step.mode ?? "replace") !== "replace") {
    problem(
      `incremental: applies only with mode: replace (the table holds the query's result); with mode: ${step.mode} the rows are added anyway`,
    );
    return problems;
  }
  const tables = Object.keys(context.pipeline.tables);
  if (!(policy.appended in context.pipeline.tables))
    problem(`incremental.appended: table "${policy.appended}" is not declared under tables:${didYouMean(policy.appended, tables)}`, [
      "appended",
    ]);
  else if (policy.appended === step.into) problem(`incremental.appended: ${policy.appended} is the table into: writes`, ["appended"]);
  else {
    let read: Set<string> | undefined;
    try {
      read = tablesRead(context.scratch, statementBody(sql));
    } catch {
      read = undefined; // why: a query that does not compile is reported by the step's own check.
    }
    if (read && !read.has(policy.appended))
      problem(`incremental.appended: the query does not read table ${policy.appended} (it reads ${[...read].sort().join(", ")})`, [
        "appended",
      ]);
    if (read?.has(step.into!)) problem(`incremental: the query reads its own table ${step.into}`);
  }
  const columns = Object.keys(into.columns);
  const known = (column: string, at: (string | number)[]) => {
    if (columns.includes(column)) return true;
    problem(`incremental.${at.join(".")}: "${column}" is not a column of table ${step.into}${didYouMean(column, columns)}`, at);
    return false;
  };
  const keyKnown = policy.key.every((column, i) => known(column, ["key", i]));
  const sameSet = (a: readonly string[], b: readonly string[]) => a.length === b.length && a.every((c) => b.includes(c));
  const keys = [...(into.primary_key ? [into.primary_key] : []), ...(into.unique ?? [])];
  if (keyKnown && !keys.some((key) => sameSet(key, policy.key)))
    problem(
      `incremental.key [${policy.key.join(", ")}] is not the primary key or a unique key of table ${step.into}` +
        (keys.length > 0 ? ` (its keys: ${keys.map((key) => `[${key.join(", ")}]`).join(", ")})` : " (it declares none)"),
      ["key"],
    );
  policy.add.forEach((column, i) => {
    if (!known(column, ["add", i])) return;
    if (policy.key.includes(column)) problem(`incremental.add: ${column} is part of the key`, ["add", i]);
    else if (!exactTypes.has(into.columns[column]!.type))
      problem(
        `incremental.add: ${column} is a ${into.columns[column]!.type} column of ${step.into}; only integer and decimal sums stay exact when added in another order`,
        ["add", i],
      );
  });
  const word = notAdditive.find((w) => new RegExp(`\\b${w}\\b`, "i").test(withoutCommentsAndStrings(sql)));
  if (word)
    problem(
      `incremental: the query uses ${word}, so its result on the appended rows cannot be added to the stored one; declare incremental only for sums and counts grouped by key`,
    );
  try {
    const statement = context.scratch.prepare(statementBody(sql));
    const returned = statement.columnNames();
    statement.free();
    const missing = [...policy.key, ...policy.add].filter((column) => columns.includes(column) && !returned.includes(column));
    if (missing.length > 0) problem(`incremental: the query does not return ${missing.join(", ")}`);
  } catch {
    // why: reported by the step's own check.
  }
  return problems;
}

function withoutCommentsAndStrings(sql: string): string {
  return sql
    .replace(/--[^\n]*/g, " ")
    .replace(/\/\*[\s\S]*?(\*\/|$)/g, " ")
    .replace(/'(?:[^']|'')*'/g, "''")
    .replace(/"(?:[^"]|"")*"/g, '""');
}

/**
 * Runs an incremental step on the rows appended to its `appended` table only, and merges the result
 * into the stored rows, when the proof holds (docs/pipeline-reference.md, "incremental"): the run
 * only appended to that table, every other table the query reads and the table `into` are as the
 * runner's last commit left them, the configuration is the same, and that commit's run ran this
 * step. Returns the outcome, or why the whole query must run instead (nothing written then).
 */
export function runOnAppendedRows(
  db: SqlDatabase,
  step: IncrementalSqlStep,
  sql: string,
  context: RunContext,
): StepOutcome | { full: string } {
  const policy = step.incremental;
  if (context.fullRefresh) return { full: "--full-refresh" };
  const committed = context.committed;
  if (!committed) return { full: "no proof of the last commit in this command" };
  const unproven = committed.unproven();
  if (unproven !== undefined) return { full: unproven };
  const inputs = steadyInputs(db, statementBody(sql));
  if ("reason" in inputs) return { full: `the query's result depends on more than its tables: ${inputs.reason}` };
  if (!inputs.tables.has(policy.appended)) return { full: `the query does not read ${policy.appended}` };
  if (inputs.tables.has(step.into)) return { full: `the query reads its own table ${step.into}` };
  const later = committed.writtenAfter([...inputs.tables, step.into]);
  // why: then the last commit's table was computed before that step changed what the query reads.
  if (later !== undefined) return { full: `step ${later}, after this one, writes a table the query reads or ${step.into}` };
  const previous = committed.previousRunId!;
  const ran = db.all("SELECT status FROM pipeline_run_steps WHERE run_id = ? AND step = ?", [previous, step.name])[0]?.["status"];
  if (ran !== "success") return { full: `run ${previous} did not run this step (${ran === undefined ? "absent" : String(ran)})` };
  const changed = committed.changed([...inputs.tables].filter((table) => table !== policy.appended).concat(step.into));
  if (changed !== undefined) return { full: changed };
  const appended = committed.appended(db, policy.appended);
  if ("reason" in appended) return { full: appended.reason };
  let merged: ReturnType<typeof mergeAppendedResult>;
  try {
    merged = db.dialect ? mergeOnServer(db, step, sql, appended.where) : mergeAppendedResult(db, step, sql, appended.where);
  } catch (error) {
    // why: a statement that fails changes nothing (SQLite undoes it alone), and the whole query replaces every row of into.
    return { full: `the appended rows could not be merged: ${(error as Error).message}` };
  }
  if ("full" in merged) return merged;
  const incremental: IncrementalResult = { table: policy.appended, appendedRows: appended.rows, earlierFromRun: previous };
  return {
    status: "success",
    counts: merged,
    detail: `on the ${appended.rows} row(s) appended to ${policy.appended}, merged into run ${previous}'s`,
    incremental,
  };
}

/** Where the query's result on the appended rows is kept while it is merged. */
const resultTable = "__incremental_result";

/**
 * Runs the query with `appended` standing for its rows `where` selects (a temporary table of
 * that name, which an unqualified name resolves to first), then merges its rows into `into`: the
 * add columns of a stored key summed, new keys inserted. Nothing is written, and why is returned,
 * when the query still reads the whole table (it names main.<table>), a key is empty or repeated,
 * an add value is not an integer, or another column of a stored row differs.
 */
function mergeAppendedResult(
  db: SqlDatabase,
  step: IncrementalSqlStep,
  sql: string,
  where: string,
): { updated: number; inserted: number } | { full: string } {
  const { appended, key, add } = step.incremental;
  const body = statementBody(sql);
  const shadow = quoteIdent(appended);
  const into = `main.${quoteIdent(step.into)}`;
  const columns = db.all("SELECT name, type FROM pragma_table_info(?, 'main')", [appended]);
  const list = columns.map((column) => quoteIdent(String(column["name"])));
  db.exec(
    `CREATE TEMP TABLE ${shadow} (${columns.map((column) => `${quoteIdent(String(column["name"]))} ${String(column["type"])}`).join(", ")})`,
  );
  try {
    db.run(`INSERT INTO temp.${shadow} (rowid, ${list.join(", ")}) SELECT rowid, ${list.join(", ")} FROM main.${shadow} WHERE ${where}`);
    if (readsMainTable(db, body, appended)) return { full: `the query reads main.${appended} itself, not only the appended rows` };
    const statement = db.prepare(body);
    const returned = statement.columnNames();
    statement.free();
    if (new Set(returned).size !== returned.length) return { full: "the query returns two columns of one name" };
    const missing = [...key, ...add].find((column) => !returned.includes(column));
    if (missing !== undefined) return { full: `the query does not return ${missing}` };
    const result = `temp.${quoteIdent(resultTable)}`;
    db.exec(`CREATE TEMP TABLE ${quoteIdent(resultTable)} (${returned.map(quoteIdent).join(", ")})`);
    db.run(`INSERT INTO ${result} (${returned.map(quoteIdent).join(", ")}) ${body}`);
    const q = (column: string) => quoteIdent(column);
    const found = (condition: string, from = result) => db.all(`SELECT 1 AS found FROM ${from} WHERE ${condition} LIMIT 1`).length > 0;
    if (found(key.map((c) => `${q(c)} IS NULL`).join(" OR "))) return { full: "a key of the appended rows' result is empty" };
    if (db.all(`SELECT 1 FROM ${result} GROUP BY ${key.map(q).join(", ")} HAVING count(*) > 1 LIMIT 1`).length > 0)
      return { full: "the appended rows' result repeats a key" };
    const inexact = add.find((c) => found(`typeof(${q(c)}) NOT IN ('integer', 'null')`));
    if (inexact !== undefined) return { full: `${inexact} of the appended rows' result is not an integer` };
    const sameKey = key.map((c) => `t.${q(c)} = d.${q(c)}`).join(" AND ");
    const others = returned.filter((c) => !key.includes(c) && !add.includes(c));
    const differs = others.find((c) => found(`NOT (t.${q(c)} IS d.${q(c)})`, `${result} AS d JOIN ${into} AS t ON ${sameKey}`));
    if (differs !== undefined)
      return { full: `${differs} of a stored row differs from the appended rows' result (only add columns are added)` };
    const sum = (c: string) =>
      `CASE WHEN t.${q(c)} IS NULL THEN d.${q(c)} WHEN d.${q(c)} IS NULL THEN t.${q(c)} ELSE t.${q(c)} + d.${q(c)} END`;
    const updated = db.run(
      `UPDATE ${into} AS t SET ${add.map((c) => `${q(c)} = ${sum(c)}`).join(", ")} FROM ${result} AS d WHERE ${sameKey}`,
    );
    const inserted = db.run(
      `INSERT INTO ${into} (${returned.map(q).join(", ")}) SELECT ${returned.map((c) => `d.${q(c)}`).join(", ")} FROM ${result} AS d
       WHERE NOT EXISTS (SELECT 1 FROM ${into} AS t WHERE ${sameKey})`,
    );
    return { updated, inserted };
  } finally {
    db.exec(`DROP TABLE IF EXISTS temp.${shadow}; DROP TABLE IF EXISTS temp.${quoteIdent(resultTable)}`);
  }
}

/**
 * {@link mergeAppendedResult} on a server: the same steps in PostgreSQL's SQL (a temporary table
 * shadows the stored one, as pg_temp comes first in the search path), inside a savepoint, so that a
 * statement that fails leaves the run's transaction usable and nothing written.
 */
function mergeOnServer(
  db: SqlDatabase,
  step: IncrementalSqlStep,
  sql: string,
  where: string,
): { updated: number; inserted: number } | { full: string } {
  const { appended, key, add } = step.incremental;
  const body = statementBody(sql);
  const q = quoteIdent;
  const schema = q(String(db.all("SELECT current_schema() AS s")[0]?.["s"]));
  const into = `${schema}.${q(step.into)}`;
  const result = `pg_temp.${q(resultTable)}`;
  db.exec("SAVEPOINT pipeline_incremental");
  let done = false;
  try {
    db.exec(`CREATE TEMP TABLE ${q(appended)} AS SELECT * FROM ${schema}.${q(appended)} WHERE ${where}`);
    // why: the tables read are those of the current schema, not the temporary one standing in for the appended rows.
    if (db.dialect!.tablesRead(db, body, {}).has(appended))
      return { full: `the query reads ${schema}.${appended} itself, not only the appended rows` };
    db.exec(`CREATE TEMP TABLE ${q(resultTable)} AS ${body}`);
    const returned = db.prepare(`SELECT * FROM ${result}`).columnNames();
    if (new Set(returned).size !== returned.length) return { full: "the query returns two columns of one name" };
    const missing = [...key, ...add].find((column) => !returned.includes(column));
    if (missing !== undefined) return { full: `the query does not return ${missing}` };
    const found = (condition: string, from = result) => db.all(`SELECT 1 AS found FROM ${from} WHERE ${condition} LIMIT 1`).length > 0;
    if (found(key.map((c) => `${q(c)} IS NULL`).join(" OR "))) return { full: "a key of the appended rows' result is empty" };
    if (db.all(`SELECT 1 FROM ${result} GROUP BY ${key.map(q).join(", ")} HAVING count(*) > 1 LIMIT 1`).length > 0)
      return { full: "the appended rows' result repeats a key" };
    const inexact = add.find((c) => found(`${q(c)}::numeric <> trunc(${q(c)}::numeric)`));
    if (inexact !== undefined) return { full: `${inexact} of the appended rows' result is not an integer` };
    const sameKey = key.map((c) => `t.${q(c)} = d.${q(c)}`).join(" AND ");
    const others = returned.filter((c) => !key.includes(c) && !add.includes(c));
    const differs = others.find((c) => found(`t.${q(c)} IS DISTINCT FROM d.${q(c)}`, `${result} AS d JOIN ${into} AS t ON ${sameKey}`));
    if (differs !== undefined)
      return { full: `${differs} of a stored row differs from the appended rows' result (only add columns are added)` };
    const updated = db.run(
      `UPDATE ${into} AS t SET ${add.map((c) => `${q(c)} = coalesce(t.${q(c)} + d.${q(c)}, t.${q(c)}, d.${q(c)})`).join(", ")}
       FROM ${result} AS d WHERE ${sameKey}`,
    );
    const inserted = db.run(
      `INSERT INTO ${into} (${returned.map(q).join(", ")}) SELECT ${returned.map((c) => `d.${q(c)}`).join(", ")} FROM ${result} AS d
       WHERE NOT EXISTS (SELECT 1 FROM ${into} AS t WHERE ${sameKey})`,
    );
    done = true;
    return { updated, inserted };
  } finally {
    // why: a shortcut not taken (or a statement that failed) leaves nothing behind; one taken keeps its writes.
    db.exec(done ? "RELEASE pipeline_incremental" : "ROLLBACK TO pipeline_incremental; RELEASE pipeline_incremental");
    db.exec(`DROP TABLE IF EXISTS pg_temp.${q(appended)}; DROP TABLE IF EXISTS ${result}`);
  }
}

/** Whether a query's compiled program opens the main schema's `table` (or one of its indexes) to read it. */
function readsMainTable(db: SqlDatabase, sql: string, table: string): boolean {
  const roots = new Set(
    db.all("SELECT rootpage FROM main.sqlite_schema WHERE tbl_name = ? AND rootpage > 0", [table]).map((r) => Number(r["rootpage"])),
  );
  return db.all(`EXPLAIN ${sql}`).some((op) => op["opcode"] === "OpenRead" && op["p3"] === 0 && roots.has(Number(op["p2"])));
}
