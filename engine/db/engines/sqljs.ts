import { constants } from "node:fs";
import { open, stat, type FileHandle } from "node:fs/promises";
import type { DatabaseSync } from "node:sqlite";
import { nodeSqlite } from "./node-sqlite.js";
import { PipelineError } from "../../errors.js";
import { openSqlJs, sqlJsVersion, type ImageDatabase } from "../sqljs.js";
import { checkNoSqliteSidecars, fileIdentity, readDatabaseFile, stageFile, type FileIdentity } from "../store.js";
import { journalBeside } from "../failure-journal.js";
import { lockFileBeside } from "../lock.js";
import type { Engine, OpenOptions, Transaction } from "./engine.js";
import { isBusy, sqliteError, wrapDatabase as wrapNativeDatabase } from "./native.js";
import type { SqlDatabase } from "../database.js";
import { readFirst } from "../read-first.js";
import { recordMark, sameIdentity, tablesCheckedAtMark } from "../commit-mark.js";
import { hasForeignKeyActions } from "../constraints.js";

/**
 * The sql.js engine (the design card's): the file is loaded whole into memory, the steps run
 * there, and a run that commits replaces the file by rename. A run reads the file through
 * node:sqlite until it knows it writes (engine/db/read-first.ts), and only then loads it, refusing
 * a file changed since the run began; a run that writes nothing never loads sql.js. The rename
 * happens while the runner holds SQLite's own write lock on the live file, after checking nobody
 * wrote it since the run began; the replaced file's header is then overwritten, so a program that
 * still has it open gets an error instead of writing into a file nobody will read again.
 */
export const sqlJsEngine: Engine = {
  name: "sqljs",
  version: async () => `${await sqlJsVersion()} (sql.js)`,
  lock: lockFileBeside,
  journal: journalBeside,
  async begin(file, options) {
    if (!options.preview) await checkNoSqliteSidecars(file);
    const loaded = await fileIdentity(file);
    const header = loaded && !options.preview && readFirstAvailable() ? await readHeader(file) : undefined;
    if (header?.counter === undefined || header.wal) {
      const image = await readDatabaseFile(file, { roomy: true });
      const counter = changeCounter(image);
      const wal = image !== undefined && image.byteLength > 19 && (image[18] === 2 || image[19] === 2);
      const db = await openWritable(file, image, options);
      return transaction(file, db, () => db, { identity: loaded, counter }, !wal, options);
    }
    // why: an unchanged run (every source the same) only reads, through node:sqlite on the file; sql.js and the image are
    // loaded once the run knows it writes (docs/performance.md).
    const reader = openReader(file, options);
    const deferred = readFirst(reader, wrapNativeDatabase(reader, file));
    const loadedAs: Loaded = { identity: loaded, counter: header.counter };
    let image: ImageDatabase | undefined;
    const readyToWrite = async () => {
      if (image) return;
      const now = await fileIdentity(file);
      const bytes = await readDatabaseFile(file, { roomy: true });
      // why: the run's decisions were read from the file as it was when the run began; an image of anything
      // since is refused, as the save refuses it.
      await refuseIfChanged(file, loadedAs, now, changeCounter(bytes));
      const opened = await openWritable(file, bytes, options);
      try {
        deferred.write(opened);
      } catch (error) {
        opened.close();
        throw error;
      }
      image = opened;
    };
    const base = await transaction(file, deferred.db, () => image, loadedAs, true, options);
    return {
      ...base,
      readyToWrite,
      async commit(checkedTables) {
        await readyToWrite();
        await base.commit(checkedTables);
      },
      close() {
        deferred.close();
        base.close();
      },
    };
  },
  async read(file) {
    return openImage(file, await readDatabaseFile(file));
  },
};

/**
 * The run's transaction on `db`, committed from the image `image()` gives (the database `db` is or
 * hands over to); `markable`: the file's header can vouch for it (not in WAL mode).
 */
async function transaction(
  file: string,
  db: SqlDatabase,
  image: () => ImageDatabase | undefined,
  loaded: Loaded,
  markable: boolean,
  options: OpenOptions,
): Promise<Transaction> {
  const { identity, counter } = loaded;
  return {
    db,
    soundTables:
      identity === undefined
        ? "all"
        : await tablesCheckedAtMark(file, markable && counter !== undefined ? { ...identity, counter } : undefined),
    async commit(checkedTables) {
      const saved = image()!.commitImage();
      await replaceFile(file, saved, loaded, options);
      await recordMark(file, changeCounter(saved), checkedTables);
    },
    async rollback() {
      try {
        image()?.exec("ROLLBACK");
      } catch {
        // why: no transaction left (committed in memory, then the save failed): the file was never replaced.
      }
    },
    close: () => image()?.close(),
  };
}

