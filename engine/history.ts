import type { TableSpec } from "./config/schema.js";
import type { SqlDatabase, SqlValue } from "./db/database.js";
import type { StepCounts } from "./step.js";

/** The tables the engine keeps beside the pipeline's own: run history, rejected rows, source state. */
export const systemTables = {
  pipeline_runs: {
    description: "one row per run; a failed run is recorded by the next run that saves, as it leaves the database untouched",
    columns: {
      run_id: { type: "integer" },
      started_at: { type: "text", required: true },
      finished_at: { type: "text", required: true },
      status: { type: "text", required: true, description: "succeeded, succeeded_with_rejections, failed or interrupted" },
      config_sha256: { type: "text", required: true },
      config_file: { type: "text", required: true },
      rejected_rows: { type: "integer", required: true },
      error: { type: "text", description: "for a failed run, its error code and message" },
    },
    primary_key: ["run_id"],
  },
  pipeline_run_steps: {
    columns: {
      run_id: { type: "integer" },
      step_index: { type: "integer" },
      step: { type: "text", required: true },
      type: { type: "text", required: true },
      status: { type: "text", required: true },
      read: { type: "integer" },
      inserted: { type: "integer" },
      updated: { type: "integer" },
      unchanged: { type: "integer" },
      rejected: { type: "integer" },
      conflicting: { type: "integer" },
      deleted: { type: "integer" },
      duration_ms: { type: "integer", required: true },
      detail: { type: "text" },
    },
    primary_key: ["run_id", "step_index"],
    foreign_keys: [{ columns: ["run_id"], references: { table: "pipeline_runs", columns: ["run_id"] } }],
  },
  pipeline_rejected_rows: {
    description: "rows that were not loaded, with the reason; nothing read is lost",
    columns: {
      rejection_id: { type: "integer" },
      run_id: { type: "integer", required: true },
      step: { type: "text", required: true },
      source: { type: "text", required: true },
      line: { type: "integer", required: true },
      raw: { type: "text", required: true },
      column: { type: "text" },
      reason: { type: "text", required: true },
      stored_values: { type: "text", description: "JSON, for a key conflict" },
      new_values: { type: "text", description: "JSON, for a key conflict" },
    },
    primary_key: ["rejection_id"],
    foreign_keys: [{ columns: ["run_id"], references: { table: "pipeline_runs", columns: ["run_id"] } }],
  },
  pipeline_sources: {
    description: "what each load step last fetched, for conditional GETs and unchanged detection",
    columns: {
      step: { type: "text" },
      source: { type: "text", required: true },
      step_sha256: { type: "text", required: true, description: "hash of the step's configuration" },
      etag: { type: "text" },
      last_modified: { type: "text" },
      content_sha256: { type: "text", required: true },
      bytes: { type: "integer", required: true },
      fetched_at: { type: "text", required: true },
      run_id: { type: "integer", required: true },
    },
    primary_key: ["step"],
    foreign_keys: [{ columns: ["run_id"], references: { table: "pipeline_runs", columns: ["run_id"] } }],
  },
  pipeline_outputs: {
    description: "the files (reports) this database's runs wrote: a run against another database does not replace them",
    columns: {
      path: { type: "text", description: "relative to the database's directory" },
      sha256: { type: "text", required: true, description: "of the content written" },
      run_id: { type: "integer", required: true },
    },
    primary_key: ["path"],
    foreign_keys: [{ columns: ["run_id"], references: { table: "pipeline_runs", columns: ["run_id"] } }],
  },
} as const satisfies Record<string, TableSpec>;

/** Names of the engine's own tables. */
export const systemTableNames: ReadonlySet<string> = new Set(Object.keys(systemTables));

/** One row of pipeline_runs, as inserted. */
export interface RunRow {
  startedAt: string;
  finishedAt: string;
  status: string;
  configSha256: string;
  configFile: string;
  error?: string | undefined;
}

/** Inserts a row of pipeline_runs; returns its id. */
export function insertRun(db: SqlDatabase, run: RunRow): number {
  db.run(
    "INSERT INTO pipeline_runs (started_at, finished_at, status, config_sha256, config_file, rejected_rows, error) VALUES (?, ?, ?, ?, ?, 0, ?)",
    [run.startedAt, run.finishedAt, run.status, run.configSha256, run.configFile, run.error ?? null],
  );
  return Number(db.all("SELECT last_insert_rowid() AS id")[0]?.["id"]);
}

/** Inserts the run's row (finished_at and status are rewritten when the run ends); returns its id. */
export function startRun(db: SqlDatabase, run: { startedAt: string; configSha256: string; configFile: string }): number {
  return insertRun(db, { ...run, finishedAt: run.startedAt, status: "running" });
}

