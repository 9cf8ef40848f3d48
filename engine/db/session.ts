import path from "node:path";
import { PipelineError, throwIfAborted } from "../errors.js";
import type { FailedRun } from "../failed-runs.js";
import type { SqlDatabase } from "./database.js";
import { engineNamed, type EngineName } from "./engines/index.js";
import type { Transaction, UntouchedTables } from "./engines/engine.js";
import { failureJournal } from "./failure-journal.js";
import { removeStrayTemporaries, stageFile, type StagedFile } from "./store.js";

/** How a session holds its database. */
export interface SessionOptions {
  engine: EngineName;
  /** How long to wait for another run's lock, and for another program's write lock on the file. */
  lockTimeoutMs: number;
  signal?: AbortSignal | undefined;
  /** The files the run may write (absolute): temporaries a killed run left for them are removed. */
  outputs: readonly string[];
  /** Where the session says what else it did or could not do (the run report's notes). */
  notes: string[];
  /** Whether a step of the run runs a script (a `sql` step without `into:`). */
  runsScripts: boolean;
}

/** A file a step produced, relative to `baseDir`. */
export interface OutputFile {
  path: string;
  content: string;
}

/**
 * A run's hold on its database, from lock to release: the lock, the engine's transaction, commit
 * (with the files the run writes: staged before, renamed after) or rollback, and the journal of
 * failed runs. `run.ts` only loops over steps against {@link Session.db}.
 */
export interface Session {
  /** The database inside the run's transaction; set by {@link Session.begin}. */
  readonly db: SqlDatabase;
  /** Whether the transaction was committed. */
  readonly saved: boolean;
  /** The tables known sound without an integrity check (see {@link Transaction.soundTables}); set by {@link Session.begin}. */
  readonly soundTables: ReadonlySet<string> | "all";
  /** The tables proven as this runner's last commit left them (see {@link Transaction.untouched}); set by {@link Session.begin}. */
  readonly untouched: UntouchedTables;
  /** Opens the database and begins the transaction; returns the failed runs waiting in the journal. */
  begin(): Promise<FailedRun[]>;
  /** Readies {@link Session.db} for every write (see {@link Transaction.readyToWrite}). */
  readyToWrite(): Promise<void>;
  /**
   * Stages `files`, commits, empties the journal, then puts the files in place; says which were placed and which not (with why).
   * `checkedTables` are the tables this run knows sound (checked, or already known sound), which the next run need not check.
   */
  commit(
    files: readonly OutputFile[],
    baseDir: string,
    checkedTables: readonly string[],
    reliedOn: ReadonlySet<string>,
  ): Promise<{ placed: string[]; notPlaced: string[] }>;
  /** Before a step writes `tables`, or any table ("all": a script) (see {@link Transaction.lockForWrite}). */
  lockForWrite(tables: readonly string[] | "all"): void;
  /** Rolls back; `journalRecorded` when the journal's runs are already in the database, which empties it. */
  rollback(options?: { journalRecorded: boolean }): Promise<void>;
  /** Keeps a failed run in the journal, for the next run that commits; never a second error. */
  journalFailure(run: FailedRun): Promise<void>;
  /** Rolls back what is still open, closes the database and releases the lock. */
  release(): Promise<void>;
}

