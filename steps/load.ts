import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import path from "node:path";
import { checkDateFormat, makeCaster, mappingOptions, type Caster } from "../engine/cast.js";
import type { LoadStepSpec, Pipeline, TableSpec } from "../engine/config/schema.js";
import { quoteIdent, type SqlDatabase, type SqlValue, type Statement } from "../engine/db/database.js";
import { isRequired } from "../engine/db/tables.js";
import { didYouMean, PipelineError, throwIfAborted, type Diagnostic } from "../engine/errors.js";
import { readSourceState, rejectionWriter, writeSourceState, type Rejection, type SourceState } from "../engine/history.js";
import { decodeText, parseCsv, readCsv } from "../engine/sources/csv.js";
import { fetchSource, httpDefaults, isUrl } from "../engine/sources/fetch.js";
import type { RunContext, StepCounts, StepDefinition, StepOutcome } from "../engine/step.js";

const defaultMinReplaceRatio = 0.5;

/** The key a keyed load matches rows on: `key:`, else the table's primary key, else its only unique key. */
export function loadKey(step: LoadStepSpec, table: TableSpec | undefined): readonly string[] | undefined {
  if (step.key) return step.key;
  if (table?.primary_key) return table.primary_key;
  return table?.unique?.length === 1 ? table.unique[0] : undefined;
}

function conflictPolicy(step: LoadStepSpec): "update" | "reject" | "fail" {
  return step.mode === "upsert" ? "update" : (step.on_conflict ?? "reject");
}

