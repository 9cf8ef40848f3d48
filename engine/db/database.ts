import type { Dialect } from "./dialect.js";

/** A value as SQLite stores it. */
export type SqlValue = string | number | bigint | Uint8Array | null;
/** One result row, by column name. */
export type Row = Record<string, SqlValue>;
/** Positional or named (`:name`) parameters; values only ever reach SQL this way. */
export type Params = readonly SqlValue[] | Readonly<Record<string, SqlValue>>;

/** A compiled statement, reusable with new parameters. */
export interface Statement {
  /** Runs the statement for its side effects. */
  run(params?: Params): void;
  /** The first row, or undefined. */
  get(params?: Params): Row | undefined;
  /** The first row as an array of values, or undefined (cheaper than {@link get}). */
  getValues(params?: Params): SqlValue[] | undefined;
  /** Every row. */
  all(params?: Params): Row[];
  /** The names of the result columns. */
  columnNames(): string[];
  /** Releases the statement. */
  free(): void;
}

/** The slice of a SQLite database the engine and steps use; an engine (engine/db/engines/) sits behind it. */
export interface SqlDatabase {
  /** Runs one or more statements without parameters. */
  exec(sql: string): void;
  /** Runs one statement; returns the number of rows it changed. */
  run(sql: string, params?: Params): number;
  /** Every row of one query. */
  all(sql: string, params?: Params): Row[];
  /** Compiles a statement; throws when the SQL is invalid or names a missing table or column. */
  prepare(sql: string): Statement;
  /** Runs a script statement by statement, each compiled only after the previous one ran; named parameters a statement does not use are ignored. */
  runScript(sql: string, params?: Readonly<Record<string, SqlValue>>): void;
  /** Splits SQL text into its statements (comments and blank text dropped); throws on a syntax error. */
  statements(sql: string): string[];
  /** Rows changed by the last INSERT, UPDATE or DELETE. */
  changes(): number;
  /** Frees the database. */
  close(): void;
  /** How a server engine's SQL differs from SQLite's; absent on the SQLite engines. */
  readonly dialect?: Dialect | undefined;
  /** A set-based writer for a load step's rows (a server's COPY into a staging table); absent: multi-row INSERTs. */
  bulkWriter?(load: BulkLoad): BulkWriter;
}

/** What a bulk writer writes: the table, the step's columns in order, the key rows are matched on (empty: append). */
export interface BulkLoad {
  table: string;
  columns: readonly string[];
  key: readonly string[];
  /** The last line of a key wins (upsert, on_conflict: update); else the first one holds it. */
  lastWins: boolean;
}

/** What became of one row of a bulk write, exactly as if the rows had been written one by one in file order. */
export type BulkFate = { kind: "inserted" | "unchanged" | "updated" } | { kind: "conflict"; stored: SqlValue[] };

/** Writes a load step's rows a batch at a time with set-based SQL. */
export interface BulkWriter {
  /** Rows per call of {@link write}. */
  readonly batchRows: number;
  /**
   * Writes the rows (in file order) and calls `settle` with what became of each, or with undefined
   * when nothing was written (a constraint stopped the set: write them one by one). `settle` may
   * come later, while the server works and the caller reads on, but always before any other
   * statement runs on the database, and at the latest on {@link drain}.
   */
  write(rows: readonly SqlValue[][], settle: (fates: BulkFate[] | undefined) => void): void;
  /** Settles the batch still being written, if any. */
  drain(): void;
  /** Settles, then drops what the writer made. */
  free(): void;
}

/** Quotes an identifier for SQL (`"name"`), doubling any quote inside. */
export function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/** Whether an error from `db` is a broken constraint (key, NOT NULL, CHECK, foreign key), whichever engine raised it. */
export function isConstraintViolation(db: SqlDatabase, error: unknown): boolean {
  if (db.dialect) return db.dialect.isConstraintViolation(error);
  return error instanceof Error && /constraint failed/i.test(error.message);
}
