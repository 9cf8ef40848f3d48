import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import type { StepSpec, TableSpec } from "./config/schema.js";
import { quoteIdent, type SqlDatabase } from "./db/database.js";
import { openSqlJs } from "./db/sqljs.js";
import { acquireLock, removeLocksLeftAside, type DatabaseLock } from "./db/lock.js";
import {
  checkNoSqliteSidecars,
  fileIdentity,
  readDatabaseFile,
  removeStrayTemporaries,
  saveDatabaseFile,
  stageFile,
  type FileIdentity,
  type StagedFile,
} from "./db/store.js";
import { explainDamage, refuseDamage } from "./db/integrity.js";
import { refuseForeignObjects } from "./db/schema-objects.js";
import { ensureTables } from "./db/tables.js";
import { describeError, PipelineError, throwIfAborted } from "./errors.js";
import {
  clearFailedRuns,
  failedRunsJournal,
  journalFailedRun,
  readFailedRuns,
  recordFailedRuns,
  type JournalContents,
} from "./failed-runs.js";
import { recordOutputs, refuseOutputsOfAnotherDatabase } from "./outputs.js";
import { finishRun, lastRun, recordStep, rejectionSamples, startRun, systemTables, type RejectionSample } from "./history.js";
import type { SchemaChanges } from "./output.js";
import type { Plan, PlannedStep } from "./plan.js";
import type { StepCounts, StepDefinition } from "./step.js";
import { CheckRun, type CheckResult } from "./checks.js";

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
  /** Rows rejected or kept aside by the run that saved; for an unchanged run, by the run whose result it leaves unchanged. */
  rejectedRows: number;
  /** The checks that ran, in order: passed, warned or failed. */
  checks?: CheckResult[] | undefined;
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
  /** How long to wait for another run's lock on the database. */
  lockTimeoutMs: number;
  /** Aborts the run (SIGINT, SIGTERM): it stops between steps or rows, and saves nothing. */
  signal?: AbortSignal | undefined;
  onEvent: (event: RunEvent) => void;
  typeOf: (step: StepSpec) => StepDefinition;
  now?: () => Date;
}

/**
 * Executes a plan against the database file: loads it into memory, runs every step in one
 * transaction, and saves it atomically only when every step succeeded. A failed run leaves
 * the file byte-identical.
 */
