import type { TableSpec } from "./config/schema.js";
import type { SqlDatabase, SqlValue } from "./db/database.js";
import { storedColumnNames } from "./db/tables.js";
import { redactCredentials } from "./errors.js";
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
      retried: { type: "integer", description: "pending rows of earlier runs tried again" },
      pending: { type: "integer", description: "of those, the rows still pending after this run" },
    },
    primary_key: ["run_id", "step_index"],
    foreign_keys: [{ columns: ["run_id"], references: { table: "pipeline_runs", columns: ["run_id"] } }],
  },
  pipeline_rejected_rows: {
    description:
      "rows that were not loaded, with the reason; nothing read is lost: a pending row whose reference or value may pass later is retried by every run",
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
      status: {
        type: "text",
        description:
          "pending (not in the tables), resolved (loaded by resolved_run_id) or superseded (the line left the source or changed, a later line with the same key won, or its step left the pipeline); empty for rows recorded by older versions",
      },
      kind: {
        type: "text",
        description: "reference or cast (retried by every run), shape, constraint or conflict (pending until the source changes)",
      },
      value: { type: "text", description: "the field that failed, clipped to 200 characters" },
      fields: { type: "text", description: "JSON array of the record's fields, for the retry" },
      key_values: { type: "text", description: "JSON array of the row's key, when its key columns could be read" },
      last_run_id: { type: "integer", description: "the last run that tried this row" },
      resolved_run_id: { type: "integer", description: "the run that loaded or superseded it" },
      shadowed_line: { type: "integer", description: "a later line of the file with the same key, loaded while this row was pending" },
      shadowed_raw: { type: "text" },
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
      header: { type: "text", description: "JSON array of the header last read, for retrying pending rows without the file" },
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
  pipeline_check_results: {
    description:
      "one row per check and recorded run: its status, the failing rows counted and the first few (a run a failing error check stopped saves nothing; its results come from the journal of failed runs with the next run that saves)",
    columns: {
      run_id: { type: "integer" },
      check_name: { type: "text" },
      table_name: { type: "text", required: true },
      column_name: { type: "text" },
      kind: {
        type: "text",
        required: true,
        description: "not_null, unique, relationships, accepted_values, range, expression, row_count, sql or freshness",
      },
      severity: { type: "text", required: true, description: "error or warn" },
      status: { type: "text", required: true, description: "passed or warned; failed for a failed run's results" },
      failing_rows: { type: "integer", required: true },
      samples: { type: "text", description: "JSON array of the first failing rows" },
      detail: { type: "text", description: "for a freshness limit, the age found" },
      carried_from_run: {
        type: "integer",
        description: "when the result was carried over instead of run: the run that ran the check (nothing it reads changed since)",
      },
      run_bounds: {
        type: "text",
        description:
          "for a range check with a bound of the run ({ run: date }): the values those bounds took in this run, JSON { min, max }",
      },
    },
    primary_key: ["run_id", "check_name"],
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
  const inserted = db.all(
    "INSERT INTO pipeline_runs (started_at, finished_at, status, config_sha256, config_file, rejected_rows, error) VALUES (?, ?, ?, ?, ?, 0, ?) RETURNING run_id",
    [
      run.startedAt,
      run.finishedAt,
      run.status,
      run.configSha256,
      run.configFile,
      run.error === undefined ? null : redactCredentials(run.error),
    ],
  );
  return Number(inserted[0]?.["run_id"]);
}

/** Inserts the run's row (finished_at and status are rewritten when the run ends); returns its id. */
export function startRun(db: SqlDatabase, run: { startedAt: string; configSha256: string; configFile: string }): number {
  return insertRun(db, { ...run, finishedAt: run.startedAt, status: "running" });
}

/** Marks the run finished, with its final status and the count of rows it leaves pending (read or retried by it); closes those of steps it no longer has. */
export function finishRun(db: SqlDatabase, runId: number, finishedAt: string): string {
  // why: the rows of a step renamed or removed from the pipeline are never retried again, and a fresh load would not have them.
  db.run(
    `UPDATE pipeline_rejected_rows SET status = 'superseded', resolved_run_id = ?
     WHERE (status = 'pending' OR status IS NULL) AND step NOT IN (SELECT step FROM pipeline_run_steps WHERE run_id = ?)`,
    [runId, runId],
  );
  const rejected = Number(
    db.all("SELECT count(*) AS n FROM pipeline_rejected_rows WHERE status = 'pending' AND last_run_id = ?", [runId])[0]?.["n"] ?? 0,
  );
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
    c.retried ?? null,
    c.pending ?? null,
  ];
  db.run(`INSERT INTO pipeline_run_steps VALUES (${values.map(() => "?").join(", ")})`, values);
}

