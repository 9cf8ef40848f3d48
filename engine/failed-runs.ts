import { open, readFile, rm } from "node:fs/promises";
import { recordCheckResult, type CheckResult } from "./checks.js";
import type { SqlDatabase } from "./db/database.js";
import { redactCredentials } from "./errors.js";
import { insertRun, recordStep, type RecordedStep, type RunRow } from "./history.js";

/**
 * A failed run leaves the database byte-identical, so it cannot record itself there. It is
 * appended instead to a journal beside the database, one JSON line per run, and the next run
 * that saves moves those lines into `pipeline_runs` (status `failed` or `interrupted`, with the
 * error) and `pipeline_run_steps`, committed with its own data, then empties the journal. Only a
 * run holding the database lock writes or empties the journal.
 */
export interface FailedRun extends RunRow {
  status: "failed" | "interrupted";
  error: string;
  steps: Omit<RecordedStep, "runId">[];
  /** The checks that ran before the run failed (a failed one with severity error is often why); absent in lines of older versions. */
  checks?: CheckResult[] | undefined;
}

/** The journal of failed runs that belongs to a database file. */
export function failedRunsJournal(database: string): string {
  return `${database}.failed-runs.jsonl`;
}

/** Appends one failed run to the journal and fsyncs it. */
export async function journalFailedRun(database: string, run: FailedRun): Promise<void> {
  const handle = await open(failedRunsJournal(database), "a", 0o644);
  try {
    await handle.appendFile(redactCredentials(JSON.stringify(run)) + "\n");
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** What the journal holds: the runs read, and how many lines could not be read. */
export interface JournalContents {
  runs: FailedRun[];
  unreadable: number;
}

/** The failed runs waiting in the journal; a line cut short by a crash is counted, not read. */
export async function readFailedRuns(database: string): Promise<JournalContents> {
  const text = await readFile(failedRunsJournal(database), "utf8").catch((error: NodeJS.ErrnoException) => {
    if (error.code === "ENOENT") return "";
    throw error;
  });
  const runs: FailedRun[] = [];
  let unreadable = 0;
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue;
    const run = parseFailedRun(redactCredentials(line));
    if (run) runs.push(run);
    else unreadable++;
  }
  return { runs, unreadable };
}

function parseFailedRun(line: string): FailedRun | undefined {
  try {
    const run = JSON.parse(line) as Partial<FailedRun>;
    const texts = [run.startedAt, run.finishedAt, run.status, run.configSha256, run.configFile, run.error];
    if (texts.every((value) => typeof value === "string") && Array.isArray(run.steps)) return run as FailedRun;
  } catch {
    // a line cut short: reported as unreadable by the caller
  }
  return undefined;
}

/**
 * Inserts the journal's runs into the history, skipping any already there (a crash between
 * saving the database and emptying the journal leaves them in both); returns how many were new.
 */
export function recordFailedRuns(db: SqlDatabase, runs: readonly FailedRun[]): number {
  let recorded = 0;
  for (const run of runs) {
    const seen = db.all(
      "SELECT 1 FROM pipeline_runs WHERE started_at = ? AND finished_at = ? AND status = ? AND config_sha256 = ? AND error IS NOT DISTINCT FROM ?",
      [run.startedAt, run.finishedAt, run.status, run.configSha256, run.error],
    );
    if (seen.length > 0) continue;
    const runId = insertRun(db, run);
    for (const step of run.steps) recordStep(db, { ...step, runId });
    for (const check of Array.isArray(run.checks) ? run.checks : []) recordCheckResult(db, runId, check);
    recorded++;
  }
  return recorded;
}

/** Empties the journal once its runs are saved in the database. */
export async function clearFailedRuns(database: string): Promise<void> {
  await rm(failedRunsJournal(database), { force: true });
}
