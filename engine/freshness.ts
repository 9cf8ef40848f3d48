import { statSync } from "node:fs";
import path from "node:path";
import type { LoadedConfig } from "./config/load.js";
import type { FreshnessSpec, Pipeline, StepSpec, TableSpec } from "./config/schema.js";
import { quoteIdent, type SqlDatabase } from "./db/database.js";
import { openSqlJs } from "./db/sqljs.js";
import { isPostgresUrl } from "./db/database-url.js";
import { readDatabaseFile } from "./db/store.js";
import { existingTables } from "./db/tables.js";
import { didYouMean, redactCredentials, type Diagnostic } from "./errors.js";
import { parseDuration } from "./duration.js";
import { isUrl, loadHttpClient, networkReason, requestTarget } from "./sources/fetch.js";
import type { CheckResult } from "./checks.js";

/** A freshness limit's outcome, as a check result of kind `freshness`. */
export type FreshnessResult = CheckResult;

/** A step that reads a source into a table and may declare how old that source may be. */
interface FreshStep {
  name: string;
  source: string;
  table: string;
  freshness: FreshnessSpec;
}

function freshStep(step: StepSpec): FreshStep | undefined {
  const s = step as Partial<FreshStep>;
  return s.freshness && s.source !== undefined && s.table !== undefined ? (s as FreshStep) : undefined;
}

/** The load steps that declare a freshness limit. */
export function freshSteps(pipeline: Pipeline): FreshStep[] {
  return pipeline.steps.flatMap((step) => freshStep(step) ?? []);
}

/** How old something is, for people: minutes, hours or days. */
export function formatAge(ms: number): string {
  const minutes = Math.floor(ms / 60_000);
  if (minutes < 120) return `${minutes} min`;
  const hours = Math.floor(minutes / 60);
  return hours < 48 ? `${hours} h` : `${Math.floor(hours / 24)} days`;
}

/** The result of a freshness limit given the time the data dates from (undefined: unknown, with why). */
export function judgeFreshness(step: FreshStep, dated: { at: Date; what: string } | { unknown: string }, now: Date): FreshnessResult {
  const severity = step.freshness.severity ?? "error";
  const limit = step.freshness.max_age;
  const base = {
    name: `freshness_${step.name}`,
    table: step.table,
    column: step.freshness.column,
    kind: "freshness" as const,
    severity,
    samples: [],
  };
  const failing = severity === "error" ? ("failed" as const) : ("warned" as const);
  if ("unknown" in dated)
    return { ...base, status: failing, failingRows: 1, detail: `${dated.unknown}, so its age is unknown (limit ${limit})` };
  const age = now.getTime() - dated.at.getTime();
  const stale = age > parseDuration(limit)!;
  return {
    ...base,
    status: stale ? failing : "passed",
    failingRows: stale ? 1 : 0,
    detail: `${dated.what} is ${formatAge(Math.max(0, age))} old (limit ${limit}${stale ? ", exceeded" : ""})`,
  };
}

/** When the data of a step dates from, read from the database: the newest value of its date column, or its source's Last-Modified (a local file: its modification time). */
export function datedFromDatabase(db: SqlDatabase, step: FreshStep, baseDir: string): { at: Date; what: string } | { unknown: string } {
  const column = step.freshness.column;
  if (column !== undefined) {
    if (!existingTables(db).has(step.table)) return { unknown: `table ${step.table} does not exist yet` };
    const newest = db.all(`SELECT max(${quoteIdent(column)}) AS newest FROM ${quoteIdent(step.table)}`)[0]?.["newest"];
    if (newest === null || newest === undefined) return { unknown: `${step.table}.${column} holds no value` };
    const at = new Date(`${String(newest).slice(0, 10)}T00:00:00Z`);
    if (Number.isNaN(at.getTime())) return { unknown: `the newest ${step.table}.${column}, "${String(newest)}", is not a date` };
    return { at, what: `the newest ${step.table}.${column}, ${String(newest)},` };
  }
  if (!isUrl(step.source)) return datedFromFile(step, baseDir);
  const stored = existingTables(db).has("pipeline_sources")
    ? db.all("SELECT last_modified FROM pipeline_sources WHERE step = ?", [step.name])[0]?.["last_modified"]
    : undefined;
  if (stored === undefined) return { unknown: `${step.name} has not fetched its source yet` };
  return lastModified(stored === null ? null : String(stored));
}

function datedFromFile(step: FreshStep, baseDir: string): { at: Date; what: string } | { unknown: string } {
  const file = path.resolve(baseDir, step.source);
  try {
    return { at: statSync(file).mtime, what: `${step.source} (modified ${statSync(file).mtime.toISOString()})` };
  } catch (error) {
    return { unknown: `${file} cannot be read (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})` };
  }
}

function lastModified(header: string | null): { at: Date; what: string } | { unknown: string } {
  if (header === null) return { unknown: "the source sent no Last-Modified (declare freshness.column to judge by a date in the data)" };
  const at = new Date(header);
  if (Number.isNaN(at.getTime())) return { unknown: `the source's Last-Modified "${header}" is not a date` };
  return { at, what: `the source (Last-Modified ${header})` };
}

