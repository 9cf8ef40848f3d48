import path from "node:path";
import { CheckRun } from "./checks.js";
import type { StepSpec } from "./config/schema.js";
import type { SqlDatabase } from "./db/database.js";
import type { UntouchedTables } from "./db/engines/engine.js";
import type { EngineName } from "./db/engines/index.js";
import { explainDamage } from "./db/integrity.js";
import { declaredTables } from "./db/schema.js";
import { WriteBeforeReady } from "./db/read-first.js";
import { lockDatabase, type OutputFile, type Session } from "./db/session.js";
import { describeError, PipelineError, throwIfAborted } from "./errors.js";
import { configFingerprint } from "./fingerprint.js";
import { recordStep } from "./history.js";
import type { Plan, PlannedStep } from "./plan.js";
import { DeepPlan } from "./run/deep-plan.js";
import { closeRun, openRun, plannedOutputs, prepareDatabase, type OpenedRun } from "./run/record.js";
import { failedRun, plannedReport, reportUnchanged, showRejections, type RunEvent, type RunReport, type StepResult } from "./run/report.js";
import { RunBasis } from "./run/committed-tables.js";
import { StaleTables } from "./run/stale-tables.js";
import type { CommittedTables, StepDefinition, StepOutcome } from "./step.js";

export type { RunEvent, RunReport, StepResult, StepStatus } from "./run/report.js";

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

/** What a run that held the lock keeps for the journal, should it fail. */
interface Attempt {
  startedAt: string;
  configSha256: string;
}

/**
 * Executes a plan against its database through one session: every step runs in one transaction,
 * committed only when every step succeeded. A failed run leaves the database as it was.
 */
export async function executePlan(plan: Plan, options: RunOptions): Promise<RunReport> {
  const now = options.now ?? (() => new Date());
  const started = performance.now();
  const report = plannedReport(plan);
  const outputs = plannedOutputs(plan, options.typeOf);
  const deep = options.deep ? new DeepPlan(plan, options.typeOf) : undefined;
  let session: Session | undefined;
  let attempt: Attempt | undefined;
  try {
    session = await lockDatabase(plan.database, {
      engine: options.engine,
      lockTimeoutMs: options.lockTimeoutMs,
      signal: options.signal,
      outputs: outputs.map((output) => path.resolve(plan.config.baseDir, output)),
      notes: report.notes,
      runsScripts: plan.steps.some((step) => options.typeOf(step.spec).writesUndeclared?.(step.spec) === true),
    });
    attempt = { startedAt: now().toISOString(), configSha256: "" };
    const { startedAt } = attempt;
    const failures = await session.begin();
    const db = session.db;
    // why: a deep plan copies the derived tables into TEMP before the steps.
    if (deep) await session.readyToWrite();
    const schema = await readyIfWritten(session, () => prepareDatabase(db, plan, report, options));
    attempt.configSha256 = configFingerprint(plan, options.typeOf);
    deep?.copyDerivedTables(db);
    const run = openRun(db, plan, report, { ...attempt, failures, outputs, fullRefresh: options.fullRefresh });
    const { files, changed, basis, keysHeld } = await runSteps(db, plan, options, report, {
      ...run,
      startedAt,
      now,
      untouched: session.untouched,
      configSha256: attempt.configSha256,
      lockForWrite: (tables) => session!.lockForWrite(tables),
      readyToWrite: () => session!.readyToWrite(),
    });
    if (!changed && run.recordedFailures === 0 && schema.addedColumns.length === 0) {
      // why: nothing to record but the fact that nothing changed; committing that costs more than the run.
      reportUnchanged(report, db, run.previous!.runId);
      deep?.judge(report, db);
      // why: a deep plan leaves the journal of failed runs for the next real run to record.
      await session.rollback({ journalRecorded: !deep });
      return report;
    }
    await session.readyToWrite();
    const appendedSince = (table: string) => basis.appendedSince(db, table);
    // why: a table whose keys the checks verified, unwritten since like its parents, is not verified twice (docs/reliability.md).
    const verifiedByChecks = (table: string, parents: readonly string[]) => {
      const next = keysHeld.get(table);
      return next !== undefined && basis.unwrittenFrom([table, ...parents], next);
    };
    closeRun(db, plan, report, {
      runId: run.runId,
      files,
      finishedAt: now().toISOString(),
      soundTables: session.soundTables,
      appendedSince,
      verifiedByChecks,
    });
    throwIfAborted(options.signal);
    if (deep) {
      // why: the deep plan stops where the run would save: same steps, checks and verifications, then nothing kept.
      deep.judge(report, db);
      await session.rollback();
      report.plannedFiles = files.map((file) => file.path);
      Object.assign(report, { ok: true, exitCode: 0 });
      return report;
    }
    await commitRun(session, report, run, files, plan, basis);
    Object.assign(report, { ok: true, exitCode: 0 });
  } catch (thrown) {
    await failRun(thrown, { plan, report, session, attempt, deep, now });
  } finally {
    await session?.release();
    report.durationMs = performance.now() - started;
    if (deep) Object.assign(report, { deep: true, changedTables: report.changedTables ?? [] });
  }
  return report;
}

