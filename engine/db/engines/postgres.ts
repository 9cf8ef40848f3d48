import { createRequire } from "node:module";
import { PipelineError, redactCredentials } from "../../errors.js";
import { recordFailedRuns } from "../../failed-runs.js";
import { systemTables } from "../../history.js";
import { ensureTables } from "../tables.js";
import { takeAdvisoryLock } from "../pg/advisory-lock.js";
import { pgBulkWriter } from "../pg/bulk-load.js";
import { restoreForeignKeys } from "../pg/foreign-keys.js";
import type { Params, Row, SqlDatabase, Statement } from "../database.js";
import type { DatabaseLock } from "../lock.js";
import { postgresDialect } from "../pg/dialect.js";
import {
  confirmAndMark,
  lockForWrite,
  markRunnerTransaction,
  unmarkRunnerTransaction,
  noProof,
  proveUntouched,
  type OutsideWriteProof,
} from "../pg/outside-writes.js";
import { toPositional } from "../pg/parameters.js";
import { connectSync, PgServerError, type PgResult, type SyncPgConnection } from "../pg/sync-connection.js";
import { splitStatements, statementBody } from "../split-sql.js";
import type { Engine, OpenOptions, Transaction } from "./engine.js";

export { isPostgresUrl } from "../database-url.js";

/** How long to wait for the server to accept a connection. */
const connectTimeoutMs = 10_000;

/** What the runner's connections call themselves, so another runner can say who holds the lock. */
export function applicationName(): string {
  return `pipeline-runner pid ${process.pid}`;
}

/** Opens a connection to `url`, naming it without its password in every message. */
export function connectPostgres(url: string): SyncPgConnection {
  const connection = connectSync(url, { timeoutMs: connectTimeoutMs, shownUrl: redactCredentials(url) });
  connection.query("SELECT set_config('application_name', $1, false)", [applicationName()]);
  return connection;
}

/**
 * The connection holding this process's run lock on each server, lent to the run's transaction
 * (and to the failed run's record after the rollback): a session-level advisory lock is not
 * released by COMMIT or ROLLBACK, and the server drops both with the connection of a killed run.
 */
const lockHolders = new Map<string, { connection: SyncPgConnection; lent: boolean }>();

/**
 * The PostgreSQL engine: the run is one transaction on the server (BEGIN … COMMIT or ROLLBACK),
 * foreign keys are checked at commit as SQLite's defer_foreign_keys does, and a killed runner's
 * transaction is rolled back by the server when its connection drops.
 */
export const postgresEngine: Engine = {
  name: "postgres",
  dialect: postgresDialect,
  async version() {
    const client = (createRequire(import.meta.url)("pg/package.json") as { version: string }).version;
    return `client pg ${client} (the server's version: see the database check)`;
  },
  begin: (url, options) => beginOn(url, options, { prove: true }),
  async lock(url, options) {
    const connection = connectPostgres(url);
    let lock: DatabaseLock;
    try {
      lock = await takeAdvisoryLock(connection, url, options.timeoutMs, options.signal);
    } catch (error) {
      connection.close();
      throw error;
    }
    const holder = { connection, lent: false };
    lockHolders.set(url, holder);
    return {
      holderText: lock.holderText,
      async release() {
        if (lockHolders.get(url) === holder) lockHolders.delete(url);
        await lock.release();
      },
    };
  },
  async recordFailure(url, run) {
    // why: it writes the engine's tables only, and must not wait for a table another session holds (the failure may be that wait).
    const transaction = await beginOn(url, { busyTimeoutMs: connectTimeoutMs }, { prove: false });
    try {
      ensureTables(transaction.db, systemTables, { addColumns: true });
      recordFailedRuns(transaction.db, [run]);
      await transaction.commit([]);
    } finally {
      await transaction.rollback();
      transaction.close();
    }
  },
  async read(url) {
    const connection = connectPostgres(url);
    connection.query("BEGIN TRANSACTION READ ONLY");
    const db = wrapConnection(connection);
    return {
      ...db,
      close() {
        try {
          connection.query("ROLLBACK");
        } finally {
          connection.close();
        }
      },
    };
  },
};