/** Why a row was not loaded: reference and cast rows may pass later and are retried by every run. */
export type RejectionKind = "reference" | "cast" | "shape" | "constraint" | "conflict";

/** One row that was read but not loaded. */
export interface Rejection {
  line: number;
  raw: string;
  kind: RejectionKind;
  column?: string | undefined;
  /** The field that failed. */
  value?: string | undefined;
  reason: string;
  /** The record's fields, kept for a retry without the file. */
  fields?: readonly string[] | undefined;
  /** The row's key, when its key columns could be read. */
  key?: readonly SqlValue[] | undefined;
  storedValues?: Record<string, SqlValue> | undefined;
  newValues?: Record<string, SqlValue> | undefined;
}

/** Rejection kinds a later run retries from what is stored. */
export const retriedKinds: ReadonlySet<RejectionKind> = new Set(["reference", "cast"]);

/** Prepares an insert into the rejected-rows table for one step: each row is recorded pending; returns its rejection_id. */
export function rejectionWriter(db: SqlDatabase, runId: number, step: string, source: string): (rejection: Rejection) => number {
  const insert = db.prepare(
    `INSERT INTO pipeline_rejected_rows (run_id, step, source, line, raw, "column", reason, stored_values, new_values,
       status, kind, value, fields, key_values, last_run_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?)
     RETURNING rejection_id`,
  );
  const shown = redactCredentials(source);
  return (r) => {
    const { line, raw, column, reason, storedValues, newValues, kind, value, fields, key } = rejectionColumns(r);
    return Number(
      insert.getValues([runId, step, shown, line, raw, column, reason, storedValues, newValues, kind, value, fields, key, runId])?.[0],
    );
  };
}

/** A rejection as the columns of pipeline_rejected_rows hold it: JSON for values, the failing field clipped. */
function rejectionColumns(r: Rejection) {
  const json = (values: unknown) => (values === undefined ? null : JSON.stringify(values, jsonSafe));
  return {
    line: r.line,
    raw: r.raw,
    column: r.column ?? null,
    reason: r.reason,
    storedValues: json(r.storedValues),
    newValues: json(r.newValues),
    kind: r.kind,
    value: r.value === undefined ? null : clipValue(r.value),
    fields: json(r.fields),
    key: json(r.key),
  };
}

/** Prepares the update that keeps an open rejection for a row a full read rejects again the same way: today's line, reason and values, seen by this run. */
export function rejectionKeeper(db: SqlDatabase, runId: number): (id: number, rejection: Rejection) => void {
  const update = db.prepare(
    `UPDATE pipeline_rejected_rows SET line = ?, "column" = ?, reason = ?, stored_values = ?, new_values = ?, status = 'pending', kind = ?,
       value = ?, fields = ?, key_values = ?, last_run_id = ?, shadowed_line = NULL, shadowed_raw = NULL WHERE rejection_id = ?`,
  );
  return (id, r) => {
    const { line, column, reason, storedValues, newValues, kind, value, fields, key } = rejectionColumns(r);
    update.run([line, column, reason, storedValues, newValues, kind, value, fields, key, runId, id]);
  };
}

/** A value as the rejected-rows table keeps it: at most 200 characters. */
export function clipValue(value: string): string {
  return value.length <= 200 ? value : `${value.slice(0, 200)}… (${value.length} characters)`;
}

/** A rejection still open (pending, or recorded by an older version with no status). */
export interface OpenRejection {
  id: number;
  line: number;
  raw: string;
  kind: RejectionKind | null;
  fields: string[] | null;
  shadowedLine: number | null;
  shadowedRaw: string | null;
}

