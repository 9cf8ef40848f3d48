import { randomBytes } from "node:crypto";
import { mkdir, open, readFile, rename, rm } from "node:fs/promises";
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
