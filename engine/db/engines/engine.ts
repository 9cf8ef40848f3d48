import type { FailedRun } from "../../failed-runs.js";
import type { SqlDatabase } from "../database.js";
import type { Dialect } from "../dialect.js";
import type { FailureJournal } from "../failure-journal.js";
import type { DatabaseLock } from "../lock.js";

/** The storage engines a pipeline can use; `sqljs` is the default, `postgres` a server named by URL. */
export const engineNames = ["sqljs", "native", "postgres"] as const;

/** One storage engine's name, as `database: { engine: }` and `--engine` spell it. */
export type EngineName = (typeof engineNames)[number];

/** How a session opens its database. */
export interface OpenOptions {
  /** How long to wait for another program's write lock on the file (SQLite's busy timeout). */
  busyTimeoutMs: number;
  /** A preview (plan, dry-run): the transaction is always rolled back and nothing is created on disk. */
  preview?: boolean | undefined;
  /** Whether a step may run a script (SQL that may create tables, with foreign key actions); unknown: it may. */
  runsScripts?: boolean | undefined;
}

/**
 * One engine behind the database session, like a Kysely driver: it owns connecting, the
 * transaction, commit and rollback, the run lock and where failed runs are kept; the session above
 * it never asks which engine it has.
 */
export type Engine = EngineCore & FailureKeeping;

/** What every engine implements. */
export interface EngineCore {
  readonly name: EngineName;
  /** What `doctor` shows: the SQLite version and where it comes from. */
  version(): Promise<string>;
  /** Opens `file` (absent: empty) and begins the run's transaction. */
  begin(file: string, options: OpenOptions): Promise<Transaction>;
  /** Opens `file` for reading only; an absent file reads as an empty database and is not created. */
  read(file: string, options: OpenOptions): Promise<SqlDatabase>;
  /** How the engine's SQL differs from SQLite's (a server engine); absent on the SQLite engines. */
  readonly dialect?: Dialect | undefined;
  /**
   * The run lock, waiting up to `timeoutMs`, with what killed runs left behind removed: a lock file
   * beside a database file (`lockFileBeside`), or a server's own lock held by a connection.
   */
  lock(database: string, options: { timeoutMs: number; signal?: AbortSignal | undefined }): Promise<DatabaseLock>;
}

/** Where an engine keeps failed runs until they are in pipeline_runs: a journal of its own, or recorded at once. */
export type FailureKeeping =
  | {
      /** The session's journal of failed runs, e.g. `journalBeside` for a database file. */
      journal(database: string, notes: string[]): FailureJournal;
    }
  | {
      /** A server records a failed run at once, in its own transaction after the rollback. */
      recordFailure(database: string, run: FailedRun): Promise<void>;
    };

/** The tables a run may treat as its runner's last commit left them, and why a table is not among them. */
export interface UntouchedTables {
  /** "all" in a new database. */
  tables: ReadonlySet<string> | "all";
  why(table: string): string | undefined;
}

/** An open transaction on one database file. */
export interface Transaction {
  /** The database the steps read and write, inside the transaction. */
  readonly db: SqlDatabase;
  /**
   * The tables known sound without an integrity check: all in a new file; in a file exactly as
   * this runner's last commit left it (engine/db/commit-mark.ts), those that commit checked; else none.
   */
  readonly soundTables: ReadonlySet<string> | "all";
  /**
   * The tables proven exactly as this runner's last commit left them, where that differs from
   * {@link soundTables} (a server, engine/db/pg/outside-writes.ts), with why another table is not.
   */
  readonly untouched?: UntouchedTables | undefined;
  /**
   * Before a step writes `tables`: where other clients write the database during the run (a server),
   * keeps them from writing these until the commit (engine/db/pg/outside-writes.ts); readers go on.
   * "all" before a step that may write any table (a script).
   */
  lockForWrite?(tables: readonly string[] | "all"): void;
  /**
   * Readies `db` for every write, when it was opened to read first (sqljs: it loads the image); until
   * then a write other than to the engine's own tables throws `WriteBeforeReady` (engine/db/read-first.ts). Absent: always ready.
   */
  readyToWrite?(): Promise<void>;
  /**
   * Makes the transaction durable in the file, or throws with the file as it was; `checkedTables` are
   * now known sound. `reliedOn`: the tables this run took to be as the last commit left them (its
   * carried-over and appended-rows results); a server confirms that again (E_CHANGED when not).
   */
  commit(checkedTables: readonly string[], reliedOn?: ReadonlySet<string>): Promise<void>;
  /** Abandons the transaction: the file keeps its content as before. */
  rollback(): Promise<void>;
  /** Releases the connection; after commit or rollback. */
  close(): void;
}
