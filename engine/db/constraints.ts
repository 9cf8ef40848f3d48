import { PipelineError } from "../errors.js";
import { quoteIdent, type Row, type SqlDatabase } from "./database.js";

/**
 * What the run proves of a table, for the foreign key verification: the last rowid it had before
 * the run's steps when, since the runner's last commit (whose verification passed), only rows after
 * it were added; undefined when that is not proven.
 */
export type AppendedSince = (table: string) => number | undefined;

/**
 * Whether this run's checks found every foreign key of `table` unbroken with SQLite's own check, and since then
 * neither `table` nor any of `parents` (the tables its keys reference) can have been written: what the keys
 * of its rows were then, they still are (engine/checks.ts, CheckRun.keysHeld; engine/run/committed-tables.ts).
 */
export type VerifiedByChecks = (table: string, parents: readonly string[]) => boolean;

/** The tables the last verification before a commit left to the checks' own verification ({@link VerifiedByChecks}); for the tests. */
export const leftToChecks: string[] = [];

/**
 * Whether a foreign key of the database has an action (anything but NO ACTION): such a key acts (ON DELETE CASCADE,
 * RESTRICT...) only where SQLite enforces the keys, so a run on it cannot leave them to {@link checkForeignKeys}.
 */
export function hasForeignKeyActions(db: SqlDatabase): boolean {
  return (
    db.all(
      `SELECT 1 FROM sqlite_schema AS m, pragma_foreign_key_list(m.name) AS f
       WHERE m.type = 'table' AND (f.on_delete <> 'NO ACTION' OR f.on_update <> 'NO ACTION') LIMIT 1`,
    ).length > 0
  );
}

/**
 * Refuses a transaction that leaves foreign keys pointing at missing rows (E_DB, naming the first few), before it is committed.
 * With `appendedSince`, a table that, like every table it references, provably only gained rows since the last commit is
 * verified on its new rows alone (none when it gained none); with `verifiedByChecks`, a table the run's checks verified
 * and nothing could write since is not looked at again (unless a key has an action: it writes tables no step declares).
 * The others, and any violation found, as without them.
 */
export function checkForeignKeys(db: SqlDatabase, appendedSince?: AppendedSince, verifiedByChecks?: VerifiedByChecks): void {
  if (db.dialect) return db.dialect.checkConstraints(db);
  leftToChecks.length = 0;
  if ((appendedSince || verifiedByChecks) && noViolationIn(db, appendedSince ?? (() => undefined), verifiedByChecks)) return;
  leftToChecks.length = 0;
  const violations = db.all("PRAGMA foreign_key_check");
  if (violations.length === 0) return;
  const first = violations.slice(0, 5).map((v) => {
    const table = String(v["table"]);
    const row = db.all(`SELECT * FROM ${quoteIdent(table)} WHERE rowid = ?`, [v["rowid"] ?? null])[0];
    return `${table} row ${JSON.stringify(row ?? { rowid: v["rowid"] })} references a missing ${String(v["parent"])} row`;
  });
  throw new PipelineError(
    "E_DB",
    `${violations.length} foreign key violation(s) at the end of the run, so nothing was saved: ${first.join("; ")}`,
  );
}

/**
 * Whether no foreign key of the database is violated, checking only where a violation can be: a
 * table the run's checks verified, unwritten since like the tables it references, is skipped; a
 * table whose rows and referenced tables only gained rows (inserting a row resolves references,
 * never breaks one) can break a key only in its new rows, so those alone are looked up; a table
 * that gained none is skipped. Every other table gets SQLite's own `foreign_key_check`. False
 * when anything is found or not understood: the caller then checks the whole database.
 */
function noViolationIn(db: SqlDatabase, appendedSince: AppendedSince, verifiedByChecks: VerifiedByChecks | undefined): boolean {
  try {
    const keys = new Map<string, Map<number, Row[]>>();
    for (const row of db.all(
      `SELECT m.name AS child, f.id, f."table" AS parent, f."from", f."to" FROM sqlite_schema AS m, pragma_foreign_key_list(m.name) AS f
       WHERE m.type = 'table' ORDER BY m.name, f.id, f.seq`,
    )) {
      const byId = keys.get(String(row["child"])) ?? new Map<number, Row[]>();
      byId.set(Number(row["id"]), [...(byId.get(Number(row["id"])) ?? []), row]);
      keys.set(String(row["child"]), byId);
    }
    let actions: boolean | undefined;
    for (const [child, byId] of keys) {
      const fks = [...byId.values()];
      const parents = fks.map(([key]) => String(key!["parent"]));
      if (verifiedByChecks?.(child, parents) && !(actions ??= hasForeignKeyActions(db))) {
        leftToChecks.push(child);
        continue;
      }
      const last = appendedSince(child);
      const lookups = last === undefined ? undefined : fks.map((columns) => lookupSql(db, child, columns));
      const parentsOnlyGrew = fks.every(([key]) => key!["parent"] === child || appendedSince(String(key!["parent"])) !== undefined);
      if (last === undefined || !parentsOnlyGrew || !lookups!.every((sql) => sql !== undefined)) {
        if (db.all("SELECT 1 FROM pragma_foreign_key_check(?) LIMIT 1", [child]).length > 0) return false;
        continue;
      }
      for (const sql of lookups!) if (db.all(sql, [last]).length > 0) return false;
    }
    return true;
  } catch {
    return false; // why: anything unforeseen (a table SQLite cannot check) is left to the whole check, which reports it.
  }
}

