import { negatedComparison } from "./check-comparison.js";
import type { LoadedConfig } from "./config/load.js";
import type { CheckSpec, Pipeline, StepSpec, TableSpec } from "./config/schema.js";
import { sameStoredType } from "./db/constraints.js";
import { quoteIdent, type Row, type SqlDatabase, type SqlValue } from "./db/database.js";
import { splitStatements } from "./db/split-sql.js";
import type { EngineName } from "./db/engines/engine.js";
import { withScratch } from "./db/scratch.js";
import { ensureTables } from "./db/tables.js";
import { didYouMean, PipelineError, type Diagnostic } from "./errors.js";
import { freshnessDiagnostics, freshnessOf } from "./freshness.js";
import { systemTables } from "./history.js";
import {
  compileQuery,
  noRunValues,
  parametersHint,
  parametersOf,
  readSqlText,
  sqlFileProblem,
  unknownParameters,
  writesDatabase,
  type SqlParameterValues,
} from "./sql-source.js";
import type { RunBasis } from "./run/committed-tables.js";
import type { CheckContext, StepDefinition } from "./step.js";

/** The kinds of check a table may declare, and `freshness` for a load step's source. */
export type CheckKind = CheckSpec["check"] | "freshness";

/** One declared check, named, with the query whose rows are its failures. */
export interface DeclaredCheck {
  name: string;
  table: string;
  column?: string | undefined;
  kind: CheckSpec["check"];
  severity: "error" | "warn";
  spec: CheckSpec;
  /** Where it is declared in pipeline.yaml. */
  path: (string | number)[];
}

/** What a check found: `passed`, or `warned` / `failed` (by its severity) with the failing rows counted and the first few. */
export interface CheckResult {
  name: string;
  table: string;
  column?: string | undefined;
  kind: CheckKind;
  severity: "error" | "warn";
  status: "passed" | "warned" | "failed";
  failingRows: number;
  /** The first failing rows, values clipped. */
  samples: Record<string, string | number | null>[];
  detail?: string | undefined;
  /** When the result was carried over instead of run: the run that ran the check (its inputs unchanged since). */
  carriedFromRun?: number | undefined;
  /** When only the rows this run appended were checked: how many, and the run whose result showed the earlier rows passing. */
  appendedRows?: { rows: number; earlierFromRun: number } | undefined;
  /** For a range check with a bound of the run (`max: { run: date }`): the values it was judged with in this run. */
  runBounds?: RunBounds | undefined;
}

/** The values a range check's bounds of the run (`{ run: date }`, `{ run: time }`) took in one run. */
export interface RunBounds {
  min?: string;
  max?: string;
}

/** A check as the plan shows it: what it judges and the step after which it runs. */
export interface PlannedCheck {
  name: string;
  table: string;
  kind: CheckKind;
  severity: "error" | "warn";
  /** The step it runs after (the last step writing a table it reads). */
  after: string;
}

/** How many failing rows a check keeps as samples. */
export const checkSamples = 5;

/** Every check the pipeline's tables declare, in declaration order, each with a unique name. */
export function declaredChecks(pipeline: Pipeline): DeclaredCheck[] {
  const checks: DeclaredCheck[] = [];
  const taken = new Set<string>();
  const tables = pipeline.tables as Record<string, TableSpec>;
  for (const [table, spec] of Object.entries(tables)) {
    (spec.checks ?? []).forEach((check, index) => {
      const column = "column" in check ? check.column : undefined;
      let name = check.name ?? defaultName(table, check);
      // why: two generated names can meet (two expressions on one table); the later ones are numbered.
      if (check.name === undefined) for (let n = 2; taken.has(name); n++) name = `${defaultName(table, check)}_${n}`;
      taken.add(name);
      checks.push({
        name,
        table,
        column,
        kind: check.check,
        severity: check.severity ?? "error",
        spec: check,
        path: ["tables", table, "checks", index],
      });
    });
  }
  return checks;
}