/** The open rejections of a step, in file order. */
export function openRejections(db: SqlDatabase, step: string): OpenRejection[] {
  return db
    .all(
      `SELECT rejection_id, line, raw, kind, fields, shadowed_line, shadowed_raw FROM pipeline_rejected_rows
       WHERE step = ? AND (status = 'pending' OR status IS NULL) ORDER BY line, rejection_id`,
      [step],
    )
    .map((row) => ({
      id: Number(row["rejection_id"]),
      line: Number(row["line"]),
      raw: String(row["raw"]),
      kind: row["kind"] === null ? null : (String(row["kind"]) as RejectionKind),
      fields: row["fields"] === null ? null : (JSON.parse(String(row["fields"])) as string[]),
      shadowedLine: row["shadowed_line"] === null ? null : Number(row["shadowed_line"]),
      shadowedRaw: row["shadowed_raw"] === null ? null : String(row["shadowed_raw"]),
    }));
}

/** Closes rejections: `resolved` when their row is now in the tables, `superseded` when it never will be from this source. */
export function closeRejections(db: SqlDatabase, ids: readonly number[], status: "resolved" | "superseded", runId: number): void {
  for (let i = 0; i < ids.length; i += 500) {
    const chunk = ids.slice(i, i + 500);
    db.run(`UPDATE pipeline_rejected_rows SET status = ?, resolved_run_id = ? WHERE rejection_id IN (${chunk.map(() => "?").join(", ")})`, [
      status,
      runId,
      ...chunk,
    ]);
  }
}

/** A pending row tried again and still not loadable: the run that tried it, and today's reason. */
export function keepPending(
  db: SqlDatabase,
  id: number,
  runId: number,
  problem: { kind: RejectionKind; column?: string | undefined; value?: string | undefined; reason: string },
): void {
  db.run('UPDATE pipeline_rejected_rows SET last_run_id = ?, kind = ?, "column" = ?, value = ?, reason = ? WHERE rejection_id = ?', [
    runId,
    problem.kind,
    problem.column ?? null,
    problem.value === undefined ? null : clipValue(problem.value),
    problem.reason,
    id,
  ]);
}

/** Marks the pending rows of a step as seen by this run (they stay pending). */
export function touchPending(db: SqlDatabase, step: string, runId: number): void {
  db.run("UPDATE pipeline_rejected_rows SET last_run_id = ? WHERE step = ? AND status = 'pending'", [runId, step]);
}

/** Records the later line of the file that holds pending rows' key (`null`: no later line does): their retry follows file order. */
export function shadowPending(db: SqlDatabase, ids: readonly number[], shadow: { line: number; raw: string } | null): void {
  for (let i = 0; i < ids.length; i += 500) {
    const chunk = ids.slice(i, i + 500);
    db.run(
      `UPDATE pipeline_rejected_rows SET shadowed_line = ?, shadowed_raw = ? WHERE rejection_id IN (${chunk.map(() => "?").join(", ")})`,
      [shadow?.line ?? null, shadow?.raw ?? null, ...chunk],
    );
  }
}

/** One pending rejection as the `rejections` command lists it. */
export interface PendingRejection {
  step: string;
  line: number;
  column: string | null;
  value: string | null;
  kind: string | null;
  reason: string;
  runId: number;
  lastRunId: number | null;
}

/** Every pending rejection, by step and line; in a table written by an older version (no status, kind, value, last_run_id), every row. */
export function pendingRejections(db: SqlDatabase): PendingRejection[] {
  const present = storedColumnNames(db, "pipeline_rejected_rows");
  const column = (name: string) => (present.has(name) ? name : `NULL AS ${name}`);
  return db
    .all(
      `SELECT step, line, "column", ${column("value")}, ${column("kind")}, reason, run_id, ${column("last_run_id")} FROM pipeline_rejected_rows
       WHERE ${present.has("status") ? "status = 'pending' OR status IS NULL" : "TRUE"} ORDER BY step, line, rejection_id`,
    )
    .map((row) => ({
      step: String(row["step"]),
      line: Number(row["line"]),
      column: row["column"] === null ? null : String(row["column"]),
      value: row["value"] === null ? null : String(row["value"]),
      kind: row["kind"] === null ? null : String(row["kind"]),
      reason: String(row["reason"]),
      runId: Number(row["run_id"]),
      lastRunId: row["last_run_id"] === null ? null : Number(row["last_run_id"]),
    }));
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
  /** The header last read, when recorded. */
  header?: string[] | null | undefined;
}

