import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { databaseSetting, type StepSpec, type TableSpec } from "./config/schema.js";
import { quoteIdent, type SqlDatabase } from "./db/database.js";
import type { EngineName } from "./db/engines/index.js";
import { lockDatabase, preview, type OutputFile, type Session } from "./db/session.js";
import { explainDamage, refuseDamage } from "./db/integrity.js";
import { refuseForeignObjects } from "./db/schema-objects.js";
import { ensureTables } from "./db/tables.js";
import { describeError, PipelineError, throwIfAborted } from "./errors.js";
import { recordFailedRuns, type FailedRun } from "./failed-runs.js";
import { recordOutputs, refuseOutputsOfAnotherDatabase } from "./outputs.js";
import { finishRun, lastRun, leftStepsOut, recordStep, rejectionSamples, startRun, systemTables, type RejectionSample } from "./history.js";
import type { SchemaChanges } from "./output.js";
import type { Plan, PlannedStep } from "./plan.js";
import type { StepCounts, StepDefinition, StepOutcome } from "./step.js";
import { CheckRun, declaredChecks, type CheckResult, type PlannedCheck } from "./checks.js";

/** Where a step stands in a run report. */
export type StepStatus = "not_executed" | "success" | "unchanged" | "skipped" | "error";

/** The report of one step: it starts as the plan, not executed. */
export interface StepResult {
  index: number;
  name: string;
  type: string;
  description: string;
  status: StepStatus;
  counts: StepCounts;
  durationMs: number;
  detail?: string | undefined;
  error?: { code: string; message: string } | undefined;
  /** The first rows the step rejected or kept aside in this run, by line. */
  rejections?: RejectionSample[] | undefined;
}

/** How many rejected rows a step shows in the log and the JSON report. */
const rejectionSamplesShown = 3;

/** The report of a whole run. */
export interface RunReport {
  ok: boolean;
  database: string;
  runId?: number | undefined;
  status: string;
  createdTables: string[];
  steps: StepResult[];
  durationMs: number;
  saved: boolean;
  /** Files put in place after the database was saved (reports), relative to the pipeline file. */
  files: string[];
  error?: { code: string; message: string; expected: boolean } | undefined;
  /** The exit code this report calls for. */
  exitCode: number;
  /** A sentence on the outcome, when there is more to say than the status. */
  detail?: string | undefined;
  /** What else the run did or could not do: columns added to the engine's tables, failed runs recorded. */
  notes: string[];
  /** Rows rejected or kept aside by the run that saved; for an unchanged run, the rows still pending. */
  rejectedRows: number;
  /** The checks that ran, in order: passed, warned or failed. */
  checks?: CheckResult[] | undefined;
  /** A deep plan (`plan --deep`): every step and check ran, then everything was rolled back; nothing was saved or written. */
  deep?: boolean | undefined;
  /** With `deep`: the tables whose rows the run would change, in the order of the steps that write them. */
  changedTables?: string[] | undefined;
  /** With `deep`: the files the run would write (reports), relative to the pipeline file; none was written. */
  plannedFiles?: string[] | undefined;
}

/** What a run tells its caller as it goes. */
export type RunEvent =
  | { kind: "start"; database: string; createdTables: string[] }
  | { kind: "step-start"; step: PlannedStep; total: number }
  | { kind: "step-end"; result: StepResult }
  | { kind: "progress"; step: PlannedStep; rows: number; elapsedMs: number }
  | { kind: "check"; result: CheckResult };

/** Options of a run. */
export interface RunOptions {
  force: boolean;
  /** `--full-refresh`: every load step (true) or the named ones read their source in full; derived steps run again. */
  fullRefresh?: true | readonly string[] | undefined;
  /** `--select`: run only these steps; the others stay not executed (their tables and pending rows as they were). */
  select?: ReadonlySet<string> | undefined;
  /** The storage engine: `sqljs` (the default) or `native`. */
  engine: EngineName;
  /** How long to wait for another run's lock on the database, and for another program writing it. */
  lockTimeoutMs: number;
  /** Aborts the run (SIGINT, SIGTERM): it stops between steps or rows, and saves nothing. */
  signal?: AbortSignal | undefined;
  onEvent: (event: RunEvent) => void;
  typeOf: (step: StepSpec) => StepDefinition;
  now?: () => Date;
  /** A deep plan: the run takes the lock, fetches, runs every step and check in its transaction, then rolls back; no journal line, no file. */
  deep?: boolean | undefined;
}