/** The image opened in sql.js, in the run's transaction. */
async function openWritable(file: string, image: Uint8Array | undefined, options: OpenOptions): Promise<ImageDatabase> {
  const db = await openImage(file, image, { roomy: true });
  // why: sorts and GROUP BYs of the analyses spill to temporary files, which sql.js keeps in memory too, in arrays copied
  // to larger ones as they grow; SQLite's own temporary store costs less (1M rows: analyses 1.55 -> 1.25 s CPU, less memory).
  db.exec("PRAGMA temp_store = MEMORY");
  if (options.runsScripts === false && !hasForeignKeyActions(db)) {
    // why: a run's foreign keys are verified before its commit, the only way to one (checkForeignKeys in engine/run/record.ts);
    // SQLite's enforcement looked each written row's parents up again. A key with an action acts only where it is enforced.
    db.exec("PRAGMA foreign_keys = OFF");
    db.exec("BEGIN");
  } else {
    db.exec("BEGIN");
    // why: a replace of a parent table deletes then re-inserts; references are checked at commit.
    db.exec("PRAGMA defer_foreign_keys = ON");
  }
  return db;
}

/** Whether node:sqlite can read the file for the run until it writes (below Node 24.10 it has no authorizer). */
function readFirstAvailable(): boolean {
  const sqlite = process.getBuiltinModule?.("node:sqlite") as typeof import("node:sqlite") | undefined;
  return typeof sqlite?.DatabaseSync.prototype.setAuthorizer === "function";
}

/** The regular file's header: its change counter, and whether it is in WAL mode; undefined for anything else (loaded as before, which says what is wrong). */
async function readHeader(file: string): Promise<{ counter: number | undefined; wal: boolean } | undefined> {
  let handle: FileHandle | undefined;
  try {
    handle = await open(file, constants.O_RDONLY | constants.O_NONBLOCK);
    if (!(await handle.stat()).isFile()) return undefined;
    const header = Buffer.alloc(28);
    const { bytesRead } = await handle.read(header, 0, 28, 0);
    if (bytesRead < 28) return undefined;
    return { counter: header.readUInt32BE(24), wal: header[18] === 2 || header[19] === 2 };
  } catch {
    return undefined;
  } finally {
    await handle?.close();
  }
}

/**
 * The file opened read-only through node:sqlite, foreign keys not enforced (nothing is written through it), temporary tables in
 * memory, and "..." read as sql.js's build reads it (a string where no column has that name), so that the run's SQL means the same
 * before and after it writes.
 */
function openReader(file: string, options: OpenOptions): DatabaseSync {
  let reader: DatabaseSync | undefined;
  try {
    reader = new (nodeSqlite().DatabaseSync)(file, {
      readOnly: true,
      timeout: options.busyTimeoutMs,
      enableForeignKeyConstraints: false,
      enableDoubleQuotedStringLiterals: true,
    });
    reader.exec("PRAGMA temp_store = MEMORY");
    reader.prepare("SELECT count(*) FROM sqlite_schema").get();
    return reader;
  } catch (error) {
    reader?.close();
    // why: another program's lock held past --lock-timeout is the lock error, as on the native engine.
    if (isBusy(error)) throw sqliteError(error, file, options);
    throw new PipelineError("E_DB", `${file} is not a readable SQLite database: ${(error as Error).message}`, { cause: error });
  }
}

async function openImage(file: string, image: Uint8Array | undefined, options: { roomy?: boolean } = {}): Promise<ImageDatabase> {
  try {
    const db = await openSqlJs(image, options);
    db.all("SELECT count(*) FROM sqlite_schema");
    return db;
  } catch (error) {
    throw new PipelineError("E_DB", `${file} is not a readable SQLite database: ${(error as Error).message}`, { cause: error });
  }
}

/** What the file was when the run loaded it. */
interface Loaded {
  identity: FileIdentity | undefined;
  /** The header's file change counter, which every SQLite commit in rollback-journal mode increments. */
  counter: number | undefined;
}

/** What the replaced file's header becomes: not an SQLite header, so a program that had it open gets "file is not a database". */
const orphanHeader = Buffer.alloc(100, 0);
orphanHeader.write("pipeline-runner replaced this database file: reopen it\n");

