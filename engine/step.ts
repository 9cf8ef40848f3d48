import type { LoadedConfig } from "./config/load.js";
import type { Pipeline, StepSpec } from "./config/schema.js";
import type { SqlDatabase } from "./db/database.js";
import type { Diagnostic, SourcePlace } from "./errors.js";
import type { ProfiledSource } from "./profile.js";

/** Row counts a step reports; absent counts do not apply to that step. */
export interface StepCounts {
  read?: number;
  inserted?: number;
  updated?: number;
  unchanged?: number;
  rejected?: number;
  conflicting?: number;
  deleted?: number;
  /** Pending rows of earlier runs tried again. */
  retried?: number;
  /** Of those, the rows still pending. */
  pending?: number;
}

/** What one executed step returns. */
export interface StepOutcome {
  status: "success" | "unchanged";
  counts: StepCounts;
  /** One human sentence added to the log line, e.g. "source unchanged (304)". */
  detail?: string;
  /** Files to write (path relative to the pipeline file), among the step's `files`: staged before the database is saved, renamed into place after. */
  files?: { path: string; content: string }[];
  /** For a step with a declared incremental policy: how it ran. */
  incremental?: IncrementalResult | undefined;
}

/** How a step with a declared incremental policy ran: on the rows appended to `table` only (merged into what run `earlierFromRun` left), or in full, and why. */
export type IncrementalResult = { table: string; appendedRows: number; earlierFromRun: number } | { full: string };

/** What a step may prove about the tables as the runner's last commit left them, before it runs (engine/run/committed-tables.ts). */
export interface CommittedTables {
  /** The run whose commit the proof starts from. */
  readonly previousRunId: number | undefined;
  /** Why nothing can be proven (a new database, a server, another configuration, a script step); undefined when the proof can start. */
  unproven(): string | undefined;
  /** Why one of `tables` may not be exactly as the last commit left it, at this step; undefined when each is. */
  changed(tables: Iterable<string>): string | undefined;
  /** The rows this run's earlier steps only appended to `table` (those `where` selects, e.g. `rowid > 41`), or why that is not proven. */
  appended(db: SqlDatabase, table: string): { where: string; rows: number } | { reason: string };
  /** The name of a later step that writes one of `tables`, if any. */
  writtenAfter(tables: Iterable<string>): string | undefined;
}

/** One label and value shown in the plan under a step. */
export type PlanDetail = readonly [label: string, value: string];

/** What a step may read while it is checked, before anything runs. */
export interface CheckContext {
  pipeline: Pipeline;
  config: LoadedConfig;
  /** Path of the step in the config, e.g. ["steps", 3]. */
  path: readonly (string | number)[];
  /** A scratch database holding the system tables and every table written by an earlier step. */
  scratch: SqlDatabase;
  /** Tables written by earlier steps. */
  written: ReadonlySet<string>;
  /** The place of a key or value inside this step, for a diagnostic. */
  at(subpath: readonly (string | number)[], key?: string): SourcePlace;
}

/** What a step may use to say which tables it reads. */
export interface ReadContext {
  pipeline: Pipeline;
  /** The directory relative paths start from (the pipeline file's). */
  baseDir: string;
  /** The tables one query or script reads, from its compiled program; nothing runs. */
  tablesRead(sql: string): string[];
}

/** One query a step runs, from a file (relative to the pipeline file) or inline, with what it is to the step. */
export interface StepQuery {
  label: string;
  file?: string | undefined;
  sql?: string | undefined;
}

/** What a step may use while `profile` reads its source. */
export interface ProfileContext {
  pipeline: Pipeline;
  /** The directory relative paths start from (the pipeline file's). */
  baseDir: string;
}

/** Live progress of a long step; the CLI shows it on a terminal. */
export type ProgressReporter = (rows: number) => void;

/** What a step may use while it runs. */
export interface RunContext {
  pipeline: Pipeline;
  config: LoadedConfig;
  db: SqlDatabase;
  runId: number;
  startedAt: string;
  /** `--force`: allow a replace that would shrink a table. */
  force: boolean;
  /** `--full-refresh` names this step (or names none): read the source in full, with no conditional GET, same-hash or tail shortcut. */
  fullRefresh: boolean;
  /** Fires when the run is interrupted; long steps check it. */
  signal?: AbortSignal | undefined;
  progress: ProgressReporter;
  /** What the run can prove about the tables as its last commit left them, at this step. */
  committed?: CommittedTables | undefined;
  /**
   * Readies the database for the step's writes (sqljs: loads its image) and, on a server, locks its
   * tables against other writers until the commit. A step that {@link StepDefinition.announcesWrites}
   * awaits it before it first writes its tables; the runner awaits it before any other step.
   */
  aboutToWrite(): Promise<void>;
}

/** A step type: everything the engine needs to check, plan and run it. One per file in steps/. */
export interface StepDefinition<S extends StepSpec = StepSpec> {
  type: S["type"];
  /** One line saying what the step does: it is both the plan line and the run's log line. */
  describe(step: S, pipeline: Pipeline): string;
  /** Extra lines for the plan (source, mode, keys, file...). */
  details(step: S, pipeline: Pipeline): PlanDetail[];
  /** The tables the step writes. */
  writes(step: S): string[];
  /**
   * Whether the step awaits {@link RunContext.aboutToWrite} itself, once it knows it will write: a load
   * whose source is unchanged writes nothing but the engine's own tables, so a run whose steps find
   * nothing to write never loads the sqljs image nor locks a table; otherwise the runner awaits it before the step.
   */
  announcesWrites?: boolean;
  /** Whether the step may write tables it does not declare (a script): no check's result is then carried over from an earlier run. */
  writesUndeclared?(step: S): boolean;
  /** The tables the step reads (`list`, `run --select STEP+`); `tablesRead` gives those a query reads, from its compiled program. */
  reads?(step: S, context: ReadContext): string[];
  /** The files the step may write, relative to the pipeline file; the run removes temporary files a killed run left for them. */
  files?(step: S): string[];
  /** The files the step reads (a source, SQL files), relative to the pipeline file, each with what it is to the step; no output may replace them. */
  inputs?(step: S): { file: string; what: string }[];
  /** The queries the step runs: `validate` compiles each on a database server. */
  queries?(step: S): StepQuery[];
  /** The source the step reads (a URL, or a file relative to the pipeline file): `doctor` checks it answers. */
  source?(step: S): string;
  /** Reads the step's source as a run would, writing nothing: what `profile` reports (a source that cannot be read, in its `error`), and the rows that would be stored. */
  profile?(step: S, context: ProfileContext): Promise<ProfiledSource>;
  /** The columns the step's rows are unique on once stored, if any: `profile` reports duplicates on them. */
  key?(step: S, pipeline: Pipeline): readonly string[] | undefined;
  /** Whether the step only derives from what earlier steps loaded: skipped when no source and no configuration changed. */
  derived: boolean;
  /** Meaning errors that the JSON Schema cannot see. */
  check(step: S, context: CheckContext): Diagnostic[];
  /** Runs the step inside the run's transaction. */
  execute(step: S, context: RunContext): Promise<StepOutcome>;
}
