import { existsSync } from "node:fs";
import path from "node:path";
import { databaseSetting, type StepSpec } from "../config/schema.js";
import { checkForeignKeys, type AppendedSince, type VerifiedByChecks } from "../db/constraints.js";
import type { SqlDatabase } from "../db/database.js";
import { refuseDamage } from "../db/integrity.js";
import { declaredTables, ensureSchema, type SchemaChanges } from "../db/schema.js";
import type { OutputFile } from "../db/session.js";
import { recordFailedRuns, type FailedRun } from "../failed-runs.js";
import { finishRun, lastRun, leftStepsOut, startRun } from "../history.js";
import { recordOutputs, refuseOutputsOfAnotherDatabase } from "../outputs.js";
import type { Plan } from "../plan.js";
import type { StepDefinition } from "../step.js";
import { rejectedRowsOf, type RunEvent, type RunReport } from "./report.js";

/** The files a plan's steps may write, relative to the pipeline file. */
export function plannedOutputs(plan: Plan, typeOf: (step: StepSpec) => StepDefinition): string[] {
  return plan.steps.flatMap((step) => typeOf(step.spec).files?.(step.spec) ?? []);
}

/**
 * Readies the database for the steps: refuses objects the runner did not create and reports that
 * belong to another database, creates the tables that are absent, and tells the report and the caller.
 */
export async function prepareDatabase(
  db: SqlDatabase,
  plan: Plan,
  report: RunReport,
  options: { typeOf: (step: StepSpec) => StepDefinition; onEvent: (event: RunEvent) => void },
): Promise<SchemaChanges> {
  const schema = ensureSchema(db, plan.pipeline.tables, plan.database);
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
  return schema;
}

/** A run recorded as started, before its first step. */
export interface OpenedRun {
  runId: number;
  /** The last run that saved, if any. */
  previous: { runId: number; configSha256: string } | undefined;
  /** Whether the derived steps must run even when no source changed (the configuration, the schema or a report on disk did). */
  changed: boolean;
  /** How many earlier failed runs (from the journal) this run records. */
  recordedFailures: number;
}

/** Records the earlier failed runs, decides whether derived steps must run whatever the sources say, and starts the run's record. */
export function openRun(
  db: SqlDatabase,
  plan: Plan,
  report: RunReport,
  run: {
    startedAt: string;
    configSha256: string;
    failures: readonly FailedRun[];
    outputs: readonly string[];
    fullRefresh: true | readonly string[] | undefined;
  },
): OpenedRun {
  const previous = lastRun(db);
  const recordedFailures = recordFailedRuns(db, run.failures);
  // why: a report deleted on disk is written again, so the derived steps run even when nothing else changed.
  const missing = previous === undefined ? [] : run.outputs.filter((output) => !existsSync(path.resolve(plan.config.baseDir, output)));
  if (missing.length > 0) report.notes.push(`${missing.join(", ")} missing on disk: written again`);
  // why: when no source changed and neither did the configuration or its SQL, derived steps would recompute the same rows.
  const changed =
    previous === undefined ||
    previous.configSha256 !== run.configSha256 ||
    report.createdTables.length > 0 ||
    run.fullRefresh !== undefined ||
    missing.length > 0 ||
    // why: a run with --select may have changed tables without running every step that derives from them.
    leftStepsOut(db, previous.runId);
  const runId = startRun(db, { startedAt: run.startedAt, configSha256: run.configSha256, configFile: plan.config.file });
  report.runId = runId;
  return { runId, previous, changed, recordedFailures };
}

/**
 * Finishes the run's record (its files, its status, its rejected rows), then refuses to save on top
 * of a damaged table or a broken foreign key (looked for only where one can be: `appendedSince`,
 * `verifiedByChecks`, see engine/db/constraints.ts).
 */
export function closeRun(
  db: SqlDatabase,
  plan: Plan,
  report: RunReport,
  run: {
    runId: number;
    files: readonly OutputFile[];
    finishedAt: string;
    soundTables: ReadonlySet<string> | "all";
    appendedSince?: AppendedSince | undefined;
    verifiedByChecks?: VerifiedByChecks | undefined;
  },
): void {
  recordOutputs(db, plan.database, plan.config.baseDir, run.runId, run.files);
  report.status = finishRun(db, run.runId, run.finishedAt);
  report.rejectedRows = rejectedRowsOf(db, run.runId);
  // why: an index that disagrees with its table (a damaged file) lets duplicates in and hides rows from lookups; never save on top of it.
  // A table this runner's last commit checked, in a file nobody wrote since, holds no damage from outside (docs/reliability.md).
  const sound = run.soundTables;
  refuseDamage(db, sound === "all" ? [] : declaredTables(plan.pipeline.tables).filter((table) => !sound.has(table)), plan.database);
  checkForeignKeys(db, run.appendedSince, run.verifiedByChecks);
}
