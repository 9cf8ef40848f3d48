import type { ColumnType } from "../config/schema.js";
import type { SqlDatabase } from "./database.js";

/** A stored column as the server's catalog describes it. */
export interface StoredColumn {
  name: string;
  type: string;
  notNull: boolean;
}

/**
 * What differs between SQL engines beyond the common SQL the steps write: the DDL, the catalog,
 * and how errors and compiled plans read. A database a server engine opens carries one
 * ({@link SqlDatabase.dialect}); the SQLite engines carry none and the callers keep SQLite's way.
 */
export interface Dialect {
  /** The engine's name, for messages only. */
  readonly name: "postgres";
  /** Whether an error inside the run's transaction aborts it, so a statement that may fail must run in a savepoint. */
  readonly errorsAbortTransaction: boolean;
  /** The column type a declared type is stored as. */
  columnType(type: ColumnType): string;
  /** What follows a single-column integer primary key (a server has no rowid: the engine's run ids are generated). */
  generatedKey: string;
  /** What follows a FOREIGN KEY clause (checked at commit, like SQLite's defer_foreign_keys). */
  foreignKeySuffix: string;
  /** What follows the closing parenthesis of CREATE TABLE. */
  tableSuffix: string;
  /** The declared tables' stored definitions (as {@link recordDefinition} kept them; "" when unknown), by name. */
  storedDefinitions(db: SqlDatabase): Map<string, string>;
  /** Keeps the definition a table was created from, for the drift check. */
  recordDefinition(db: SqlDatabase, table: string, sql: string): void;
  /** A stored table's columns. */
  storedColumns(db: SqlDatabase, table: string): StoredColumn[];
  /** Whether an error is a broken constraint (key, NOT NULL, CHECK, foreign key). */
  isConstraintViolation(error: unknown): boolean;
  /** The table an error says does not exist, if it says so. */
  missingTable(error: unknown): string | undefined;
  /** Checks every deferred constraint now; throws a PipelineError naming the violations. */
  checkConstraints(db: SqlDatabase): void;
  /** The triggers on the declared tables, which the runner never creates. */
  foreignTriggers(db: SqlDatabase, declared: ReadonlySet<string>): { name: string; table: string }[];
  /** Whether one statement would change the database; nothing runs. */
  writesDatabase(db: SqlDatabase, statement: string): boolean;
  /** The tables a query reads, from its plan; nothing runs. */
  tablesRead(db: SqlDatabase, sql: string, params: Readonly<Record<string, unknown>>): Set<string>;
  /**
   * A condition on `table`'s rows that holds, from now on, for exactly the rows added after this
   * call, as long as only this transaction writes the table and no old row is updated or deleted
   * (on a server, another session's write is logged and fails a run that relied on this at its
   * commit, engine/db/pg/outside-writes.ts); SQLite's is `rowid > last`.
   */
  rowsAddedLater(db: SqlDatabase, table: string): string;
  /** The tables a query reads when its result depends on nothing else (see steadyInputs in engine/checks.ts); or why it may. */
  steadyInputs(db: SqlDatabase, sql: string): { tables: Set<string> } | { reason: string };
}
