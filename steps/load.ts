import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import path from "node:path";
import { checkDateFormat, makeCaster, mappingOptions, type Caster } from "../engine/cast.js";
import type { LoadStepSpec, Pipeline, TableSpec } from "../engine/config/schema.js";
import { writingCastValues } from "../engine/db/constraints.js";
import { isConstraintViolation, quoteIdent, type SqlDatabase, type SqlValue, type Statement } from "../engine/db/database.js";
import { isRequired } from "../engine/db/tables.js";
import { clip, didYouMean, formatPlace, PipelineError, redactCredentials, throwIfAborted, type Diagnostic } from "../engine/errors.js";
import {
  closeRejections,
  keepPending,
  openRejections,
  readSourceState,
  rejectionKeeper,
  rejectionWriter,
  retriedKinds,
  shadowPending,
  touchPending,
  writeSourceState,
  type OpenRejection,
  type Rejection,
  type SourceState,
  rejectionSamples,
} from "../engine/history.js";
import { describeRejection } from "../engine/output.js";
import {
  binaryProbeBytes,
  countLineEnds,
  decodePieces,
  decodeText,
  headerSpan,
  parseCsv,
  readCsv,
  readCsvPieces,
  refuseBinary,
} from "../engine/sources/csv.js";
import { fetchSourceInto, httpDefaults, isUrl } from "../engine/sources/fetch.js";
import { SpooledBody, type SpoolSummary } from "../engine/sources/spool.js";
import { boundYoungGeneration } from "../engine/memory.js";
import type { RunContext, StepCounts, StepDefinition, StepOutcome } from "../engine/step.js";
import { profileLoad } from "./load-profile.js";

const defaultMinReplaceRatio = 0.5;
/** The most rows one load step may reject in a run when it declares no max_rejected: beyond it the source is not what the step expects (garbage appended, a wrong file). */
const defaultMaxRejected = 10_000;

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
  // why: a source unchanged since the last run writes nothing but the engine's own tables: the sqljs image stays unloaded
  // and, on a server, the table open to other writers (rowLoader).
  announcesWrites: true,
  source: (step) => step.source,
  profile: profileLoad,
  key: (step, pipeline) => (step.mode === "append" ? undefined : loadKey(step, pipeline.tables[step.table])),

  describe(step, pipeline) {
    const key = loadStep.key!(step, pipeline);
    const by = key && step.mode !== "replace" ? ` by ${key.join(", ")}` : "";
    return `load ${shortSource(step.source)} -> ${step.table} (${step.mode}${by})`;
  },

  details(step, pipeline) {
    const table = pipeline.tables[step.table];
    const details: [string, string][] = [
      ["source", redactCredentials(step.source)],
      ["table", step.table],
      ["mode", step.mode],
    ];
    const key = loadKey(step, table);
    if (key && step.mode !== "append") details.push(["key", key.join(", ")]);
    if (step.mode === "insert_new") details.push(["on conflict", conflictPolicy(step)]);
    const columns = Object.entries(step.columns).map(([target, mapping]) => `${target} <- "${mappingOptions(mapping, target).from}"`);
    details.push(["columns", columns.join(", ")]);
    if (step.max_rejected !== undefined) details.push(["max rejected", String(step.max_rejected)]);
    return details;
  },

  writes: (step) => [step.table],
  // why: a row whose reference is not stored yet waits, and is retried by the next run of this step.
  reads: (step, { pipeline }) => (pipeline.tables[step.table]?.foreign_keys ?? []).map((fk) => fk.references.table),
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
      const options = mappingOptions(mapping, target);
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
    const index = Number(context.path[context.path.length - 1]);
    (table.foreign_keys ?? []).forEach((fk) => {
      const parent = fk.references.table;
      if (parent === step.table || context.written.has(parent)) return;
      const later = context.pipeline.steps.findIndex((other, i) => i > index && other.type === "load" && other.table === parent);
      if (later >= 0) {
        problem(
          `table ${step.table} references ${parent}, which step ${context.pipeline.steps[later]!.name} (step ${later + 1}) loads later: on an empty database every row would be rejected. Move that step before this one`,
          ["table"],
        );
      }
    });
    if (step.on_conflict !== undefined && step.mode !== "insert_new")
      problem(`on_conflict applies to mode insert_new, not ${step.mode}`, [], "on_conflict");
    for (const option of ["min_replace_ratio", "force"] as const) {
      if (step[option] !== undefined && step.mode !== "replace") problem(`${option} applies to mode replace, not ${step.mode}`, [], option);
    }
    return problems;
  },

  async execute(step, context) {
    const { db } = context;
    const table = context.pipeline.tables[step.table]!;
    const stepSha256 = sha256(JSON.stringify({ step, table }));
    const previous = readSourceState(db, step.name);
    const open = openRejections(db, step.name);
    // why: rows rejected by an older version were kept without what a retry needs; one full read settles them.
    const legacy = open.some((rejection) => rejection.kind === null);
    const validators = !context.fullRefresh && previous?.stepSha256 === stepSha256 && !legacy ? previous : undefined;
    const http = { ...httpDefaults, ...step.http };
    // why: the body goes to disk as it arrives, hashed and checked on the way, and is read back in pieces: memory does not grow with the source.
    const spool = new SpooledBody(redactCredentials(step.source), {
      prefixBytes: validators && validators.bytes > 0 ? validators.bytes : undefined,
      utf8: isUtf8(step.csv?.encoding),
      quote: quoteByte(step),
    });
    try {
      const fetched = await fetchSourceInto(
        step.source,
        { baseDir: context.config.baseDir, http, previous: validators, signal: context.signal },
        spool,
      );
      const source = redactCredentials(step.source);
      const loader = rowLoader(step, table, context, open);
      if (fetched.kind === "not_modified") return loader.retryOnly(validators?.header, "source not modified (HTTP 304)");
      const summary = spool.summary();
      const contentSha256 = summary.sha256;
      const { etag, lastModified } = fetched;
      const remember = (header: string[] | null) =>
        writeSourceState(db, {
          step: step.name,
          source,
          stepSha256,
          etag,
          lastModified,
          contentSha256,
          bytes: summary.size,
          header,
          fetchedAt: new Date().toISOString(),
          runId: context.runId,
        });
      if (validators?.contentSha256 === contentSha256) {
        remember(null);
        return loader.retryOnly(validators.header, "source unchanged (same content as last run)");
      }
      await context.aboutToWrite();
      const tail = validators ? grownTail(step, spool, summary, validators) : undefined;
      const outcome = loader.read(
        sourceText(step, spool, summary, tail, source),
        tail ? { firstLine: tail.firstLine, afterRows: tail.afterRows } : undefined,
      );
      if (tail) {
        const grew = `the file grew: only what follows its first ${validators!.bytes} bytes (read by an earlier run) was parsed`;
        outcome.detail = outcome.detail ? `${grew}; ${outcome.detail}` : grew;
      }
      if (fetched.redirectedTo) {
        const redirected = `redirected to ${fetched.redirectedTo} (http.allow_redirect_hosts)`;
        outcome.detail = outcome.detail ? `${redirected}; ${outcome.detail}` : redirected;
      }
      remember(loader.header());
      return outcome;
    } finally {
      spool.close();
    }
  },
};