/** `type: load`: fetches a CSV source, casts its columns and writes them into a declared table. */
export const loadStep: StepDefinition<LoadStepSpec> = {
  type: "load",

  describe(step, pipeline) {
    const key = step.mode === "append" ? undefined : loadKey(step, pipeline.tables[step.table]);
    const by = key && step.mode !== "replace" ? ` by ${key.join(", ")}` : "";
    return `load ${shortSource(step.source)} -> ${step.table} (${step.mode}${by})`;
  },

  details(step, pipeline) {
    const table = pipeline.tables[step.table];
    const details: [string, string][] = [
      ["source", step.source],
      ["table", step.table],
      ["mode", step.mode],
    ];
    const key = loadKey(step, table);
    if (key && step.mode !== "append") details.push(["key", key.join(", ")]);
    if (step.mode === "insert_new") details.push(["on conflict", conflictPolicy(step)]);
    const columns = Object.entries(step.columns).map(([target, mapping]) => `${target} <- "${mappingOptions(mapping).from}"`);
    details.push(["columns", columns.join(", ")]);
    if (step.max_rejected !== undefined) details.push(["max rejected", String(step.max_rejected)]);
    return details;
  },

  writes: (step) => [step.table],
  inputs: (step) => (isUrl(step.source) ? [] : [{ file: step.source, what: "the source" }]),
  derived: false,

  check(step, context) {
    const problems: Diagnostic[] = [];
    const problem = (message: string, subpath: (string | number)[], key?: string) =>
      problems.push({ code: "E_CONFIG", message, place: context.at(subpath, key) });
    const table = context.pipeline.tables[step.table];
    if (!table) {
      problem(`table "${step.table}" is not declared under tables:${didYouMean(step.table, Object.keys(context.pipeline.tables))}`, [
        "table",
      ]);
      return problems;
    }
    if (!isUrl(step.source) && !existsSync(path.resolve(context.config.baseDir, step.source))) {
      problem(`source file ${step.source} does not exist (relative paths start at ${context.config.baseDir})`, ["source"]);
    }
    for (const [target, mapping] of Object.entries(step.columns)) {
      const column = table.columns[target];
      if (!column) {
        problem(
          `column "${target}" is not a column of table ${step.table}${didYouMean(target, Object.keys(table.columns))}`,
          ["columns"],
          target,
        );
        continue;
      }
      const options = mappingOptions(mapping);
      const misplaced = (option: keyof typeof options, type: string) => {
        if (options[option] !== undefined && column.type !== type) {
          problem(`${option} applies to ${type} columns; ${step.table}.${target} is ${column.type}`, ["columns", target], option);
        }
      };
      misplaced("format", "date");
      misplaced("decimal_separator", "decimal");
      misplaced("true_values", "boolean");
      misplaced("false_values", "boolean");
      const formatProblem = column.type === "date" && options.format !== undefined ? checkDateFormat(options.format) : undefined;
      if (formatProblem) problem(formatProblem, ["columns", target, "format"]);
    }
    for (const column of Object.keys(table.columns)) {
      if (isRequired(table, column) && !(column in step.columns)) {
        problem(`required column ${step.table}.${column} is not mapped from the source`, ["columns"]);
      }
    }
    const key = loadKey(step, table);
    if (step.mode === "insert_new" || step.mode === "upsert") {
      if (!key) problem(`mode ${step.mode} needs a key: give key:, or declare a primary key on table ${step.table}`, ["mode"]);
    }
    if (step.key) {
      step.key.forEach((column, i) => {
        if (!(column in step.columns)) {
          problem(`dedup key column "${column}" is not a mapped column of this step${didYouMean(column, Object.keys(step.columns))}`, [
            "key",
            i,
          ]);
        }
      });
      const declared = [table.primary_key, ...(table.unique ?? [])].filter((k) => k !== undefined);
      if (!declared.some((k) => sameSet(k, step.key!))) {
        problem(`key (${step.key.join(", ")}) is neither the primary key nor a unique key of table ${step.table}; declare it there`, [
          "key",
        ]);
      }
    }
    if (step.on_conflict !== undefined && step.mode !== "insert_new")
      problem(`on_conflict applies to mode insert_new, not ${step.mode}`, [], "on_conflict");
    for (const option of ["min_replace_ratio", "force"] as const) {
      if (step[option] !== undefined && step.mode !== "replace") problem(`${option} applies to mode replace, not ${step.mode}`, [], option);
    }
    return problems;
  },

  async execute(step, context) {
    const table = context.pipeline.tables[step.table]!;
    const stepSha256 = sha256(JSON.stringify({ step, table }));
    const previous = readSourceState(context.db, step.name);
    const validators = previous?.stepSha256 === stepSha256 ? previous : undefined;
    const http = { ...httpDefaults, ...step.http };
    const fetched = await fetchSource(step.source, { baseDir: context.config.baseDir, http, previous: validators, signal: context.signal });
    if (fetched.kind === "not_modified") return { status: "unchanged", counts: {}, detail: "source not modified (HTTP 304)" };
    const contentSha256 = sha256(fetched.bytes);
    const { etag, lastModified } = fetched;
    const byteLength = fetched.bytes.length;
    const remember = () =>
      writeSourceState(context.db, {
        step: step.name,
        source: step.source,
        stepSha256,
        etag,
        lastModified,
        contentSha256,
        bytes: byteLength,
        fetchedAt: new Date().toISOString(),
        runId: context.runId,
      });
    if (validators?.contentSha256 === contentSha256) {
      remember();
      return { status: "unchanged", counts: {}, detail: "source unchanged (same content as last run)" };
    }
    const tail = validators ? grownTail(step, fetched.bytes, validators) : undefined;
    const text = tail
      ? decodeText(fetched.bytes.subarray(0, tail.headerEnd), step.csv?.encoding, step.source) +
        decodeText(fetched.bytes.subarray(tail.from), step.csv?.encoding, step.source)
      : decodeText(fetched.bytes, step.csv?.encoding, step.source);
    const outcome = writeRows(step, table, text, tail?.firstLine ?? 1, context);
    if (tail) {
      const grew = `the file grew: only what follows its first ${tail.from} bytes (read by an earlier run) was parsed`;
      outcome.detail = outcome.detail ? `${grew}; ${outcome.detail}` : grew;
    }
    remember();
    return outcome;
  },
};

/** Rows per multi-row INSERT: fewer statements, while a batch that hits a conflict is redone row by row. */
const batchRows = 128;

