import type { DatabaseSync } from "node:sqlite";
import { nodeSqlite } from "./engines/node-sqlite.js";
import { quoteIdent, type Params, type SqlDatabase, type SqlValue, type Statement } from "./database.js";
import { splitStatements } from "./split-sql.js";
import { systemTableNames } from "../history.js";

/** A write asked of a {@link readFirst} database before it was given a writable one: the caller readies it (an await) and asks again. */
export class WriteBeforeReady extends Error {}

/** A run's database read on the live file until the run knows it writes, then written where the engine says. */
export interface ReadFirst {
  /** The database the run uses throughout: the reader until {@link ReadFirst.write}, then the writable database. */
  readonly db: SqlDatabase;
  /** Hands over `writable` (the same database as the file the reader reads, in an open transaction), replaying into it what the run wrote so far. */
  write(writable: SqlDatabase): void;
  /** Closes the reader (not the writable database). */
  close(): void;
}

/** The pragmas that name a table or index in their argument, and only read. */
const tablePragmas = new Set([
  "table_info",
  "table_xinfo",
  "index_list",
  "index_info",
  "index_xinfo",
  "foreign_key_list",
  "foreign_key_check",
  "integrity_check",
  "quick_check",
  "table_list",
]);

/**
 * A database read through node:sqlite on the live file (`reader`, opened read-only: no lock is held
 * between statements, so other programs write as they would during a sql.js run) until the run hands
 * it a writable one. Until then, the engine's own tables (pipeline_runs, the step history...), which
 * every run writes, can be written: each gets a TEMP copy on its first write, which an unqualified
 * name finds before the file's table, and {@link ReadFirst.write} replays the difference into the
 * writable database. Any other write is refused before it runs (SQLite's authorizer, at compile
 * time) with {@link WriteBeforeReady}; a statement refused when prepared is compiled again when used.
 */
