import { createRequire } from "node:module";
import type { CsvOptions } from "../config/schema.js";
import { clip, PipelineError } from "../errors.js";

/** One data record of a CSV file. */
export interface CsvRecord {
  /** 1-based line in the file where the record starts. */
  line: number;
  fields: string[];
  /** The record's text as it stood in the file, without its line ending. */
  raw: string;
}

/** A parsed CSV file: its header, and its records in file order. */
export interface CsvTable {
  header: string[];
  headerLine: number;
  records: CsvRecord[];
}

/**
 * Decodes a source's bytes: UTF-8 by default whatever the server declared (a BOM is dropped),
 * or the configured single-byte encoding. Invalid UTF-8 is an error, not replacement characters.
 */
export function decodeText(bytes: Uint8Array, encoding: CsvOptions["encoding"], source: string): string {
  refuseBinary(bytes, source);
  try {
    return new TextDecoder(decoderLabel(encoding), { fatal: true }).decode(bytes);
  } catch {
    const offset = firstInvalidUtf8(bytes);
    const line = 1 + countLineEnds(bytes, 0, offset);
    throw new PipelineError(
      "E_DECODE",
      `${source} is not valid UTF-8 (line ${line}, byte ${offset}); if the file is Latin-1, set csv.encoding: latin1 on this step`,
    );
  }
}

/** Bytes a source's start is examined over for signs that it is not text: {@link refuseBinary} reads no further. */
export const binaryProbeBytes = 8192;

/** Refuses bytes that start like UTF-16 text or hold a NUL byte in their first {@link binaryProbeBytes}: not a CSV file in a byte encoding. */
export function refuseBinary(bytes: Uint8Array, source: string): void {
  const utf16 = utf16ByteOrder(bytes);
  if (utf16) {
    throw new PipelineError(
      "E_DECODE",
      `${source} looks like UTF-16 (${utf16}) text, not UTF-8: re-export it as UTF-8 (in Excel, "CSV UTF-8"; or iconv -f UTF-16 -t UTF-8)`,
    );
  }
  const nul = bytes.subarray(0, binaryProbeBytes).indexOf(0);
  if (nul >= 0) throw new PipelineError("E_DECODE", `${source} looks like a binary file, not CSV text (a NUL byte at byte ${nul})`);
}

/** The TextDecoder label of a step's `csv.encoding`. */
export function decoderLabel(encoding: CsvOptions["encoding"]): string {
  return encoding === undefined || encoding === "utf8" ? "utf-8" : encoding;
}

/**
 * Decodes pieces of bytes as one text, piece by piece (a character cut between two pieces is
 * joined); a BOM at the very start is dropped, as {@link decodeText} drops it. Bytes that do not
 * decode throw: the caller, who knows the whole source, says where.
 */
export function* decodePieces(pieces: Iterable<Uint8Array>, encoding: CsvOptions["encoding"]): Generator<string> {
  const decoder = new TextDecoder(decoderLabel(encoding), { fatal: true });
  for (const piece of pieces) {
    const text = decoder.decode(piece, { stream: true });
    if (text.length > 0) yield text;
  }
  const rest = decoder.decode();
  if (rest.length > 0) yield rest;
}

/** Receives one data record: its fields, its 1-based line in the file, and its raw text on demand. */
export type RecordHandler = (fields: string[], line: number, raw: () => string) => void;

/** Parses CSV text into an array of records; see {@link readCsv}. */
export function parseCsv(text: string, options: CsvOptions, source: string): CsvTable {
  const records: CsvRecord[] = [];
  const { header, headerLine } = readCsv(text, options, source, {
    record: (fields, line, raw) => records.push({ line, fields, raw: raw() }),
  });
  return { header, headerLine, records };
}

/**
 * Reads CSV text (CRLF, LF or CR line endings, quoted fields, blank lines skipped) record by
 * record, keeping each record's line number and raw text. Text without any quote character is
 * split directly, which gives the same records as csv-parse several times faster; anything else
 * goes through csv-parse. `firstLine` numbers the header's line when the text is a header glued
 * to the unread tail of a file.
 */
export function readCsv(
  text: string,
  options: CsvOptions,
  source: string,
  handlers: { header?: (header: string[]) => void; record: RecordHandler },
  firstLine = 1,
): { header: string[]; headerLine: number } {
  if (/^\s*</.test(text.slice(0, 512)) && /<(!doctype\s+)?html|<head|<body/i.test(text.slice(0, 4096))) {
    throw new PipelineError("E_HEADER", `${source} sent an HTML page, not CSV; first line: ${JSON.stringify(firstLineOf(text))}`);
  }
  const quote = options.quote ?? '"';
  let seen = false;
  const onHeader = (header: string[]) => {
    seen = true;
    handlers.header?.(header);
  };
  const result =
    text.includes(quote) || (options.header_line ?? 1) > 1
      ? readWithCsvParse(text, options, source, onHeader, handlers.record, firstLine)
      : readQuoteFree(text, options.delimiter ?? ",", onHeader, handlers.record, firstLine);
  if (result === undefined || !seen) throw new PipelineError("E_HEADER", `${source} is empty: no header line`);
  return result;
}