function writeRows(step: LoadStepSpec, table: TableSpec, text: string, firstLine: number, context: RunContext): StepOutcome {
  const { db } = context;
  const source = step.source;
  const targets = Object.keys(step.columns);
  const casters: Caster[] = targets.map((target) =>
    makeCaster(table.columns[target]!, mappingOptions(step.columns[target]!), isRequired(table, target)),
  );
  const reject = rejectionWriter(db, context.runId, step.name, step.source);
  const references = referenceChecks(db, step, context.pipeline);
  const counts: Required<StepCounts> = { read: 0, inserted: 0, updated: 0, unchanged: 0, rejected: 0, conflicting: 0, deleted: 0 };
  const writer = rowWriter(db, step, table, targets);
  const batch = batchWriter(db, step, targets);
  const pending: { values: SqlValue[]; line: number; raw: () => string }[] = [];

  /** Writes one row on its own: the path for rows whose batch did not go in whole. */
  const writeOne = (values: SqlValue[], line: number, raw: () => string) => {
    const result = writer.write(values);
    if (result.kind === "conflict") {
      const policy = conflictPolicy(step);
      const storedValues = Object.fromEntries(targets.map((t, i) => [t, result.stored[i] ?? null]));
      const newValues = Object.fromEntries(targets.map((t, i) => [t, values[i] ?? null]));
      if (policy === "fail") {
        throw new PipelineError(
          "E_CONFLICT",
          `${source} line ${line}: key (${writer.key.join(", ")}) is already stored with other values: stored ${JSON.stringify(storedValues)}, new ${JSON.stringify(newValues)} (on_conflict: fail)`,
        );
      }
      if (policy === "update") {
        writer.update(values);
        counts.updated++;
      } else {
        reject({ line, raw: raw(), reason: "key already stored with different values", storedValues, newValues });
        counts.conflicting++;
      }
    } else if (result.kind === "error") {
      reject({ line, raw: raw(), reason: result.message });
      counts.rejected++;
    } else {
      counts[result.kind]++;
    }
  };
  const flush = () => {
    if (pending.length === 0) return;
    if (batch.insertAll(pending.map((row) => row.values))) counts.inserted += pending.length;
    else for (const row of pending) writeOne(row.values, row.line, row.raw);
    pending.length = 0;
  };

  let indexes: number[] = [];
  let width = 0;
  const onHeader = (header: string[]) => {
    indexes = headerIndexes(step, header, source);
    width = header.length;
  };
  const onRecord = (fields: string[], line: number, raw: () => string) => {
    if (++counts.read % 50_000 === 0) {
      context.progress(counts.read);
      throwIfAborted(context.signal);
    }
    const values: SqlValue[] = new Array<SqlValue>(targets.length);
    const problem = castRecord(fields, width, indexes, casters, targets, values) ?? references(targets, values);
    if (problem) {
      reject({ line, raw: raw(), ...problem });
      counts.rejected++;
      return;
    }
    pending.push({ values, line, raw });
    if (pending.length === batchRows) flush();
  };

  if (step.mode === "replace") {
    // why: the guard needs the number of incoming rows before anything is deleted.
    const csv = parseCsv(text, step.csv ?? {}, source);
    onHeader(csv.header);
    const stored = Number(db.all(`SELECT count(*) AS n FROM ${quoteIdent(step.table)}`)[0]?.["n"] ?? 0);
    guardReplace(step, context.force, csv.records.length, stored, source);
    counts.deleted = db.run(`DELETE FROM ${quoteIdent(step.table)}`);
    for (const record of csv.records) onRecord(record.fields, record.line, () => record.raw);
  } else {
    readCsv(text, step.csv ?? {}, source, { header: onHeader, record: onRecord }, firstLine);
  }
  flush();
  writer.free();
  batch.free();
  context.progress(counts.read);

  if (step.max_rejected !== undefined && counts.rejected > step.max_rejected) {
    throw new PipelineError(
      "E_REJECTED",
      `${source}: ${counts.rejected} rows rejected, more than max_rejected (${step.max_rejected}); see the reasons with --json or in pipeline_rejected_rows after a run that allows them`,
    );
  }
  const detail =
    counts.rejected + counts.conflicting > 0 ? `${counts.rejected + counts.conflicting} row(s) in pipeline_rejected_rows` : undefined;
  return { status: "success", counts: stepCounts(step, counts), ...(detail ? { detail } : {}) };
}

/**
 * Inserts whole batches in one statement inside a savepoint. A batch goes in only if every row
 * does (no key already stored, no constraint broken); otherwise it is rolled back and the caller
 * writes its rows one by one, which decides each row's fate exactly as if there were no batches.
 */
function batchWriter(db: SqlDatabase, step: LoadStepSpec, targets: string[]): { insertAll(rows: SqlValue[][]): boolean; free(): void } {
  const conflict = step.mode === "append" ? "" : " ON CONFLICT DO NOTHING";
  const row = `(${targets.map(() => "?").join(", ")})`;
  const sql = (n: number) =>
    `INSERT INTO ${quoteIdent(step.table)} (${targets.map(quoteIdent).join(", ")}) VALUES ${Array.from({ length: n }, () => row).join(", ")}${conflict}`;
  const full = db.prepare(sql(batchRows));
  return {
    insertAll(rows) {
      const statement = rows.length === batchRows ? full : db.prepare(sql(rows.length));
      db.exec("SAVEPOINT load_batch");
      let whole = false;
      try {
        statement.run(rows.flat());
        whole = db.changes() === rows.length;
      } catch {
        whole = false;
      } finally {
        db.exec(whole ? "RELEASE load_batch" : "ROLLBACK TO load_batch; RELEASE load_batch");
        if (statement !== full) statement.free();
      }
      return whole;
    },
    free: () => full.free(),
  };
}

