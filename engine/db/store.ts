import { randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { mkdir, open, readdir, rename, rm, stat } from "node:fs/promises";
import path from "node:path";
import { PipelineError } from "../errors.js";
import { canonicalPath, fileKind } from "../paths.js";
import { identityOf } from "./commit-mark.js";
import { roomFor, roomyImage } from "./sqljs.js";

/**
 * The real path of a database, resolved once, up front: symlinks followed, so the save writes
 * through a link to its target and the lock is on the real file. A path that exists and is not a
 * regular file (a FIFO, a device, a directory) is refused without being opened.
 */
export async function resolveDatabasePath(file: string): Promise<string> {
  const real = canonicalPath(file);
  const info = await stat(real).catch(() => undefined);
  if (info && !info.isFile()) {
    throw new PipelineError(
      "E_DB",
      `${file} is ${fileKind(info)}: the database must be a regular SQLite file (or a path where none exists yet); name another with --db or database:`,
      { exitCode: 2 },
    );
  }
  return real;
}

/**
 * Reads the database file image, or undefined when there is no file yet. With `roomy`, the image
 * is read into a buffer with room to grow (`openSqlJs` with `roomy`).
 */
export async function readDatabaseFile(file: string, options: { roomy?: boolean } = {}): Promise<Uint8Array | undefined> {
  try {
    // why: O_NONBLOCK and fstat before reading, so that a FIFO or a device is refused instead of waited on or read forever.
    const handle = await open(file, constants.O_RDONLY | constants.O_NONBLOCK);
    try {
      const info = await handle.stat();
      if (!info.isFile()) throw new Error(`it is ${fileKind(info)}, not a regular file`);
      if (!options.roomy) {
        const bytes = await handle.readFile();
        // why: a view of the bytes read, not a copy: a 60 MB database would otherwise be held twice while it opens.
        return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      }
      // why: the file is read until its end, as readFile does, should it have grown since fstat.
      let image = roomyImage(info.size, roomFor(info.size));
      let size = 0;
      for (;;) {
        if (size === image.buffer.byteLength) throw new Error("it grew while being read");
        const into = new Uint8Array(image.buffer, size);
        const { bytesRead } = await handle.read(into, 0, into.byteLength, size);
        if (bytesRead === 0) break;
        size += bytesRead;
      }
      image = new Uint8Array(image.buffer, 0, size);
      return image;
    } finally {
      await handle.close();
    }
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new PipelineError("E_DB", `cannot read the database ${file}: ${(error as Error).message}`, { cause: error });
  }
}

/**
 * Replaces the database file atomically: the image goes to a temporary file in the same
 * directory, is fsynced, then renamed over the old file, and the directory is fsynced.
 * A crash at any point leaves either the old file or the new one, never a mix.
 */
export async function saveDatabaseFile(file: string, image: Uint8Array): Promise<void> {
  try {
    await writeFileAtomically(file, image);
  } catch (error) {
    throw new PipelineError("E_SAVE", `cannot save the database ${file}: ${(error as Error).message}; the previous file is unchanged`, {
      cause: error,
    });
  }
}

/** Writes a file by way of a fsynced temporary file in the same directory, renamed over it. */
async function writeFileAtomically(file: string, data: Uint8Array | string): Promise<void> {
  const staged = await stageFile(file, data);
  try {
    await staged.commit();
  } catch (error) {
    await staged.discard();
    throw error;
  }
}

/** A file written and fsynced under a temporary name beside its target, waiting to be put in place. */
export interface StagedFile {
  /** Renames it over the target and fsyncs the directory. */
  commit(): Promise<void>;
  /** Removes the temporary file if it is still there; harmless after commit. */
  discard(): Promise<void>;
}

/** Writes `data` to a temporary file beside `file` (`.<name>.tmp-<random>`) and fsyncs it; nothing replaces `file` yet. */
export async function stageFile(file: string, data: Uint8Array | string): Promise<StagedFile> {
  const directory = path.dirname(path.resolve(file));
  const temporary = path.join(directory, `${temporaryPrefix(file)}${randomBytes(6).toString("hex")}`);
  // why: a failure to remove the temporary file must not hide the error that made us remove it.
  const discard = () => rm(temporary, { force: true }).catch(() => undefined);
  try {
    // why: renaming over a directory fails, and only at commit; say so before anything is written.
    if ((await stat(file).catch(() => undefined))?.isDirectory()) throw new Error("it is a directory");
    await mkdir(directory, { recursive: true });
    const handle = await open(temporary, "wx", 0o644);
    try {
      await handle.writeFile(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
  } catch (error) {
    await discard();
    throw error;
  }
  return {
    commit: async () => {
      await rename(temporary, file);
      await syncDirectory(directory);
    },
    discard,
  };
}

/** How the temporary files of {@link stageFile} for `file` begin. */
export function temporaryPrefix(file: string): string {
  return `.${path.basename(file)}.tmp-`;
}

/** Removes temporary files for `file` left by a run killed while writing it; call while holding the lock. */
export async function removeStrayTemporaries(file: string): Promise<number> {
  const directory = path.dirname(path.resolve(file));
  const names = await readdir(directory).catch(() => [] as string[]);
  const strays = names.filter((name) => name.startsWith(temporaryPrefix(file)));
  await Promise.all(strays.map((name) => rm(path.join(directory, name), { force: true })));
  return strays.length;
}

async function syncDirectory(directory: string): Promise<void> {
  const handle = await open(directory, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** What identifies one version of a file on disk: a write by anyone changes it. */
export interface FileIdentity {
  size: number;
  mtimeMs: number;
  ino: number;
  /**
   * The inode's change time: every write moves it, and so does setting the modification time back
   * (touch, utimes), which no program can do to this one short of changing the system's clock.
   */
  ctimeMs: number;
}

/** The identity of a file now, or undefined when it does not exist. */
export async function fileIdentity(file: string): Promise<FileIdentity | undefined> {
  const info = await stat(file).catch((error: NodeJS.ErrnoException) => {
    if (error.code === "ENOENT") return undefined;
    throw error;
  });
  return info && identityOf(info);
}

/**
 * Refuses a database that another SQLite program is in the middle of using: a non-empty `-wal`
 * holds committed changes not yet in the main file, and a `-journal` is a transaction that
 * program has not finished (or crashed in). Loading the main file alone would lose or mix them.
 */
export async function checkNoSqliteSidecars(file: string): Promise<void> {
  for (const [suffix, what, fix] of [
    [
      "-wal",
      "a write-ahead log from another SQLite program: its latest changes are not in the main file yet",
      "PRAGMA wal_checkpoint(TRUNCATE);",
    ],
    [
      "-journal",
      "a rollback journal: another SQLite program is writing it, or crashed while writing",
      "SELECT count(*) FROM sqlite_schema;",
    ],
  ] as const) {
    const info = await stat(file + suffix).catch(() => undefined);
    if (info && info.size > 0) {
      throw new PipelineError(
        "E_DB",
        `${file} has ${what} (${path.basename(file)}${suffix}). Close that program, or run \`sqlite3 ${file} '${fix}'\`, then run again. Nothing was changed.`,
      );
    }
  }
}