/**
 * Executes a plan against its database through one session: every step runs in one transaction,
 * committed only when every step succeeded. A failed run leaves the database as it was.
 */
export async function executePlan(plan: Plan, options: RunOptions): Promise<RunReport> {
  const now = options.now ?? (() => new Date());
  const started = performance.now();
  const report = plannedReport(plan);
  const outputs = plan.steps.flatMap((step) => options.typeOf(step.spec).files?.(step.spec) ?? []);
  let session: Session | undefined;
  let startedAt: string | undefined;
  let configSha256 = "";
  let copies: Map<string, string> | undefined;
  // why: a deep plan says which tables would change before its transaction is rolled back, while their rows can still be compared.
  const judgeChanges = () => {
    if (options.deep) report.changedTables = changedTables(report.steps, plan, options.typeOf, session && safeDb(session), copies);
  };
  try {
    session = await lockDatabase(plan.database, {
      engine: options.engine,
      lockTimeoutMs: options.lockTimeoutMs,
      signal: options.signal,
      outputs: outputs.map((output) => path.resolve(plan.config.baseDir, output)),
      notes: report.notes,
    });
    startedAt = now().toISOString();
    const failures = await session.begin();
    const db = session.db;
    const schema = ensureSchema(db, plan);
    report.createdTables = schema.createdTables;
    await refuseOutputsOfAnotherDatabase(db, {
      database: plan.database,
      configured: path.resolve(plan.config.baseDir, databaseSetting(plan.pipeline).path),
      configuredAs: databaseSetting(plan.pipeline).path,
      baseDir: plan.config.baseDir,
      outputs: plan.steps.flatMap((step) =>
        (options.typeOf(step.spec).files?.(step.spec) ?? []).map((file) => ({ path: file, step: step.name })),
      ),
    });
    if (schema.addedColumns.length > 0) report.notes.push(`added the column(s) ${schema.addedColumns.join(", ")}`);
    options.onEvent({ kind: "start", database: plan.database, createdTables: report.createdTables });
    configSha256 = configFingerprint(plan, options.typeOf);
    if (options.deep) copies = copyDerivedTables(db, plan, options.typeOf);
    const previous = lastRun(db);
    const recordedFailures = recordFailedRuns(db, failures);
    // why: a report deleted on disk is written again, so the derived steps run even when nothing else changed.
    const missing = previous === undefined ? [] : outputs.filter((output) => !existsSync(path.resolve(plan.config.baseDir, output)));
    if (missing.length > 0) report.notes.push(`${missing.join(", ")} missing on disk: written again`);
    // why: when no source changed and neither did the configuration or its SQL, derived steps would recompute the same rows.
    let changed =
      previous === undefined ||
      previous.configSha256 !== configSha256 ||
      report.createdTables.length > 0 ||
      options.fullRefresh !== undefined ||
      missing.length > 0 ||
      // why: a run with --select may have changed tables without running every step that derives from them.
      leftStepsOut(db, previous.runId);
    const runId = startRun(db, { startedAt, configSha256, configFile: plan.config.file });
    report.runId = runId;
    const files: OutputFile[] = [];
    // why: a check whose inputs provably did not change since the last commit keeps that commit's result (docs/checks.md).
    const carry = { untouched: session.soundTables, previousRunId: previous?.runId, sameConfig: previous?.configSha256 === configSha256 };
    const checks = new CheckRun(plan, options.typeOf, now, (result) => options.onEvent({ kind: "check", result }), {
      record: true,
      carry: { ...carry, steps: report.steps },
    });
    report.checks = checks.results;
    for (const step of plan.steps) {
      // why: a check runs once the last step writing a table it reads has run, before the next step.
      checks.runDue(db, runId, startedAt, step.index);
      throwIfAborted(options.signal);
      if (options.select && !options.select.has(step.name)) {
        // why: recorded as such, so the next run derives again and this step's pending rows stay pending.
        recordStep(db, { runId, ...report.steps[step.index]!, index: step.index });
        continue;
      }
      const definition = options.typeOf(step.spec);
      const skip = !changed && definition.derived ? `inputs unchanged since run ${previous!.runId}` : undefined;
      const outcome = await runStep(step, definition, { plan, options, db, runId, startedAt, result: report.steps[step.index]!, skip });
      files.push(...(outcome?.files ?? []));
      if (outcome && !definition.derived && outcome.status !== "unchanged") changed = true;
    }
    checks.runDue(db, runId, startedAt, plan.steps.length);
    if (!changed && recordedFailures === 0 && schema.addedColumns.length === 0) {
      // why: nothing to record but the fact that nothing changed; committing that costs more than the run.
      report.status = "unchanged";
      report.runId = undefined;
      report.rejectedRows = pendingRowsIn(db);
      const left = report.rejectedRows > 0 ? `; ${report.rejectedRows} rejected row(s) still pending (see the rejections command)` : "";
      report.detail = `nothing changed since run ${previous!.runId}${left}; the database was not rewritten`;
      Object.assign(report, { ok: true, exitCode: 0 });
      judgeChanges();
      // why: a deep plan leaves the journal of failed runs for the next real run to record.
      await session.rollback({ journalRecorded: !options.deep });
      return report;
    }
    recordOutputs(db, plan.database, plan.config.baseDir, runId, files);
    report.status = finishRun(db, runId, now().toISOString());
    report.rejectedRows = rejectedRowsOf(db, runId);
    // why: an index that disagrees with its table (a damaged file) lets duplicates in and hides rows from lookups; never save on top of it.
    // A table this runner's last commit checked, in a file nobody wrote since, holds no damage from outside (docs/reliability.md).
    const sound = session.soundTables;
    refuseDamage(db, sound === "all" ? [] : declaredTables(plan).filter((table) => !sound.has(table)), plan.database);
    checkForeignKeys(db);
    throwIfAborted(options.signal);
    if (options.deep) {
      // why: the deep plan stops where the run would save: same steps, checks and verifications, then nothing kept.
      judgeChanges();
      await session.rollback();
      report.plannedFiles = files.map((file) => file.path);
      Object.assign(report, { ok: true, exitCode: 0 });
      return report;
    }
    const { placed, notPlaced } = await session.commit(files, plan.config.baseDir, declaredTables(plan));
    report.saved = true;
    report.files.push(...placed);
    if (recordedFailures > 0) report.notes.push(`recorded ${recordedFailures} earlier failed run(s) in pipeline_runs`);
    if (notPlaced.length > 0) {
      throw new PipelineError("E_SAVE", `the database was saved, but these files could not be put in place: ${notPlaced.join(", ")}`);
    }
    Object.assign(report, { ok: true, exitCode: 0 });
  } catch (thrown) {
    const error = explainDamage(thrown, session?.saved === false ? safeDb(session) : undefined, declaredTables(plan), plan.database);
    report.status = "failed";
    report.error = describeError(error);
    report.exitCode = error instanceof PipelineError ? error.exitCode : 1;
    // why: only the lock holder (startedAt is set once the lock is held) may touch the journal, and a run that saved is already in the history;
    // a run refused for its configuration (exit 2) did not run.
    if (session && startedAt !== undefined && !report.saved && report.exitCode !== 2) {
      judgeChanges();
      await session.rollback();
      if (!options.deep)
        await session.journalFailure(failedRun(plan, report, { startedAt, finishedAt: now().toISOString(), configSha256 }));
    }
  } finally {
    await session?.release();
    report.durationMs = performance.now() - started;
    if (options.deep) Object.assign(report, { deep: true, changedTables: report.changedTables ?? [] });
  }
  return report;
}