export async function executePlan(plan: Plan, options: RunOptions): Promise<RunReport> {
  const now = options.now ?? (() => new Date());
  const started = performance.now();
  const report: RunReport = {
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
  let db: SqlDatabase | undefined;
  let lock: DatabaseLock | undefined;
  const files: { path: string; content: string }[] = [];
  const staged: { path: string; file: StagedFile }[] = [];
  let startedAt: string | undefined;
  let configSha256 = "";
  try {
    lock = await acquireLock(plan.database, { timeoutMs: options.lockTimeoutMs, signal: options.signal });
    startedAt = now().toISOString();
    // why: what runs killed at the wrong moment left: a lock moved aside, temporary files of the database or of a report.
    await removeLocksLeftAside(plan.database, lock);
    const outputs = plan.steps.flatMap((step) => options.typeOf(step.spec).files?.(step.spec) ?? []);
    for (const file of [plan.database, ...outputs.map((output) => path.resolve(plan.config.baseDir, output))]) {
      await removeStrayTemporaries(file);
    }
    await checkNoSqliteSidecars(plan.database);
    const loaded = await fileIdentity(plan.database);
    db = await openDatabase(plan.database);
    db.exec("BEGIN");
    // why: a replace of a parent table deletes then re-inserts; references are checked at commit.
    db.exec("PRAGMA defer_foreign_keys = ON");
    const schema = ensureSchema(db, plan);
    report.createdTables = schema.createdTables;
    await refuseOutputsOfAnotherDatabase(db, {
      database: plan.database,
      configured: path.resolve(plan.config.baseDir, plan.pipeline.database),
      configuredAs: plan.pipeline.database,
      baseDir: plan.config.baseDir,
      outputs: plan.steps.flatMap((step) =>
        (options.typeOf(step.spec).files?.(step.spec) ?? []).map((file) => ({ path: file, step: step.name })),
      ),
    });
    if (schema.addedColumns.length > 0) report.notes.push(`added the column(s) ${schema.addedColumns.join(", ")}`);
    options.onEvent({ kind: "start", database: plan.database, createdTables: report.createdTables });
    configSha256 = configFingerprint(plan);
    const previous = lastRun(db);
    const failures = await readJournal(plan.database, report.notes);
    const recordedFailures = failures ? recordFailedRuns(db, failures.runs) : 0;
    // why: a report deleted on disk is written again, so the derived steps run even when nothing else changed.
    const missing = previous === undefined ? [] : outputs.filter((output) => !existsSync(path.resolve(plan.config.baseDir, output)));
    if (missing.length > 0) report.notes.push(`${missing.join(", ")} missing on disk: written again`);
    // why: when no source changed and neither did the configuration or its SQL, derived steps would recompute the same rows.
    let changed =
      previous === undefined ||
      previous.configSha256 !== configSha256 ||
      report.createdTables.length > 0 ||
      options.fullRefresh !== undefined ||
      missing.length > 0;
    const runId = startRun(db, { startedAt, configSha256, configFile: plan.config.file });
    report.runId = runId;
    const checks = new CheckRun(plan, options.typeOf, now, (result) => options.onEvent({ kind: "check", result }));
    report.checks = checks.results;
    for (const step of plan.steps) {
      checks.runDue(db, runId, startedAt, step.index);
      throwIfAborted(options.signal);
      const result = report.steps[step.index]!;
      const definition = options.typeOf(step.spec);
      options.onEvent({ kind: "step-start", step, total: plan.steps.length });
      if (!changed && definition.derived) {
        Object.assign(result, { status: "skipped", detail: `inputs unchanged since run ${previous!.runId}` });
        options.onEvent({ kind: "step-end", result });
        continue;
      }
      const stepStarted = performance.now();
      try {
        const outcome = await definition.execute(step.spec, {
          pipeline: plan.pipeline,
          config: plan.config,
          db,
          runId,
          startedAt,
          force: options.force,
          fullRefresh: options.fullRefresh === true || (options.fullRefresh?.includes(step.name) ?? false),
          signal: options.signal,
          progress: (rows) => options.onEvent({ kind: "progress", step, rows, elapsedMs: performance.now() - stepStarted }),
        });
        Object.assign(result, { status: outcome.status, counts: outcome.counts, detail: outcome.detail });
        if ((outcome.counts.rejected ?? 0) + (outcome.counts.conflicting ?? 0) + (outcome.counts.pending ?? 0) > 0)
          showRejections(db, runId, result);
        files.push(...(outcome.files ?? []));
        if (!definition.derived && outcome.status !== "unchanged") changed = true;
      } catch (error) {
        const { code, message } = describeError(error);
        Object.assign(result, { status: "error", error: { code, message } });
        if (code === "E_REJECTED") showRejections(db, runId, result);
        throw error;
      } finally {
        result.durationMs = performance.now() - stepStarted;
        options.onEvent({ kind: "step-end", result });
      }
      recordStep(db, { runId, ...result, index: step.index });
    }
    checks.runDue(db, runId, startedAt, plan.steps.length);
    if (!changed && recordedFailures === 0 && schema.addedColumns.length === 0) {
      // why: nothing to record but the fact that nothing changed; rewriting the whole file for that costs more than the run.
      report.status = "unchanged";
      report.runId = undefined;
      report.rejectedRows = pendingRowsIn(db);
      const left = report.rejectedRows > 0 ? `; ${report.rejectedRows} rejected row(s) still pending (see the rejections command)` : "";
      report.detail = `nothing changed since run ${previous!.runId}${left}; the database was not rewritten`;
      report.ok = true;
      report.exitCode = 0;
      await emptyJournal(plan.database, failures, report.notes);
      return report;
    }
    recordOutputs(db, plan.database, plan.config.baseDir, runId, files);
    report.status = finishRun(db, runId, now().toISOString());
    report.rejectedRows = rejectedRowsOf(db, runId);
    // why: an index that disagrees with its table (a damaged file) lets duplicates in and hides rows from lookups; never save on top of it.
    refuseDamage(db, declaredTables(plan), plan.database);
    checkForeignKeys(db);
    db.exec("COMMIT");
    throwIfAborted(options.signal);
    // why: the files a run writes (reports) are written and fsynced before the database is saved, so
    // that a file that cannot be written fails the run with nothing changed; after the save, only renames remain.
    for (const file of files) staged.push({ path: file.path, file: await stageOutputFile(plan, file) });
    const image = db.export();
    await refuseIfChanged(plan.database, loaded);
    await saveDatabaseFile(plan.database, image);
    report.saved = true;
    if (recordedFailures > 0) report.notes.push(`recorded ${recordedFailures} earlier failed run(s) in pipeline_runs`);
    await emptyJournal(plan.database, failures, report.notes);
    const notPlaced: string[] = [];
    for (const { path: file, file: output } of staged) {
      try {
        await output.commit();
        report.files.push(file);
      } catch (error) {
        notPlaced.push(`${file} (${(error as Error).message})`);
      }
    }
    if (notPlaced.length > 0) {
      throw new PipelineError("E_SAVE", `the database was saved, but these files could not be put in place: ${notPlaced.join(", ")}`);
    }
    report.ok = true;
    report.exitCode = 0;
  } catch (thrown) {
    const error = explainDamage(thrown, db, declaredTables(plan), plan.database);
    report.status = "failed";
    report.error = describeError(error);
    report.exitCode = error instanceof PipelineError ? error.exitCode : 1;
    // why: only the lock holder (startedAt is set once the lock is held) may touch the journal, and a run that saved is already in the history;
    // a run refused for its configuration (exit 2) did not run.
    if (startedAt !== undefined && !report.saved && report.exitCode !== 2) {
      await journalFailure(plan, report, { startedAt, finishedAt: now().toISOString(), configSha256 });
    }
  } finally {
    await Promise.all(staged.map(({ file }) => file.discard()));
    db?.close();
    await lock?.release();
    report.durationMs = performance.now() - started;
  }
  return report;
}

/**
 * Refuses triggers, views and indexes the runner did not create on the tables it declares, then
 * creates the engine's tables and the pipeline's that are absent, and adds to the engine's tables
 * the columns a newer version declares (never to the pipeline's; any other difference is E_DRIFT).
 * Returns the pipeline tables created and the columns added.
 */
export function ensureSchema(db: SqlDatabase, plan: Plan): SchemaChanges {
  refuseForeignObjects(db, declaredTables(plan), plan.database);
  const system = ensureTables(db, systemTables as Record<string, TableSpec>, { addColumns: true });
  const pipeline = ensureTables(db, plan.pipeline.tables as Record<string, TableSpec>);
  return { createdTables: pipeline.created, addedColumns: system.addedColumns };
}

/** The tables the runner declares: the engine's and the pipeline's. */
function declaredTables(plan: Plan): string[] {
  return [...Object.keys(systemTables), ...Object.keys(plan.pipeline.tables)];
}

/** Writes a file a step produced beside its target, fsynced, for the rename after the database is saved. */
async function stageOutputFile(plan: Plan, file: { path: string; content: string }): Promise<StagedFile> {
  const target = path.resolve(plan.config.baseDir, file.path);
  try {
    return await stageFile(target, file.content);
  } catch (error) {
    throw new PipelineError("E_SAVE", `cannot write ${target}: ${(error as Error).message}; nothing was saved`, { cause: error });
  }
}

/** The journal's name as notes show it: it sits beside the database, whose path the report already shows. */
function journalName(database: string): string {
  return `${path.basename(failedRunsJournal(database))} (beside the database)`;
}

/** The journal of earlier failed runs; one that cannot be read is left for later, with a note. */
async function readJournal(database: string, notes: string[]): Promise<JournalContents | undefined> {
  try {
    const journal = await readFailedRuns(database);
    if (journal.unreadable > 0) notes.push(`skipped ${journal.unreadable} unreadable line(s) of ${journalName(database)}`);
    return journal;
  } catch (error) {
    notes.push(`could not read ${journalName(database)} (${(error as Error).message}); its failed runs are recorded later`);
    return undefined;
  }
}

/** Empties the journal once every run in it is in the saved database (or was already there). */
async function emptyJournal(database: string, journal: JournalContents | undefined, notes: string[]) {
  if (!journal || journal.runs.length + journal.unreadable === 0) return;
  try {
    await clearFailedRuns(database);
  } catch (error) {
    notes.push(`could not empty ${journalName(database)} (${(error as Error).message}); its runs are recorded once all the same`);
  }
}

/** Appends a failed run to the journal; a journal that cannot be written is a note, never a second error. */
async function journalFailure(
  plan: Plan,
  report: RunReport,
  run: { startedAt: string; finishedAt: string; configSha256: string },
): Promise<void> {
  const journal = journalName(plan.database);
  try {
    await journalFailedRun(plan.database, {
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
    });
    report.notes.push(`this failure is kept in ${journal}; the next run that saves records it in pipeline_runs`);
  } catch (error) {
    report.notes.push(`this failure could not be kept in ${journal}: ${(error as Error).message}`);
  }
}

/** A hash of everything that decides what derived steps compute: the configuration and every SQL file it names. */
function configFingerprint(plan: Plan): string {
  const hash = createHash("sha256").update(JSON.stringify(plan.pipeline));
  const files = plan.pipeline.steps.flatMap((step) => [
    ...("file" in step && step.file ? [step.file] : []),
    ...("sections" in step ? step.sections.flatMap((section) => (section.file ? [section.file] : [])) : []),
  ]);
  for (const file of files) hash.update(`\0${file}\0`).update(readFileSync(path.resolve(plan.config.baseDir, file)));
  return hash.digest("hex");
}

async function refuseIfChanged(file: string, loaded: FileIdentity | undefined): Promise<void> {
  const now = await fileIdentity(file);
  const same =
    now === undefined
      ? loaded === undefined
      : loaded !== undefined && now.size === loaded.size && now.mtimeMs === loaded.mtimeMs && now.ino === loaded.ino;
  if (same) return;
  throw new PipelineError(
    "E_CHANGED",
    `${file} was changed by another program while this run was in progress (${now ? `now ${now.size} bytes, modified ${new Date(now.mtimeMs).toISOString()}` : "it was deleted"}); this run's result was not saved, so that change is kept. Run again.`,
  );
}

/** Opens the database file in memory; a file that is not an SQLite database is a clear error. */
export async function openDatabase(file: string): Promise<SqlDatabase> {
  const image = await readDatabaseFile(file);
  try {
    const db = await openSqlJs(image);
    db.all("SELECT count(*) FROM sqlite_schema");
    return db;
  } catch (error) {
    throw new PipelineError("E_DB", `${file} is not a readable SQLite database: ${(error as Error).message}`, { cause: error });
  }
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