function isUtf8(encoding: NonNullable<LoadStepSpec["csv"]>["encoding"]): boolean {
  return encoding === undefined || encoding === "utf8" || encoding === "utf-8";
}

/**
 * The one byte that encodes the step's quote character in its file, or undefined when it takes
 * more (a non-ASCII character in UTF-8) or is not its own code (0x80-0x9F decode to other
 * characters in windows-1252, which latin1 names too): a scan for that byte would then also stop
 * on bytes of other characters (ë is C3 AB, « is C2 AB), or miss the quote.
 */
function quoteByte(step: LoadStepSpec): number | undefined {
  const code = (step.csv?.quote ?? '"').charCodeAt(0);
  if (code < 0x80) return code;
  return !isUtf8(step.csv?.encoding) && code >= 0xa0 && code <= 0xff ? code : undefined;
}

/** A step's tail read: where the header lies, where the appended part starts, and the line numbering of the header glued to it. */
type Tail = { header: { start: number; end: number }; from: number; firstLine: number; afterRows: boolean };

/**
 * The text a read parses: pieces decoded from the spool as they are parsed, when the part to read
 * holds no quote character (the quote-free split needs no look-ahead); else the whole text, for
 * csv-parse (quoted fields, `header_line`) and for replace, which counts the rows before it deletes.
 * Decoding errors are found and placed as a whole decode places them, before any row is read.
 */
function sourceText(
  step: LoadStepSpec,
  spool: SpooledBody,
  summary: SpoolSummary,
  tail: Tail | undefined,
  source: string,
): string | Iterable<string> {
  const encoding = step.csv?.encoding;
  const quoted = tail
    ? (summary.firstQuote >= 0 && summary.firstQuote < tail.header.end) || summary.lastQuote >= tail.from
    : summary.firstQuote >= 0;
  if (quoted || (step.csv?.header_line ?? 1) > 1 || step.mode === "replace") {
    const bytes = spool.all();
    return tail ? decodeTail(bytes, tail, encoding, source) : decodeText(bytes, encoding, source);
  }
  const start = tail ? tail.from - 1 : 0;
  refuseBinary(spool.read(start, start + binaryProbeBytes), source);
  // why: the error names the line of the first byte that does not decode, in the whole file.
  if (!summary.utf8) decodeText(spool.all(), encoding, source);
  if (!tail) return decodePieces(spool.pieces(0), encoding);
  const header = decodeText(spool.read(tail.header.start, tail.header.end), encoding, source);
  return gluedTail(header, decodePieces(spool.pieces(start), encoding));
}

/** The header, then the appended part decoded from the line end before it, that line end dropped (so a BOM in its first row stays, as in the whole file). */
function* gluedTail(header: string, appended: Iterable<string>): Generator<string> {
  yield header + "\n";
  let first = true;
  for (const piece of appended) {
    yield first ? piece.slice(1) : piece;
    first = false;
  }
}

