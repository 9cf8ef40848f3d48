import { PipelineError, redactCredentials } from "../../errors.js";
import type { DatabaseLock } from "../lock.js";
import { PgServerError, type SyncPgConnection } from "./sync-connection.js";

/** The advisory lock's two keys: a class for the runner, and one lock per database (the engine's tables are shared by every pipeline on it). */
const lockClass = 0x50495045;
const lockKey = 1;

/** How long one wait for the lock lasts before the runner looks at its signal (SIGINT, SIGTERM) again. */
const waitSliceMs = 200;

/**
 * Takes the runner's advisory lock on the database `connection` is on, waiting up to `timeoutMs`
 * (PostgreSQL's lock_timeout, in slices so that a signal stops the wait at once: E_ABORTED, exit
 * 130); past it, an E_LOCK error (exit 3) says who holds it from pg_stat_activity. The lock lives
 * as long as the connection: a killed runner's lock goes with it.
 */
export async function takeAdvisoryLock(
  connection: SyncPgConnection,
  url: string,
  timeoutMs: number,
  signal?: AbortSignal | undefined,
): Promise<DatabaseLock> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (signal?.aborted) {
      throw new PipelineError("E_ABORTED", "interrupted while waiting for the database lock; nothing was changed", { exitCode: 130 });
    }
    const slice = Math.max(1, Math.min(waitSliceMs, Math.round(deadline - Date.now())));
    try {
      connection.query(`SET lock_timeout = ${slice}`);
      connection.query("SELECT pg_advisory_lock($1, $2)", [lockClass, lockKey]);
      break;
    } catch (error) {
      if (!(error instanceof PgServerError && error.code === "55P03")) {
        throw new PipelineError("E_LOCK", `${redactCredentials(url)}: cannot take the run lock: ${(error as Error).message}`, {
          cause: error,
        });
      }
      if (Date.now() >= deadline) {
        throw new PipelineError(
          "E_LOCK",
          `${redactCredentials(url)} is locked by another run (${holderOf(connection)}); waited ${Math.round(timeoutMs / 1000)} s (--lock-timeout). Nothing was changed.`,
          { exitCode: 3, cause: error },
        );
      }
      // why: the wait blocks this thread; between slices the event loop runs the signal handlers.
      await new Promise((resolve) => setImmediate(resolve));
    }
  }
  return {
    holderText: `advisory lock (${lockClass}, ${lockKey})`,
    async release() {
      try {
        connection.query("SELECT pg_advisory_unlock($1, $2)", [lockClass, lockKey]);
      } finally {
        connection.close();
      }
    },
  };
}

/** Who holds the runner's advisory lock, as pg_stat_activity shows it. */
function holderOf(connection: SyncPgConnection): string {
  try {
    const row = connection.query(
      `SELECT a.application_name, coalesce(host(a.client_addr), 'local socket'), a.backend_start::text, a.pid
       FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
       WHERE l.locktype = 'advisory' AND l.granted AND l.classid::bigint = $1 AND l.objid::bigint = $2 AND l.objsubid = 2
         AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
      [lockClass, lockKey],
    ).rows[0];
    if (!row) return "a holder that has just left";
    const [name, client, started, pid] = row.map(String);
    return `held by "${name}" from ${client}, server process ${pid}, connected since ${started}`;
  } catch (error) {
    return `its holder could not be read: ${(error as Error).message}`;
  }
}