function defaultName(table: string, check: CheckSpec): string {
  const columns = "columns" in check ? check.columns : "column" in check && check.column !== undefined ? [check.column] : [];
  const file =
    check.check === "sql" && check.file
      ? [
          check.file
            .replace(/^.*\//, "")
            .replace(/\.sql$/i, "")
            .replace(/\W/g, "_"),
        ]
      : [];
  return [check.check, table, ...columns, ...file].join("_");
}

/** A value from the configuration as an SQL literal: numbers as they are, booleans 1/0, text quoted. */
function literal(value: string | number | boolean | null): string {
  if (value === null) return "NULL";
  if (typeof value === "boolean") return value ? "1" : "0";
  if (typeof value === "number") return Number.isFinite(value) ? String(value) : "NULL";
  return `'${value.replaceAll("'", "''")}'`;
}

type RangeSpec = Extract<CheckSpec, { check: "range" }>;

/** A range check's bound as written in pipeline.yaml: a value, or the run's day or start. */
type RangeBound = NonNullable<RangeSpec["max"]>;

/** A range check's column and bounds as SQL in a run (a bound of the run as its value in that run), and whether the bounds themselves pass. */
function rangeSql(spec: RangeSpec, values: SqlParameterValues): { column: string; min?: string; max?: string; inclusive: boolean } {
  return {
    column: quoteIdent(spec.column),
    ...(spec.min === undefined ? {} : { min: literal(boundValue(spec.min, values)) }),
    ...(spec.max === undefined ? {} : { max: literal(boundValue(spec.max, values)) }),
    inclusive: spec.inclusive ?? true,
  };
}

/**
 * The value a range check's bound takes in a run: as written, or the run's day (UTC, as
 * `date(:run_started_at)` gives it) or its start (as `:run_started_at`).
 */
function boundValue(bound: RangeBound, values: SqlParameterValues): string | number | null {
  if (typeof bound !== "object") return bound;
  // why: without a run (a query compiled, or its program read), NULL, which every engine compares with a column of any type.
  if (values.run_started_at === noRunValues.run_started_at) return null;
  const started = String(values.run_started_at);
  // why: the run's start is Date.toISOString()'s UTC text, whose first ten characters are its day.
  return bound.run === "date" ? started.slice(0, 10) : started;
}

/** The values a range check's bounds of the run take with `values`; undefined for a check without one. */
export function runBoundsOf(check: DeclaredCheck, values: SqlParameterValues): RunBounds | undefined {
  const spec = check.spec;
  if (spec.check !== "range") return undefined;
  const bounds: RunBounds = {};
  if (typeof spec.min === "object") bounds.min = String(boundValue(spec.min, values));
  if (typeof spec.max === "object") bounds.max = String(boundValue(spec.max, values));
  return bounds.min === undefined && bounds.max === undefined ? undefined : bounds;
}

/**
 * Whether every row that passed under the bounds of the run `recorded` (a JSON {@link RunBounds}) still
 * passes under `now`: an upper bound only moved up, a lower one only down (a clock set back fails it).
 */
function runBoundsStillHold(recorded: SqlValue | undefined, now: RunBounds): boolean {
  let then: RunBounds;
  try {
    then = JSON.parse(String(recorded)) as RunBounds;
  } catch {
    return false;
  }
  if (typeof then !== "object" || then === null) return false;
  // why: both are UTC ISO 8601 text of one format (the configuration is the same), so their order as text is their order in time, and SQLite's.
  const maxHolds = now.max === undefined || (typeof then.max === "string" && then.max <= now.max);
  const minHolds = now.min === undefined || (typeof then.min === "string" && then.min >= now.min);
  return maxHolds && minHolds;
}

/** The query whose rows are the check's failures (one row per failing row, or per repeated key for `unique`). */
export function failingRowsSql(check: DeclaredCheck, baseDir: string, values: SqlParameterValues = noRunValues, rows?: string): string {
  const spec = check.spec;
  const t = quoteIdent(check.table);
  // why: with `rows`, a row-by-row check judges only the rows it selects (those a run appended), under the table's own name.
  const only = rows === undefined ? undefined : `(SELECT * FROM ${t} WHERE ${rows})`;
  const from = only === undefined ? t : `${only} AS ${t}`;
  switch (spec.check) {
    case "not_null":
    case "accepted_values":
    case "range":
    case "expression":
      return `SELECT * FROM ${from} WHERE ${failingCondition(check, values)}`;
    case "unique": {
      const list = spec.columns.map(quoteIdent);
      return `SELECT ${list.join(", ")}, count(*) AS "rows" FROM ${t} WHERE ${list.map((c) => `${c} IS NOT NULL`).join(" AND ")} GROUP BY ${list.join(", ")} HAVING count(*) > 1`;
    }
    case "relationships": {
      const c = quoteIdent(spec.column);
      return `SELECT * FROM ${only ?? t} AS child WHERE child.${c} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM ${quoteIdent(spec.to)} AS parent WHERE parent.${quoteIdent(spec.field)} = child.${c})`;
    }
    case "row_count": {
      const bounds = [
        ...(spec.min === undefined ? [] : [`"rows" >= ${spec.min}`]),
        ...(spec.max === undefined ? [] : [`"rows" <= ${spec.max}`]),
      ];
      return `SELECT "rows" FROM (SELECT count(*) AS "rows" FROM ${t}) AS counted WHERE NOT (${bounds.join(" AND ") || "TRUE"})`;
    }
    case "sql": {
      const text = readSqlText(spec, baseDir);
      // why: the statement without its semicolon, whatever follows it (a closing comment); several statements are validate's error to report.
      const statements = splitStatements(text);
      return statements.length === 1 ? statements[0]! : text.trim().replace(/;\s*$/, "");
    }
  }
}

/** The one query a check runs: the failing rows counted, with the first `samples` of them (no row at all when none fails). */
export function countingSql(failing: string, samples = checkSamples): string {
  // why: PostgreSQL (before 16) wants every subquery in FROM named.
  return `SELECT (SELECT count(*) FROM (\n${failing}\n) AS counted) AS "__failing_rows", * FROM (\n${failing}\n) AS failing LIMIT ${samples}`;
}

/** Runs one check against the database; its status follows its severity. */
export function runCheck(db: SqlDatabase, check: DeclaredCheck, baseDir: string, values: SqlParameterValues, only?: string): CheckResult {
  if (only === undefined && passesByIndex(db, check, values)) return resultOf(check, 0, []);
  const sql = countingSql(failingRowsSql(check, baseDir, values, only));
  let rows: Row[];
  try {
    rows = db.all(sql, parametersOf(sql, values));
  } catch (error) {
    throw new PipelineError("E_SQL", `check ${check.name} on ${check.table}: ${(error as Error).message}`, { cause: error });
  }
  const failingRows = Number(rows[0]?.["__failing_rows"] ?? 0);
  const samples = rows.map(({ __failing_rows: _, ...row }) => sampleRow(row));
  return resultOf(check, failingRows, samples);
}

/**
 * Whether a check SQLite can count from an index on its column has no failing row, counted with the
 * condition of {@link indexedFailingCondition} (`date > date(:run_started_at)` reads the few rows after
 * that day; `NOT (date <= …)` reads them all). False when some row fails, or anything goes wrong: the
 * check then runs as written, samples and all.
 */
function passesByIndex(db: SqlDatabase, check: DeclaredCheck, values: SqlParameterValues): boolean {
  const negated = db.dialect ? undefined : indexedFailingCondition(check, values);
  if (negated === undefined) return false;
  const sql = `SELECT count(*) AS n FROM ${quoteIdent(check.table)} WHERE ${negated}`;
  try {
    return Number(db.all(sql, parametersOf(sql, values))[0]?.["n"]) === 0;
  } catch {
    return false;
  }
}

/**
 * The rows a check fails, as a condition without the `NOT` that keeps SQLite from an index on the
 * column: an `expression` that is one comparison, negated (engine/check-comparison.ts); a `range`,
 * each bound's comparison negated (`date > '2026-12-02'`, `quantity <= 0 OR quantity > 100`), which
 * for any non-NULL value is true exactly when `NOT (… AND …)` is, and NULL for a NULL value, which
 * the range never fails. Undefined for the other checks.
 */
export function indexedFailingCondition(check: DeclaredCheck, values: SqlParameterValues): string | undefined {
  const spec = check.spec;
  if (spec.check === "expression") return negatedComparison(spec.expression);
  if (spec.check !== "range") return undefined;
  const { column: c, min, max, inclusive } = rangeSql(spec, values);
  const outside = [
    ...(min === undefined ? [] : [`${c} ${inclusive ? "<" : "<="} ${min}`]),
    ...(max === undefined ? [] : [`${c} ${inclusive ? ">" : ">="} ${max}`]),
  ];
  return outside.length === 0 ? undefined : outside.join(" OR ");
}

function resultOf(check: DeclaredCheck, failingRows: number, samples: CheckResult["samples"]): CheckResult {
  return {
    name: check.name,
    table: check.table,
    column: check.column,
    kind: check.kind,
    severity: check.severity,
    status: failingRows === 0 ? "passed" : check.severity === "error" ? "failed" : "warned",
    failingRows,
    samples,
  };
}

/**
 * When a row of its table fails a check of a kind that judges rows (`not_null`, `accepted_values`,
 * `range`, `expression`, `relationships`), as one condition over the table under its own name: the
 * WHERE of {@link failingRowsSql} (a relationship's there names the table `child`); undefined for the other kinds.
 */
function failingCondition(check: DeclaredCheck, values: SqlParameterValues): string | undefined {
  const spec = check.spec;
  const t = quoteIdent(check.table);
  switch (spec.check) {
    case "not_null":
      return `${quoteIdent(spec.column)} IS NULL`;
    case "accepted_values":
      return `${quoteIdent(spec.column)} IS NOT NULL AND ${quoteIdent(spec.column)} NOT IN (${spec.values.map(literal).join(", ")})`;
    case "range": {
      const { column: c, min, max, inclusive } = rangeSql(spec, values);
      const bounds = [
        ...(min === undefined ? [] : [`${c} ${inclusive ? ">=" : ">"} ${min}`]),
        ...(max === undefined ? [] : [`${c} ${inclusive ? "<=" : "<"} ${max}`]),
      ];
      return `${c} IS NOT NULL AND NOT (${bounds.join(" AND ") || "TRUE"})`;
    }
    case "expression":
      return `NOT (\n${spec.expression}\n)`;
    case "relationships": {
      const c = `${t}.${quoteIdent(spec.column)}`;
      // why: the parent under an alias, so that the table's own name means the checked row, also when a table references itself.
      return `${c} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM ${quoteIdent(spec.to)} AS "__parent" WHERE "__parent".${quoteIdent(spec.field)} = ${c})`;
    }
    default:
      return undefined;
  }
}

/**
 * The results of row-by-row checks of one table, judged in one pass over it instead of one each:
 * one query counts every check's failing rows at once (`count(CASE WHEN … THEN 1 END)`, on every
 * engine), and on SQLite a relationship that a foreign key of the database's schema states exactly
 * is counted by SQLite's own `foreign_key_check`, one pass for all of them. A check that fails
 * then runs alone, so its count and samples are those its own query gives. Undefined for checks
 * left to run alone (a query that does not compile in one: each runs alone and reports its own error).
 * `keysHeld` hears of each table whose every foreign key that pass found unbroken.
 */
export function runChecksInOnePass(
  db: SqlDatabase,
  checks: readonly DeclaredCheck[],
  baseDir: string,
  values: SqlParameterValues,
  keysHeld: (table: string, held: boolean) => void = () => undefined,
): (CheckResult | undefined)[] {
  const results: (CheckResult | undefined)[] = checks.map(() => undefined);
  const byTable = new Map<string, number[]>();
  checks.forEach((check, i) => {
    if (!judgesRowByRow(check) || check.table === "__parent") return;
    byTable.set(check.table, [...(byTable.get(check.table) ?? []), i]);
  });
  const judged = (i: number, failing: number) =>
    (results[i] = failing === 0 ? resultOf(checks[i]!, 0, []) : runCheck(db, checks[i]!, baseDir, values));
  for (const [table, group] of byTable) {
    const { counts: byForeignKey, allHeld } = foreignKeyFailures(
      db,
      table,
      group.map((i) => checks[i]!),
    );
    if (allHeld !== undefined) keysHeld(table, allHeld);
    const rest = group.filter((_, n) => byForeignKey[n] === undefined);
    group.forEach((i, n) => byForeignKey[n] !== undefined && judged(i, byForeignKey[n]!));
    if (rest.length < 2) continue;
    const joins: string[] = [];
    const counts = rest.map((i, n) => {
      const condition = db.dialect
        ? (joinedRelationship(checks[i]!, joins) ?? failingCondition(checks[i]!, values))
        : failingCondition(checks[i]!, values);
      return `count(CASE WHEN ${condition} THEN 1 END) AS "__failing_${n}"`;
    });
    const sql = `SELECT ${counts.join(",\n")}\nFROM ${quoteIdent(table)}${joins.join("")}`;
    const row = firstRowOrUndefined(db, sql, parametersOf(sql, values));
    // why: each check then runs alone, and one whose query fails says so under its own name.
    if (!row) continue;
    rest.forEach((i, n) => judged(i, Number(row[`__failing_${n}`])));
  }
  return results;
}

/**
 * On a server, a relationship counted in the one pass through a join to its parent's distinct keys
 * (one hash join) rather than a subquery per row, which PostgreSQL runs once for each row: the
 * join's condition is the check's own `=`, so a row it finds without a parent has none (a count of
 * 0 is the check's); a count above 0 has the check run alone. Adds the join; undefined for other kinds.
 */
function joinedRelationship(check: DeclaredCheck, joins: string[]): string | undefined {
  const spec = check.spec;
  if (spec.check !== "relationships") return undefined;
  const parent = `"__parent_${joins.length}"`;
  const field = quoteIdent(spec.field);
  const child = `${quoteIdent(check.table)}.${quoteIdent(spec.column)}`;
  joins.push(
    `\nLEFT JOIN (SELECT DISTINCT ${field} AS "__key" FROM ${quoteIdent(spec.to)} WHERE ${field} IS NOT NULL) AS ${parent} ON ${parent}."__key" = ${child}`,
  );
  return `${child} IS NOT NULL AND ${parent}."__key" IS NULL`;
}

/** The query's first row, or undefined when it fails; on a server inside a savepoint, so that its error does not abort the run's transaction. */
function firstRowOrUndefined(db: SqlDatabase, sql: string, params: Record<string, SqlValue>): Row | undefined {
  if (db.dialect) db.exec("SAVEPOINT one_pass");
  try {
    return db.all(sql, params)[0];
  } catch {
    return undefined;
  } finally {
    if (db.dialect) db.exec("ROLLBACK TO one_pass; RELEASE one_pass");
  }
}

/**
 * For each relationship check, on SQLite, the rows that violate the foreign key of its table that
 * states exactly that relationship, counted in one `foreign_key_check` pass over the table; undefined
 * for a check no such key states. The two agree row for row only where the foreign key is in the
 * database's schema (not only in pipeline.yaml), on one column, between two STRICT columns of the same
 * type and no collation; otherwise the check's own query counts. Used when the keys it answers are at
 * least half of the table's (the pass checks them all); `allHeld` then says whether it found every key
 * of the table unbroken (the verification before the commit can rely on that: engine/db/constraints.ts).
 */
function foreignKeyFailures(
  db: SqlDatabase,
  table: string,
  checks: readonly DeclaredCheck[],
): { counts: (number | undefined)[]; allHeld?: boolean } {
  const none = { counts: checks.map(() => undefined) };
  if (db.dialect || !checks.some((check) => check.spec.check === "relationships")) return none;
  try {
    const keys = new Map<number, Row[]>();
    for (const row of db.all('SELECT id, "table" AS parent, "from", "to" FROM pragma_foreign_key_list(?)', [table]))
      keys.set(Number(row["id"]), [...(keys.get(Number(row["id"])) ?? []), row]);
    const keyOf = checks.map((check) => {
      const spec = check.spec;
      if (spec.check !== "relationships") return undefined;
      for (const [id, columns] of keys) {
        const [key] = columns;
        if (columns.length === 1 && key!["from"] === spec.column && key!["parent"] === spec.to && key!["to"] === spec.field)
          return sameStoredType(db, table, spec.column, spec.to, spec.field) ? id : undefined;
      }
      return undefined;
    });
    const answered = new Set(keyOf.filter((id) => id !== undefined));
    if (answered.size === 0 || answered.size * 2 < keys.size) return none;
    const violations = new Map<number, number>();
    for (const row of db.all("SELECT fkid, count(*) AS n FROM pragma_foreign_key_check(?) GROUP BY fkid", [table]))
      violations.set(Number(row["fkid"]), Number(row["n"]));
    return { counts: keyOf.map((id) => (id === undefined ? undefined : (violations.get(id) ?? 0))), allHeld: violations.size === 0 };
  } catch {
    return none; // why: a key SQLite cannot check (no unique index on the parent: "foreign key mismatch") leaves the checks' own queries to count.
  }
}

function sampleRow(row: Row): Record<string, string | number | null> {
  const sample: Record<string, string | number | null> = {};
  for (const [key, value] of Object.entries(row)) sample[key] = sampleValue(value);
  return sample;
}

function sampleValue(value: SqlValue): string | number | null {
  if (value === null || typeof value === "number") return value;
  if (typeof value === "bigint") return value.toString();
  if (value instanceof Uint8Array) return `<${value.length} bytes>`;
  return value.length <= 100 ? value : `${value.slice(0, 99)}…`;
}

/** The tables a query reads, from its compiled program (EXPLAIN: the b-trees it opens to read); nothing runs. */
export function tablesRead(db: SqlDatabase, sql: string): Set<string> {
  if (db.dialect) return db.dialect.tablesRead(db, sql, parametersOf(sql, noRunValues));
  const roots = new Map(
    db.all("SELECT tbl_name, rootpage FROM sqlite_schema WHERE rootpage > 0").map((r) => [Number(r["rootpage"]), String(r["tbl_name"])]),
  );
  const read = new Set<string>();
  for (const op of db.all(`EXPLAIN ${sql}`, parametersOf(sql, noRunValues))) {
    if (op["opcode"] !== "OpenRead" || op["p3"] !== 0) continue;
    const table = roots.get(Number(op["p2"]));
    if (table !== undefined) read.add(table);
  }
  return read;
}

/** Functions whose result is not fixed by the tables read: the clock, chance, the connection's state. */
const unsteadyFunctions = new Set([
  "date",
  "time",
  "datetime",
  "julianday",
  "unixepoch",
  "strftime",
  "timediff",
  "current_date",
  "current_time",
  "current_timestamp",
  "random",
  "randomblob",
  "changes",
  "total_changes",
  "last_insert_rowid",
  "sqlite_offset",
]);

/**
 * The tables a check's query reads when its result depends on nothing else, from its compiled
 * program; or why it may not be carried over: it uses a parameter (`:run_started_at`), a
 * clock-dependent or random function (in a view it reads too), a virtual table, the schema, or a
 * table outside the main database.
 */
export function steadyInputs(db: SqlDatabase, sql: string): { tables: Set<string> } | { reason: string } {
  if (db.dialect) return db.dialect.steadyInputs(db, sql);
  const roots = new Map(
    db.all("SELECT tbl_name, rootpage FROM sqlite_schema WHERE rootpage > 0").map((r) => [Number(r["rootpage"]), String(r["tbl_name"])]),
  );
  const tables = new Set<string>();
  let program: Row[];
  try {
    program = db.all(`EXPLAIN ${sql}`, parametersOf(sql, noRunValues));
  } catch (error) {
    return { reason: (error as Error).message };
  }
  for (const op of program) {
    const opcode = String(op["opcode"]);
    if (opcode === "Variable") return { reason: "it uses a parameter of the run" };
    if (opcode.startsWith("V")) return { reason: "it reads a virtual table" };
    if (opcode === "Function" || opcode === "PureFunc") {
      const name = String(op["p4"]).replace(/\(.*$/, "").toLowerCase();
      if (unsteadyFunctions.has(name)) return { reason: `it calls ${name}()` };
    }
    if (opcode === "OpenRead" || opcode === "OpenWrite" || opcode === "ReopenIdx") {
      const table = roots.get(Number(op["p2"]));
      if (op["p3"] !== 0 || table === undefined) return { reason: "it reads outside the declared tables" };
      tables.add(table);
    }
  }
  return { tables };
}

type ScheduledCheck = NonNullable<CheckRun["schedule"]>[number];

/** Whether a check judges each row of its table alone: `not_null`, `range`, `accepted_values`, `relationships`, an `expression` without a subquery. */
function judgesRowByRow(check: DeclaredCheck): boolean {
  const spec = check.spec;
  if (spec.check === "expression") return !/\bselect\b/i.test(spec.expression);
  return spec.check === "not_null" || spec.check === "range" || spec.check === "accepted_values" || spec.check === "relationships";
}

/**
 * The checks of one run: each runs once, after the last step that writes a table it reads (a
 * freshness limit, after its load step), inside the run's transaction; each result is recorded
 * in pipeline_check_results. A failing `error` check stops the run before the next step.
 */
export class CheckRun {
  /** Every result so far, in the order the checks ran. */
  readonly results: CheckResult[] = [];
  /**
   * The tables whose every foreign key SQLite's own check found unbroken in this run (on SQLite, for a table whose
   * relationship checks it counted), each with the step before which it did: the verification before the commit
   * need not look at them again while nothing wrote them or the tables they reference since (engine/db/constraints.ts).
   */
  readonly keysHeld = new Map<string, number>();
  private schedule:
    | {
        after: number;
        check: Omit<PlannedCheck, "after">;
        run: (db: SqlDatabase, values: SqlParameterValues) => CheckResult;
        /** For a declared check: the tables it reads when nothing else decides its result (see {@link steadyInputs}). */
        steady?: Set<string> | undefined;
        column?: string | undefined;
        /** A check that judges each row of its table alone (by the row and unchanged other tables): it can judge only appended rows. */
        rowByRow?: DeclaredCheck | undefined;
        /** The declared check (not a freshness limit). */
        declared?: DeclaredCheck | undefined;
      }[]
    | undefined;

  constructor(
    private readonly plan: { pipeline: Pipeline; config: LoadedConfig; steps: readonly { index: number; spec: StepSpec }[] },
    private readonly typeOf: (step: StepSpec) => StepDefinition,
    private readonly now: () => Date,
    private readonly onResult: (result: CheckResult) => void = () => undefined,
    private readonly options: { record: boolean; committed?: RunBasis | undefined } = { record: true },
  ) {}

  /** Runs the checks due before step `next` (all that are left when it is past the last step); throws E_CHECK when one with severity error failed. */
  runDue(db: SqlDatabase, runId: number, startedAt: string, next: number): void {
    const schedule = this.compile(db);
    const due = schedule.filter((entry) => entry.after < next);
    this.schedule = schedule.filter((entry) => entry.after >= next);
    const values = { run_id: runId, run_started_at: startedAt };
    const found = due.map((entry) => this.carriedOver(db, entry, next, values) ?? this.appendedOnly(db, entry, next, values));
    // why: the row-by-row checks left to run read their table once between them, not once each (docs/checks.md).
    const left = due.flatMap((entry, i) => (found[i] === undefined && entry.declared ? [i] : []));
    const onePass = runChecksInOnePass(
      db,
      left.map((i) => due[i]!.declared!),
      this.plan.config.baseDir,
      values,
      (table, held) => (held ? this.keysHeld.set(table, next) : this.keysHeld.delete(table)),
    );
    left.forEach((i, n) => (found[i] = onePass[n]));
    const failed: CheckResult[] = [];
    for (const [i, entry] of due.entries()) {
      const runBounds = entry.declared && runBoundsOf(entry.declared, values);
      const result = { ...(found[i] ?? entry.run(db, values)), ...(runBounds ? { runBounds } : {}) };
      if (this.options.record) recordCheckResult(db, runId, result);
      this.results.push(result);
      this.onResult(result);
      if (result.status === "failed") failed.push(result);
    }
    if (failed.length > 0) throw checkFailure(failed);
  }

  /** Compiles every check's query, once, and returns the checks left to run; throws what the database says of one it cannot compile. */
  compile(db: SqlDatabase): NonNullable<CheckRun["schedule"]> {
    return (this.schedule ??= this.scheduleChecks(db));
  }

  /**
   * The result the last commit recorded for this check, when running it again would give exactly
   * that: the same configuration, every table it reads as that commit left it (the commit mark)
   * and not written by this run's steps so far, and nothing else deciding its result (a bound of
   * the run only widened since: {@link CheckRun.lastResult}).
   */
  private carriedOver(db: SqlDatabase, entry: ScheduledCheck, next: number, values: SqlParameterValues): CheckResult | undefined {
    const committed = this.options.committed?.at(next);
    if (!committed || !entry.steady || committed.changed(entry.steady) !== undefined) return undefined;
    const previousRunId = committed.previousRunId!;
    const row = this.lastResult(db, entry, previousRunId, values);
    if (!row) return undefined;
    return {
      name: entry.check.name,
      table: entry.check.table,
      column: entry.column,
      kind: entry.check.kind,
      severity: entry.check.severity,
      status: row["status"] === "warned" ? "warned" : "passed",
      failingRows: Number(row["failing_rows"]),
      samples: row["samples"] === null ? [] : (JSON.parse(String(row["samples"])) as CheckResult["samples"]),
      ...(row["detail"] === null ? {} : { detail: String(row["detail"]) }),
      carriedFromRun: row["carried_from_run"] === null ? previousRunId : Number(row["carried_from_run"]),
    };
  }

  /**
   * A row-by-row check that passed at the last commit, on a table this run only appended to: its
   * result is that of the appended rows (passed when none fails; otherwise undefined, and the whole
   * check runs). The old rows are as that commit left them (the mark), no step updated or deleted
   * rows of the table, and the rows after the table's last row before the steps are exactly as many
   * as its steps inserted; every other table the check reads is untouched.
   */
  private appendedOnly(db: SqlDatabase, entry: ScheduledCheck, next: number, values: SqlParameterValues): CheckResult | undefined {
    const check = entry.rowByRow;
    const committed = this.options.committed?.at(next);
    if (!check || !committed || !entry.steady) return undefined;
    if (committed.changed([...entry.steady].filter((table) => table !== check.table)) !== undefined) return undefined;
    const appended = committed.appended(db, check.table);
    if (!("where" in appended)) return undefined;
    const previousRunId = committed.previousRunId!;
    const row = this.lastResult(db, entry, previousRunId, values);
    if (!row || row["status"] !== "passed" || Number(row["failing_rows"]) !== 0) return undefined;
    const after = appended.where;
    try {
      // why: the run's values give a bound of the run its value in this run; a steady check uses none.
      const result = runCheck(db, check, this.plan.config.baseDir, values, after);
      if (result.status !== "passed") return undefined;
      const earlierFromRun = row["carried_from_run"] === null ? previousRunId : Number(row["carried_from_run"]);
      return { ...result, appendedRows: { rows: appended.rows, earlierFromRun } };
    } catch {
      return undefined; // why: anything unforeseen (a column named rowid) leaves the whole check to run.
    }
  }

  /**
   * The result the last commit recorded for this check, when it passed or warned with the same kind
   * and severity; for a range check with a bound of the run, only a pass on every row under bounds
   * that this run's values only widen (an upper bound moved up, a lower one down): every row that
   * passed then passes now.
   */
  private lastResult(db: SqlDatabase, entry: ScheduledCheck, previousRunId: number, values: SqlParameterValues): Row | undefined {
    const row = db.all(
      "SELECT kind, severity, status, failing_rows, samples, detail, carried_from_run, run_bounds FROM pipeline_check_results WHERE run_id = ? AND check_name = ?",
      [previousRunId, entry.check.name],
    )[0];
    if (!row || row["kind"] !== entry.check.kind || row["severity"] !== entry.check.severity) return undefined;
    // why: a commit's results passed or warned (a failed error check saves nothing); anything else is not used.
    if (row["status"] !== "passed" && row["status"] !== "warned") return undefined;
    const bounds = entry.declared && runBoundsOf(entry.declared, values);
    if (bounds && (row["status"] !== "passed" || Number(row["failing_rows"]) !== 0 || !runBoundsStillHold(row["run_bounds"], bounds)))
      return undefined;
    return row;
  }

  /** The checks a run will make, each with the step it runs after, in the order they run (the plan shows them); runs nothing. */
  planned(db: SqlDatabase): PlannedCheck[] {
    const names = this.plan.steps.map((step) => step.spec.name);
    return this.scheduleChecks(db).map(({ after, check }) => ({ ...check, after: names[after] ?? names.at(-1) ?? "" }));
  }

  private scheduleChecks(db: SqlDatabase): NonNullable<CheckRun["schedule"]> {
    const { pipeline, config, steps } = this.plan;
    const lastWriter = new Map<string, number>();
    for (const step of steps) for (const table of this.typeOf(step.spec).writes(step.spec)) lastWriter.set(table, step.index);
    const last = steps.length - 1;
    const entries: NonNullable<CheckRun["schedule"]> = declaredChecks(pipeline).map((check) => {
      const failing = failingRowsSql(check, config.baseDir);
      const reads = tablesRead(db, failing);
      reads.add(check.table);
      const writers = [...reads].map((table) => lastWriter.get(table) ?? -1);
      // why: a check on tables no declared step writes (a script step may) runs once every step has run.
      const after = writers.every((w) => w === -1) ? last : Math.max(...writers);
      const planned = { name: check.name, table: check.table, kind: check.kind, severity: check.severity };
      const inputs = this.options.committed ? steadyInputs(db, countingSql(failing)) : undefined;
      const steady = inputs && "tables" in inputs ? new Set([...inputs.tables, check.table]) : undefined;
      const rowByRow = steady !== undefined && judgesRowByRow(check) ? check : undefined;
      const run = (d: SqlDatabase, values: SqlParameterValues) => runCheck(d, check, config.baseDir, values);
      return { after, check: planned, run, steady, column: check.column, rowByRow, declared: check };
    });
    for (const step of steps) {
      const spec = step.spec as { freshness?: unknown };
      if (spec.freshness === undefined) continue;
      const fresh = step.spec as { name: string; table?: string; freshness: { severity?: "error" | "warn" } };
      const planned = {
        name: `freshness_${fresh.name}`,
        table: fresh.table ?? "",
        kind: "freshness" as const,
        severity: fresh.freshness.severity ?? "error",
      };
      entries.push({ after: step.index, check: planned, run: (d) => freshnessOf(d, step.spec, config.baseDir, this.now()) });
    }
    return entries.sort((a, b) => a.after - b.after);
  }
}

/** The error of a run stopped by failing checks: names each, its table, the rows counted and the first one. */
export function checkFailure(failed: readonly CheckResult[]): PipelineError {
  const first = failed.map((result) => `${describeCheckResult(result)}`).join("; ");
  const code = failed.every((result) => result.kind === "freshness") ? "E_STALE" : "E_CHECK";
  return new PipelineError(code, `${failed.length} check(s) with severity error failed, so nothing was saved: ${first}`);
}

/** One line on a result: `not_null_sales_quantity on sales: 2 failing row(s), first {...}`. */
export function describeCheckResult(result: CheckResult): string {
  if (result.detail !== undefined) return `${result.name}: ${result.detail}`;
  if (result.failingRows === 0) return `${result.name} on ${result.table}: passed`;
  const sample = result.samples[0] ? `, first ${JSON.stringify(result.samples[0])}` : "";
  return `${result.name} on ${result.table}: ${result.failingRows} failing row(s)${sample}`;
}

/** Records a result in pipeline_check_results. */
export function recordCheckResult(db: SqlDatabase, runId: number, result: CheckResult): void {
  db.run(
    `INSERT INTO pipeline_check_results (run_id, check_name, table_name, column_name, kind, severity, status, failing_rows, samples, detail, carried_from_run, run_bounds)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    [
      runId,
      result.name,
      result.table,
      result.column ?? null,
      result.kind,
      result.severity,
      result.status,
      result.failingRows,
      result.samples.length > 0 ? JSON.stringify(result.samples) : null,
      result.detail ?? null,
      result.carriedFromRun ?? null,
      result.runBounds ? JSON.stringify(result.runBounds) : null,
    ],
  );
}

/**
 * Checks the checks before anything runs: their columns and tables exist, their options agree, and
 * each one's query compiles against the declared tables and only reads. Freshness limits too.
 */
export async function checkDiagnostics(config: LoadedConfig, pipeline: Pipeline, engine?: EngineName): Promise<Diagnostic[]> {
  const tables = pipeline.tables as Record<string, TableSpec>;
  const checks = declaredChecks(pipeline);
  const freshness = freshnessDiagnostics(config, pipeline);
  if (checks.length === 0) return freshness;
  const compiled = await withScratch(engine, (scratch) => {
    const diagnostics: Diagnostic[] = [];
    const problem = (message: string, at: (string | number)[], key?: string, code: Diagnostic["code"] = "E_CONFIG") =>
      diagnostics.push({ code, message, place: config.locate(at, key) });
    ensureTables(scratch, systemTables as Record<string, TableSpec>);
    for (const [name, spec] of Object.entries(tables)) {
      try {
        ensureTables(scratch, { [name]: spec });
      } catch {
        continue; // why: a broken declaration is reported by the table checks.
      }
    }
    const context: CheckContext = {
      pipeline,
      config,
      path: [],
      scratch,
      written: new Set(Object.keys(tables)),
      at: (subpath, key) => config.locate(subpath, key),
    };
    const named = new Map<string, DeclaredCheck>();
    for (const check of checks) {
      const at = check.path;
      const spec = check.spec;
      if (spec.name !== undefined) {
        const earlier = named.get(spec.name);
        if (earlier) problem(`check name "${spec.name}" is already used by a check on ${earlier.table}`, [...at, "name"]);
        named.set(spec.name, check);
      }
      const table = tables[check.table]!;
      const columns = Object.keys(table.columns);
      const needColumn = (column: string, where: (string | number)[], owner = check.table, ownerColumns = columns): boolean => {
        if (ownerColumns.includes(column)) return true;
        problem(`"${column}" is not a column of table ${owner}${didYouMean(column, ownerColumns)}`, where);
        return false;
      };
      let ok = true;
      if ("column" in spec && spec.column !== undefined) ok = needColumn(spec.column, [...at, "column"]) && ok;
      if (spec.check === "unique") spec.columns.forEach((column, i) => (ok = needColumn(column, [...at, "columns", i]) && ok));
      if (spec.check === "relationships") {
        const parent = tables[spec.to];
        if (!parent) {
          problem(`table "${spec.to}" is not declared under tables:${didYouMean(spec.to, Object.keys(tables))}`, [...at, "to"]);
          ok = false;
        } else ok = needColumn(spec.field, [...at, "field"], spec.to, Object.keys(parent.columns)) && ok;
      }
      if ((spec.check === "range" || spec.check === "row_count") && spec.min === undefined && spec.max === undefined) {
        problem(`a ${spec.check} check needs min:, max:, or both`, at);
        ok = false;
      }
      if (spec.check === "row_count" && spec.min !== undefined && spec.max !== undefined && spec.min > spec.max) {
        problem(`min (${spec.min}) is more than max (${spec.max})`, [...at, "min"]);
        ok = false;
      }
      // why: a bound of the run is text.
      const valueType = (bound: RangeBound) => (typeof bound === "object" ? "string" : typeof bound);
      if (spec.check === "range" && spec.min !== undefined && spec.max !== undefined && valueType(spec.min) !== valueType(spec.max)) {
        problem("min and max must both be numbers or both be text (dates are text: '2023-01-31')", [...at, "max"]);
        ok = false;
      }
      if (spec.check === "range") {
        const type = table.columns[spec.column]?.type;
        for (const side of ["min", "max"] as const) {
          const bound = spec[side];
          if (typeof bound !== "object" || type === undefined) continue;
          const fits = bound.run === "date" ? type === "date" || type === "text" : type === "text";
          if (fits) continue;
          const wanted = bound.run === "date" ? "a date or text column" : "a text column (a date column takes { run: date })";
          problem(`{ run: ${bound.run} } is compared with ${wanted}; ${spec.column} is ${type}`, [...at, side, "run"]);
          ok = false;
        }
      }
      let label = `check ${check.name}`;
      let where: (string | number)[] = at;
      if (spec.check === "sql") {
        if ((spec.file === undefined) === (spec.sql === undefined)) {
          problem("a sql check needs exactly one of file: or sql:", at);
          continue;
        }
        where = [...at, spec.file ? "file" : "sql"];
        const unreadable = spec.file === undefined ? undefined : sqlFileProblem(spec.file, config.baseDir);
        if (unreadable) {
          problem(unreadable, where);
          continue;
        }
        const text = readSqlText(spec, config.baseDir);
        for (const name of unknownParameters(text))
          problem(`unknown parameter :${name} in ${spec.file ?? "sql"}; ${parametersHint()}`, where);
        label = `check ${check.name} (${spec.file ?? "sql"})`;
      }
      if (spec.check === "expression") where = [...at, "expression"];
      if (!ok) continue;
      const failing = failingRowsSql(check, config.baseDir);
      const compiled = compileQuery(context, failing, label);
      if ("error" in compiled) {
        if (compiled.error) problem(`${label}: ${compiled.error}`, where, undefined, "E_SQL");
        continue;
      }
      if (writesDatabase(scratch, failing)) {
        problem(`${label}: a check must be one SELECT that only reads; this statement writes to the database`, where, undefined, "E_SQL");
        continue;
      }
      try {
        scratch.prepare(countingSql(failing)).free();
      } catch (error) {
        problem(`${label}: ${(error as Error).message}`, where, undefined, "E_SQL");
      }
    }
    return diagnostics;
  });
  return [...freshness, ...compiled];
}