/** The header glued to the appended part; text that does not decode is reported from the whole file, at its line there. */
function decodeTail(bytes: Uint8Array, tail: Tail, encoding: NonNullable<LoadStepSpec["csv"]>["encoding"], source: string): string {
  try {
    // why: a decoder drops a BOM at the start of what it decodes; from the line end before the tail, a BOM in its first row stays, as in the whole file.
    const appended = decodeText(bytes.subarray(tail.from - 1), encoding, source).slice(1);
    return decodeText(bytes.subarray(tail.header.start, tail.header.end), encoding, source) + "\n" + appended;
  } catch (error) {
    if (error instanceof PipelineError && error.code === "E_DECODE") decodeText(bytes, encoding, source);
    throw error;
  }
}

/**
 * Rows per multi-row INSERT, at most: fewer statements, while a batch that hits a conflict is redone row by row.
 * why: each statement (and the batch's savepoint) copies the pages it changes that already held rows (the table's
 * and its indexes' last pages) aside, to undo it; at 1M rows, 512 rows per INSERT cost ~0.2 s CPU less than 128.
 */
const batchRows = 512;

/** SQLite's limit on the values bound to one statement (SQLITE_MAX_VARIABLE_NUMBER: 32 766 in node:sqlite and in sql.js). */
const maxBoundValues = 32_766;

/** What became of one row written on its own. */
type RowFate = "inserted" | "unchanged" | "updated" | "conflicting" | "rejected";

/** A problem that keeps a row out of its table. */
type Problem = Omit<Rejection, "line" | "raw" | "fields" | "key">;

/**
 * Loads one step's rows: the records of a read, and the pending rows of earlier runs, which are
 * retried (in file order, before the rows a tail read appends) from what the rejected-rows table
 * keeps, so that a run that skips the file (304, same content) loads them all the same.
 */
