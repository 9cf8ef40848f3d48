import { closeSync, fstatSync, openSync } from "node:fs";
import { rm, stat } from "node:fs/promises";
import type { DatabaseSync, StatementSync } from "node:sqlite";
import { nodeSqlite } from "./node-sqlite.js";
import { markOf, recordMark, tablesCheckedAtMark } from "../commit-mark.js";
import { PipelineError } from "../../errors.js";
import type { Params, Row, SqlDatabase, SqlValue, Statement } from "../database.js";
import { splitStatements } from "../split-sql.js";
import { hasForeignKeyActions } from "../constraints.js";
import { journalBeside } from "../failure-journal.js";
import { lockFileBeside } from "../lock.js";
import type { Engine, OpenOptions, Transaction } from "./engine.js";

/** SQLite's page cache for a run, in KiB: all that the native engine holds in memory of the database. */
const cacheKiB = 16_384;

/**
 * The native engine (`node:sqlite`, the SQLite built into Node): the steps run in one transaction
 * on the live file and commit in place, through SQLite's own locking and journal, so other SQLite
 * programs (the `sqlite3` CLI) can read and write the same file; a writer is waited for.
 */
export const nativeEngine: Engine = {
  name: "native",
  lock: lockFileBeside,
  journal: journalBeside,
  async version() {
    const db = new (nodeSqlite().DatabaseSync)(":memory:");
    try {
      return `${String(db.prepare("SELECT sqlite_version() AS v").get()?.["v"])} (node:sqlite)`;
    } finally {
      db.close();
    }
  },
  async begin(file, options) {
    const existed = await exists(file);
    // why: a run's foreign keys are verified before its commit, the only way to one (checkForeignKeys in engine/run/record.ts);
    // SQLite's enforcement, deferred to the commit, looked each written row's parents up again (~0.35 s CPU of a 1M-row full run).
    const raw = open(existed || !options.preview ? file : ":memory:", options, false, false);
    try {
      beginOrWait(raw, file, options);
      if (options.runsScripts !== false || hasForeignKeyActions(wrapDatabase(raw, file))) {
        // why: a foreign key action (ON DELETE CASCADE, RESTRICT...) happens only where SQLite enforces the keys; the
        // setting cannot change inside a transaction, and nothing was written yet.
        raw.exec("ROLLBACK");
        raw.exec("PRAGMA foreign_keys = ON");
        beginOrWait(raw, file, options);
        raw.exec("PRAGMA defer_foreign_keys = ON");
      }
    } catch (error) {
      raw.close();
      if (!existed) await removeEmpty(file);
      throw error;
    }
    // why: the header is read under the write lock, so no other commit comes between this mark and ours; a new file's first commit
    // makes its counter 1. The descriptor stays open until the connection is closed (closing it would drop SQLite's locks).
    let fd = options.preview ? undefined : openIfAny(file);
    const found = existed && fd !== undefined ? markOf(file, fd) : undefined;
    const counterAfterCommit = existed ? (found ? found.counter + 1 : undefined) : 1;
    const release = () => {
      if (raw.isOpen) raw.close();
      if (fd !== undefined) closeSync(fd);
      fd = undefined;
    };
    const transaction: Transaction = {
      db: wrapDatabase(raw, file),
      // why: "all" only for a file still empty under the write lock: one another program created since exists() is checked.
      soundTables: existed ? await tablesCheckedAtMark(file, found) : fd !== undefined && fstatSync(fd).size === 0 ? "all" : new Set(),
      async commit(checkedTables) {
        guarded(file, () => raw.exec("COMMIT"));
        if (fd !== undefined) await recordMark(file, counterAfterCommit, checkedTables, fd);
      },
      async rollback() {
        if (raw.isOpen && raw.isTransaction) raw.exec("ROLLBACK");
        // why: SQLite writes nothing to a new file before the first commit; the empty file a failed first run opened is removed.
        if (!existed) {
          release();
          await removeEmpty(file);
        }
      },
      close() {
        release();
      },
    };
    return transaction;
  },
  async read(file, options) {
    return wrapDatabase((await exists(file)) ? open(file, options, true) : new (nodeSqlite().DatabaseSync)(":memory:"), file);
  },
};

/** An empty in-memory database on node:sqlite, foreign keys enforced, readied by `setup`: validation's scratch (engine/db/scratch.ts). */
export function openNativeMemory(setup?: (db: DatabaseSync) => void): SqlDatabase {
  const db = new (nodeSqlite().DatabaseSync)(":memory:", { enableForeignKeyConstraints: true });
  try {
    setup?.(db);
  } catch (error) {
    db.close();
    throw error;
  }
  return wrapDatabase(db, ":memory:");
}

function open(file: string, options: OpenOptions, readOnly: boolean, enforceForeignKeys = true): DatabaseSync {
  let db: DatabaseSync | undefined;
  try {
    db = new (nodeSqlite().DatabaseSync)(file, {
      readOnly,
      timeout: options.busyTimeoutMs,
      enableForeignKeyConstraints: enforceForeignKeys,
    });
    db.prepare("SELECT count(*) FROM sqlite_schema").get();
    if (!readOnly) db.exec(`PRAGMA cache_size = -${cacheKiB}`);
    return db;
  } catch (error) {
    db?.close();
    if (isBusy(error)) throw sqliteError(error, file, options);
    throw new PipelineError("E_DB", `${file} is not a readable SQLite database: ${(error as Error).message}`, { cause: error });
  }
}