/**
 * Reads CSV text given in pieces, record by record, as {@link readCsv} reads the same text whole;
 * for text known to hold no quote character, read with the first line as the header (no
 * `header_line`), so that memory holds a piece and a line, not the source.
 */
export function readCsvPieces(
  pieces: Iterable<string>,
  options: CsvOptions,
  source: string,
  handlers: { header?: (header: string[]) => void; record: RecordHandler },
  firstLine = 1,
): { header: string[]; headerLine: number } {
  const iterator = pieces[Symbol.iterator]();
  // why: the check for an HTML page looks at the text's first 4096 characters, as readCsv does.
  let start = "";
  let next = iterator.next();
  while (!next.done && start.length < 4096) {
    start += next.value;
    next = iterator.next();
  }
  if (/^\s*</.test(start.slice(0, 512)) && /<(!doctype\s+)?html|<head|<body/i.test(start.slice(0, 4096))) {
    throw new PipelineError("E_HEADER", `${source} sent an HTML page, not CSV; first line: ${JSON.stringify(firstLineOf(start))}`);
  }
  let header: { header: string[]; headerLine: number } | undefined;
  const splitter = quoteFreeSplitter(
    options.delimiter ?? ",",
    (fields) => {
      header = { header: fields, headerLine: splitter.line };
      handlers.header?.(fields);
    },
    handlers.record,
    firstLine,
  );
  splitter.push(start, next.done === true);
  while (!next.done) {
    const piece = next.value;
    next = iterator.next();
    splitter.push(piece, next.done === true);
  }
  if (header === undefined) throw new PipelineError("E_HEADER", `${source} is empty: no header line`);
  return header;
}

/**
 * Splits quote-free text pushed in pieces into lines and fields, numbering lines as
 * {@link readQuoteFree} does (LF, CRLF, a lone CR; blank lines skipped). A line cut between
 * pieces waits for the rest; a CR at a piece's end waits to see whether an LF follows.
 */
function quoteFreeSplitter(delimiter: string, onHeader: (header: string[]) => void, onRecord: RecordHandler, firstLine: number) {
  let carry = "";
  let seenHeader = false;
  const state = {
    line: firstLine,
    push(piece: string, final: boolean): void {
      // why: a piece without a line end only lengthens the current line; scanning it again with each piece would be quadratic.
      if (!final && piece.indexOf("\n") < 0 && piece.indexOf("\r") < 0) {
        carry += piece;
        return;
      }
      const text = carry + piece;
      const length = text.length;
      let start = 0;
      // why: indexOf finds line ends natively; the next LF and the next CR are tracked apart.
      let nextLf = text.indexOf("\n");
      let nextCr = text.indexOf("\r");
      let nextDelimiter = text.indexOf(delimiter);
      /** The fields of `text[from, to)`, as `text.slice(from, to).split(delimiter)` gives them, without the line's own copy. */
      const splitFields = (from: number, to: number): string[] => {
        const fields: string[] = [];
        for (;;) {
          if (nextDelimiter !== -1 && nextDelimiter < from) nextDelimiter = text.indexOf(delimiter, from);
          if (nextDelimiter === -1 || nextDelimiter >= to) {
            fields.push(text.slice(from, to));
            return fields;
          }
          fields.push(text.slice(from, nextDelimiter));
          from = nextDelimiter + 1;
        }
      };
      while (start < length) {
        if (nextLf !== -1 && nextLf < start) nextLf = text.indexOf("\n", start);
        if (nextCr !== -1 && nextCr < start) nextCr = text.indexOf("\r", start);
        let end = nextLf === -1 ? (nextCr === -1 ? length : nextCr) : nextCr === -1 ? nextLf : Math.min(nextLf, nextCr);
        if (!final && (end === length || (end === nextCr && end + 1 === length))) break;
        if (end > start) {
          const recordStart = start;
          const recordEnd = end;
          const fields = splitFields(start, end);
          if (!seenHeader) {
            seenHeader = true;
            onHeader(fields);
          } else onRecord(fields, state.line, () => text.slice(recordStart, recordEnd));
        }
        // why: CRLF is one line ending; a lone CR or LF is one too.
        if (end === nextCr && text.charCodeAt(end + 1) === 10) end++;
        if (end < length) state.line++;
        start = end + 1;
      }
      carry = start >= length ? "" : text.slice(start);
    },
  };
  return state;
}

