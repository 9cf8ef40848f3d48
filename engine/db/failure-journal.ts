import path from "node:path";
import type { Engine } from "./engines/engine.js";
import { clearFailedRuns, failedRunsJournal, journalFailedRun, readFailedRuns, type FailedRun } from "../failed-runs.js";

/**
 * Where a session keeps the runs that failed until a run that commits records them in
 * pipeline_runs; each says in the run's notes what it did or could not do, and never throws.
 */
export interface FailureJournal {
  /** The failed runs waiting to be recorded, read when the run begins. */
  read(): Promise<FailedRun[]>;
  /** Forgets what {@link FailureJournal.read} returned, once the database records those runs. */
  clear(): Promise<void>;
  /** Keeps a failed run, after its transaction was rolled back. */
  keep(run: FailedRun): Promise<void>;
}

/** The journal file beside a database file (`<database>.failed-runs.jsonl`), recorded by the next run that commits. */
export function journalBeside(database: string, notes: string[]): FailureJournal {
  const journal = `${path.basename(failedRunsJournal(database))} (beside the database)`;
  let lines = 0;
  return {
    async read() {
      try {
        const contents = await readFailedRuns(database);
        lines = contents.runs.length + contents.unreadable;
        if (contents.unreadable > 0) notes.push(`skipped ${contents.unreadable} unreadable line(s) of ${journal}`);
        return contents.runs;
      } catch (error) {
        notes.push(`could not read ${journal} (${(error as Error).message}); its failed runs are recorded later`);
        return [];
      }
    },
    async clear() {
      if (lines === 0) return;
      try {
        await clearFailedRuns(database);
      } catch (error) {
        notes.push(`could not empty ${journal} (${(error as Error).message}); its runs are recorded once all the same`);
      }
    },
    async keep(run) {
      try {
        await journalFailedRun(database, run);
        notes.push(`this failure is kept in ${journal}; the next run that saves records it in pipeline_runs`);
      } catch (error) {
        notes.push(`this failure could not be kept in ${journal}: ${(error as Error).message}`);
      }
    },
  };
}

/** No journal: each failed run is recorded in pipeline_runs at once, in its own transaction (a server, where no file sits beside a URL). */
export function recordedAtOnce(record: (run: FailedRun) => Promise<void>, notes: string[]): FailureJournal {
  return {
    read: async () => [],
    clear: async () => undefined,
    async keep(run) {
      try {
        await record(run);
        notes.push("this failure is recorded in pipeline_runs");
      } catch (error) {
        notes.push(`this failure could not be recorded in pipeline_runs: ${(error as Error).message}`);
      }
    },
  };
}

/** The failure journal of a session on `database` with `engine`: the engine's own, or each failure recorded at once; says in `notes` what it did. */
export function failureJournal(engine: Engine, database: string, notes: string[]): FailureJournal {
  return "journal" in engine ? engine.journal(database, notes) : recordedAtOnce((run) => engine.recordFailure(database, run), notes);
}