/** Marks the run finished, with its final status and rejected-row count. */
export function finishRun(db: SqlDatabase, runId: number, finishedAt: string): string {
  const rejected = Number(db.all("SELECT count(*) AS n FROM pipeline_rejected_rows WHERE run_id = ?", [runId])[0]?.["n"] ?? 0);
  const status = rejected > 0 ? "succeeded_with_rejections" : "succeeded";
  db.run("UPDATE pipeline_runs SET finished_at = ?, status = ?, rejected_rows = ? WHERE run_id = ?", [finishedAt, status, rejected, runId]);
  return status;
}

/** One step as the history records it. */
export interface RecordedStep {
  runId: number;
  index: number;
  name: string;
  type: string;
  status: string;
  counts: StepCounts;
  durationMs: number;
  detail?: string | undefined;
}

/** Records one step of a run. */
export function recordStep(db: SqlDatabase, step: RecordedStep): void {
  const c = step.counts;
  const values: SqlValue[] = [
    step.runId,
    step.index,
    step.name,
    step.type,
    step.status,
    c.read ?? null,
    c.inserted ?? null,
    c.updated ?? null,
    c.unchanged ?? null,
    c.rejected ?? null,
    c.conflicting ?? null,
    c.deleted ?? null,
    Math.round(step.durationMs),
    step.detail ?? null,
  ];
  db.run(`INSERT INTO pipeline_run_steps VALUES (${values.map(() => "?").join(", ")})`, values);
}

/** One row that was read but not loaded. */
export interface Rejection {
  line: number;
  raw: string;
  column?: string | undefined;
  reason: string;
  storedValues?: Record<string, SqlValue> | undefined;
  newValues?: Record<string, SqlValue> | undefined;
}

/** Prepares an insert into the rejected-rows table for one step. */
export function rejectionWriter(db: SqlDatabase, runId: number, step: string, source: string): (rejection: Rejection) => void {
  const insert = db.prepare(
    "INSERT INTO pipeline_rejected_rows (run_id, step, source, line, raw, column, reason, stored_values, new_values) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
  );
  const json = (values: Record<string, SqlValue> | undefined) => (values === undefined ? null : JSON.stringify(values, jsonSafe));
  return (r) => insert.run([runId, step, source, r.line, r.raw, r.column ?? null, r.reason, json(r.storedValues), json(r.newValues)]);
}

function jsonSafe(_key: string, value: unknown): unknown {
  return typeof value === "bigint" ? value.toString() : value;
}

/** What a load step remembers of its last fetch. */
export interface SourceState {
  stepSha256: string;
  etag: string | null;
  lastModified: string | null;
  contentSha256: string;
  bytes: number;
}

/** The remembered state of a step's source, if any. */
export function readSourceState(db: SqlDatabase, step: string): SourceState | undefined {
  const row = db.all("SELECT step_sha256, etag, last_modified, content_sha256, bytes FROM pipeline_sources WHERE step = ?", [step])[0];
  if (!row) return undefined;
  return {
    stepSha256: String(row["step_sha256"]),
    etag: row["etag"] === null ? null : String(row["etag"]),
    lastModified: row["last_modified"] === null ? null : String(row["last_modified"]),
    contentSha256: String(row["content_sha256"]),
    bytes: Number(row["bytes"]),
  };
}

/** Remembers what a step fetched. */
export function writeSourceState(
  db: SqlDatabase,
  state: SourceState & { step: string; source: string; fetchedAt: string; runId: number },
): void {
  db.run(
    `INSERT INTO pipeline_sources (step, source, step_sha256, etag, last_modified, content_sha256, bytes, fetched_at, run_id)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
     ON CONFLICT (step) DO UPDATE SET source = excluded.source, step_sha256 = excluded.step_sha256, etag = excluded.etag,
       last_modified = excluded.last_modified, content_sha256 = excluded.content_sha256, bytes = excluded.bytes,
       fetched_at = excluded.fetched_at, run_id = excluded.run_id`,
    [
      state.step,
      state.source,
      state.stepSha256,
      state.etag,
      state.lastModified,
      state.contentSha256,
      state.bytes,
      state.fetchedAt,
      state.runId,
    ],
  );
}

/** The last successful run, if any. */
export function lastRun(db: SqlDatabase): { runId: number; configSha256: string } | undefined {
  const row = db.all("SELECT run_id, config_sha256 FROM pipeline_runs WHERE status LIKE 'succeeded%' ORDER BY run_id DESC LIMIT 1")[0];
  return row ? { runId: Number(row["run_id"]), configSha256: String(row["config_sha256"]) } : undefined;
}