/**
 * Begins a run's transaction on the server; with `prove`, also proves which tables are as the
 * runner's last commit left them (engine/db/pg/outside-writes.ts), locking none: a table is locked
 * when a step is about to write it, and those the run relied on only briefly, at the commit.
 */
async function beginOn(url: string, options: OpenOptions, { prove }: { prove: boolean }): Promise<Transaction> {
  // why: the run's transaction goes on the session that holds its run lock: one connection (one worker loading pg) per run.
  const lender = options.preview ? undefined : lockHolders.get(url);
  const shared = lender && !lender.lent ? lender : undefined;
  const connection = shared?.connection ?? connectPostgres(url);
  if (shared) shared.lent = true;
  const giveBack = () => {
    if (shared) shared.lent = false;
  };
  try {
    // why: a table another session holds locked must not hang the run; past --lock-timeout the statement fails and names it.
    connection.query(`BEGIN; SET CONSTRAINTS ALL DEFERRED; SET LOCAL lock_timeout = ${Math.max(1, Math.round(options.busyTimeoutMs))}`);
  } catch (error) {
    giveBack();
    if (!shared) connection.close();
    throw serverError(error, url, options);
  }
  let open = true;
  /** The tables locked SHARE ROW EXCLUSIVE since a step was about to write them. */
  const writeLocked = new Set<string>();
  const db = wrapConnection(connection, { url, lockTimeoutMs: options.busyTimeoutMs });
  let proof: OutsideWriteProof;
  try {
    markRunnerTransaction(db);
    proof = prove ? proveUntouched(db) : noProof();
  } catch (error) {
    connection.query("ROLLBACK");
    giveBack();
    if (!shared) connection.close();
    throw serverError(error, url, options);
  }
  const transaction: Transaction = {
    db,
    // why: SQLite's integrity_check has no meaning here; the server keeps its indexes consistent with its tables.
    soundTables: "all",
    untouched: { tables: proof.untouched, why: (table) => proof.why.get(table) },
    lockForWrite(tables) {
      lockForWrite(db, tables, proof, writeLocked);
    },
    async commit(checkedTables, reliedOn = new Set()) {
      try {
        // why: a foreign key set aside for a first load is never committed missing, whichever path led here.
        restoreForeignKeys(transaction.db);
        if (checkedTables.length > 0 || reliedOn.size > 0)
          confirmAndMark(transaction.db, checkedTables, reliedOn, proof, redactCredentials(url));
        unmarkRunnerTransaction(transaction.db);
        connection.query("COMMIT");
        open = false;
        giveBack();
      } catch (error) {
        if (open) {
          try {
            // why: a failure before the COMMIT left the transaction open; after it, the server has rolled it back already.
            connection.query("ROLLBACK");
          } catch {
            // the connection broke: the server rolled the transaction back
          }
        }
        open = false;
        giveBack();
        if (error instanceof PipelineError) throw error;
        throw new PipelineError("E_SAVE", `${redactCredentials(url)}: the commit failed (${(error as Error).message}); nothing was saved`, {
          cause: error,
        });
      }
    },
    async rollback() {
      if (!open) return;
      open = false;
      try {
        connection.query("ROLLBACK");
      } catch {
        // why: a connection that broke has lost its transaction already; the server rolled it back.
      }
      giveBack();
    },
    close() {
      if (shared) {
        // why: the lock's holder closes it when the run lock is released; a transaction still open here is rolled back first.
        if (open) void transaction.rollback();
        return;
      }
      try {
        connection.close();
      } catch {
        // the server closed it first
      }
    },
  };
  return transaction;
}

function serverError(error: unknown, url: string, _options: OpenOptions): unknown {
  if (error instanceof PipelineError) return error;
  return new PipelineError("E_DB", `${redactCredentials(url)}: ${(error as Error).message}`, { cause: error });
}

function rowsOf(result: PgResult): Row[] {
  return result.rows.map((values) => Object.fromEntries(result.fields.map((field, i) => [field, values[i] as Row[string]])));
}

/**
 * The {@link SqlDatabase} over one connection: SQLite-style parameters rewritten, rows as objects,
 * changes from the row count; with `locks`, a statement that waited past the lock timeout for a
 * table another session holds is an E_LOCK error naming the table and its holder.
 */