/**
 * For a deep plan: a temporary copy of each table a derived step writes, taken before the steps, so
 * that a table a step empties and fills again with the same rows reads as unchanged. Rolled back
 * with the run's transaction; never in the database file.
 */
function copyDerivedTables(db: SqlDatabase, plan: Plan, typeOf: (step: StepSpec) => StepDefinition): Map<string, string> {
  const copies = new Map<string, string>();
  for (const step of plan.steps) {
    const definition = typeOf(step.spec);
    if (!definition.derived) continue;
    for (const table of definition.writes(step.spec)) {
      if (copies.has(table)) continue;
      const copy = `deep_plan_before_${copies.size}`;
      db.exec(`CREATE TEMP TABLE ${quoteIdent(copy)} AS SELECT * FROM main.${quoteIdent(table)}`);
      copies.set(table, copy);
    }
  }
  return copies;
}

/**
 * The tables a run's steps would change, in step order: a table copied before the steps when its
 * rows differ from the copy; another when its step inserted, updated or deleted rows, or counts
 * none (a script).
 */
function changedTables(
  steps: readonly StepResult[],
  plan: Plan,
  typeOf: (step: StepSpec) => StepDefinition,
  db: SqlDatabase | undefined,
  copies: ReadonlyMap<string, string> | undefined,
): string[] {
  const tables = new Set<string>();
  for (const result of steps) {
    if (result.status !== "success") continue;
    const { inserted = 0, updated = 0, deleted = 0 } = result.counts;
    const counted = ["inserted", "updated", "deleted"].some((name) => name in result.counts);
    const spec = plan.steps[result.index]!.spec;
    for (const table of typeOf(spec).writes(spec)) {
      const copy = copies?.get(table);
      const changed = copy !== undefined && db !== undefined ? rowsDiffer(db, table, copy) : inserted + updated + deleted > 0 || !counted;
      if (changed) tables.add(table);
    }
  }
  return [...tables];
}