/** Reads text without any quote character whole: the streamed splitter, given it as its one and last piece. */
function readQuoteFree(
  text: string,
  delimiter: string,
  onHeader: (header: string[]) => void,
  onRecord: RecordHandler,
  firstLine: number,
): { header: string[]; headerLine: number } | undefined {
  let header: { header: string[]; headerLine: number } | undefined;
  const splitter = quoteFreeSplitter(
    delimiter,
    (fields) => {
      header = { header: fields, headerLine: splitter.line };
      onHeader(fields);
    },
    onRecord,
    firstLine,
  );
  splitter.push(text, true);
  return header;
}

/**
 * csv-parse, loaded on first use: text without quotes, and a run whose sources did not change, never need it.
 * why: its CommonJS build is one file, where its ES modules are ten to resolve and load, and the reader is synchronous.
 */
function csvParse(): typeof import("csv-parse/sync") {
  return createRequire(import.meta.url)("csv-parse/sync") as typeof import("csv-parse/sync");
}

function readWithCsvParse(
  text: string,
  options: CsvOptions,
  source: string,
  onHeader: (header: string[]) => void,
  onRecord: RecordHandler,
  firstLine: number,
): { header: string[]; headerLine: number } | undefined {
  const { parse, CsvError } = csvParse();
  const buffer = Buffer.from(text, "utf8");
  let parsed: { record: string[]; info: { bytes: number } }[];
  try {
    parsed = parse(buffer, {
      delimiter: options.delimiter ?? ",",
      quote: options.quote ?? '"',
      record_delimiter: ["\r\n", "\n", "\r"],
      from_line: options.header_line ?? 1,
      skip_empty_lines: true,
      relax_column_count: true,
      info: true,
    }) as unknown as { record: string[]; info: { bytes: number } }[];
  } catch (error) {
    if (error instanceof CsvError && error.code === "CSV_QUOTE_NOT_CLOSED") {
      const found = unclosedQuoteLine(text, options.quote ?? '"', options.delimiter ?? ",");
      // why: a tail read parses the header glued to the appended part; firstLine numbers that text's first line.
      const opened = found === undefined ? undefined : found + firstLine - 1;
      if (opened !== undefined) {
        throw new PipelineError(
          "E_CSV",
          `${source} line ${opened}: a quote opened on line ${opened} is never closed (the file ends inside it); close it, or double a quote meant as text`,
        );
      }
    }
    if (error instanceof CsvError) {
      const parsedLine = (error as InstanceType<typeof CsvError> & { lines?: number }).lines;
      const line = parsedLine === undefined ? undefined : parsedLine + firstLine - 1;
      // why: csv-parse quotes the field it stopped in, whatever its size.
      const reason = error.message
        .replace(/^[^:]*: /, "")
        .replace(/value is "([\s\S]*)"$/, (_, value: string) => `value is "${clip(value)}"`);
      throw new PipelineError("E_CSV", `${source}${line ? ` line ${line}` : ""}: ${reason}`);
    }
    throw error;
  }
  let header: { header: string[]; headerLine: number } | undefined;
  let offset = 0;
  let line = firstLine;
  if (options.header_line !== undefined && options.header_line > 1) {
    offset = lineStart(buffer, options.header_line);
    line = options.header_line;
  }
  for (const { record, info } of parsed) {
    // why: blank lines skipped by the parser sit between the previous record and this one.
    let start = offset;
    while (start < info.bytes && (buffer[start] === 0x0a || buffer[start] === 0x0d)) {
      line += countLineEnds(buffer, start, start + 1);
      start++;
    }
    const recordStart = start;
    const recordEnd = trimLineEnd(buffer, start, info.bytes);
    if (header === undefined) {
      header = { header: record, headerLine: line };
      onHeader(record);
    } else onRecord(record, line, () => buffer.toString("utf8", recordStart, recordEnd));
    line += countLineEnds(buffer, start, info.bytes);
    offset = info.bytes;
  }
  return header;
}