/** A load step's freshness, judged inside a run or by `test`. */
export function freshnessOf(db: SqlDatabase, spec: StepSpec, baseDir: string, now: Date): FreshnessResult {
  const step = freshStep(spec)!;
  return judgeFreshness(step, datedFromDatabase(db, step, baseDir), now);
}

/** Freshness limits whose column is not a date column of the step's table. */
export function freshnessDiagnostics(config: LoadedConfig, pipeline: Pipeline): Diagnostic[] {
  const diagnostics: Diagnostic[] = [];
  pipeline.steps.forEach((spec, index) => {
    const step = freshStep(spec);
    const column = step?.freshness.column;
    if (!step || column === undefined) return;
    const table = (pipeline.tables as Record<string, TableSpec>)[step.table];
    if (!table) return; // why: reported by the load step's own check.
    // why: a place is found only for a diagnostic; finding one parses the file when its parse was kept (engine/config/load.ts).
    const place = () => config.locate(["steps", index, "freshness", "column"]);
    const declared = table.columns[column];
    if (!declared)
      diagnostics.push({
        code: "E_CONFIG",
        message: `"${column}" is not a column of table ${step.table}${didYouMean(column, Object.keys(table.columns))}`,
        place: place(),
      });
    else if (declared.type !== "date")
      diagnostics.push({
        code: "E_CONFIG",
        message: `freshness.column must be a date column; ${step.table}.${column} is ${declared.type}`,
        place: place(),
      });
  });
  return diagnostics;
}

/** Reads a database server through the caller's session (engine/db/session.ts `readDatabase`), which this module does not import: the session's engines import the checks that import this module. */
export type ReadServer = <T>(database: string, body: (db: SqlDatabase) => T) => Promise<T>;

/** `doctor`'s freshness lines: the date column from the stored database, the Last-Modified from the source itself (HEAD). */
export async function freshnessChecks(
  pipeline: Pipeline,
  baseDir: string,
  database: string,
  now: Date,
  readServer: ReadServer,
  timeoutMs = 5000,
): Promise<{ name: string; ok: boolean; detail: string }[]> {
  const steps = freshSteps(pipeline);
  if (steps.length === 0) return [];
  const fromData = steps.filter((step) => step.freshness.column !== undefined);
  const datedInData = fromData.length > 0 ? await datesInDatabase(fromData, baseDir, database, readServer) : new Map<string, Dated>();
  const results: { name: string; ok: boolean; detail: string }[] = [];
  for (const step of steps) {
    let dated: Dated;
    if (step.freshness.column !== undefined) dated = datedInData.get(step.name)!;
    else if (!isUrl(step.source)) dated = datedFromFile(step, baseDir);
    else dated = await headLastModified(step.source, timeoutMs);
    const result = judgeFreshness(step, dated, now);
    const prefix = result.status === "warned" ? "warning: " : "";
    results.push({ name: `freshness ${step.name}`, ok: result.status !== "failed", detail: `${prefix}${result.detail ?? ""}` });
  }
  return results;
}

type Dated = { at: Date; what: string } | { unknown: string };

/**
 * The newest date of each step's freshness column, read from the stored database whatever its
 * engine: a SQLite file (absent: its age is unknown), or a server (read-only, its URL shown
 * without credentials).
 */
async function datesInDatabase(
  steps: readonly FreshStep[],
  baseDir: string,
  database: string,
  readServer: ReadServer,
): Promise<Map<string, Dated>> {
  const unknown = (why: string) => new Map(steps.map((step) => [step.name, { unknown: why }]));
  if (isPostgresUrl(database)) {
    try {
      return await readServer(database, (db) => new Map(steps.map((step) => [step.name, datedFromDatabase(db, step, baseDir)])));
    } catch (error) {
      return unknown(`${redactCredentials(database)} cannot be read (${redactCredentials((error as Error).message)})`);
    }
  }
  const image = await readDatabaseFile(database).catch(() => undefined);
  if (!image) return unknown(`${database} does not exist yet`);
  const db = await openSqlJs(image);
  try {
    return new Map(steps.map((step) => [step.name, datedFromDatabase(db, step, baseDir)]));
  } finally {
    db.close();
  }
}

async function headLastModified(source: string, timeoutMs: number): Promise<{ at: Date; what: string } | { unknown: string }> {
  try {
    const { url, authorization } = requestTarget(source);
    const { default: fetch } = await loadHttpClient();
    const response = await fetch(url, {
      method: "HEAD",
      headers: authorization ? { authorization } : {},
      signal: AbortSignal.timeout(timeoutMs),
      follow: 5,
    });
    if (!response.ok) return { unknown: `HEAD ${redactCredentials(source)} -> ${response.status} ${response.statusText}` };
    return lastModified(response.headers.get("last-modified"));
  } catch (error) {
    return { unknown: `${redactCredentials(source)}: ${networkReason(error)}` };
  }
}
