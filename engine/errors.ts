import { mapStack } from "./stack-map.js";

/** Every code a user can see; each names a family of problems. */
export type ErrorCode =
  | "E_USAGE"
  | "E_YAML"
  | "E_SCHEMA"
  | "E_CONFIG"
  | "E_ENV"
  | "E_FETCH"
  | "E_DECODE"
  | "E_CSV"
  | "E_HEADER"
  | "E_CAST"
  | "E_REJECTED"
  | "E_CONFLICT"
  | "E_REPLACE"
  | "E_SQL"
  | "E_CHECK"
  | "E_STALE"
  | "E_DRIFT"
  | "E_DB"
  | "E_SAVE"
  | "E_LOCK"
  | "E_CHANGED"
  | "E_ABORTED";

/** A place in a file, 1-based. */
export interface SourcePlace {
  file: string;
  line: number;
  col: number;
}

/** One problem found in a configuration, reported before anything runs. */
export interface Diagnostic {
  code: ErrorCode;
  message: string;
  place?: SourcePlace | undefined;
}

/** An expected failure: it prints as one clean line, and the process exits with `exitCode`. */
export class PipelineError extends Error {
  override readonly name = "PipelineError";
  readonly code: ErrorCode;
  readonly place: SourcePlace | undefined;
  readonly exitCode: number;

  constructor(code: ErrorCode, message: string, options: { place?: SourcePlace | undefined; cause?: unknown; exitCode?: number } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.place = options.place;
    this.exitCode = options.exitCode ?? 1;
  }
}

/** Several configuration problems at once; the CLI exits 2. */
export class ConfigError extends PipelineError {
  readonly diagnostics: readonly Diagnostic[];

  constructor(diagnostics: readonly Diagnostic[]) {
    super(diagnostics[0]?.code ?? "E_CONFIG", `${diagnostics.length} problem(s) in the configuration`, { exitCode: 2 });
    this.diagnostics = diagnostics;
  }
}

/** Formats a place as `file:line:col`. */
export function formatPlace(place: SourcePlace): string {
  return `${place.file}:${place.line}:${place.col}`;
}

/** Formats one diagnostic as `pipeline.yaml:12:7 error E_SCHEMA message`. */
export function formatDiagnostic(d: Diagnostic): string {
  return `${d.place ? formatPlace(d.place) + " " : ""}error ${d.code} ${d.message}`;
}

/**
 * Turns anything thrown into a message; unknown errors keep their stack (they are bugs), its frames
 * named in the TypeScript sources rather than the bundle's chunks (engine/stack-map.ts). Credentials
 * in URLs are masked and the message is clipped, since it is printed, journaled and stored.
 */
export function describeError(error: unknown): { code: string; message: string; expected: boolean } {
  if (error instanceof PipelineError) {
    const where = error.place ? formatPlace(error.place) + " " : "";
    return { code: error.code, message: clip(redactCredentials(`${where}${error.message}`), maxMessageLength), expected: true };
  }
  if (error instanceof Error) {
    return { code: "E_INTERNAL", message: redactCredentials(error.stack ? mapStack(error.stack) : error.message), expected: false };
  }
  return { code: "E_INTERNAL", message: redactCredentials(String(error)), expected: false };
}

/** The longest error message kept whole; longer ones are clipped (a usage text is about 2 KB). */
const maxMessageLength = 16_384;

/** `text` cut to `max` characters, saying how long it was: for quoting input (a header, a value) in a message. */
export function clip(text: string, max = 200): string {
  if (text.length <= max) return text;
  // why: never cut between the two halves of a surrogate pair.
  const end = /[\uD800-\uDBFF]/.test(text.charAt(max - 1)) ? max - 1 : max;
  return `${text.slice(0, end)}… (${text.length} characters)`;
}

/** `text` with the credentials of every URL in it (`https://user:password@host`) replaced by `***`. */
export function redactCredentials(text: string): string {
  // why: the user information ends at the last "@" before the path, so a raw "@" in a password is masked too.
  return text.includes("@") ? text.replace(/\b([a-z][a-z0-9+.-]*:\/\/)[^\s/?#"'\\<>]*@/gi, "$1***@") : text;
}

/** Levenshtein distance, for "did you mean" hints. */
export function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let previous = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const current = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, previous + (a[i - 1] === b[j - 1] ? 0 : 1));
      previous = current;
    }
  }
  return row[b.length]!;
}

/** Words longer than this get no "did you mean": the distance costs the product of the two lengths. */
const maxSuggestedLength = 256;

/** A ` (did you mean "x"?)` suffix when one candidate is close enough, else "". */
export function didYouMean(word: string, candidates: Iterable<string>): string {
  if (word.length > maxSuggestedLength) return "";
  const limit = Math.max(2, Math.floor(word.length / 3));
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of candidates) {
    // why: two words whose lengths differ by more than the limit are further apart than it; a huge candidate costs nothing.
    if (Math.abs(candidate.length - word.length) > limit) continue;
    const distance = editDistance(word.toLowerCase(), candidate.toLowerCase());
    if (distance < bestDistance) [best, bestDistance] = [candidate, distance];
  }
  return best !== undefined && bestDistance <= limit ? ` (did you mean "${best}"?)` : "";
}

/** Throws a run's clean stop when its signal fired (SIGINT, SIGTERM). */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) {
    throw new PipelineError("E_ABORTED", `interrupted (${String(signal.reason ?? "signal")}); nothing was saved`, { exitCode: 130 });
  }
}