/**
 * When a source only grew since the last run (its old bytes are a prefix of the new ones, ending
 * on a line break), the rows of that prefix were already read: only the tail needs parsing. Only
 * for insert_new and upsert, where re-reading the prefix could not change anything.
 */
function grownTail(
  step: LoadStepSpec,
  bytes: Uint8Array,
  previous: SourceState,
): { from: number; headerEnd: number; firstLine: number } | undefined {
  const from = previous.bytes;
  if ((step.mode !== "insert_new" && step.mode !== "upsert") || (step.csv?.header_line ?? 1) > 1) return undefined;
  if (from <= 0 || bytes.length <= from || (bytes[from] !== 0x0a && bytes[from] !== 0x0d && bytes[from - 1] !== 0x0a)) return undefined;
  if (sha256(bytes.subarray(0, from)) !== previous.contentSha256) return undefined;
  let headerEnd = 0;
  while (headerEnd < from && bytes[headerEnd] !== 0x0a && bytes[headerEnd] !== 0x0d) headerEnd++;
  let newlines = 0;
  for (let i = bytes.indexOf(0x0a); i >= 0 && i < from; i = bytes.indexOf(0x0a, i + 1)) newlines++;
  // why: the header and the tail are read as one text; the tail's first record then sits on line 2 of it.
  const firstLine = bytes[from - 1] === 0x0a ? newlines : newlines + 1;
  return { from: bytes[from - 1] === 0x0a ? from - 1 : from, headerEnd, firstLine };
}

function stepCounts(step: LoadStepSpec, counts: Required<StepCounts>): StepCounts {
  const { deleted, ...rest } = counts;
  return step.mode === "replace" ? counts : rest;
}

function headerIndexes(step: LoadStepSpec, header: string[], source: string): number[] {
  const clean = header.map((name) => name.trim());
  const missing: string[] = [];
  const indexes = Object.entries(step.columns).map(([target, mapping]) => {
    const wanted = mappingOptions(mapping).from;
    const index = clean.indexOf(wanted);
    if (index < 0) missing.push(`"${wanted}" (for ${step.table}.${target})${didYouMean(wanted, clean)}`);
    else if (clean.indexOf(wanted, index + 1) >= 0) missing.push(`"${wanted}" appears twice`);
    return index;
  });
  if (missing.length > 0) {
    const expected = Object.values(step.columns).map((m) => mappingOptions(m).from);
    throw new PipelineError(
      "E_HEADER",
      `${source}: the header does not have the expected columns: missing ${missing.join(", ")}. Expected ${JSON.stringify(expected)}; got ${JSON.stringify(header.slice(0, 20))}`,
    );
  }
  return indexes;
}

function castRecord(
  fields: string[],
  width: number,
  indexes: number[],
  casters: Caster[],
  targets: string[],
  values: SqlValue[],
): Omit<Rejection, "line" | "raw"> | undefined {
  if (fields.length !== width) return { reason: `expected ${width} fields as in the header, found ${fields.length}` };
  for (let i = 0; i < casters.length; i++) {
    const result = casters[i]!(fields[indexes[i]!]!);
    if (!result.ok) return { column: targets[i], reason: result.reason };
    values[i] = result.value;
  }
  return undefined;
}

type WriteResult = { kind: "inserted" | "unchanged" } | { kind: "conflict"; stored: SqlValue[] } | { kind: "error"; message: string };

interface RowWriter {
  key: readonly string[];
  write(values: SqlValue[]): WriteResult;
  update(values: SqlValue[]): void;
  free(): void;
}

