import initSqlJs from "sql.js";
import type { Params, Row, SqlDatabase, SqlValue, Statement } from "./database.js";

type SqlJs = Awaited<ReturnType<typeof initSqlJs>>;
type SqlJsDatabase = InstanceType<SqlJs["Database"]>;
type SqlJsStatement = ReturnType<SqlJsDatabase["prepare"]>;
type SqlJsParams = Parameters<SqlJsStatement["bind"]>[0];

let engine: Promise<SqlJs> | undefined;

/** An in-memory sql.js database, which can give its whole image. */
export interface ImageDatabase extends SqlDatabase {
  /** The whole database as an SQLite file image. */
  export(): Uint8Array;
}

/** Opens an SQLite database in memory with sql.js, from a file image or empty. */
export async function openSqlJs(image?: Uint8Array): Promise<ImageDatabase> {
  engine ??= initSqlJs();
  const SQL = await engine;
  const db = new SQL.Database(image ?? null);
  db.exec("PRAGMA foreign_keys = ON");
  return wrapDatabase(db);
}

/** The version of SQLite compiled into sql.js. */
export async function sqlJsVersion(): Promise<string> {
  const db = await openSqlJs();
  const version = String(db.all("SELECT sqlite_version() AS v")[0]?.["v"]);
  db.close();
  return version;
}

function wrapDatabase(db: SqlJsDatabase): ImageDatabase {
  const prepare = (sql: string): Statement => wrapStatement(db.prepare(sql));
  return {
    exec: (sql) => void db.exec(sql),
    run(sql, params) {
      db.run(sql, toSqlJs(params));
      return db.getRowsModified();
    },
    all(sql, params) {
      const statement = prepare(sql);
      try {
        return statement.all(params);
      } finally {
        statement.free();
      }
    },
    prepare,
    runScript(sql, params) {
      for (const statement of db.iterateStatements(sql)) {
        try {
          if (params) statement.bind(toSqlJs(params));
          while (statement.step());
        } finally {
          statement.free();
        }
      }
    },
    statements(sql) {
      const texts: string[] = [];
      for (const statement of db.iterateStatements(sql)) {
        texts.push(statement.getSQL());
        statement.free();
      }
      return texts;
    },
    changes: () => db.getRowsModified(),
    export: () => db.export(),
    close: () => db.close(),
  };
}

function wrapStatement(statement: SqlJsStatement): Statement {
  const step = (params: Params | undefined): boolean => {
    statement.reset();
    if (params !== undefined) statement.bind(toSqlJs(params));
    return statement.step();
  };
  return {
    run(params) {
      step(params);
      statement.reset();
    },
    get(params) {
      const row = step(params) ? (statement.getAsObject() as Row) : undefined;
      statement.reset();
      return row;
    },
    getValues(params) {
      const row = step(params) ? (statement.get() as SqlValue[]) : undefined;
      statement.reset();
      return row;
    },
    all(params) {
      const rows: Row[] = [];
      let more = step(params);
      while (more) {
        rows.push(statement.getAsObject() as Row);
        more = statement.step();
      }
      statement.reset();
      return rows;
    },
    columnNames: () => statement.getColumnNames(),
    free: () => void statement.free(),
  };
}

function toSqlJs(params: Params | undefined): SqlJsParams {
  if (params === undefined) return null;
  if (Array.isArray(params)) return params as SqlJsParams;
  // why: sql.js wants the prefix in named keys (":name"); the engine writes bare names.
  const named: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(params)) named[/^[:@$]/.test(key) ? key : `:${key}`] = value;
  return named as SqlJsParams;
}