export function readFirst(reader: DatabaseSync, readerDb: SqlDatabase): ReadFirst {
  const { constants } = nodeSqlite();
  const copies = new Set<string>();
  const wanted = new Set<string>();
  let refused: string | undefined;
  let internal = false;
  let writable: SqlDatabase | undefined;
  // why: a statement compiled before a copy was made still names the file's table; it is compiled again.
  let generation = 0;
  reader.setAuthorizer((action, name, detail, schema) => {
    if (internal) return constants.SQLITE_OK;
    switch (action) {
      case constants.SQLITE_SELECT:
      case constants.SQLITE_READ:
      case constants.SQLITE_FUNCTION:
      case constants.SQLITE_RECURSIVE:
        return constants.SQLITE_OK;
      case constants.SQLITE_PRAGMA:
        if (detail === null || tablePragmas.has(String(name).toLowerCase())) return constants.SQLITE_OK;
        break;
      case constants.SQLITE_INSERT:
      case constants.SQLITE_UPDATE:
      case constants.SQLITE_DELETE:
        if (schema === "temp" && copies.has(String(name))) return constants.SQLITE_OK;
        if (schema === "main" && systemTableNames.has(String(name)) && !copies.has(String(name))) {
          wanted.add(String(name));
          return constants.SQLITE_DENY;
        }
        break;
    }
    refused ??= name === null ? "a change to the database" : `a change to ${String(name)}`;
    return constants.SQLITE_DENY;
  });

  /** Runs `body` on the reader, copying the engine's tables it writes first; a write it may not do throws WriteBeforeReady. */
  const onReader = <T>(body: () => T): T => {
    for (;;) {
      wanted.clear();
      refused = undefined;
      try {
        return body();
      } catch (error) {
        if (refused !== undefined) throw new WriteBeforeReady(`${refused}: the database is not readied for writing`, { cause: error });
        if (wanted.size === 0) throw error;
        for (const table of wanted) copyToTemp(table);
      }
    }
  };

  const copyToTemp = (table: string) => {
    internal = true;
    try {
      const definitions = reader
        .prepare("SELECT sql FROM main.sqlite_schema WHERE tbl_name = ? AND sql IS NOT NULL ORDER BY type = 'index'")
        .all(table);
      for (const { sql } of definitions) {
        reader.exec(
          String(sql)
            .replace(/^CREATE\s+TABLE\s+/i, "CREATE TEMP TABLE ")
            .replace(/^CREATE\s+(UNIQUE\s+)?INDEX\s+(IF\s+NOT\s+EXISTS\s+)?/i, "CREATE $1INDEX $2temp."),
        );
      }
      // why: the replay matches rows by rowid; named, it is copied whatever SQLite's transfer optimisation does.
      const columns = [
        "rowid",
        ...reader
          .prepare(`PRAGMA main.table_info(${quoteIdent(table)})`)
          .all()
          .map((c) => quoteIdent(String(c["name"]))),
      ];
      reader.exec(
        `INSERT INTO temp.${quoteIdent(table)} (${columns.join(", ")}) SELECT ${columns.join(", ")} FROM main.${quoteIdent(table)}`,
      );
    } finally {
      internal = false;
    }
    copies.add(table);
    generation++;
  };

  const compile = (sql: string): Statement => (writable ? writable.prepare(sql) : onReader(() => readerDb.prepare(sql)));

  const db: SqlDatabase = {
    exec(sql) {
      if (writable) return writable.exec(sql);
      for (const text of splitStatements(sql)) onReader(() => readerDb.prepare(text).run());
    },
    run: (sql, params) => (writable ? writable.run(sql, params) : onReader(() => readerDb.run(sql, params))),
    all: (sql, params) => (writable ? writable.all(sql, params) : onReader(() => readerDb.all(sql, params))),
    prepare(sql) {
      let inner: Statement | undefined;
      let on: SqlDatabase | undefined;
      let compiledAt = generation;
      const current = (): Statement => {
        if (inner === undefined || on !== writable || compiledAt !== generation) {
          inner = compile(sql);
          on = writable;
          compiledAt = generation;
        }
        return inner;
      };
      try {
        current();
      } catch (error) {
        // why: the statement compiled (the authorizer judges after the names are resolved); it is a write, compiled again when used.
        if (!(error instanceof WriteBeforeReady)) throw error;
      }
      const use = <T>(body: (statement: Statement) => T): T => (writable ? body(current()) : onReader(() => body(current())));
      return {
        run: (params?: Params) => use((statement) => statement.run(params)),
        get: (params?: Params) => use((statement) => statement.get(params)),
        getValues: (params?: Params) => use((statement) => statement.getValues(params)),
        all: (params?: Params) => use((statement) => statement.all(params)),
        columnNames: () => use((statement) => statement.columnNames()),
        free: () => inner?.free(),
      };
    },
    runScript(sql, params) {
      if (writable) return writable.runScript(sql, params);
      for (const text of splitStatements(sql)) onReader(() => readerDb.runScript(text, params));
    },
    statements(sql) {
      if (writable) return writable.statements(sql);
      internal = true;
      try {
        return readerDb.statements(sql);
      } finally {
        internal = false;
      }
    },
    changes: () => (writable ?? readerDb).changes(),
    close: () => readerDb.close(),
  };

  return {
    db,
    write(target) {
      internal = true;
      try {
        for (const table of copies) replay(reader, target, table);
      } finally {
        internal = false;
      }
      writable = target;
    },
    close: () => readerDb.close(),
  };
}

/** Writes into `target` what the run changed in the TEMP copy of `table`: rows deleted, changed or added since the copy (by rowid). */
function replay(reader: DatabaseSync, target: SqlDatabase, table: string): void {
  const t = quoteIdent(table);
  const columns = reader
    .prepare(`SELECT name FROM pragma_table_info(?, 'main')`)
    .all(table)
    .map((row) => quoteIdent(String(row["name"])));
  const list = columns.join(", ");
  const gone = reader.prepare(`SELECT rowid FROM main.${t} EXCEPT SELECT rowid FROM temp.${t}`);
  gone.setReturnArrays(true);
  const remove = target.prepare(`DELETE FROM ${t} WHERE rowid = ?`);
  for (const [rowid] of gone.all() as unknown as SqlValue[][]) remove.run([rowid!]);
  const changed = reader.prepare(
    `SELECT rowid, rowid IN (SELECT rowid FROM main.${t}), ${list} FROM temp.${t} EXCEPT SELECT rowid, 1, ${list} FROM main.${t}`,
  );
  changed.setReturnArrays(true);
  const update = target.prepare(`UPDATE ${t} SET ${columns.map((c) => `${c} = ?`).join(", ")} WHERE rowid = ?`);
  const insert = target.prepare(`INSERT INTO ${t} (rowid, ${list}) VALUES (?, ${columns.map(() => "?").join(", ")})`);
  for (const [rowid, existed, ...values] of changed.all() as unknown as SqlValue[][]) {
    if (existed === 1) update.run([...values, rowid!]);
    else insert.run([rowid!, ...values]);
  }
  for (const statement of [remove, update, insert]) statement.free();
}