function rowWriter(db: SqlDatabase, step: LoadStepSpec, table: TableSpec, targets: string[]): RowWriter {
  const t = quoteIdent(step.table);
  const insert = db.prepare(`INSERT INTO ${t} (${targets.map(quoteIdent).join(", ")}) VALUES (${targets.map(() => "?").join(", ")})`);
  const tryInsert = (values: SqlValue[]): WriteResult => {
    try {
      insert.run(values);
      return { kind: "inserted" };
    } catch (error) {
      const message = (error as Error).message;
      if (/constraint failed/i.test(message)) return { kind: "error", message };
      throw error;
    }
  };
  const key = step.mode === "append" ? undefined : loadKey(step, table);
  if (!key) return { key: [], write: tryInsert, update: () => undefined, free: () => insert.free() };

  const keyPositions = key.map((column) => targets.indexOf(column));
  const otherPositions = targets.map((_, i) => i).filter((i) => !keyPositions.includes(i));
  const where = key.map((column) => `${quoteIdent(column)} = ?`).join(" AND ");
  const lookup: Statement = db.prepare(`SELECT ${targets.map(quoteIdent).join(", ")} FROM ${t} WHERE ${where}`);
  const update: Statement | undefined =
    otherPositions.length > 0
      ? db.prepare(`UPDATE ${t} SET ${otherPositions.map((i) => `${quoteIdent(targets[i]!)} = ?`).join(", ")} WHERE ${where}`)
      : undefined;
  return {
    key,
    write(values) {
      const stored = lookup.getValues(keyPositions.map((i) => values[i]!));
      if (!stored) return tryInsert(values);
      return stored.every((value, i) => value === values[i]) ? { kind: "unchanged" } : { kind: "conflict", stored };
    },
    update(values) {
      update?.run([...otherPositions.map((i) => values[i]!), ...keyPositions.map((i) => values[i]!)]);
    },
    free() {
      insert.free();
      lookup.free();
      update?.free();
    },
  };
}

/** Parent tables larger than this are checked row by row with a statement instead of a key set in memory. */
const maxParentKeysInMemory = 2_000_000;

/** Per-row checks that each foreign key of the target table resolves, so a bad reference is a rejected row with a reason. */
function referenceChecks(
  db: SqlDatabase,
  step: LoadStepSpec,
  pipeline: Pipeline,
): (targets: string[], values: SqlValue[]) => Omit<Rejection, "line" | "raw"> | undefined {
  const checks = (pipeline.tables[step.table]?.foreign_keys ?? [])
    .filter((fk) => fk.references.table !== step.table && fk.columns.every((c) => c in step.columns))
    .map((fk) => {
      const parent = quoteIdent(fk.references.table);
      const count = Number(db.all(`SELECT count(*) AS n FROM ${parent}`)[0]?.["n"] ?? 0);
      const keyOf = (values: SqlValue[]) => (values.length === 1 ? values[0] : JSON.stringify(values));
      const known =
        count <= maxParentKeysInMemory
          ? new Set(
              db
                .all(`SELECT ${fk.references.columns.map(quoteIdent).join(", ")} FROM ${parent}`)
                .map((row) => keyOf(fk.references.columns.map((c) => row[c] ?? null))),
            )
          : undefined;
      const statement = known
        ? undefined
        : db.prepare(`SELECT 1 FROM ${parent} WHERE ${fk.references.columns.map((c) => `${quoteIdent(c)} = ?`).join(" AND ")}`);
      return { fk, exists: (values: SqlValue[]) => (known ? known.has(keyOf(values)) : statement!.getValues(values) !== undefined) };
    });
  if (checks.length === 0) return () => undefined;
  const positions = new Map<string, number>();
  return (targets, values) => {
    for (const { fk, exists } of checks) {
      const keyValues = fk.columns.map((column) => {
        let position = positions.get(column);
        if (position === undefined) positions.set(column, (position = targets.indexOf(column)));
        return values[position]!;
      });
      if (keyValues.some((value) => value === null)) continue;
      if (!exists(keyValues)) {
        return {
          column: fk.columns.join(", "),
          reason: `${fk.columns.join(", ")} ${keyValues.map((v) => JSON.stringify(v)).join(", ")} is not in ${fk.references.table} (${fk.references.columns.join(", ")})`,
        };
      }
    }
    return undefined;
  };
}

function guardReplace(step: LoadStepSpec, force: boolean, incoming: number, stored: number, source: string): void {
  if (step.force || force) return;
  if (incoming === 0 && stored > 0) {
    throw new PipelineError(
      "E_REPLACE",
      `${source} has no data rows; replacing would empty ${step.table} (${stored} rows). Use --force if that is intended`,
    );
  }
  const ratio = step.min_replace_ratio ?? defaultMinReplaceRatio;
  if (stored > 0 && incoming < stored * ratio) {
    throw new PipelineError(
      "E_REPLACE",
      `${source} has ${incoming} rows, less than ${Math.round(ratio * 100)}% of the ${stored} stored in ${step.table}; refusing to replace (min_replace_ratio). Use --force if that is intended`,
    );
  }
}

function sha256(data: string | Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x) => b.includes(x));
}

/** A source as shown in logs: a path as written, a URL as is, or its host and tail when long. */
export function shortSource(source: string): string {
  if (!isUrl(source) || source.length <= 72) return source;
  return `${new URL(source).host}/...${source.slice(-40)}`;
}