/** Takes the database's run lock through its engine (waiting up to the lock timeout) and removes what killed runs left. */
export async function lockDatabase(database: string, options: SessionOptions): Promise<Session> {
  const engine = await engineNamed(options.engine);
  const lock = await engine.lock(database, { timeoutMs: options.lockTimeoutMs, signal: options.signal });
  const journal = failureJournal(engine, database, options.notes);
  let transaction: Transaction | undefined;
  let rolledBack = false;
  let saved = false;
  try {
    // why: temporary files of a report that a run killed at the wrong moment left.
    for (const file of options.outputs) await removeStrayTemporaries(file);
  } catch (error) {
    await lock.release();
    throw error;
  }
  return {
    get db() {
      if (!transaction) throw new Error("the session has not begun");
      return transaction.db;
    },
    get saved() {
      return saved;
    },
    get soundTables() {
      return transaction?.soundTables ?? new Set<string>();
    },
    get untouched() {
      // why: on a SQLite file, the tables its commit mark vouches for are those known sound (engine/db/commit-mark.ts).
      return transaction?.untouched ?? { tables: transaction?.soundTables ?? new Set<string>(), why: () => undefined };
    },
    async begin() {
      transaction = await engine.begin(database, { busyTimeoutMs: options.lockTimeoutMs, runsScripts: options.runsScripts });
      return journal.read();
    },
    async readyToWrite() {
      await transaction?.readyToWrite?.();
    },
    lockForWrite(tables) {
      transaction?.lockForWrite?.(tables);
    },
    commit(files, baseDir, checkedTables, reliedOn) {
      return commitWithFiles(files, baseDir, options.signal, async () => {
        await transaction!.commit(checkedTables, reliedOn);
        saved = true;
        await journal.clear();
      });
    },
    async rollback(rollbackOptions) {
      rolledBack = true;
      await transaction?.rollback();
      if (rollbackOptions?.journalRecorded) await journal.clear();
    },
    async journalFailure(run) {
      if (saved) return;
      if (!rolledBack) {
        rolledBack = true;
        await transaction?.rollback().catch(() => undefined);
      }
      await journal.keep(run);
    },
    async release() {
      try {
        if (transaction && !saved) await transaction.rollback();
      } finally {
        transaction?.close();
        await lock.release();
      }
    },
  };
}

/**
 * Runs `body` against the database inside a transaction that is always rolled back (plan,
 * dry-run): the same path as a run, with no run lock and nothing created on disk.
 */
export async function preview<T>(database: string, engine: EngineName, lockTimeoutMs: number, body: (db: SqlDatabase) => T): Promise<T> {
  const transaction = await (await engineNamed(engine)).begin(database, { busyTimeoutMs: lockTimeoutMs, preview: true });
  try {
    return body(transaction.db);
  } finally {
    await transaction.rollback();
    transaction.close();
  }
}

/** Runs `body` against the database opened read-only; an absent database reads as empty and is not created. */
export async function readDatabase<T>(
  database: string,
  engine: EngineName,
  lockTimeoutMs: number,
  body: (db: SqlDatabase) => T,
): Promise<T> {
  const db = await (await engineNamed(engine)).read(database, { busyTimeoutMs: lockTimeoutMs });
  try {
    return body(db);
  } finally {
    db.close();
  }
}

/**
 * Stages `files` beside their targets, runs `commit`, then puts the files in place by rename; says
 * which were placed and which not (with why). A file that cannot be written fails before the
 * commit, with nothing changed; after it, only renames remain.
 */
async function commitWithFiles(
  files: readonly OutputFile[],
  baseDir: string,
  signal: AbortSignal | undefined,
  commit: () => Promise<void>,
): Promise<{ placed: string[]; notPlaced: string[] }> {
  const staged: { path: string; file: StagedFile }[] = [];
  try {
    for (const file of files) staged.push({ path: file.path, file: await stageOutput(path.resolve(baseDir, file.path), file.content) });
    throwIfAborted(signal);
    await commit();
    const placed: string[] = [];
    const notPlaced: string[] = [];
    for (const { path: file, file: output } of staged) {
      try {
        await output.commit();
        placed.push(file);
      } catch (error) {
        notPlaced.push(`${file} (${(error as Error).message})`);
      }
    }
    return { placed, notPlaced };
  } finally {
    await Promise.all(staged.map(({ file }) => file.discard()));
  }
}

async function stageOutput(target: string, content: string): Promise<StagedFile> {
  try {
    return await stageFile(target, content);
  } catch (error) {
    throw new PipelineError("E_SAVE", `cannot write ${target}: ${(error as Error).message}; nothing was saved`, { cause: error });
  }
}