function rowLoader(step: LoadStepSpec, table: TableSpec, context: RunContext, open: OpenRejection[]) {
  const { db, runId } = context;
  const source = redactCredentials(step.source);
  const targets = Object.keys(step.columns);
  const casters: Caster[] = targets.map((target) =>
    makeCaster(table.columns[target]!, mappingOptions(step.columns[target]!, target), isRequired(table, target)),
  );
  const insertRejection = rejectionWriter(db, runId, step.name, step.source);
  const keepRejection = rejectionKeeper(db, runId);
  const openById = new Map(open.map((rejection) => [rejection.id, rejection]));
  // why: a full read that rejects a line again the same way keeps its record, so that a sheet edited every few minutes
  // does not add a copy of every waiting row to the table on each run.
  const kept = new Set<number>();
  const reject = (rejection: Rejection): number => {
    const id = earlierByRaw.get(rejection.raw)?.find((id) => !kept.has(id) && openById.get(id)?.kind === rejection.kind);
    if (id === undefined) return insertRejection(rejection);
    keepRejection(id, rejection);
    kept.add(id);
    return id;
  };
  const references = referenceChecks(db, step, context.pipeline, targets);
  const counts: Required<StepCounts> = {
    read: 0,
    inserted: 0,
    updated: 0,
    unchanged: 0,
    rejected: 0,
    conflicting: 0,
    deleted: 0,
    retried: 0,
    pending: 0,
  };
  const writer = rowWriter(db, step, table, targets);
  const keyPositions = writer.key.map((column) => targets.indexOf(column));
  const policy = conflictPolicy(step);
  // why: under upsert (or on_conflict: update) the last loadable line of a key wins; otherwise the first one holds it.
  const lastWins = policy === "update";
  let header: string[] | undefined;
  let tailRead = false;
  // why: after a file only grew, one late row rejected among the new ones is a rejection, not a source gone wrong, unless
  // the file held no row before; the earlier rows still pending count toward max_rejected as a fresh load counts them.
  let tailOnly = false;
  let earlierRejected = 0;
  let indexes: number[] = [];
  let width = 0;

  // why: a pending row whose key a later line of the file holds is settled by file order on its retry, as a fresh load would.
  // The pending lines of this run by key, and the keys whose holder this run has seen (the first loadable line under
  // insert_new; under upsert each loadable line supersedes the pending lines before it).
  const pendingKeys = new Map<string, number[]>();
  // why: a key can only be held by another line while a row waits for a reference when the foreign key lies outside the key.
  const tracksClaims =
    writer.key.length > 0 && (table.foreign_keys ?? []).some((fk) => fk.columns.some((column) => !writer.key.includes(column)));
  const claimed = new Set<string>();
  const keyOf = (values: readonly SqlValue[]) => values.map((v) => `${typeof v}:${String(v)}`).join("\u0000");
  const trackPending = (id: number, key: readonly SqlValue[] | undefined) => {
    if (!key || writer.key.length === 0) return;
    const k = keyOf(key);
    const ids = pendingKeys.get(k);
    if (ids) ids.push(id);
    else pendingKeys.set(k, [id]);
  };
  /** A loadable line with this key: under insert_new the first one takes the key, so the pending lines before it wait behind it. */
  const claim = (values: readonly SqlValue[], line: number, raw: () => string) => {
    if (writer.key.length === 0) return;
    const key = keyOf(keyPositions.map((i) => values[i]!));
    const ids = pendingKeys.get(key);
    if (!lastWins) {
      if (claimed.has(key)) return;
      claimed.add(key);
    }
    if (!ids) return;
    pendingKeys.delete(key);
    shadowPending(db, ids, { line, raw: raw() });
  };
  /** Whether a line before the one being retried holds this key (insert_new: it loaded first in this run). */
  const heldByEarlierLine = (key: readonly SqlValue[]) => !lastWins && claimed.has(keyOf(key));
  /** A loadable line of a read; in a tail read, a key stored before it is held by an earlier line of the file. */
  const claimRead = (values: readonly SqlValue[], line: number, raw: () => string) => {
    if (writer.key.length === 0) return;
    if (tailRead && !lastWins) {
      const key = keyPositions.map((i) => values[i]!);
      if (!claimed.has(keyOf(key)) && pendingKeys.has(keyOf(key)) && writer.lookup(key)) {
        claimed.add(keyOf(key));
        return;
      }
    }
    claim(values, line, raw);
  };
  const noteLoaded = (raw: () => string) => {
    if (earlierByRaw.size === 0) return;
    const ids = earlierByRaw.get(raw());
    if (ids) for (const id of ids) resolvedIds.add(id);
  };
  // The open rejections a full read settles: resolved when their row is loaded by it, superseded otherwise.
  const earlierByRaw = new Map<string, number[]>();
  const resolvedIds = new Set<number>();

  /** The key of a record whose key columns can be read, else undefined. */
  const recordKey = (fields: string[]): SqlValue[] | undefined => {
    if (keyPositions.length === 0 || fields.length !== width) return undefined;
    const key: SqlValue[] = [];
    for (const position of keyPositions) {
      const result = casters[position]!(fields[indexes[position]!]!);
      if (!result.ok || result.value === null) return undefined;
      key.push(result.value);
    }
    return key;
  };

  const valuesOf = (values: readonly SqlValue[]) => Object.fromEntries(targets.map((t, i) => [t, values[i] ?? null]));

  /** Writes one row on its own: the path for retried rows and for rows whose batch did not go in whole. */
  const writeOne = (values: SqlValue[], line: number, raw: () => string): RowFate => settle(writer.write(values), values, line, raw);
  /** Counts and records what became of a row; a row a bulk write already updated (`updated`) is not written again. */
  const settle = (result: WriteResult | { kind: "updated" }, values: SqlValue[], line: number, raw: () => string): RowFate => {
    if (result.kind === "updated") {
      counts.updated++;
      noteLoaded(raw);
      return "updated";
    }
    if (result.kind === "conflict") {
      const storedValues = valuesOf(result.stored);
      const newValues = valuesOf(values);
      if (policy === "fail") {
        throw new PipelineError(
          "E_CONFLICT",
          `${source} line ${line}: key (${writer.key.join(", ")}) is already stored with other values: stored ${clip(JSON.stringify(storedValues), 1000)}, new ${clip(JSON.stringify(newValues), 1000)} (on_conflict: fail)`,
        );
      }
      if (policy === "update") {
        writer.update(values);
        counts.updated++;
        noteLoaded(raw);
        return "updated";
      }
      reject({ line, raw: raw(), kind: "conflict", reason: "key already stored with different values", storedValues, newValues });
      counts.conflicting++;
      return "conflicting";
    }
    if (result.kind === "error") {
      reject({ line, raw: raw(), kind: "constraint", reason: result.message });
      counts.rejected++;
      return "rejected";
    }
    counts[result.kind]++;
    noteLoaded(raw);
    return result.kind;
  };

  const batch = batchWriter(db, step, targets);
  // why: a server writes whole batches set-based (COPY into a staging table) and says what became of each row.
  const bulk = db.bulkWriter?.({ table: step.table, columns: targets, key: writer.key, lastWins });
  const queued: { values: SqlValue[]; line: number; raw: () => string }[] = [];
  const flush = () => {
    if (queued.length === 0) return;
    if (bulk) {
      const rows = queued.splice(0);
      return bulk.write(
        rows.map((row) => row.values),
        (fates) =>
          rows.forEach((row, i) => (fates ? settle(fates[i]!, row.values, row.line, row.raw) : writeOne(row.values, row.line, row.raw))),
      );
    }
    if (batch.insertAll(queued.map((row) => row.values))) {
      counts.inserted += queued.length;
      if (earlierByRaw.size > 0) for (const row of queued) noteLoaded(row.raw);
    } else for (const row of queued) writeOne(row.values, row.line, row.raw);
    queued.length = 0;
  };

  /** Casts a record and checks its references; the problem that keeps it out, if any. */
  const check = (fields: string[], values: SqlValue[]): Problem | undefined =>
    castRecord(fields, width, indexes, casters, targets, values) ?? references(values);

  const useHeader = (names: string[]) => {
    checkHeaderLength(names, step.csv?.delimiter ?? ",", source);
    header = names;
    indexes = headerIndexes(step, names, source, (target) =>
      formatPlace(context.config.locate(["steps", context.pipeline.steps.indexOf(step), "columns", target])),
    );
    width = names.length;
  };

  /** Retries the pending rows that may pass now (a reference that arrived, a cast that today's configuration accepts). */
  const retryPending = () => {
    for (const rejection of open) {
      if (rejection.kind === null || !retriedKinds.has(rejection.kind) || rejection.fields === null) continue;
      counts.retried++;
      const values: SqlValue[] = new Array<SqlValue>(targets.length);
      const problem = check(rejection.fields, values);
      if (problem) {
        keepPending(db, rejection.id, runId, problem);
        counts.pending++;
        const key = recordKey(rejection.fields);
        // why: an earlier pending line took the key in this run; the later line recorded as its holder no longer is.
        if (key && rejection.shadowedLine !== null && heldByEarlierLine(key)) shadowPending(db, [rejection.id], null);
        trackPending(rejection.id, key);
        continue;
      }
      const raw = () => rejection.raw;
      const key = keyPositions.map((i) => values[i]!);
      if (rejection.shadowedLine !== null && rejection.shadowedRaw !== null && writer.key.length > 0 && !heldByEarlierLine(key)) {
        if (lastWins) {
          // why: in file order the later line, already loaded, is applied after this one and wins.
          closeRejections(db, [rejection.id], "superseded", runId);
          continue;
        }
        const stored = writer.lookup(key);
        if (stored && !stored.every((value, i) => value === values[i])) {
          // why: in file order this row comes first and takes the key; the later line is the one kept aside.
          const storedValues = valuesOf(values);
          const newValues = valuesOf(stored);
          if (policy === "fail") {
            throw new PipelineError(
              "E_CONFLICT",
              `${source} line ${rejection.shadowedLine}: key (${writer.key.join(", ")}) is taken by line ${rejection.line}, loadable now, with other values: line ${rejection.line} ${clip(JSON.stringify(storedValues), 1000)}, line ${rejection.shadowedLine} ${clip(JSON.stringify(newValues), 1000)} (on_conflict: fail)`,
            );
          }
          writer.update(values);
          counts.updated++;
          reject({
            line: rejection.shadowedLine,
            raw: rejection.shadowedRaw,
            kind: "conflict",
            reason: `key already stored with different values (by line ${rejection.line}, which comes first in the file)`,
            storedValues,
            newValues,
          });
          counts.conflicting++;
          closeRejections(db, [rejection.id], "resolved", runId);
          claim(values, rejection.line, raw);
          continue;
        }
        const fate = writeOne(values, rejection.line, raw);
        closeRejections(db, [rejection.id], fate === "conflicting" || fate === "rejected" ? "superseded" : "resolved", runId);
        claim(values, rejection.line, raw);
        continue;
      }
      const fate = writeOne(values, rejection.line, raw);
      closeRejections(db, [rejection.id], fate === "conflicting" || fate === "rejected" ? "superseded" : "resolved", runId);
      // why: a row that created or rewrote the stored one holds the key from its line on; otherwise an earlier line holds it.
      if (fate === "inserted" || (lastWins && fate !== "rejected")) claim(values, rejection.line, raw);
      else if (writer.key.length > 0 && !lastWins) claimed.add(keyOf(key));
    }
    touchPending(db, step.name, runId);
  };

  const onRecord = (fields: string[], line: number, raw: () => string) => {
    if ((++counts.read & 8191) === 0) boundYoungGeneration();
    if (counts.read % 50_000 === 0) {
      context.progress(counts.read);
      throwIfAborted(context.signal);
      bulk?.drain();
      checkRejected(step, counts, { tailOnly, earlier: earlierRejected, partial: true }, context);
    }
    const values: SqlValue[] = new Array<SqlValue>(targets.length);
    const problem = check(fields, values);
    if (problem) {
      const retried = retriedKinds.has(problem.kind);
      const key = retried ? recordKey(fields) : undefined;
      const id = reject({ line, raw: raw(), ...problem, ...(retried ? { fields, key } : {}) });
      counts.rejected++;
      if (retried) trackPending(id, key);
      return;
    }
    if (tracksClaims || pendingKeys.size > 0) claimRead(values, line, raw);
    queued.push({ values, line, raw });
    if (queued.length === (bulk?.batchRows ?? batch.rows)) flush();
  };

  const finish = (): StepOutcome => {
    flush();
    writer.free();
    batch.free();
    bulk?.free();
    context.progress(counts.read);
    checkRejected(step, counts, { tailOnly, earlier: earlierRejected, partial: false }, context);
    // why: the counts say how many pending rows were retried and how many still wait; the detail says where they are.
    const kept = counts.rejected + counts.conflicting + counts.pending;
    const detail = kept > 0 ? `${kept} row(s) pending in pipeline_rejected_rows (see the rejections command)` : undefined;
    return { status: "success", counts: stepCounts(step, counts), ...(detail ? { detail } : {}) };
  };

  return {
    header: () => header ?? null,

    /** No new bytes to read (304, same content): only the pending rows are tried again. */
    async retryOnly(storedHeader: string[] | null | undefined, why: string): Promise<StepOutcome> {
      const retryable = open.some((r) => r.kind !== null && retriedKinds.has(r.kind) && r.fields !== null);
      if (!retryable || !storedHeader) {
        touchPending(db, step.name, runId);
        writer.free();
        batch.free();
        bulk?.free();
        return { status: "unchanged", counts: {}, detail: why };
      }
      await context.aboutToWrite();
      const outcome = writingCastValues(db, () => {
        useHeader(storedHeader);
        retryPending();
        return finish();
      });
      const changed = counts.inserted + counts.updated + counts.conflicting + counts.rejected > 0 || counts.pending < counts.retried;
      return { ...outcome, status: changed ? "success" : "unchanged", detail: `${why}; ${outcome.detail ?? ""}`.replace(/; $/, "") };
    },

    /** Reads CSV text, whole or in pieces: the whole file, or (with `tail`) its header glued to what an earlier run had not read. */
    read(text: string | Iterable<string>, tail: { firstLine: number; afterRows: boolean } | undefined): StepOutcome {
      return writingCastValues(db, () => {
        tailRead = tail !== undefined;
        tailOnly = tail?.afterRows ?? false;
        boundYoungGeneration();
        if (!tail) {
          for (const rejection of open) {
            const ids = earlierByRaw.get(rejection.raw);
            if (ids) ids.push(rejection.id);
            else earlierByRaw.set(rejection.raw, [rejection.id]);
          }
        }
        const onHeader = (names: string[]) => {
          useHeader(names);
          // why: the pending rows come before the appended ones in the file, so they are settled first.
          if (tail) {
            retryPending();
            earlierRejected = counts.pending + open.filter((r) => r.kind === "shape" || r.kind === "constraint").length;
          }
        };
        if (typeof text !== "string") {
          readCsvPieces(text, step.csv ?? {}, source, { header: onHeader, record: onRecord }, tail?.firstLine ?? 1);
        } else if (step.mode === "replace") {
          // why: the guard needs the number of incoming rows before anything is deleted.
          const csv = parseCsv(text, step.csv ?? {}, source);
          onHeader(csv.header);
          const stored = Number(db.all(`SELECT count(*) AS n FROM ${quoteIdent(step.table)}`)[0]?.["n"] ?? 0);
          guardReplace(step, context.force, csv.records.length, stored, source);
          counts.deleted = db.run(`DELETE FROM ${quoteIdent(step.table)}`);
          for (const record of csv.records) onRecord(record.fields, record.line, () => record.raw);
        } else {
          readCsv(text, step.csv ?? {}, source, { header: onHeader, record: onRecord }, tail?.firstLine ?? 1);
        }
        const outcome = finish();
        if (!tail && open.length > 0) {
          const resolved = open.filter((r) => resolvedIds.has(r.id) && !kept.has(r.id)).map((r) => r.id);
          closeRejections(db, resolved, "resolved", runId);
          closeRejections(
            db,
            open.filter((r) => !resolvedIds.has(r.id) && !kept.has(r.id)).map((r) => r.id),
            "superseded",
            runId,
          );
        }
        return outcome;
      });
    },
  };
}

