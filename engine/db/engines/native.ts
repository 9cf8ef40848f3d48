import { rm, stat } from "node:fs/promises";
import { DatabaseSync, type StatementSync } from "node:sqlite";
import { PipelineError } from "../../errors.js";
import type { Params, Row, SqlDatabase, SqlValue, Statement } from "../database.js";
import { splitStatements } from "../split-sql.js";
import type { Engine, OpenOptions, Transaction } from "./engine.js";

/** SQLite's page cache for a run, in KiB: all that the native engine holds in memory of the database. */
const cacheKiB = 65_536;

/**
 * The native engine (`node:sqlite`, the SQLite built into Node): the steps run in one transaction
 * on the live file and commit in place, through SQLite's own locking and journal, so other SQLite
 * programs (the `sqlite3` CLI) can read and write the same file; a writer is waited for.
 */
export const nativeEngine: Engine = {
  name: "native",
  async version() {
    const db = new DatabaseSync(":memory:");
    try {
      return `${String(db.prepare("SELECT sqlite_version() AS v").get()?.["v"])} (node:sqlite)`;
    } finally {
      db.close();
    }
  },
  async begin(file, options) {
    const existed = await exists(file);
    const raw = open(existed || !options.preview ? file : ":memory:", options, false);
    try {
      beginOrWait(raw, file, options);
      raw.exec("PRAGMA defer_foreign_keys = ON");
    } catch (error) {
      raw.close();
      if (!existed) await removeEmpty(file);
      throw error;
    }
    const transaction: Transaction = {
      db: wrapDatabase(raw),
      async commit() {
        try {
          raw.exec("COMMIT");
        } catch (error) {
          throw sqliteError(error, file, options);
        }
      },
      async rollback() {
        if (raw.isOpen && raw.isTransaction) raw.exec("ROLLBACK");
        // why: SQLite writes nothing to a new file before the first commit; the empty file a failed first run opened is removed.
        if (!existed) {
          if (raw.isOpen) raw.close();
          await removeEmpty(file);
        }
      },
      close() {
        if (raw.isOpen) raw.close();
      },
    };
    return transaction;
  },
  async read(file, options) {
    return wrapDatabase((await exists(file)) ? open(file, options, true) : new DatabaseSync(":memory:"));
  },
};

function open(file: string, options: OpenOptions, readOnly: boolean): DatabaseSync {
  let db: DatabaseSync | undefined;
  try {
    db = new DatabaseSync(file, { readOnly, timeout: options.busyTimeoutMs, enableForeignKeyConstraints: true });
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

function isBusy(error: unknown): boolean {
  const code = (error as { errcode?: number }).errcode;
  return code !== undefined && (code & 0xff) === 5;
}

/** SQLITE_BUSY past the busy timeout is the lock error (exit 3); anything else is a database error. */
function sqliteError(error: unknown, file: string, options: OpenOptions): PipelineError {
  if (isBusy(error)) {
    return new PipelineError(
      "E_LOCK",
      `${file} is being written by another program; waited ${Math.round(options.busyTimeoutMs / 1000)} s (--lock-timeout). Nothing was changed.`,
      { exitCode: 3, cause: error },
    );
  }
  return new PipelineError("E_DB", `${file}: ${(error as Error).message}`, { cause: error });
}

async function exists(file: string): Promise<boolean> {
  return (await stat(file).catch(() => undefined)) !== undefined;
}

async function removeEmpty(file: string): Promise<void> {
  const info = await stat(file).catch(() => undefined);
  if (info?.isFile() && info.size === 0) await rm(file, { force: true });
}

function wrapDatabase(db: DatabaseSync): SqlDatabase {
  const compile = (sql: string): StatementSync => {
    const statement = db.prepare(sql);
    // why: the engine binds run_id and run_started_at to every statement of a script; one that does not use them ignores them.
    statement.setAllowUnknownNamedParameters(true);
    return statement;
  };
  const prepare = (sql: string): Statement => wrapStatement(compile(sql));
  return {
    exec: (sql) => db.exec(sql),
    run: (sql, params) => Number(call(compile(sql), "run", params).changes),
    all: (sql, params) => call(compile(sql), "all", params) as Row[],
    prepare,
    runScript(sql, params) {
      for (const text of splitStatements(sql)) {
        const statement = compile(text);
        if (params) statement.run(params as Record<string, SqlValue>);
        else statement.run();
      }
    },
    statements(sql) {
      const texts = splitStatements(sql);
      for (const text of texts) db.prepare(text);
      return texts;
    },
    changes: () => Number(db.prepare("SELECT changes() AS n").get()?.["n"] ?? 0),
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

function wrapStatement(statement: StatementSync): Statement {
  let arrays = false;
  const mode = (wanted: boolean) => {
    if (arrays !== wanted) statement.setReturnArrays((arrays = wanted));
  };
  return {
    run(params) {
      call(statement, "run", params);
    },
    get(params) {
      mode(false);
      return call(statement, "get", params) as Row | undefined;
    },
    getValues(params) {
      mode(true);
      return call(statement, "get", params) as unknown as SqlValue[] | undefined;
    },
    all(params) {
      mode(false);
      return call(statement, "all", params) as Row[];
    },
    columnNames: () => statement.columns().map((column) => column.name),
    free: () => undefined,
  };
}
