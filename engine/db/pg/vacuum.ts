import { quoteIdent, type SqlDatabase } from "../database.js";
import type { SyncPgConnection } from "./sync-connection.js";

/**
 * Rows a transaction must have inserted into a table, and at least as many as it held before, for
 * the table to be vacuumed after the commit: a first load or a replace of a large table, never a
 * re-run that appended a few rows (the 1 % re-run's 10 000 rows into 1M pays nothing).
 */
export const vacuumAfterRows = 50_000;

/**
 * The tables of the current schema this transaction filled in bulk (see {@link vacuumAfterRows}),
 * read before its commit from the server's own count of its inserts (pg_stat_xact_user_tables).
 */
export function filledInBulk(db: SqlDatabase): string[] {
  return db
    .all(
      `SELECT s.relname AS name FROM pg_stat_xact_user_tables s JOIN pg_class c ON c.oid = s.relid
       WHERE s.schemaname = current_schema() AND s.n_tup_ins >= ? AND s.n_tup_ins >= c.reltuples ORDER BY 1`,
      [vacuumAfterRows],
    )
    .map((row) => String(row["name"]));
}

/**
 * Vacuums `tables` once their rows are committed. why: the first query that reads a row after the
 * commit that wrote it marks it committed (hint bits), writing every page of a freshly loaded table:
 * at 1M sales, the next run's `revenue_reconciles` took 0.50-0.69 s on a fresh copy against
 * 0.28-0.36 s once vacuumed (autovacuum does the same, but only a minute or more later). Done after
 * the commit, on the run's connection: the data is saved whatever happens here; a table another
 * session holds locked is skipped rather than waited for, and an error only leaves the work to autovacuum.
 */
export function vacuumCommitted(connection: SyncPgConnection, tables: readonly string[]): void {
  if (tables.length === 0) return;
  try {
    connection.query(`VACUUM (SKIP_LOCKED) ${tables.map(quoteIdent).join(", ")}`);
  } catch {
    // why: maintenance only; the run has committed and succeeded.
  }
}
