import { isUtf8 } from "node:buffer";
import { createHash, type Hash } from "node:crypto";
import { closeSync, ftruncateSync, mkdtempSync, openSync, readSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { PipelineError } from "../errors.js";

/** Where a source's body goes while it is fetched, chunk by chunk; `reset` starts it over (a retried attempt). */
export interface BodySink {
  reset(): void;
  write(chunk: Uint8Array): void;
}

/** What one pass over a body learnt while it was written: enough to decide how to read it without holding it. */
export interface SpoolSummary {
  size: number;
  sha256: string;
  /** The SHA-256 of the first `prefixBytes` bytes, when the body has at least that many. */
  prefixSha256: string | undefined;
  /**
   * The line ends (LF, CRLF, a lone CR) in the first `prefixBytes` bytes, when the body has at least
   * that many; a CR that is their last byte counts alone, whatever follows it.
   */
  prefixLineEnds: number | undefined;
  /** Whether the bytes are valid UTF-8 (always true when not checked). */
  utf8: boolean;
  /** Offsets of the first and last byte equal to the quote byte, -1 when there is none. */
  firstQuote: number;
  lastQuote: number;
}

/**
 * Bytes read from the spool per call when it is read back. why: a piece's text then stays in V8's
 * young generation, collected as it is dropped; pieces of a mebibyte are "large objects", kept
 * until a full collection: measured at 1M rows, 177 MB peak against 218-251 MB.
 */
const pieceBytes = 64 * 1024;

/**
 * A source's body spooled to an unlinked temporary file while it is fetched, so that memory does
 * not grow with the source: it is hashed, checked for valid UTF-8 and scanned for the quote byte
 * on the way in, and read back in pieces. The file disappears when it is closed, or with the process.
 */
export class SpooledBody implements BodySink {
  private readonly fd: number;
  private size = 0;
  private hash: Hash = createHash("sha256");
  private prefixSha256: string | undefined;
  private lineEnds = 0;
  private crBefore = false;
  private valid = true;
  private carry: Buffer = Buffer.alloc(0);
  private firstQuote = -1;
  private lastQuote = -1;
  private closed = false;

  /**
   * @param options.prefixBytes hash the body's first bytes apart too (a source that only grew)
   * @param options.utf8 check that the body is valid UTF-8
   * @param options.quote the quote character's byte, or undefined when it is not a single byte
   */
  constructor(
    private readonly source: string,
    private readonly options: { prefixBytes: number | undefined; utf8: boolean; quote: number | undefined },
  ) {
    this.fd = this.spooling(() => {
      const dir = mkdtempSync(path.join(tmpdir(), "pipeline-source-"));
      try {
        return openSync(path.join(dir, "body"), "w+", 0o600);
      } finally {
        // why: the open descriptor keeps the file; once unlinked, nothing is left behind, even by a killed run.
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }

  reset(): void {
    this.spooling(() => ftruncateSync(this.fd, 0));
    this.size = 0;
    this.hash = createHash("sha256");
    this.prefixSha256 = undefined;
    this.lineEnds = 0;
    this.crBefore = false;
    this.valid = true;
    this.carry = Buffer.alloc(0);
    this.firstQuote = this.lastQuote = -1;
  }

  write(chunk: Uint8Array): void {
    const bytes = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    for (let written = 0; written < bytes.length;)
      written += writeSync(this.fd, bytes, written, bytes.length - written, this.size + written);
    const prefix = this.options.prefixBytes;
    // why: a tail read numbers its rows from the line ends before it; counted here, the prefix is not read back from disk for them.
    if (prefix !== undefined && this.size < prefix) this.countLineEnds(bytes.subarray(0, prefix - this.size));
    if (prefix !== undefined && this.prefixSha256 === undefined && this.size + bytes.length >= prefix) {
      const cut = prefix - this.size;
      this.hash.update(bytes.subarray(0, cut));
      this.prefixSha256 = this.hash.copy().digest("hex");
      this.hash.update(bytes.subarray(cut));
    } else this.hash.update(bytes);
    if (this.options.quote !== undefined) {
      const first = this.firstQuote < 0 ? bytes.indexOf(this.options.quote) : -1;
      if (first >= 0) this.firstQuote = this.size + first;
      const last = bytes.lastIndexOf(this.options.quote);
      if (last >= 0) this.lastQuote = this.size + last;
    }
    if (this.options.utf8 && this.valid) this.checkUtf8(bytes);
    this.size += bytes.length;
  }

  /** The figures of the body written, once it is complete. */
  summary(): SpoolSummary {
    return {
      size: this.size,
      sha256: this.hash.copy().digest("hex"),
      prefixSha256: this.prefixSha256,
      prefixLineEnds: this.prefixSha256 === undefined ? undefined : this.lineEnds,
      utf8: this.valid && this.carry.length === 0,
      // why: a quote that is not one byte was not looked for; it may be anywhere.
      firstQuote: this.options.quote === undefined ? 0 : this.firstQuote,
      lastQuote: this.options.quote === undefined ? Number.MAX_SAFE_INTEGER : this.lastQuote,
    };
  }

  /** Bytes `[from, to)` of the body, at most `to - from` of them (fewer past its end). */
  read(from: number, to: number): Buffer {
    const end = Math.min(to, this.size);
    if (end <= from) return Buffer.alloc(0);
    const buffer = Buffer.allocUnsafe(end - from);
    let done = 0;
    while (done < buffer.length) {
      const n = readSync(this.fd, buffer, done, buffer.length - done, from + done);
      if (n === 0) break;
      done += n;
    }
    return done === buffer.length ? buffer : buffer.subarray(0, done);
  }

  /** The body from `from` to its end, in pieces of 64 KiB. */
  *pieces(from = 0): Generator<Buffer> {
    for (let at = from; at < this.size; at += pieceBytes) yield this.read(at, at + pieceBytes);
  }

  /** The whole body in memory: for the paths that need it whole (quoted fields, replace, an error to place). */
  all(): Buffer {
    return this.read(0, this.size);
  }

  /** The body's length. */
  get length(): number {
    return this.size;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeSync(this.fd);
  }

  /** Runs a file operation of the spool; a failure (no such directory, a full disk) is an error naming the source and TMPDIR. */
  private spooling<T>(action: () => T): T {
    try {
      return action();
    } catch (error) {
      throw new PipelineError(
        "E_FETCH",
        `cannot spool ${this.source} to a temporary file in ${tmpdir()}: ${(error as Error).message}; set TMPDIR to a directory with room for the source`,
        { cause: error },
      );
    }
  }

  /** Adds the line ends of `window` (the next bytes of the prefix) to the count; a CRLF cut between two windows counts once. */
  private countLineEnds(window: Buffer): void {
    const n = window.length;
    if (n === 0) return;
    let count = this.crBefore && window[0] === 0x0a ? -1 : 0;
    const bytes = (from: number, to: number) => {
      for (let i = from; i < to; i++) {
        const b = window[i]!;
        if (b > 0x0d) continue;
        if (b === 0x0a || (b === 0x0d && (i + 1 === n || window[i + 1] !== 0x0a))) count++;
      }
    };
    // why: four bytes at a time, skipping the words without a byte below 0x0e (most of them): half the time of a byte loop at 1M rows.
    const start = Math.min(n, (4 - (window.byteOffset & 3)) & 3);
    const words = (n - start) >>> 2;
    bytes(0, start);
    const view = words > 0 ? new Uint32Array(window.buffer, window.byteOffset + start, words) : undefined;
    for (let w = 0; w < words; w++) {
      const x = view![w]!;
      if (((x - 0x0e0e0e0e) & ~x & 0x80808080) !== 0) bytes(start + 4 * w, start + 4 * w + 4);
    }
    bytes(start + 4 * words, n);
    this.lineEnds += count;
    this.crBefore = window[n - 1] === 0x0d;
  }

  /** Checks the chunk as UTF-8, keeping a character cut at its end for the next chunk. */
  private checkUtf8(chunk: Buffer): void {
    const data = this.carry.length > 0 ? Buffer.concat([this.carry, chunk]) : chunk;
    let cut = data.length;
    for (let k = 1; k <= 3 && k <= data.length; k++) {
      const b = data[data.length - k]!;
      if ((b & 0xc0) === 0x80) continue;
      const need = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : b >= 0xc0 ? 2 : 1;
      if (need > k) cut = data.length - k;
      break;
    }
    if (!isUtf8(data.subarray(0, cut))) this.valid = false;
    this.carry = Buffer.from(data.subarray(cut));
  }
}
