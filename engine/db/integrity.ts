import { PipelineError } from "../errors.js";
import { quoteIdent, type SqlDatabase } from "./database.js";

/** What `PRAGMA integrity_check(table)` found wrong in one table and its indexes. */
export interface TableDamage {
  /** The table; "" for damage SQLite met outside the declared tables. */
  table: string;
  problems: string[];
}

/**
 * Runs `PRAGMA integrity_check` on each of `tables` that exists (the table, its indexes, their
 * agreement, NOT NULL and CHECK constraints) and returns what is wrong; empty when all is sound.
 * Checking the declared tables only, not the whole file, halves the cost on a large database and
 * leaves the user's own tables alone (docs/reliability.md has the figures).
 */
export function findDamage(db: SqlDatabase, tables: Iterable<string>): TableDamage[] {
  if (db.dialect) return []; // why: a server checks its own pages and indexes; there is no integrity_check to run.
  const stored = new Set(db.all("SELECT name FROM sqlite_schema WHERE type = 'table'").map((row) => String(row["name"])));
  const damage: TableDamage[] = [];
  for (const table of tables) {
    if (!stored.has(table)) continue;
    let problems: string[];
    try {
      problems = db
        .all(`PRAGMA integrity_check(${quoteIdent(table)})`)
        .map((row) => String(Object.values(row)[0]))
        .filter((line) => line !== "ok");
    } catch (error) {
      // why: a page damaged badly enough stops the check itself ("database disk image is malformed").
      problems = [(error as Error).message];
    }
    if (problems.length > 0) damage.push({ table, problems });
  }
  return damage;
}

/**
 * Refuses to save a database whose declared tables fail `PRAGMA integrity_check` (an index that
 * disagrees with its table lets duplicates in and hides stored rows from lookups): E_DB, naming
 * each table and what is wrong, with the REINDEX that rebuilds its indexes.
 */
export function refuseDamage(db: SqlDatabase, tables: Iterable<string>, database: string): void {
  const error = damageError(findDamage(db, tables), database);
  if (error) throw error;
}

/**
 * Turns an error SQLite raised on a damaged file in the middle of a step ("database disk image is
 * malformed") into the same E_DB that {@link refuseDamage} gives, naming the damaged tables; any
 * other error is returned as it is.
 */
export function explainDamage(error: unknown, db: SqlDatabase | undefined, tables: Iterable<string>, database: string): unknown {
  if (!db || !(error instanceof Error) || !/database disk image is malformed|database corruption/i.test(error.message)) return error;
  const damage = findDamage(db, tables);
  return (
    damageError(damage.length > 0 ? damage : [{ table: "(outside the declared tables)", problems: [error.message] }], database) ?? error
  );
}

function damageError(damage: TableDamage[], database: string): PipelineError | undefined {
  if (damage.length === 0) return undefined;
  const shown = damage.map(({ table, problems }) => {
    const more = problems.length > 3 ? ` (and ${problems.length - 3} more)` : "";
    return `${table ? `table ${table}` : "the file"}: ${problems.slice(0, 3).join("; ")}${more}`;
  });
  const tables = damage.filter(({ table }) => table !== "");
  const reindex = tables.length > 0 ? tables.map(({ table }) => `REINDEX ${quoteIdent(table)};`).join(" ") : "REINDEX;";
  return new PipelineError(
    "E_DB",
    `${database} is damaged (PRAGMA integrity_check fails), so this run's result was not saved: ${shown.join(". ")}. Nothing was changed. Rebuild the indexes from the tables with the sqlite3 CLI: sqlite3 ${database} '${reindex.replaceAll("'", "'\\''")}', check that sqlite3 ${database} 'PRAGMA integrity_check;' says ok, then run again; if it does not, restore the file from a backup (or start from a new database file).`,
  );
}
