import { makeCaster, mappingOptions } from "./cast.js";
import type { LoadStepSpec, Pipeline, StepSpec, TableSpec } from "./config/schema.js";
import type { StepDefinition } from "./step.js";
import type { SqlValue } from "./db/database.js";
import { isRequired } from "./db/tables.js";
import { decodeText, parseCsv } from "./sources/csv.js";
import { fetchSource, httpDefaults } from "./sources/fetch.js";
import { describeError, redactCredentials } from "./errors.js";

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

interface Loaded {
  profile: SourceProfile;
  rows: { line: number; values: Record<string, SqlValue> }[];
}

/** Profiles every load step's source: format, columns, values that fail their type, duplicate keys and dangling references. */
export async function profileSources(
  pipeline: Pipeline,
  baseDir: string,
  typeOf: (step: StepSpec) => StepDefinition,
): Promise<SourceProfile[]> {
  // why: a step that reads a source is read the way a load reads it (its csv options and column mapping).
  const loads = pipeline.steps.filter((s): s is LoadStepSpec => typeOf(s).source !== undefined);
  const loaded: Loaded[] = [];
  for (const step of loads) {
    loaded.push(await profileOne(step, pipeline.tables[step.table]!, typeOf(step).key?.(step, pipeline), baseDir));
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

async function profileOne(step: LoadStepSpec, table: TableSpec, key: readonly string[] | undefined, baseDir: string): Promise<Loaded> {
  const source = redactCredentials(step.source);
  const profile: SourceProfile = { step: step.name, source, table: step.table };
  try {
    const fetched = await fetchSource(step.source, { baseDir, http: { ...httpDefaults, ...step.http } });
    if (fetched.kind !== "body") throw new Error("unexpected 304");
    const bytes = fetched.bytes;
    const bom = bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf;
    const text = decodeText(bytes, step.csv?.encoding, source);
    Object.assign(profile, {
      bytes: bytes.length,
      encoding: step.csv?.encoding ?? (/^[\x00-\x7f]*$/.test(text) ? "ASCII (valid UTF-8)" : "UTF-8"),
      bom,
      lineEndings: lineEndings(text),
      finalNewline: /[\r\n]$/.test(text),
      delimiter: sniffDelimiter(text),
    });
    const csv = parseCsv(text, step.csv ?? {}, source);
    profile.header = csv.header;
    profile.rows = csv.records.length;
    const targetOf = new Map(Object.entries(step.columns).map(([target, m]) => [mappingOptions(m, target).from, target]));
    const rows = csv.records.map((r) => ({ line: r.line, values: {} as Record<string, SqlValue>, ok: true }));
    profile.columns = csv.header.map((name, index) => {
      const target = targetOf.get(name.trim());
      const spec = target ? table.columns[target] : undefined;
      const caster =
        target && spec ? makeCaster(spec, mappingOptions(step.columns[target]!, target), isRequired(table, target)) : undefined;
      const fields = csv.records.map((r) => r.fields[index]);
      const invalid: Finding[] = [];
      fields.forEach((field, i) => {
        const line = csv.records[i]!.line;
        if (field === undefined) {
          invalid.push({ line, value: "", reason: `the row has ${csv.records[i]!.fields.length} fields, the header ${csv.header.length}` });
          rows[i]!.ok = false;
          return;
        }
        if (!caster) return;
        const result = caster(field);
        if (result.ok) rows[i]!.values[target!] = result.value;
        else {
          invalid.push({ line, value: field, reason: result.reason });
          rows[i]!.ok = false;
        }
      });
      const declared = spec ? (spec.type === "decimal" ? `decimal(${spec.scale ?? 0})` : spec.type) : undefined;
      return { column: name, target, declared, ...describeValues(fields.filter((f): f is string => f !== undefined)), invalid };
    });
    const good = rows.filter((r) => r.ok);
    profile.key = key ? [...key] : undefined;
    profile.duplicates = [];
    if (key) {
      const seen = new Map<string, number[]>();
      for (const row of good) {
        const id = key.map((c) => String(row.values[c])).join(", ");
        seen.set(id, [...(seen.get(id) ?? []), row.line]);
      }
      profile.duplicates = [...seen].filter(([, lines]) => lines.length > 1).map(([id, lines]) => ({ key: id, lines }));
    }
    return { profile, rows: good };
  } catch (error) {
    profile.error = describeError(error).message;
    return { profile, rows: [] };
  }
}

function describeValues(fields: string[]): Omit<ColumnProfile, "column" | "target" | "declared" | "invalid"> {
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