/** The step loop: runs each step (or skips it, or leaves it out with --select), and each check once the steps it reads have run. */
async function runSteps(
  db: SqlDatabase,
  plan: Plan,
  options: RunOptions,
  report: RunReport,
  run: OpenedRun & {
    startedAt: string;
    now: () => Date;
    untouched: UntouchedTables;
    configSha256: string;
    lockForWrite: (tables: readonly string[] | "all") => void;
    readyToWrite: () => Promise<void>;
  },
): Promise<{ files: OutputFile[]; changed: boolean; basis: RunBasis; keysHeld: ReadonlyMap<string, number> }> {
  const startedAt = run.startedAt;
  // why: a derived step reads tables, not sources: one another program wrote since the last commit gives it other rows than last time.
  const untouched = run.untouched.tables;
  const unproven = untouched === "all" ? [] : Object.keys(plan.pipeline.tables).filter((table) => !untouched.has(table));
  const rederive = !run.changed && unproven.length > 0 && plan.steps.some((step) => options.typeOf(step.spec).derived);
  if (rederive)
    report.notes.push(
      `not proven as the last commit left them: ${unproven.join(", ")}; the derived steps that read or write them run again`,
    );
  // why: a derived step reading only tables proven as the last commit left them would compute what that commit holds.
  const stale = rederive ? new StaleTables(untouched as ReadonlySet<string>, plan.config.baseDir) : undefined;
  /** Whether the run commits; `sourcesChanged`: a step that is not derived wrote, so every derived step runs. */
  let changed = run.changed || rederive;
  let sourcesChanged = run.changed;
  const files: OutputFile[] = [];
  // why: a check whose inputs provably did not change since the last commit keeps that commit's result (docs/checks.md).
  const carry = {
    untouched: run.untouched.tables,
    untouchedWhy: run.untouched.why,
    previousRunId: run.previous?.runId,
    sameConfig: run.previous?.configSha256 === run.configSha256,
  };
  const basis = RunBasis.before(db, plan, options.typeOf, { ...carry, steps: report.steps }, Object.keys(plan.pipeline.tables));
  const checks = new CheckRun(plan, options.typeOf, run.now, (result) => options.onEvent({ kind: "check", result }), {
    record: true,
    committed: basis,
  });
  report.checks = checks.results;
  try {
    checks.compile(db);
  } catch {
    // why: on sqljs the run reads through node:sqlite until it writes; a query only sql.js's build compiles (validation judged
    // it there: an extension function such as stdev) is compiled on the image, readied for it.
    await run.readyToWrite();
    checks.compile(db);
  }
  for (const step of plan.steps) {
    // why: a check runs once the last step writing a table it reads has run, before the next step.
    checks.runDue(db, run.runId, startedAt, step.index);
    throwIfAborted(options.signal);
    if (options.select && !options.select.has(step.name)) {
      // why: recorded as such, so the next run derives again and this step's pending rows stay pending.
      recordStep(db, { runId: run.runId, ...report.steps[step.index]!, index: step.index });
      continue;
    }
    const definition = options.typeOf(step.spec);
    const again = !sourcesChanged && definition.derived ? stale?.why(db, step.spec, definition) : undefined;
    if (again !== undefined) {
      report.notes.push(`step ${step.name} runs again: ${again}`);
      stale!.ran(step.name, step.spec, definition);
    }
    const skip =
      !sourcesChanged && definition.derived && again === undefined ? `inputs unchanged since run ${run.previous!.runId}` : undefined;
    const outcome = await runStep(step, definition, {
      plan,
      options,
      db,
      runId: run.runId,
      startedAt,
      result: report.steps[step.index]!,
      skip,
      committed: basis.at(step.index),
      // why: a step about to write readies the database (sqljs loads its image) and, on a server, locks those tables
      // against other writers from then to the commit; a table the run only reads stays open to them. A script may write
      // any table, and which ones it does is not known before it runs: all of them are locked (docs/scaling.md).
      aboutToWrite: async () => {
        await run.readyToWrite();
        run.lockForWrite(definition.writesUndeclared?.(step.spec) ? "all" : definition.writes(step.spec));
      },
    });
    files.push(...(outcome?.files ?? []));
    if (outcome && !definition.derived && outcome.status !== "unchanged") changed = sourcesChanged = true;
  }
  checks.runDue(db, run.runId, startedAt, plan.steps.length);
  return { files, changed, basis, keysHeld: checks.keysHeld };
}

