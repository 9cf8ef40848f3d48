import { randomBytes } from "node:crypto";
import { mkdir, open, readFile, rename, rm, stat } from "node:fs/promises";
import path from "node:path";
import { PipelineError } from "../errors.js";

/** Reads the database file image, or undefined when there is no file yet. */
export async function readDatabaseFile(file: string): Promise<Uint8Array | undefined> {
  try {
    return new Uint8Array(await readFile(file));
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
export async function writeFileAtomically(file: string, data: Uint8Array | string): Promise<void> {
  const directory = path.dirname(path.resolve(file));
  const temporary = path.join(directory, `.${path.basename(file)}.tmp-${randomBytes(6).toString("hex")}`);
  try {
    await mkdir(directory, { recursive: true });
    const handle = await open(temporary, "wx", 0o644);
    try {
      await handle.writeFile(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temporary, file);
    await syncDirectory(directory);
  } catch (error) {
    await rm(temporary, { force: true });
    throw error;
  }
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
}

/** The identity of a file now, or undefined when it does not exist. */
export async function fileIdentity(file: string): Promise<FileIdentity | undefined> {
  const info = await stat(file).catch((error: NodeJS.ErrnoException) => {
    if (error.code === "ENOENT") return undefined;
    throw error;
  });
  return info && { size: info.size, mtimeMs: info.mtimeMs, ino: info.ino };
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
