import type { Pipeline, StepSpec } from "./config/schema.js";
import type { StepDefinition } from "./step.js";
import type { SqlValue } from "./db/database.js";

/** A value that does not fit, with where it stands. */
export interface Finding {
  line: number;
  column?: string;
  value: string;
  reason: string;
}

/** What one column of a source holds. */
export interface ColumnProfile {
  column: string;
  target?: string | undefined;
  declared?: string | undefined;
  inferred: string;
  empty: number;
  distinct: number;
  min: string;
  max: string;
  samples: string[];
  invalid: Finding[];
}

/** What one source holds, read like a run reads it, without writing anything. */
export interface SourceProfile {
  step: string;
  source: string;
  table: string;
  error?: string;
  bytes?: number;
  encoding?: string;
  bom?: boolean;
  lineEndings?: string;
  finalNewline?: boolean;
  delimiter?: string;
  header?: string[];
  rows?: number;
  columns?: ColumnProfile[];
  key?: string[] | undefined;
  duplicates?: { key: string; lines: number[] }[];
  unresolved?: Finding[];
}

/** One row of a source as it would be stored (target column -> value), with its line in the source. */
export interface ProfiledRow {
  line: number;
  values: Record<string, SqlValue>;
}

/** What a step's `profile` hook read: the source's profile, and the rows that would be stored. */
export interface ProfiledSource {
  profile: SourceProfile;
  /** The rows that would be stored, for the duplicate-key and cross-step reference checks; none when the source could not be read. */
  rows: ProfiledRow[];
}

/** Profiles the source of every step that has a `profile` hook: format, columns, values that fail their type, duplicate keys and dangling references. */
export async function profileSources(
  pipeline: Pipeline,
  baseDir: string,
  typeOf: (step: StepSpec) => StepDefinition,
): Promise<SourceProfile[]> {
  const loaded: ProfiledSource[] = [];
  for (const step of pipeline.steps) {
    const definition = typeOf(step);
    if (!definition.profile) continue;
    const read = await definition.profile(step, { pipeline, baseDir });
    if (!read.profile.error) reportDuplicates(read, definition.key?.(step, pipeline));
    loaded.push(read);
  }
  for (const { profile, rows } of loaded) {
    if (profile.error) continue;
    const table = pipeline.tables[profile.table]!;
    profile.unresolved = [];
    for (const fk of table.foreign_keys ?? []) {
      const parent = loaded.find((l) => l.profile.table === fk.references.table && !l.profile.error);
      if (!parent) continue;
      const known = new Set(parent.rows.map((r) => JSON.stringify(fk.references.columns.map((c) => r.values[c] ?? null))));
      for (const row of rows) {
        const values = fk.columns.map((c) => row.values[c] ?? null);
        if (values.some((v) => v === null) || known.has(JSON.stringify(values))) continue;
        profile.unresolved.push({
          line: row.line,
          column: fk.columns.join(", "),
          value: values.map(String).join(", "),
          reason: `not in ${fk.references.table} (${fk.references.columns.join(", ")}) as loaded by ${parent.profile.step}`,
        });
      }
    }
  }
  return loaded.map((l) => l.profile);
}

function reportDuplicates({ profile, rows }: ProfiledSource, key: readonly string[] | undefined): void {
  profile.key = key ? [...key] : undefined;
  profile.duplicates = [];
  if (!key) return;
  const seen = new Map<string, number[]>();
  for (const row of rows) {
    const id = key.map((c) => String(row.values[c])).join(", ");
    seen.set(id, [...(seen.get(id) ?? []), row.line]);
  }
  profile.duplicates = [...seen].filter(([, lines]) => lines.length > 1).map(([id, lines]) => ({ key: id, lines }));
}

/** How a source's text is written: its size, encoding (`declared` if the step names one), BOM, line endings and delimiter. */
export function describeText(
  bytes: Uint8Array,
  text: string,
  declared: string | undefined,
): Pick<SourceProfile, "bytes" | "encoding" | "bom" | "lineEndings" | "finalNewline" | "delimiter"> {
  return {
    bytes: bytes.length,
    encoding: declared ?? (/^[\x00-\x7f]*$/.test(text) ? "ASCII (valid UTF-8)" : "UTF-8"),
    bom: bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf,
    lineEndings: lineEndings(text),
    finalNewline: /[\r\n]$/.test(text),
    delimiter: sniffDelimiter(text),
  };
}

/** What the fields of one column hold: the type they look like, empties, distinct values, bounds and samples. */
export function describeValues(fields: string[]): Omit<ColumnProfile, "column" | "target" | "declared" | "invalid"> {
  const values = fields.map((f) => f.trim());
  const present = values.filter((v) => v !== "");
  const distinct = [...new Set(present)];
  const inferred = inferType(distinct);
  const numeric = inferred === "integer" || inferred.startsWith("decimal");
  const sorted = [...distinct].sort(
    numeric
      ? (a, b) => Number(a) - Number(b)
      : inferred.startsWith("date")
        ? undefined
        : (a, b) => a.length - b.length || a.localeCompare(b),
  );
  const byDate =
    inferred === "date (dd/MM/yyyy)"
      ? [...distinct].sort((a, b) => a.split("/").reverse().join("").localeCompare(b.split("/").reverse().join("")))
      : sorted;
  return {
    inferred,
    empty: values.length - present.length,
    distinct: distinct.length,
    min: byDate[0] ?? "",
    max: byDate.at(-1) ?? "",
    samples: distinct.slice(0, 3),
  };
}

function inferType(values: string[]): string {
  if (values.length === 0) return "empty";
  const all = (pattern: RegExp) => values.every((v) => pattern.test(v));
  if (all(/^[+-]?\d+$/)) return "integer";
  if (all(/^[+-]?\d+(\.\d+)?$/)) return `decimal(${Math.max(...values.map((v) => v.split(".")[1]?.length ?? 0))})`;
  if (all(/^\d{4}-\d{2}-\d{2}$/)) return "date (yyyy-MM-dd)";
  if (all(/^\d{2}\/\d{2}\/\d{4}$/)) return "date (dd/MM/yyyy)";
  if (all(/^(true|false|yes|no|oui|non|vrai|faux)$/i)) return "boolean";
  return "text";
}

function lineEndings(text: string): string {
  const crlf = text.match(/\r\n/g)?.length ?? 0;
  const lf = (text.match(/\n/g)?.length ?? 0) - crlf;
  const cr = (text.match(/\r/g)?.length ?? 0) - crlf;
  const kinds = [crlf && "CRLF", lf && "LF", cr && "CR"].filter(Boolean);
  return kinds.length === 0 ? "none (one line)" : kinds.length === 1 ? String(kinds[0]) : `mixed (${crlf} CRLF, ${lf} LF, ${cr} CR)`;
}

function sniffDelimiter(text: string): string {
  const header = text.replace(/^\uFEFF/, "").split(/\r?\n|\r/, 1)[0] ?? "";
  const counts = [",", ";", "\t", "|"].map((d) => [d, header.split(d).length - 1] as const);
  const [best, count] = counts.reduce((a, b) => (b[1] > a[1] ? b : a));
  return count === 0 ? "none found" : best === "\t" ? "tab" : best;
}
