import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import { link, mkdir, open, readFile, readdir, rename, rm, stat, utimes } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { PipelineError } from "../errors.js";
import { removeStrayTemporaries } from "./store.js";

/** A held lock on a database file; release it once, in a finally. */
export interface DatabaseLock {
  /** What this run wrote in the lock file: who holds it. */
  readonly holderText: string;
  release(): Promise<void>;
}

interface Holder {
  pid: number;
  host: string;
  started_at: string;
}

/** How long a lock whose holder stopped refreshing it counts as held. */
export const staleLockMs = 15_000;

/**
 * Takes `<database>.lock` (created exclusively), waiting up to `timeoutMs` while another run holds
 * it. A lock whose holder is gone (same host and its pid is dead, or no heartbeat for
 * {@link staleLockMs}) is taken over. While held, the lock's mtime is refreshed every few seconds,
 * so runs in other containers sharing the volume can tell a live holder from a crashed one.
 */
export async function acquireLock(
  database: string,
  options: { timeoutMs: number; signal?: AbortSignal | undefined },
): Promise<DatabaseLock> {
  const file = `${database}.lock`;
  const me: Holder = { pid: process.pid, host: hostname(), started_at: new Date().toISOString() };
  const deadline = Date.now() + options.timeoutMs;
  await mkdir(path.dirname(path.resolve(file)), { recursive: true }).catch(() => undefined);
  for (;;) {
    try {
      const handle = await open(file, "wx", 0o644);
      const holderText = JSON.stringify(me) + "\n";
      await handle.writeFile(holderText);
      await handle.close();
      const heartbeat = setInterval(() => {
        const now = new Date();
        utimes(file, now, now).catch(() => undefined);
      }, staleLockMs / 5);
      heartbeat.unref();
      return {
        holderText,
        release: async () => {
          clearInterval(heartbeat);
          await rm(file, { force: true });
        },
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") {
        throw new PipelineError("E_LOCK", `cannot create the lock ${file}: ${(error as Error).message}`);
      }
    }
    const holder = await readHolder(file);
    if (holder && (await isStale(file, holder.holder))) {
      await takeOver(file, holder.text);
      continue;
    }
    if (Date.now() >= deadline) {
      const who = holder?.holder
        ? `pid ${holder.holder.pid} on ${holder.holder.host}, since ${holder.holder.started_at}`
        : holder
          ? `the lock file holds no readable record; it is taken over once not touched for ${staleLockMs / 1000} s`
          : "another run";
      throw new PipelineError(
        "E_LOCK",
        `${database} is in use by another run (${who}); waited ${Math.round(options.timeoutMs / 1000)} s (--lock-timeout). Nothing was changed.`,
        { exitCode: 3 },
      );
    }
    try {
      await sleep(100, undefined, { signal: options.signal });
    } catch {
      throw new PipelineError("E_ABORTED", "interrupted while waiting for the database lock; nothing was changed", { exitCode: 130 });
    }
  }
}

/** The lock's text and its holder; `holder` is undefined when the text is not a complete record (empty, cut short). */
async function readHolder(file: string): Promise<{ holder: Holder | undefined; text: string } | undefined> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch {
    // why: a lock removed right now; look again on the next turn.
    return undefined;
  }
  return { holder: parseHolder(text), text };
}

function parseHolder(text: string): Holder | undefined {
  try {
    const value = JSON.parse(text) as Partial<Holder> | null;
    return typeof value?.pid === "number" && typeof value.host === "string" ? (value as Holder) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Whether a lock's holder is gone: on this host with a dead pid, or no heartbeat for {@link staleLockMs}.
 * why: a lock with no readable record (ENOSPC while writing it, a kill right after creating it) has only the heartbeat rule;
 * one being written right now is fresh, so it is never taken from a run that is starting.
 */
async function isStale(file: string, holder: Holder | undefined): Promise<boolean> {
  if (holder && holder.host === hostname() && !isAlive(holder.pid)) return true;
  const info = await stat(file).catch(() => undefined);
  return info !== undefined && Date.now() - info.mtimeMs > staleLockMs;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Moves a stale lock aside, then checks it was the stale one (another run may have taken over first). */
async function takeOver(file: string, staleText: string): Promise<void> {
  const aside = `${file}.stale-${randomBytes(4).toString("hex")}`;
  try {
    await rename(file, aside);
  } catch {
    return;
  }
  const moved = await readFile(aside, "utf8").catch(() => "");
  // why: a lock with no readable record is told from another run's lock created a moment ago (empty until written) by its age, not its text.
  const fresh =
    parseHolder(staleText) === undefined &&
    (await stat(aside).then(
      (info) => Date.now() - info.mtimeMs <= staleLockMs,
      () => true,
    ));
  if (moved !== staleText || fresh) {
    // why: we moved a fresh lock another run had just taken; put it back unless a newer one is there (link never overwrites).
    await link(aside, file).catch(() => undefined);
  }
  await rm(aside, { force: true });
}

/**
 * Removes stale locks that a run killed in the middle of a take-over left moved aside
 * (`<db>.lock.stale-*`). Call while holding `lock`. One holding this run's own record is kept:
 * another run moved it by mistake and is about to put it back.
 */
export async function removeLocksLeftAside(database: string, lock: DatabaseLock): Promise<number> {
  const directory = path.dirname(path.resolve(database));
  const aside = `${path.basename(database)}.lock.stale-`;
  const names = await readdir(directory).catch(() => [] as string[]);
  const strays: string[] = [];
  for (const name of names.filter((name) => name.startsWith(aside))) {
    const text = await readFile(path.join(directory, name), "utf8").catch(() => undefined);
    if (text !== undefined && text !== lock.holderText) strays.push(name);
  }
  await Promise.all(strays.map((name) => rm(path.join(directory, name), { force: true })));
  return strays.length;
}

/**
 * The run lock of a database file: `<database>.lock` (see {@link acquireLock}), then what runs
 * killed at the wrong moment left beside the file: a lock moved aside, temporaries of the database.
 */
export async function lockFileBeside(
  database: string,
  options: { timeoutMs: number; signal?: AbortSignal | undefined },
): Promise<DatabaseLock> {
  const lock = await acquireLock(database, options);
  try {
    await removeLocksLeftAside(database, lock);
    await removeStrayTemporaries(database);
    return lock;
  } catch (error) {
    await lock.release();
    throw error;
  }
}