/**
 * Fails the step (so the run, which then saves nothing) when it rejected every row it read from the
 * whole source, or more rows than `max_rejected` allows: a count, or a percentage of the rows read
 * (10 000 when not declared). Key conflicts kept aside under `on_conflict: reject` are a declared
 * policy and count for neither. After a file only grew, its new rows alone were read: one late row
 * rejected there is a rejection, not a failure, but max_rejected still applies to them. While the
 * source is still being read (`partial`), a count already passed stops the read, so garbage costs
 * memory up to the limit, not up to its size; a percentage is judged at the end only.
 */
function checkRejected(
  step: LoadStepSpec,
  counts: Required<StepCounts>,
  read: { tailOnly: boolean; earlier: number; partial: boolean },
  context: RunContext,
): void {
  if (counts.rejected === 0 || (read.partial && typeof step.max_rejected === "string")) return;
  const allowed = maxRejected(step.max_rejected, counts.read);
  const all = counts.rejected === counts.read && !read.tailOnly && !read.partial;
  const rejected = counts.rejected + read.earlier;
  if (!all && rejected <= allowed.count) return;
  const first = rejectionSamples(context.db, context.runId, step.name, 3).map(describeRejection).join("; ");
  // why: the periodic check runs when a row is counted as read, before it is cast.
  const problem = read.partial
    ? `${counts.rejected} of the first ${counts.read - 1} rows rejected, more than max_rejected (${allowed.text}); reading stopped there`
    : read.earlier > 0
      ? `${rejected} rows rejected (${counts.rejected} of the ${counts.read} appended rows, and ${read.earlier} earlier rows still pending), more than max_rejected (${allowed.text})`
      : `${counts.rejected} of ${counts.read} rows rejected, more than max_rejected (${allowed.text})`;
  throw new PipelineError(
    "E_REJECTED",
    all
      ? `${redactCredentials(step.source)}: all ${counts.read} rows read were rejected; first: ${first}. Fix the source or the step's columns and types, then run again`
      : `${redactCredentials(step.source)}: ${problem}; first: ${first}`,
  );
}

