import type { SqlDatabase } from "../db/database.js";
import { readDatabase } from "../db/session.js";
import { existingTables } from "../db/tables.js";
import type { Command } from "../main.js";
import { alignedTable } from "./table-text.js";

/** One run as `history` shows it: its status, its steps' counts summed, how long it took, its error. */
export interface RunSummary {
  runId: number;
  startedAt: string;
  finishedAt: string;
  status: string;
  durationMs: number;
  /** The steps the run executed: a run with --select leaves the others out, and a derived step skipped as unchanged does not count. */
  steps: string[];
  read: number;
  inserted: number;
  updated: number;
  deleted: number;
  rejectedRows: number;
  error: string | null;
}

/** `history`: the last runs recorded in pipeline_runs, newest first (`--last N`, default 10); reads the database, writes nothing. */
export const historyCommand: Command = {
  pipeline: true,
  async run({ args, io, json, c }, { database, engine, plan }) {
    const runs = await readDatabase(database, engine, args.lockTimeoutMs, (db) =>
      existingTables(db).has("pipeline_runs") ? lastRuns(db, args.last) : [],
    );
    if (json) {
      io.stdout.write(JSON.stringify({ ok: true, command: "history", database: plan.database, runs }, null, 2) + "\n");
      return 0;
    }
    if (runs.length === 0) {
      io.stdout.write(`${plan.database}: no run recorded yet\n`);
      return 0;
    }
    const rows = runs.map((run) => [
      String(run.runId),
      run.startedAt,
      run.status,
      `${(run.durationMs / 1000).toFixed(1)} s`,
      String(run.steps.length),
      String(run.read),
      String(run.inserted),
      String(run.updated),
      String(run.deleted),
      String(run.rejectedRows),
      run.error ?? "",
    ]);
    const headers = ["run", "started", "status", "took", "steps", "read", "inserted", "updated", "deleted", "rejected", "error"];
    io.stdout.write(alignedTable(headers, rows, c));
    return 0;
  },
};

/** The last `limit` runs, newest first, each with its steps' counts summed. */
export function lastRuns(db: SqlDatabase, limit: number): RunSummary[] {
  // why: a database written before pipeline_runs had its error column still reads.
  const hasError = db.all("SELECT name FROM pragma_table_info('pipeline_runs') WHERE name = 'error'").length > 0;
  const runs = db.all(
    `SELECT run_id, started_at, finished_at, status, rejected_rows, ${hasError ? "error" : "NULL AS error"}
     FROM pipeline_runs ORDER BY run_id DESC LIMIT ?`,
    [limit],
  );
  return runs.map((run) => {
    const steps = db.all(
      `SELECT step, coalesce("read", 0) AS "read", coalesce(inserted, 0) AS inserted, coalesce(updated, 0) AS updated,
         coalesce(deleted, 0) AS deleted FROM pipeline_run_steps WHERE run_id = ? AND status NOT IN ('not_executed', 'skipped') ORDER BY step_index`,
      [run["run_id"] ?? null],
    );
    const sum = (column: string) => steps.reduce((total, step) => total + Number(step[column]), 0);
    const startedAt = String(run["started_at"]);
    const finishedAt = String(run["finished_at"]);
    return {
      runId: Number(run["run_id"]),
      startedAt,
      finishedAt,
      status: String(run["status"]),
      durationMs: Math.max(0, Date.parse(finishedAt) - Date.parse(startedAt)) || 0,
      steps: steps.map((step) => String(step["step"])),
      read: sum("read"),
      inserted: sum("inserted"),
      updated: sum("updated"),
      deleted: sum("deleted"),
      rejectedRows: Number(run["rejected_rows"]),
      error: run["error"] === null || run["error"] === undefined ? null : String(run["error"]),
    };
  });
}