/** Whether a table's rows differ from its copy (as sets of rows); when they cannot be compared, they differ. */
function rowsDiffer(db: SqlDatabase, table: string, copy: string): boolean {
  const [t, c] = [`main.${quoteIdent(table)}`, `temp.${quoteIdent(copy)}`];
  try {
    const oneOf = (a: string, b: string) => db.all(`SELECT 1 FROM (SELECT * FROM ${a} EXCEPT SELECT * FROM ${b}) LIMIT 1`).length > 0;
    return oneOf(t, c) || oneOf(c, t);
  } catch {
    return true;
  }
}

/** Runs one step into its result (or marks it skipped); returns its outcome, undefined when skipped; rethrows its error. */
async function runStep(
  step: PlannedStep,
  definition: StepDefinition,
  run: { plan: Plan; options: RunOptions; db: SqlDatabase; runId: number; startedAt: string; result: StepResult; skip: string | undefined },
): Promise<StepOutcome | undefined> {
  const { plan, options, db, runId, result } = run;
  options.onEvent({ kind: "step-start", step, total: plan.steps.length });
  if (run.skip !== undefined) {
    Object.assign(result, { status: "skipped", detail: run.skip });
    options.onEvent({ kind: "step-end", result });
    return undefined;
  }
  const stepStarted = performance.now();
  try {
    const outcome = await definition.execute(step.spec, {
      pipeline: plan.pipeline,
      config: plan.config,
      db,
      runId,
      startedAt: run.startedAt,
      force: options.force,
      fullRefresh: options.fullRefresh === true || (options.fullRefresh?.includes(step.name) ?? false),
      signal: options.signal,
      progress: (rows) => options.onEvent({ kind: "progress", step, rows, elapsedMs: performance.now() - stepStarted }),
    });
    Object.assign(result, { status: outcome.status, counts: outcome.counts, detail: outcome.detail });
    if ((outcome.counts.rejected ?? 0) + (outcome.counts.conflicting ?? 0) + (outcome.counts.pending ?? 0) > 0)
      showRejections(db, runId, result);
    return outcome;
  } catch (error) {
    const { code, message } = describeError(error);
    Object.assign(result, { status: "error", error: { code, message } });
    if (code === "E_REJECTED") showRejections(db, runId, result);
    throw error;
  } finally {
    result.durationMs = performance.now() - stepStarted;
    options.onEvent({ kind: "step-end", result });
    if (result.status !== "error") recordStep(db, { runId, ...result, index: step.index });
  }
}

/** The report of a run before it starts: every step planned, not executed. */
function plannedReport(plan: Plan): RunReport {
  return {
    ok: false,
    database: plan.database,
    status: "failed",
    createdTables: [],
    saved: false,
    files: [],
    notes: [],
    rejectedRows: 0,
    exitCode: 1,
    durationMs: 0,
    steps: plan.steps.map((step) => ({
      index: step.index,
      name: step.name,
      type: step.type,
      description: step.description,
      status: "not_executed",
      counts: {},
      durationMs: 0,
    })),
  };
}

/** The session's database while its transaction is open, for explaining an error; undefined before it began. */
function safeDb(session: Session): SqlDatabase | undefined {
  try {
    return session.db;
  } catch {
    return undefined;
  }
}

/** The tables a run would create, the columns it would add and the checks it will make, through the same session path rolled back; never writes. */
export async function previewPlan(
  plan: Plan,
  engine: EngineName,
  lockTimeoutMs: number,
  typeOf: (step: StepSpec) => StepDefinition,
): Promise<SchemaChanges & { checks: PlannedCheck[] }> {
  return preview(plan.database, engine, lockTimeoutMs, (db) => {
    const changes = ensureSchema(db, plan);
    return { ...changes, checks: new CheckRun(plan, typeOf, () => new Date()).planned(db) };
  });
}