/** How many rejected rows `max_rejected` allows out of `read`, and how to say it. */
function maxRejected(declared: number | string | undefined, read: number): { count: number; text: string } {
  if (declared === undefined) {
    return { count: defaultMaxRejected, text: `${defaultMaxRejected} by default; declare max_rejected on the step to allow more` };
  }
  if (typeof declared === "number") return { count: declared, text: String(declared) };
  const count = Math.floor((read * Number.parseFloat(declared)) / 100);
  return { count, text: `${declared} of the rows read, that is ${count}` };
}

/**
 * Inserts whole batches in one statement inside a savepoint. A batch goes in only if every row
 * does (no key already stored, no constraint broken); otherwise it is rolled back and the caller
 * writes its rows one by one, which decides each row's fate exactly as if there were no batches.
 */
function batchWriter(
  db: SqlDatabase,
  step: LoadStepSpec,
  targets: string[],
): { rows: number; insertAll(rows: SqlValue[][]): boolean; free(): void } {
  const conflict = step.mode === "append" ? "" : " ON CONFLICT DO NOTHING";
  const row = `(${targets.map(() => "?").join(", ")})`;
  const sql = (n: number) =>
    `INSERT INTO ${quoteIdent(step.table)} (${targets.map(quoteIdent).join(", ")}) VALUES ${Array.from({ length: n }, () => row).join(", ")}${conflict}`;
  const width = targets.length;
  // why: a wide table gets fewer rows per INSERT, within SQLite's limit on bound values (128 rows of 256 columns passed it).
  const fullRows = Math.max(1, Math.min(batchRows, Math.floor(maxBoundValues / Math.max(1, width))));
  const full = db.prepare(sql(fullRows));
  const fullParams = new Array<SqlValue>(fullRows * width);
  return {
    rows: fullRows,
    insertAll(rows) {
      const statement = rows.length === fullRows ? full : db.prepare(sql(rows.length));
      // why: a plain loop into a reused array; rows.flat() cost a quarter of a second per million rows of four values (node 24).
      const params = rows.length === fullRows ? fullParams : new Array<SqlValue>(rows.length * width);
      let at = 0;
      for (const values of rows) for (const value of values) params[at++] = value;
      db.exec("SAVEPOINT load_batch");
      let whole = false;
      try {
        statement.run(params);
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
 * When a source only grew since the last run (its old bytes are a prefix of the new ones, and the
 * old file ended on a record's end), the rows of that prefix were already read: only the header
 * and the tail need parsing. Only for insert_new and upsert, where re-reading the prefix could not
 * change anything. `firstLine` numbers the header so that every tail record keeps its line in the file.
 */
function grownTail(step: LoadStepSpec, spool: SpooledBody, summary: SpoolSummary, previous: SourceState): Tail | undefined {
  const old = previous.bytes;
  if ((step.mode !== "insert_new" && step.mode !== "upsert") || (step.csv?.header_line ?? 1) > 1) return undefined;
  // why: a percentage is of the rows a fresh load reads, the whole file; the appended rows alone would judge a late row on its own.
  if (typeof step.max_rejected === "string") return undefined;
  if (old <= 0 || summary.size <= old) return undefined;
  const [last, next, after] = spool.read(old - 1, old + 2);
  // why: the tail starts on a line of its own; a line end split between the two reads (CR | LF) belongs to the old last line.
  let from: number;
  if (last === 0x0a) from = old;
  else if (last === 0x0d) from = next === 0x0a ? old + 1 : old;
  else if (next === 0x0a) from = old + 1;
  else if (next === 0x0d) from = after === 0x0a ? old + 2 : old + 1;
  else return undefined;
  if (summary.prefixSha256 !== previous.contentSha256) return undefined;
  // why: no header worth reading is longer (maxHeaderLength characters); one that does not end there is read by a full read, which refuses it.
  const start = spool.read(0, Math.min(old, 4 * maxHeaderLength + 1024));
  // why: where the quote is not one byte, the header's end cannot be found by bytes; the whole file is read.
  const quote = quoteByte(step);
  if (quote === undefined) return undefined;
  const header = headerSpan(start, quote, start.length, isUtf8(step.csv?.encoding));
  if (!header) return undefined;
  const headerLines = 1 + countLineEnds(start, header.start, header.end);
  // why: the prefix's line ends were counted as it was spooled; past it, only the line end the old file's last line lacked
  // (a CR at its end was counted, and an LF after it is that CRLF's).
  if (summary.prefixLineEnds === undefined) return undefined;
  const tailLine = 1 + summary.prefixLineEnds + (from > old && last !== 0x0d ? 1 : 0);
  return { header, from, firstLine: tailLine - headerLines, afterRows: holdsRow(spool, header.end, old) };
}

/** Whether bytes `[from, to)` hold anything but line ends: a row after the header. */
function holdsRow(spool: SpooledBody, from: number, to: number): boolean {
  for (let at = from; at < to;) {
    const piece = spool.read(at, Math.min(to, at + 64 * 1024));
    if (piece.length === 0) return false;
    for (const b of piece) if (b !== 0x0a && b !== 0x0d) return true;
    at += piece.length;
  }
  return false;
}

/** The counts a step reports: `deleted` only for replace, the retry counts only when rows were retried. */
function stepCounts(step: LoadStepSpec, counts: Required<StepCounts>): StepCounts {
  const { deleted, retried, pending, ...rest } = counts;
  return { ...rest, ...(step.mode === "replace" ? { deleted } : {}), ...(retried > 0 ? { retried, pending } : {}) };
}

/** The longest header line accepted, in characters: no real header is near it, and every message quoting it stays short. */
const maxHeaderLength = 64 * 1024;

function checkHeaderLength(header: string[], delimiter: string, source: string): void {
  const length = header.reduce((sum, name) => sum + name.length, header.length - 1);
  if (length <= maxHeaderLength) return;
  throw new PipelineError(
    "E_HEADER",
    `${source}: the header line is ${length} characters long, more than ${maxHeaderLength}; is this really a CSV file with a header? It starts with ${JSON.stringify(clip(header.slice(0, 10).join(delimiter), 80))}`,
  );
}

function headerIndexes(step: LoadStepSpec, header: string[], source: string, mappedAt: (target: string) => string): number[] {
  const clean = header.map((name) => name.trim());
  const missing: string[] = [];
  const indexes = Object.entries(step.columns).map(([target, mapping]) => {
    const wanted = mappingOptions(mapping, target).from;
    const index = clean.indexOf(wanted);
    if (index < 0) missing.push(`"${wanted}" (for ${step.table}.${target})${didYouMean(wanted, clean)} (mapped at ${mappedAt(target)})`);
    else if (clean.indexOf(wanted, index + 1) >= 0) missing.push(`"${wanted}" appears twice`);
    return index;
  });
  if (missing.length > 0) {
    const expected = Object.entries(step.columns).map(([target, m]) => mappingOptions(m, target).from);
    throw new PipelineError(
      "E_HEADER",
      `${source}: the header does not have the expected columns: missing ${missing.join(", ")}. Expected ${JSON.stringify(expected)}; got ${JSON.stringify(header.slice(0, 20).map((name) => clip(name, 100)))}${header.length > 20 ? ` and ${header.length - 20} more` : ""}`,
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
): Problem | undefined {
  if (fields.length !== width) return { kind: "shape", reason: `expected ${width} fields as in the header, found ${fields.length}` };
  for (let i = 0; i < casters.length; i++) {
    const field = fields[indexes[i]!]!;
    const result = casters[i]!(field);
    if (!result.ok) return { kind: "cast", column: targets[i], value: field, reason: result.reason };
    values[i] = result.value;
  }
  return undefined;
}

type WriteResult = { kind: "inserted" | "unchanged" } | { kind: "conflict"; stored: SqlValue[] } | { kind: "error"; message: string };

interface RowWriter {
  key: readonly string[];
  write(values: SqlValue[]): WriteResult;
  /** The stored row with this key (values in the order of the step's columns), if any. */
  lookup(key: SqlValue[]): SqlValue[] | undefined;
  update(values: SqlValue[]): void;
  free(): void;
}

function rowWriter(db: SqlDatabase, step: LoadStepSpec, table: TableSpec, targets: string[]): RowWriter {
  const t = quoteIdent(step.table);
  const insert = db.prepare(`INSERT INTO ${t} (${targets.map(quoteIdent).join(", ")}) VALUES (${targets.map(() => "?").join(", ")})`);
  // why: on a server an error aborts the whole transaction; a savepoint keeps the run going past a rejected row.
  const guard = db.dialect?.errorsAbortTransaction === true;
  const tryInsert = (values: SqlValue[]): WriteResult => {
    if (guard) db.exec("SAVEPOINT load_row");
    try {
      insert.run(values);
      if (guard) db.exec("RELEASE load_row");
      return { kind: "inserted" };
    } catch (error) {
      if (guard) db.exec("ROLLBACK TO load_row; RELEASE load_row");
      if (isConstraintViolation(db, error)) return { kind: "error", message: (error as Error).message };
      throw error;
    }
  };
  const key = step.mode === "append" ? undefined : loadKey(step, table);
  if (!key) return { key: [], write: tryInsert, lookup: () => undefined, update: () => undefined, free: () => insert.free() };

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
    lookup: (keyValues) => lookup.getValues(keyValues),
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
  targets: readonly string[],
): (values: SqlValue[]) => Problem | undefined {
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
      const positions = fk.columns.map((column) => targets.indexOf(column));
      return {
        fk,
        // why: a one-column key, the common case, is looked up without an array per row.
        single: positions.length === 1 ? positions[0]! : -1,
        positions,
        exists: (values: SqlValue[]) => (known ? known.has(keyOf(values)) : statement!.getValues(values) !== undefined),
        has: (value: SqlValue) => (known ? known.has(value) : statement!.getValues([value]) !== undefined),
      };
    });
  if (checks.length === 0) return () => undefined;
  const problem = (fk: (typeof checks)[number]["fk"], keyValues: SqlValue[]): Problem => ({
    kind: "reference",
    column: fk.columns.join(", "),
    value: keyValues.map((v) => String(v)).join(", "),
    reason: `${fk.columns.join(", ")} ${keyValues.map((v) => JSON.stringify(v)).join(", ")} is not in ${fk.references.table} (${fk.references.columns.join(", ")})`,
  });
  return (values) => {
    for (const { fk, single, positions, exists, has } of checks) {
      if (single >= 0) {
        const value = values[single]!;
        if (value !== null && !has(value)) return problem(fk, [value]);
        continue;
      }
      const keyValues = positions.map((position) => values[position]!);
      if (keyValues.some((value) => value === null)) continue;
      if (!exists(keyValues)) return problem(fk, keyValues);
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
  if (!isUrl(source)) return source;
  const shown = redactCredentials(source);
  return shown.length <= 72 ? shown : `${new URL(shown).host}/...${shown.slice(-40)}`;
}