/** "LE" or "BE" when the bytes start with a UTF-16 BOM, or have a NUL in every other byte as UTF-16 text in Latin script does. */
function utf16ByteOrder(bytes: Uint8Array): "LE" | "BE" | undefined {
  if (bytes[0] === 0xff && bytes[1] === 0xfe) return "LE";
  if (bytes[0] === 0xfe && bytes[1] === 0xff) return "BE";
  const pairs = Math.floor(Math.min(bytes.length, 8192) / 2);
  if (pairs < 2) return undefined;
  let evenNul = 0;
  let oddNul = 0;
  for (let i = 0; i < pairs * 2; i += 2) {
    if (bytes[i] === 0) evenNul++;
    if (bytes[i + 1] === 0) oddNul++;
  }
  if (oddNul >= pairs * 0.9 && evenNul <= pairs * 0.1) return "LE";
  if (evenNul >= pairs * 0.9 && oddNul <= pairs * 0.1) return "BE";
  return undefined;
}

/** The line where the quote that csv-parse found unclosed was opened: a quote at the start of a field, outside any quoted field. */
function unclosedQuoteLine(text: string, quote: string, delimiter: string): number | undefined {
  let line = 1;
  let opened: number | undefined;
  let fieldStart = true;
  for (let i = 0; i < text.length; i++) {
    const char = text[i];
    const lineEnd = char === "\n" || (char === "\r" && text[i + 1] !== "\n");
    if (opened !== undefined) {
      // why: inside a quoted field csv-parse takes a double quote (its escape, whatever the quote) before the quote or
      // another double quote as escaping it, as headerSpan does; a doubled quote is the same rule when the quote is ".
      if (char === '"' && (text[i + 1] === quote || text[i + 1] === '"')) i++;
      else if (char === quote) opened = undefined;
      else if (lineEnd) line++;
      fieldStart = false;
    } else if (char === quote && fieldStart) {
      opened = line;
    } else {
      if (lineEnd) line++;
      fieldStart = lineEnd || char === "\r" || char === delimiter;
    }
  }
  return opened;
}

/** Line ends in `bytes[from, to)`: LF, CRLF (counted once, at its LF) and a lone CR, as every reader here splits lines. */
export function countLineEnds(bytes: Uint8Array, from: number, to: number): number {
  let count = 0;
  for (let i = from; i < to; i++) {
    const b = bytes[i];
    if (b === 0x0a || (b === 0x0d && bytes[i + 1] !== 0x0a)) count++;
  }
  return count;
}

/**
 * Where the header record lies in a file's first `limit` bytes: after a UTF-8 BOM (with `utf8`, as
 * decoding drops it) and any blank lines, up to its line end, quoted line breaks included (`q`:
 * the byte that encodes the quote character, and nothing else). Undefined when no complete header
 * ends before `limit`.
 */
export function headerSpan(bytes: Uint8Array, q: number, limit: number, utf8 = true): { start: number; end: number } | undefined {
  let start = utf8 && bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf ? 3 : 0;
  while (start < limit && (bytes[start] === 0x0a || bytes[start] === 0x0d)) start++;
  let quoted = false;
  for (let i = start; i < limit; i++) {
    const b = bytes[i];
    // why: inside a quoted field csv-parse takes a double quote (its escape, whatever the quote) before a quote or another
    // double quote as escaping it; with the quote " this is the doubled quote, two toggles that cancel out.
    if (quoted && b === 0x22 && q !== 0x22 && (bytes[i + 1] === q || bytes[i + 1] === 0x22)) i++;
    else if (b === q) quoted = !quoted;
    else if (!quoted && (b === 0x0a || b === 0x0d)) return { start, end: i };
  }
  return undefined;
}

/** Where physical line `line` starts; lines end as {@link countLineEnds} counts them (LF, CRLF, a lone CR). */
function lineStart(bytes: Uint8Array, line: number): number {
  let offset = 0;
  for (let seen = 1; seen < line && offset < bytes.length; offset++) {
    const b = bytes[offset];
    if (b === 0x0a || (b === 0x0d && bytes[offset + 1] !== 0x0a)) seen++;
  }
  return offset;
}

function trimLineEnd(bytes: Uint8Array, start: number, end: number): number {
  let stop = end;
  while (stop > start && (bytes[stop - 1] === 0x0a || bytes[stop - 1] === 0x0d)) stop--;
  return stop;
}

function firstInvalidUtf8(bytes: Uint8Array): number {
  for (let i = 0; i < bytes.length;) {
    const b = bytes[i]!;
    const length = b < 0x80 ? 1 : b >= 0xc2 && b <= 0xdf ? 2 : b >= 0xe0 && b <= 0xef ? 3 : b >= 0xf0 && b <= 0xf4 ? 4 : 0;
    if (length === 0 || i + length > bytes.length) return i;
    for (let k = 1; k < length; k++) if ((bytes[i + k]! & 0xc0) !== 0x80) return i;
    i += length;
  }
  return bytes.length;
}

function firstLineOf(text: string): string {
  return text.trimStart().split(/\r?\n/, 1)[0]!.slice(0, 120);
}
