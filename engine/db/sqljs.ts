import type initSqlJs from "sql.js";
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
  /** Commits the open transaction and returns the whole database as an SQLite file image. */
  commitImage(): Uint8Array;
}

/**
 * Opens an SQLite database in memory with sql.js, from a file image (whose bytes become the
 * database's, written in place) or empty. With `roomy`, the rest of the image's buffer is the
 * database's to grow into (an image from {@link roomyImage}), and an empty database gets such a
 * buffer, so that the file sql.js keeps in memory is not copied to a larger array again and again
 * as it grows.
 */
export async function openSqlJs(image?: Uint8Array, options: { roomy?: boolean } = {}): Promise<ImageDatabase> {
  // why: sql.js's module is loaded on first use; a native run and a sqljs run that opens nothing in memory never pay for it.
  engine ??= import("sql.js").then(({ default: init }) => init());
  const SQL = await engine;
  const roomy = options.roomy ?? false;
  const file = image ? inPlace(image, roomy) : roomy ? inPlace(emptyImage(SQL), true) : undefined;
  const db = new SQL.Database(file?.data ?? null);
  db.exec("PRAGMA foreign_keys = ON");
  return wrapDatabase(db, file);
}

/**
 * A buffer of `size` bytes with room to grow to `capacity` (the part beyond `size` is zeros that
 * take no memory until written), or exactly `size` bytes when that much cannot be reserved.
 */
export function roomyImage(size: number, capacity: number): Uint8Array {
  try {
    return new Uint8Array(new ArrayBuffer(Math.max(size, capacity)), 0, size);
  } catch {
    return new Uint8Array(size);
  }
}

/** How much room a database of `size` bytes gets to grow in memory during a run: as much again, and at least 512 MiB. */
export function roomFor(size: number): number {
  return size + Math.max(size, 512 * 2 ** 20);
}

/**
 * An image handed to sql.js's in-memory file system without a copy, the file's storage being the
 * image's whole buffer; `headerWritten` says whether a write reached its first page since it was
 * last reset: the file system writes through `set` into its current storage, and only there.
 */
interface InPlaceFile {
  data: Uint8Array;
  storage: Uint8Array;
  headerWritten: boolean;
}

function inPlace(image: Uint8Array, roomy: boolean): InPlaceFile {
  const capacity = roomy ? image.buffer.byteLength - image.byteOffset : image.byteLength;
  const storage = new Uint8Array(image.buffer, image.byteOffset, capacity);
  // why: the file system keeps its own `slice` of the data it is given (a copy), and copies the file to
  // a 1.125x larger array each time it outgrows it: each a full copy of a 60 MB database, and its garbage.
  const data = new Uint8Array(image.buffer, image.byteOffset, image.byteLength);
  Object.defineProperty(data, "slice", { value: () => storage });
  const file: InPlaceFile = { data, storage, headerWritten: false };
  const write = Uint8Array.prototype.set;
  Object.defineProperty(storage, "set", {
    value(source: ArrayLike<number>, offset?: number) {
      if (offset === 0) file.headerWritten = true;
      write.call(storage, source, offset);
    },
  });
  return file;
}

let empty: Uint8Array | undefined;

/** The image of an empty database (its first page only), as SQLite writes it on a first commit, in a fresh buffer with room. */
function emptyImage(SQL: SqlJs): Uint8Array {
  if (!empty) {
    const db = new SQL.Database();
    db.exec("PRAGMA user_version = 0");
    empty = db.export();
    db.close();
  }
  const image = roomyImage(empty.byteLength, roomFor(0));
  image.set(empty);
  return image;
}

/** The version of SQLite compiled into sql.js. */
export async function sqlJsVersion(): Promise<string> {
  const db = await openSqlJs();
  const version = String(db.all("SELECT sqlite_version() AS v")[0]?.["v"]);
  db.close();
  return version;
}

function wrapDatabase(db: SqlJsDatabase, file: InPlaceFile | undefined): ImageDatabase {
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
    commitImage() {
      if (file) file.headerWritten = false;
      db.exec("COMMIT");
      const size = Number(db.exec("PRAGMA page_count")[0]?.values[0]?.[0]) * Number(db.exec("PRAGMA page_size")[0]?.values[0]?.[0]);
      // why: a commit always writes the first page (its change counter). Had the file system moved the file to a larger array
      // before that write, the write would not have reached the image's buffer; after it, only a page beyond the buffer's
      // end could move it. So the committed file is the buffer's first `size` bytes, unless one of these says otherwise.
      if (file?.headerWritten && size > 0 && size <= file.storage.byteLength && file.storage[18] === 1 && file.storage[19] === 1) {
        return file.storage.subarray(0, size);
      }
      return db.export();
    },
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
