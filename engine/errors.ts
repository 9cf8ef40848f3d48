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

/** Turns anything thrown into a message; unknown errors keep their stack (they are bugs). */
export function describeError(error: unknown): { code: string; message: string; expected: boolean } {
  if (error instanceof PipelineError) {
    const where = error.place ? formatPlace(error.place) + " " : "";
    return { code: error.code, message: `${where}${error.message}`, expected: true };
  }
  if (error instanceof Error) return { code: "E_INTERNAL", message: error.stack ?? error.message, expected: false };
  return { code: "E_INTERNAL", message: String(error), expected: false };
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

/** A ` (did you mean "x"?)` suffix when one candidate is close enough, else "". */
export function didYouMean(word: string, candidates: Iterable<string>): string {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of candidates) {
    const distance = editDistance(word.toLowerCase(), candidate.toLowerCase());
    if (distance < bestDistance) [best, bestDistance] = [candidate, distance];
  }
  const limit = Math.max(2, Math.floor(word.length / 3));
  return best !== undefined && bestDistance <= limit ? ` (did you mean "${best}"?)` : "";
}

/** Throws a run's clean stop when its signal fired (SIGINT, SIGTERM). */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) {
    throw new PipelineError("E_ABORTED", `interrupted (${String(signal.reason ?? "signal")}); nothing was saved`, { exitCode: 130 });
  }
}
