import { closeSync, existsSync, fstatSync, openSync, readSync, statSync, type Stats } from "node:fs";
import { readFile, rm, writeFile } from "node:fs/promises";
import type { FileIdentity } from "./store.js";

/**
 * What the database file was right after this runner's last commit (whose tables it had checked):
 * its identity (inode, size, modification and change times) and SQLite's file change counter (header offset
 * 24), which every commit in rollback-journal mode increments, whatever program makes it.
 */
export interface CommitMark extends FileIdentity {
  counter: number;
}

/** A {@link CommitMark} as recorded: with the tables that commit had checked (or found new). */
interface RecordedMark extends CommitMark {
  tables: string[];
}

/** The identity of a file from its stat. */
export function identityOf(info: Stats): FileIdentity {
  return { size: info.size, mtimeMs: info.mtimeMs, ino: info.ino, ctimeMs: info.ctimeMs };
}

/**
 * Whether two identities are the same version of the file; one recorded by an older runner (without a change time) never is.
 * `changeTime: false` leaves the change time out, which a chmod or a hard-link backup moves too.
 */
export function sameIdentity(a: Partial<FileIdentity>, b: FileIdentity, options: { changeTime: boolean } = { changeTime: true }): boolean {
  return a.size === b.size && a.mtimeMs === b.mtimeMs && a.ino === b.ino && (!options.changeTime || a.ctimeMs === b.ctimeMs);
}

/** The file beside the database that keeps its {@link CommitMark}. */
export function commitMarkFile(database: string): string {
  return `${database}.checked`;
}

/**
 * The mark of `database` as it is now, or undefined when it cannot vouch for the file: absent, too
 * short for a header, in WAL mode (a commit there changes neither the header nor the main file),
 * or with a non-empty `-wal` beside it. `fd`, a descriptor the caller holds open on the file, is
 * read instead of opening it: closing any descriptor of a file drops every POSIX lock this process
 * holds on it, SQLite's included, so a caller holding SQLite's lock must pass one it closes later.
 */
export function markOf(database: string, fd?: number): CommitMark | undefined {
  if (fd === undefined && !existsSync(database)) return undefined;
  const wal = statIfAny(`${database}-wal`);
  if (wal && wal.size > 0) return undefined;
  const own = fd ?? openSync(database, "r");
  try {
    const info = fstatSync(own);
    const header = Buffer.alloc(28);
    if (readSync(own, header, 0, 28, 0) < 28) return undefined;
    // why: bytes 18 and 19 (write and read format versions) are 2 in WAL mode.
    if (header[18] === 2 || header[19] === 2) return undefined;
    return { ...identityOf(info), counter: header.readUInt32BE(24) };
  } finally {
    if (fd === undefined) closeSync(own);
  }
}

function statIfAny(file: string): Stats | undefined {
  try {
    return statSync(file);
  } catch {
    return undefined;
  }
}

/**
 * The tables the last recorded commit had checked, when `now` (the file as the run found it) is
 * what that mark says: nobody wrote the file since. Empty otherwise.
 */
export async function tablesCheckedAtMark(database: string, now: CommitMark | undefined): Promise<Set<string>> {
  if (!now) return new Set();
  const recorded = await readFile(commitMarkFile(database), "utf8").then(
    (text) => parsed(text),
    () => undefined,
  );
  const same = recorded !== undefined && sameIdentity(recorded, now) && recorded.counter === now.counter && Array.isArray(recorded.tables);
  return new Set(same ? recorded.tables!.map(String) : []);
}

/**
 * Records the mark of `database` just after a commit whose change counter is `counter` and which
 * had checked `tables`; when the file already holds another counter (another program committed in
 * between), or no mark can be taken, the old mark is removed instead, so the next run checks.
 * Never throws: a mark that cannot be written only costs the next run its check.
 */
export async function recordMark(database: string, counter: number | undefined, tables: readonly string[], fd?: number): Promise<void> {
  const target = commitMarkFile(database);
  try {
    const mark = markOf(database, fd);
    if (mark && counter !== undefined && mark.counter === counter && tables.length > 0) {
      await writeFile(target, JSON.stringify({ ...mark, tables: [...tables] } satisfies RecordedMark) + "\n");
    } else await rm(target, { force: true });
  } catch {
    await rm(target, { force: true }).catch(() => undefined);
  }
}

function parsed(text: string): Partial<RecordedMark> | undefined {
  try {
    return JSON.parse(text) as Partial<RecordedMark>;
  } catch {
    return undefined;
  }
}