function wrapConnection(connection: SyncPgConnection, locks?: { url: string; lockTimeoutMs: number }): SqlDatabase {
  let changes = 0;
  // why: a bulk write still running on the server is settled before any other statement, as if it had run synchronously.
  let barrier: (() => void) | undefined;
  const pass = () => {
    const settle = barrier;
    barrier = undefined;
    settle?.();
  };
  const query = (sql: string, params: Params | undefined): PgResult => {
    pass();
    const { text, values } = toPositional(sql, params);
    let result: PgResult;
    try {
      result = connection.query(text, values);
    } catch (error) {
      if (locks && error instanceof PgServerError && error.code === "55P03") throw lockedTable(locks.url, locks.lockTimeoutMs, text, error);
      throw withDetail(error);
    }
    changes = result.rowCount;
    return result;
  };
  const prepare = (sql: string): Statement => {
    let fields: string[] | undefined;
    const remember = (result: PgResult) => {
      fields = result.fields;
      return result;
    };
    return {
      run: (params) => void query(sql, params),
      get: (params) => rowsOf(remember(query(sql, params)))[0],
      getValues: (params) => remember(query(sql, params)).rows[0] as Row[string][] | undefined,
      all: (params) => rowsOf(remember(query(sql, params))),
      // why: a statement not yet run is described by running it for no row (every parameter NULL).
      columnNames: () => (fields ??= query(`SELECT * FROM (\n${statementBody(sql)}\n) AS described LIMIT 0`, {}).fields),
      free: () => undefined,
    };
  };
  const db: SqlDatabase = {
    exec(sql) {
      pass();
      changes = connection.query(sql).rowCount;
    },
    run: (sql, params) => query(sql, params).rowCount,
    all: (sql, params) => rowsOf(query(sql, params)),
    prepare,
    runScript(sql, params) {
      for (const text of splitStatements(sql)) query(text, params ?? {});
    },
    statements: (sql) => splitStatements(sql),
    changes: () => changes,
    close: () => connection.close(),
    dialect: postgresDialect,
    bulkWriter: (load) => pgBulkWriter(db, connection, load, (settle) => (barrier = settle)),
  };
  return db;
}

/**
 * The E_LOCK error for a statement that waited past the lock timeout: the table it names that
 * another session holds locked (read on a connection of its own: this one's transaction is aborted).
 */
function lockedTable(url: string, lockTimeoutMs: number, statement: string, cause: PgServerError): PipelineError {
  let what = "a table it uses is locked by another session";
  try {
    const connection = connectPostgres(url);
    try {
      const held = connection.query(
        `SELECT c.relname, a.application_name, a.pid, coalesce(host(a.client_addr), 'local socket'), l.mode
         FROM pg_locks l JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace
         JOIN pg_stat_activity a ON a.pid = l.pid
         WHERE l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND n.nspname = current_schema() AND a.application_name NOT LIKE 'pipeline-runner pid ' || $1
         ORDER BY c.relname`,
        [String(process.pid)],
      ).rows;
      const named = held.find(([table]) => new RegExp(`(^|[^\\w"])"?${String(table)}"?($|[^\\w"])`).test(statement)) ?? held[0];
      if (named) {
        const [table, application, pid, client, mode] = named.map(String);
        what = `table ${table} is locked by another session ("${application}" from ${client}, server process ${pid}, ${mode})`;
      }
    } finally {
      connection.close();
    }
  } catch {
    // why: the holder is a courtesy; the error stands without it.
  }
  return new PipelineError(
    "E_LOCK",
    `${redactCredentials(url)}: ${what}; waited ${Math.round(lockTimeoutMs / 1000)} s (--lock-timeout). Nothing was saved.`,
    { exitCode: 3, cause },
  );
}

/**
 * A constraint violation names its constraint only; its detail says which key and values (`Key
 * (day, item_id)=(2024-01-01, 1) already exists.`), as SQLite's message names the columns: a
 * rejected row's reason carries both.
 */
function withDetail(error: unknown): unknown {
  if (!(error instanceof PgServerError) || !error.code?.startsWith("23") || !error.detail) return error;
  return new PgServerError(`${error.message}: ${error.detail}`, error.code, error.position, error.detail);
}

export { PgServerError };
