import type { CheckResult } from "../checks.js";
import type { SqlDatabase } from "../db/database.js";
import type { FailedRun } from "../failed-runs.js";
import { rejectionSamples, type RejectionSample } from "../history.js";
import type { Plan, PlannedStep } from "../plan.js";
import type { IncrementalResult, StepCounts } from "../step.js";

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
  /** For a step with a declared incremental policy: on the appended rows only, or in full and why. */
  incremental?: IncrementalResult | undefined;
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

/** The report of a run before it starts: every step planned, not executed. */
export function plannedReport(plan: Plan): RunReport {
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

/** Marks a run that found nothing changed since `previousRunId`: it succeeds, records nothing, and says how many rows are still pending. */
export function reportUnchanged(report: RunReport, db: SqlDatabase, previousRunId: number): void {
  report.status = "unchanged";
  report.runId = undefined;
  report.rejectedRows = pendingRowsIn(db);
  const left = report.rejectedRows > 0 ? `; ${report.rejectedRows} rejected row(s) still pending (see the rejections command)` : "";
  report.detail = `nothing changed since run ${previousRunId}${left}; the database was not rewritten`;
  Object.assign(report, { ok: true, exitCode: 0 });
}

/** A failed run as the journal keeps it. */
export function failedRun(plan: Plan, report: RunReport, run: { startedAt: string; finishedAt: string; configSha256: string }): FailedRun {
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

/** Puts a step's first rejected rows on its report, for the log and the JSON report. */
export function showRejections(db: SqlDatabase, runId: number, result: StepResult): void {
  const samples = rejectionSamples(db, runId, result.name, rejectionSamplesShown);
  if (samples.length > 0) result.rejections = samples;
}

/** How many rows a saved run left pending (read or retried by it), as pipeline_runs records it. */
export function rejectedRowsOf(db: SqlDatabase, runId: number): number {
  return Number(db.all("SELECT rejected_rows FROM pipeline_runs WHERE run_id = ?", [runId])[0]?.["rejected_rows"] ?? 0);
}

/** How many rejected rows are pending in the database, whichever run read them. */
function pendingRowsIn(db: SqlDatabase): number {
  return Number(db.all("SELECT count(*) AS n FROM pipeline_rejected_rows WHERE status = 'pending'")[0]?.["n"] ?? 0);
}