/**
 * The query for the rows after a rowid that break one foreign key, when it finds exactly what SQLite's
 * check finds: every column pair STRICT, of one type, without a collation (so `=` is the key's own
 * comparison), the parent key its primary key or a unique index of those columns; undefined otherwise.
 */
function lookupSql(db: SqlDatabase, child: string, columns: Row[]): string | undefined {
  const parent = String(columns[0]!["parent"]);
  const pairs = columns.map((column) => ({ from: column["from"], to: column["to"] }));
  if (pairs.some(({ from, to }) => typeof from !== "string" || typeof to !== "string")) return undefined;
  if (!pairs.every(({ from, to }) => sameStoredType(db, child, String(from), parent, String(to)))) return undefined;
  if (
    !uniquelyIndexed(
      db,
      parent,
      pairs.map(({ to }) => String(to)),
    )
  )
    return undefined;
  const c = (name: unknown) => `"__child".${quoteIdent(String(name))}`;
  const present = pairs.map(({ from }) => `${c(from)} IS NOT NULL`).join(" AND ");
  const match = pairs.map(({ from, to }) => `"__parent".${quoteIdent(String(to))} = ${c(from)}`).join(" AND ");
  return `SELECT 1 FROM ${quoteIdent(child)} AS "__child" WHERE "__child".rowid > ? AND ${present}
    AND NOT EXISTS (SELECT 1 FROM ${quoteIdent(parent)} AS "__parent" WHERE ${match}) LIMIT 1`;
}

/** Whether `columns` of `table` are its primary key or a full unique index (binary collation), in some order. */
function uniquelyIndexed(db: SqlDatabase, table: string, columns: readonly string[]): boolean {
  const same = (names: string[]) => names.length === columns.length && columns.every((column) => names.includes(column));
  const primary = db.all("SELECT name FROM pragma_table_info(?) WHERE pk > 0 ORDER BY pk", [table]).map((row) => String(row["name"]));
  if (same(primary)) return true;
  return db.all('SELECT name FROM pragma_index_list(?) WHERE "unique" = 1 AND partial = 0', [table]).some((index) => {
    const keyed = db.all("SELECT name, coll FROM pragma_index_xinfo(?) WHERE key = 1", [String(index["name"])]);
    return keyed.every((row) => String(row["coll"]).toUpperCase() === "BINARY") && same(keyed.map((row) => String(row["name"])));
  });
}

/** Whether two columns hold values compared alike by `=` and by a foreign key lookup: both STRICT, the same INTEGER, TEXT or REAL type, no collation declared. */
export function sameStoredType(db: SqlDatabase, table: string, column: string, parent: string, field: string): boolean {
  const typeOf = (owner: string, name: string) => {
    const strict = db.all("SELECT strict FROM pragma_table_list(?) WHERE schema = 'main'", [owner])[0]?.["strict"];
    const sql = db.all("SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?", [owner])[0]?.["sql"];
    if (Number(strict) !== 1 || typeof sql !== "string" || /\bcollate\b/i.test(sql)) return undefined;
    const type = db.all("SELECT type FROM pragma_table_info(?) WHERE name = ?", [owner, name])[0]?.["type"];
    return typeof type === "string" && ["INTEGER", "TEXT", "REAL"].includes(type.toUpperCase()) ? type.toUpperCase() : undefined;
  };
  const child = typeOf(table, column);
  return child !== undefined && child === typeOf(parent, field);
}

/**
 * Runs `action`, whose writes bind only values the runner cast itself (a load step's rows), without
 * SQLite evaluating CHECK constraints (`PRAGMA ignore_check_constraints`), then evaluates them again
 * for whatever follows. The only CHECKs a declared table holds are the runner's own (createTableSql;
 * a stored table that differs is E_DRIFT): a date's `x IS date(x)` and a boolean's `x IN (0, 1)`,
 * which every value the casts of engine/cast.ts return meets (tests/csv-and-cast.test.ts runs them through
 * both engines' SQLite). Keys, NOT NULL, STRICT types and foreign keys still apply. Not while a foreign
 * key of the database has an action, whose writes are no cast's. why: `date()` on
 * every row cost 0.1 s per million rows in node:sqlite and 0.3 s in sql.js. A server types its
 * columns instead (a date is a `date`): there `action` just runs.
 */
export function writingCastValues<T>(db: SqlDatabase, action: () => T): T {
  // why: a foreign key action (ON UPDATE CASCADE, ON DELETE SET NULL: another program's table may have one) writes values
  // no cast made, into tables whose CHECKs are not the runner's; asked at each load, since a script step may create one.
  if (db.dialect || hasForeignKeyActions(db)) return action();
  // why: the pragma expires every compiled statement; set once around the whole load, each is compiled again at most twice.
  db.exec("PRAGMA ignore_check_constraints = ON");
  try {
    return action();
  } finally {
    db.exec("PRAGMA ignore_check_constraints = OFF");
  }
}