/**
 * Refuses triggers, views and indexes the runner did not create on the tables it declares, then
 * creates the engine's tables and the pipeline's that are absent, and adds to the engine's tables
 * the columns a newer version declares (never to the pipeline's; any other difference is E_DRIFT).
 * Returns the pipeline tables created and the columns added.
 */
function ensureSchema(db: SqlDatabase, plan: Plan): SchemaChanges {
  refuseForeignObjects(db, declaredTables(plan), plan.database);
  const system = ensureTables(db, systemTables as Record<string, TableSpec>, { addColumns: true });
  const pipeline = ensureTables(db, plan.pipeline.tables as Record<string, TableSpec>);
  return { createdTables: pipeline.created, addedColumns: system.addedColumns };
}

/** The tables the runner declares: the engine's and the pipeline's. */
function declaredTables(plan: Plan): string[] {
  return [...Object.keys(systemTables), ...Object.keys(plan.pipeline.tables)];
}

/** A failed run as the journal keeps it. */
function failedRun(plan: Plan, report: RunReport, run: { startedAt: string; finishedAt: string; configSha256: string }): FailedRun {
  return {
    ...run,
    status: report.error?.code === "E_ABORTED" ? "interrupted" : "failed",
    configFile: plan.config.file,
    error: `${report.error?.code ?? "E_RUN"} ${report.error?.message ?? ""}`.trim(),
    steps: report.steps
      .filter((step) => step.status !== "not_executed" && step.status !== "skipped")
      .map(({ index, name, type, status, counts, durationMs, detail, error }) => ({
        index,
        name,
        type,
        status,
        counts,
        durationMs,
        detail: error?.message ?? detail,
      })),
    checks: report.checks ?? [],
  };
}

/** A hash of everything that decides what derived steps compute and what the checks judge: the configuration, every file the derived steps read (their SQL) and the SQL files of `check: sql`. */
function configFingerprint(plan: Plan, typeOf: (step: StepSpec) => StepDefinition): string {
  const hash = createHash("sha256").update(JSON.stringify(plan.pipeline));
  const files = plan.pipeline.steps.flatMap((step) => (typeOf(step).derived ? (typeOf(step).inputs?.(step) ?? []) : []));
  for (const { spec } of declaredChecks(plan.pipeline))
    if (spec.check === "sql" && spec.file !== undefined) files.push({ file: spec.file, what: "check" });
  for (const { file } of files) hash.update(`\0${file}\0`).update(readFileSync(path.resolve(plan.config.baseDir, file)));
  return hash.digest("hex");
}

/** Puts a step's first rejected rows on its report, for the log and the JSON report. */
function showRejections(db: SqlDatabase, runId: number, result: StepResult): void {
  const samples = rejectionSamples(db, runId, result.name, rejectionSamplesShown);
  if (samples.length > 0) result.rejections = samples;
}

/** How many rejected rows are pending in the database, whichever run read them. */
function pendingRowsIn(db: SqlDatabase): number {
  return Number(db.all("SELECT count(*) AS n FROM pipeline_rejected_rows WHERE status = 'pending'")[0]?.["n"] ?? 0);
}

/** How many rows a saved run left pending (read or retried by it), as pipeline_runs records it. */
function rejectedRowsOf(db: SqlDatabase, runId: number): number {
  return Number(db.all("SELECT rejected_rows FROM pipeline_runs WHERE run_id = ?", [runId])[0]?.["rejected_rows"] ?? 0);
}

function checkForeignKeys(db: SqlDatabase): void {
  if (db.dialect) return db.dialect.checkConstraints(db);
  const violations = db.all("PRAGMA foreign_key_check");
  if (violations.length === 0) return;
  const first = violations.slice(0, 5).map((v) => {
    const table = String(v["table"]);
    const row = db.all(`SELECT * FROM ${quoteIdent(table)} WHERE rowid = ?`, [v["rowid"] ?? null])[0];
    return `${table} row ${JSON.stringify(row ?? { rowid: v["rowid"] })} references a missing ${String(v["parent"])} row`;
  });
  throw new PipelineError(
    "E_DB",
    `${violations.length} foreign key violation(s) at the end of the run, so nothing was saved: ${first.join("; ")}`,
  );
}