/** The remembered state of a step's source, if any. */
export function readSourceState(db: SqlDatabase, step: string): SourceState | undefined {
  const row = db.all("SELECT step_sha256, etag, last_modified, content_sha256, bytes, header FROM pipeline_sources WHERE step = ?", [
    step,
  ])[0];
  if (!row) return undefined;
  return {
    stepSha256: String(row["step_sha256"]),
    etag: row["etag"] === null ? null : String(row["etag"]),
    lastModified: row["last_modified"] === null ? null : String(row["last_modified"]),
    contentSha256: String(row["content_sha256"]),
    bytes: Number(row["bytes"]),
    header: row["header"] === null || row["header"] === undefined ? null : (JSON.parse(String(row["header"])) as string[]),
  };
}

/** Remembers what a step fetched. */
export function writeSourceState(
  db: SqlDatabase,
  state: SourceState & { step: string; source: string; fetchedAt: string; runId: number },
): void {
  db.run(
    `INSERT INTO pipeline_sources (step, source, step_sha256, etag, last_modified, content_sha256, bytes, fetched_at, run_id, header)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
     ON CONFLICT (step) DO UPDATE SET source = excluded.source, step_sha256 = excluded.step_sha256, etag = excluded.etag,
       last_modified = excluded.last_modified, content_sha256 = excluded.content_sha256, bytes = excluded.bytes,
       fetched_at = excluded.fetched_at, run_id = excluded.run_id, header = coalesce(excluded.header, pipeline_sources.header)`,
    [
      state.step,
      redactCredentials(state.source),
      state.stepSha256,
      state.etag,
      state.lastModified,
      state.contentSha256,
      state.bytes,
      state.fetchedAt,
      state.runId,
      state.header ? JSON.stringify(state.header) : null,
    ],
  );
}

/** Whether a run left steps out (`run --select`): they are recorded `not_executed`. */
export function leftStepsOut(db: SqlDatabase, runId: number): boolean {
  return db.all("SELECT 1 FROM pipeline_run_steps WHERE run_id = ? AND status = 'not_executed' LIMIT 1", [runId]).length > 0;
}

/** The last successful run, if any. */
export function lastRun(db: SqlDatabase): { runId: number; configSha256: string } | undefined {
  const row = db.all("SELECT run_id, config_sha256 FROM pipeline_runs WHERE status LIKE 'succeeded%' ORDER BY run_id DESC LIMIT 1")[0];
  return row ? { runId: Number(row["run_id"]), configSha256: String(row["config_sha256"]) } : undefined;
}

/** One rejected row as a run shows it: its line, column and reason, its raw text clipped. */
export interface RejectionSample {
  line: number;
  column: string | null;
  reason: string;
  raw: string;
}

/** Longest reason and raw text a sample keeps, in characters: the middle of longer text is cut. */
const sampleChars = 160;

/**
 * The first rows a step rejected in a run, by line (key conflicts included), at most `limit`; each text
 * is clipped in SQL, so a huge raw line is never read whole. Without `step`, those of every step.
 */
export function rejectionSamples(db: SqlDatabase, runId: number, step: string | undefined, limit: number): RejectionSample[] {
  const clip = (column: string) =>
    `CASE WHEN length(${column}) > ${sampleChars} THEN substr(${column}, 1, ${sampleChars - 41}) || '…' || substr(${column}, length(${column}) - 39) ELSE ${column} END`;
  const rows = db.all(
    `SELECT line, "column", ${clip("reason")} AS reason, ${clip("raw")} AS raw FROM pipeline_rejected_rows
     WHERE (run_id = ? OR (last_run_id = ? AND status = 'pending')) AND (CAST(? AS TEXT) IS NULL OR step = ?) ORDER BY line, rejection_id LIMIT ?`,
    [runId, runId, step ?? null, step ?? null, limit],
  );
  return rows.map((row) => ({
    line: Number(row["line"]),
    column: row["column"] === null ? null : String(row["column"]),
    reason: String(row["reason"]),
    raw: String(row["raw"]),
  }));
}