/**
 * Stages the image beside the file (written and fsynced), then takes SQLite's write lock on the
 * live file (BEGIN IMMEDIATE, waiting for a writer up to the busy timeout), checks nobody wrote
 * it since it was loaded, renames the image over it and spoils the old file's header, and only
 * then releases the lock.
 */
async function replaceFile(file: string, image: Uint8Array, loaded: Loaded, options: OpenOptions): Promise<void> {
  let staged;
  try {
    staged = await stageFile(file, image);
  } catch (error) {
    throw new PipelineError("E_SAVE", `cannot save the database ${file}: ${(error as Error).message}; the previous file is unchanged`, {
      cause: error,
    });
  }
  let guard: DatabaseSync | undefined;
  let old: FileHandle | undefined;
  try {
    if (loaded.identity !== undefined && (await fileIdentity(file)) !== undefined) {
      // why: below Node 22.5 there is no node:sqlite to hold SQLite's write lock; the check and rename still run, as before it existed (doctor says so).
      if (process.getBuiltinModule?.("node:sqlite") !== undefined) guard = await writeLock(file, options);
      old = await open(file, "r+");
    }
    await refuseIfChanged(file, loaded, await fileIdentity(file), old ? await liveCounter(old) : undefined);
    try {
      await staged.commit();
    } catch (error) {
      throw new PipelineError("E_SAVE", `cannot save the database ${file}: ${(error as Error).message}; the previous file is unchanged`, {
        cause: error,
      });
    }
    // why: SQLite already refuses writes through a renamed-over file (SQLITE_READONLY_DBMOVED); spoiling its header makes reads fail too.
    // A file that still has another name (a hard link kept as a backup) is left alone.
    if (old && (await old.stat()).nlink === 0) {
      await old.write(orphanHeader, 0, orphanHeader.length, 0);
      await old.sync();
    }
  } finally {
    await old?.close();
    if (guard?.isOpen) {
      if (guard.isTransaction) guard.exec("ROLLBACK");
      guard.close();
    }
    await staged.discard();
  }
}

/** SQLite's write lock on the live file, taken as `sqlite3` would: a writer in progress is waited for. */
async function writeLock(file: string, options: OpenOptions): Promise<DatabaseSync> {
  const guard = new (nodeSqlite().DatabaseSync)(file, { timeout: options.busyTimeoutMs });
  try {
    guard.exec("BEGIN IMMEDIATE");
    return guard;
  } catch (error) {
    guard.close();
    const busy = ((error as { errcode?: number }).errcode ?? 0) % 256 === 5;
    throw new PipelineError(
      busy ? "E_LOCK" : "E_SAVE",
      busy
        ? `${file} is being written by another program; waited ${Math.round(options.busyTimeoutMs / 1000)} s (--lock-timeout) to save. Nothing was saved.`
        : `cannot lock ${file} to save it: ${(error as Error).message}; nothing was saved`,
      { exitCode: busy ? 3 : 1, cause: error },
    );
  }
}

/** Refuses a file that is not as the run found it: `now`, its identity, and `counter`, its header's change counter, taken by the caller. */
async function refuseIfChanged(file: string, loaded: Loaded, now: FileIdentity | undefined, counter: number | undefined): Promise<void> {
  const wal = await stat(`${file}-wal`).catch(() => undefined);
  const same =
    now === undefined
      ? loaded.identity === undefined
      : loaded.identity !== undefined &&
        // why: not the change time: an SQLite commit moves the counter, and whatever else wrote bytes is replaced by the save,
        // not lost to a commit (the commit mark, engine/db/commit-mark.ts, keeps it).
        sameIdentity(loaded.identity, now, { changeTime: false }) &&
        counter === loaded.counter &&
        !(wal && wal.size > 0);
  if (same) return;
  throw new PipelineError(
    "E_CHANGED",
    `${file} was changed by another program while this run was in progress (${now ? `now ${now.size} bytes, modified ${new Date(now.mtimeMs).toISOString()}${wal && wal.size > 0 ? ", with a write-ahead log" : ""}` : "it was deleted"}); this run's result was not saved, so that change is kept. Run again, or use --engine native, which waits for other writers instead.`,
  );
}

function changeCounter(image: Uint8Array | undefined): number | undefined {
  if (!image || image.byteLength < 28) return undefined;
  return new DataView(image.buffer, image.byteOffset, image.byteLength).getUint32(24);
}

async function liveCounter(handle: FileHandle): Promise<number | undefined> {
  const header = Buffer.alloc(28);
  const { bytesRead } = await handle.read(header, 0, 28, 0);
  return bytesRead < 28 ? undefined : header.readUInt32BE(24);
}