/** Commits the run with its files, and says which files were put in place; a file that could not be is an error after the save. */
async function commitRun(
  session: Session,
  report: RunReport,
  run: OpenedRun,
  files: readonly OutputFile[],
  plan: Plan,
  basis: RunBasis,
): Promise<void> {
  const { placed, notPlaced } = await session.commit(files, plan.config.baseDir, declaredTables(plan.pipeline.tables), basis.reliedOn);
  report.saved = true;
  report.files.push(...placed);
  if (run.recordedFailures > 0) report.notes.push(`recorded ${run.recordedFailures} earlier failed run(s) in pipeline_runs`);
  if (notPlaced.length > 0) {
    throw new PipelineError("E_SAVE", `the database was saved, but these files could not be put in place: ${notPlaced.join(", ")}`);
  }
}

/** Reports a failed run: explains a damaged file, rolls back, and (for a real run that held the lock) keeps the failure in the journal. */
async function failRun(
  thrown: unknown,
  run: {
    plan: Plan;
    report: RunReport;
    session: Session | undefined;
    attempt: Attempt | undefined;
    deep: DeepPlan | undefined;
    now: () => Date;
  },
): Promise<void> {
  const { plan, report, session, attempt, deep } = run;
  const db = session?.saved === false ? safeDb(session) : undefined;
  const error = explainDamage(thrown, db, declaredTables(plan.pipeline.tables), plan.database);
  report.status = "failed";
  report.error = describeError(error);
  report.exitCode = error instanceof PipelineError ? error.exitCode : 1;
  // why: only the lock holder (attempt is set once the lock is held) may touch the journal, and a run that saved is already in the history;
  // a run refused for its configuration (exit 2) did not run.
  if (!session || attempt === undefined || report.saved || report.exitCode === 2) return;
  deep?.judge(report, safeDb(session));
  await session.rollback();
  if (!deep) {
    const finishedAt = run.now().toISOString();
    await session.journalFailure(failedRun(plan, report, { startedAt: attempt.startedAt, finishedAt, configSha256: attempt.configSha256 }));
  }
}

/** Runs one step into its result (or marks it skipped); returns its outcome, undefined when skipped; rethrows its error. */
async function runStep(
  step: PlannedStep,
  definition: StepDefinition,
  run: {
    plan: Plan;
    options: RunOptions;
    db: SqlDatabase;
    runId: number;
    startedAt: string;
    result: StepResult;
    skip: string | undefined;
    committed: CommittedTables;
    aboutToWrite: () => Promise<void>;
  },
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
    if (!definition.announcesWrites) await run.aboutToWrite();
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
      committed: run.committed,
      aboutToWrite: run.aboutToWrite,
    });
    Object.assign(result, { status: outcome.status, counts: outcome.counts, detail: outcome.detail });
    if (outcome.incremental) result.incremental = outcome.incremental;
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

/**
 * Runs `body`, which may write before it knows whether it does (the schema: a table created, a
 * column added); when the database was opened to read first and refuses the write, readies it and
 * runs `body` again: the refusal came before anything was written.
 */
async function readyIfWritten<T>(session: Session, body: () => Promise<T>): Promise<T> {
  try {
    return await body();
  } catch (error) {
    if (!(error instanceof WriteBeforeReady)) throw error;
    await session.readyToWrite();
    return body();
  }
}

/** The session's database while its transaction is open, for explaining an error; undefined before it began. */
function safeDb(session: Session): SqlDatabase | undefined {
  try {
    return session.db;
  } catch {
    return undefined;
  }
}