/** Begins the run's transaction; a run takes SQLite's write lock at once (waiting for another writer), a preview when it first writes. */
function beginOrWait(db: DatabaseSync, file: string, options: OpenOptions): void {
  try {
    db.exec(options.preview ? "BEGIN" : "BEGIN IMMEDIATE");
  } catch (error) {
    throw sqliteError(error, file, options);
  }
}

export function isBusy(error: unknown): boolean {
  const code = (error as { errcode?: number }).errcode;
  return code !== undefined && (code & 0xff) === 5;
}

/** SQLITE_BUSY past the busy timeout is the lock error (exit 3); anything else is a database error. */
export function sqliteError(error: unknown, file: string, options: OpenOptions): PipelineError {
  if (isBusy(error)) {
    return new PipelineError(
      "E_LOCK",
      `${file} is being written by another program; waited ${Math.round(options.busyTimeoutMs / 1000)} s (--lock-timeout). Nothing was changed.`,
      { exitCode: 3, cause: error },
    );
  }
  return new PipelineError("E_DB", `${file}: ${(error as Error).message}`, { cause: error });
}

/** A descriptor open on `file` for reading, or undefined when it cannot be opened (the mark is then not taken). */
function openIfAny(file: string): number | undefined {
  try {
    return openSync(file, "r");
  } catch {
    return undefined;
  }
}

async function exists(file: string): Promise<boolean> {
  return (await stat(file).catch(() => undefined)) !== undefined;
}

async function removeEmpty(file: string): Promise<void> {
  const info = await stat(file).catch(() => undefined);
  if (info?.isFile() && info.size === 0) await rm(file, { force: true });
}

/** SQLite result codes that are about the file, not the SQL: a full disk, an I/O error, a lock, a damaged file. */
const storageCodes = new Map<number, string>([
  [5, "another program holds the database locked"],
  [7, "SQLite ran out of memory"],
  [10, "a disk I/O error"],
  [11, "the database file is damaged"],
  [13, "the disk is full"],
  [26, "the file is not a database"],
]);

/** Turns an SQLite error about the file into a clear error naming it; the transaction is rolled back, so the content stays as it was. */
function storageError(error: unknown, file: string): unknown {
  const code = (error as { errcode?: number }).errcode;
  const what = code === undefined ? undefined : storageCodes.get(code & 0xff);
  if (what === undefined) return error;
  const kind = (code! & 0xff) === 5 ? "E_LOCK" : (code! & 0xff) === 11 || (code! & 0xff) === 26 ? "E_DB" : "E_SAVE";
  return new PipelineError(
    kind,
    `cannot write the database ${file}: ${what} (${(error as Error).message}); its previous content is unchanged`,
    {
      cause: error,
      exitCode: kind === "E_LOCK" ? 3 : 1,
    },
  );
}

/** Calls `action`, mapping SQLite's storage errors to clear ones. */
function guarded<T>(file: string, action: () => T): T {
  try {
    return action();
  } catch (error) {
    throw storageError(error, file);
  }
}

/** `db` as the engine's {@link SqlDatabase}, its storage errors naming `file`. */
export function wrapDatabase(db: DatabaseSync, file: string): SqlDatabase {
  const compile = (sql: string): StatementSync => {
    const statement = guarded(file, () => db.prepare(sql));
    // why: the engine binds run_id and run_started_at to every statement of a script; one that does not use them ignores them.
    statement.setAllowUnknownNamedParameters(true);
    return statement;
  };
  const prepare = (sql: string): Statement => wrapStatement(compile(sql), file);
  let changes: StatementSync | undefined;
  return {
    exec: (sql) => guarded(file, () => db.exec(sql)),
    run: (sql, params) => guarded(file, () => Number(call(compile(sql), "run", params).changes)),
    all: (sql, params) => guarded(file, () => call(compile(sql), "all", params) as Row[]),
    prepare,
    runScript(sql, params) {
      for (const text of splitStatements(sql)) {
        const statement = compile(text);
        guarded(file, () => (params ? statement.run(params as Record<string, SqlValue>) : statement.run()));
      }
    },
    statements(sql) {
      const texts = splitStatements(sql);
      for (const text of texts) db.prepare(text);
      return texts;
    },
    changes: () => Number((changes ??= db.prepare("SELECT changes() AS n")).get()?.["n"] ?? 0),
    close: () => {
      if (db.isOpen) db.close();
    },
  };
}

type Method = "run" | "get" | "all";

function call<M extends Method>(statement: StatementSync, method: M, params: Params | undefined): ReturnType<StatementSync[M]> {
  const invoke = statement[method].bind(statement) as (...args: unknown[]) => ReturnType<StatementSync[M]>;
  if (params === undefined) return invoke();
  if (Array.isArray(params)) return invoke(...(params as unknown[]));
  return invoke(params);
}

function wrapStatement(statement: StatementSync, file: string): Statement {
  let arrays = false;
  const mode = (wanted: boolean) => {
    if (arrays !== wanted) statement.setReturnArrays((arrays = wanted));
  };
  return {
    run(params) {
      guarded(file, () => call(statement, "run", params));
    },
    get(params) {
      mode(false);
      return guarded(file, () => call(statement, "get", params) as Row | undefined);
    },
    getValues(params) {
      mode(true);
      return guarded(file, () => call(statement, "get", params) as unknown as SqlValue[] | undefined);
    },
    all(params) {
      mode(false);
      return guarded(file, () => call(statement, "all", params) as Row[]);
    },
    columnNames: () => statement.columns().map((column) => column.name),
    free: () => undefined,
  };
}
