import { parse, CsvError } from "csv-parse/sync";
import type { CsvOptions } from "../config/schema.js";
import { PipelineError } from "../errors.js";

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
  const nul = bytes.subarray(0, 8192).indexOf(0);
  if (nul >= 0) throw new PipelineError("E_DECODE", `${source} looks like a binary file, not CSV text (a NUL byte at byte ${nul})`);
  const label = encoding === undefined || encoding === "utf8" ? "utf-8" : encoding;
  try {
    return new TextDecoder(label, { fatal: true }).decode(bytes);
  } catch {
    const offset = firstInvalidUtf8(bytes);
    const line = 1 + countNewlines(bytes, 0, offset);
    throw new PipelineError(
      "E_DECODE",
      `${source} is not valid UTF-8 (line ${line}, byte ${offset}); if the file is Latin-1, set csv.encoding: latin1 on this step`,
    );
  }
}

/** Parses CSV text (CRLF or LF, quoted fields, blank lines skipped) keeping each record's line and raw text. */
export function parseCsv(text: string, options: CsvOptions, source: string): CsvTable {
  const buffer = Buffer.from(text, "utf8");
  if (/^\s*</.test(text.slice(0, 512)) && /<(!doctype\s+)?html|<head|<body/i.test(text.slice(0, 4096))) {
    throw new PipelineError("E_HEADER", `${source} sent an HTML page, not CSV; first line: ${JSON.stringify(firstLine(text))}`);
  }
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
    if (error instanceof CsvError) {
      const line = (error as CsvError & { lines?: number }).lines;
      throw new PipelineError("E_CSV", `${source}${line ? ` line ${line}` : ""}: ${error.message.replace(/^[^:]*: /, "")}`);
    }
    throw error;
  }
  const records: CsvRecord[] = [];
  let header: string[] | undefined;
  let headerLine = 0;
  let offset = 0;
  let line = 1;
  if (options.header_line !== undefined && options.header_line > 1) {
    offset = lineStart(buffer, options.header_line);
    line = options.header_line;
  }
  for (const { record, info } of parsed) {
    // why: blank lines skipped by the parser sit between the previous record and this one.
    let start = offset;
    while (start < info.bytes && (buffer[start] === 0x0a || buffer[start] === 0x0d)) {
      if (buffer[start] === 0x0a) line++;
      start++;
    }
    if (header === undefined) {
      header = record;
      headerLine = line;
    } else {
      records.push({ line, fields: record, raw: buffer.toString("utf8", start, trimLineEnd(buffer, start, info.bytes)) });
    }
    line += countNewlines(buffer, start, info.bytes);
    offset = info.bytes;
  }
  if (header === undefined) throw new PipelineError("E_HEADER", `${source} is empty: no header line`);
  return { header, headerLine, records };
}

function countNewlines(bytes: Uint8Array, from: number, to: number): number {
  let count = 0;
  for (let i = from; i < to; i++) if (bytes[i] === 0x0a) count++;
  return count;
}

function lineStart(bytes: Uint8Array, line: number): number {
  let offset = 0;
  for (let seen = 1; seen < line && offset < bytes.length; offset++) if (bytes[offset] === 0x0a) seen++;
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

function firstLine(text: string): string {
  return text.trimStart().split(/\r?\n/, 1)[0]!.slice(0, 120);
}
