import { createHash, randomBytes } from "node:crypto";
import { lstat, mkdir, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir, userInfo } from "node:os";
import path from "node:path";
import { deserialize, serialize } from "node:v8";

/**
 * What a pipeline file parses to before `${VAR}` substitution, kept between runs (a cron job parses the same
 * file every time; yaml costs ~0.1 s to load and parse it cold). An entry is named by a digest of the file's
 * exact text and of the parser that produced it (`parser`: the yaml version and the loading code), so it can
 * never stand for another text or another parse; the environment is not in it, because the substitution is
 * done again on every run. A file whose parse has any problem is never kept.
 */
export interface ParseCache {
  /** The kept tree of `text`, or undefined when there is none or it fails a check. */
  read(text: string): Promise<unknown>;
  /** Keeps `tree` for `text`; a failure to write only means the next run parses again. */
  write(text: string, tree: unknown): Promise<void>;
}

/**
 * The cache in `dir` (by default, one of the system's temporary directory, as Node's compile cache: engine/cli.ts),
 * or undefined where the user cannot be told (no entry in the user database).
 * why: trusted only as far as the user account is: the directory must be this user's, not a link, and closed to
 * everyone else (mode 0700), so only this user (or root) can have written an entry, as only they can write the
 * pipeline file; each entry carries a digest of its content and the name it was written under.
 */
export function parseCache(parser: string, dir?: string): ParseCache | undefined {
  let uid: number;
  try {
    uid = userInfo().uid;
  } catch {
    return undefined;
  }
  if (uid < 0) return undefined;
  dir ??= path.join(tmpdir(), `pipeline-runner-parsed-config-${uid}`);
  const nameOf = (text: string) => createHash("sha256").update(parser).update("\0").update(text).digest("hex");
  const ours = async (file: string, kind: "dir" | "file") => {
    const info = await lstat(file).catch(() => undefined);
    if (!info || info.uid !== uid || (kind === "dir" ? !info.isDirectory() || (info.mode & 0o077) !== 0 : !info.isFile())) return false;
    return true;
  };
  return {
    async read(text) {
      const name = nameOf(text);
      const file = path.join(dir, name);
      if (!(await ours(dir, "dir")) || !(await ours(file, "file"))) return undefined;
      try {
        const content = await readFile(file);
        const payload = content.subarray(32);
        if (!createHash("sha256").update(payload).digest().equals(content.subarray(0, 32))) return undefined;
        const [writtenAs, tree] = deserialize(payload) as [unknown, unknown];
        return writtenAs === name && isPlainTree(tree) ? tree : undefined;
      } catch {
        return undefined;
      }
    },
    async write(text, tree) {
      // why: what read would refuse is not written (a tree nested deeper than read follows, too deep to serialize).
      if (!isPlainTree(tree)) return;
      const file = path.join(dir, nameOf(text));
      const temporary = `${file}.${randomBytes(6).toString("hex")}`;
      try {
        const payload = serialize([path.basename(file), tree]);
        await mkdir(dir, { mode: 0o700 }).catch((error: NodeJS.ErrnoException) => {
          if (error.code !== "EEXIST") throw error;
        });
        if (!(await ours(dir, "dir"))) return;
        await writeFile(temporary, Buffer.concat([createHash("sha256").update(payload).digest(), payload]), { mode: 0o600, flag: "wx" });
        // why: renamed into place whole, so that a concurrent run reads the old entry, the new one, or none.
        await rename(temporary, file);
        await prune(dir);
      } catch {
        await rm(temporary, { force: true }).catch(() => undefined);
      }
    },
  };
}

/** The most entries kept: a file parsed by each run keeps one per version of it; tests, one per pipeline they write. */
const maxEntries = 200;

/** Removes the least recently written entries beyond {@link maxEntries} (and with them any left by a run that died writing). */
async function prune(dir: string): Promise<void> {
  const names = await readdir(dir);
  if (names.length <= maxEntries) return;
  const entries = await Promise.all(
    names.map(async (name) => ({
      file: path.join(dir, name),
      written: (await stat(path.join(dir, name)).catch(() => undefined))?.mtimeMs ?? 0,
    })),
  );
  entries.sort((a, b) => a.written - b.written);
  await Promise.all(entries.slice(0, entries.length - maxEntries).map(({ file }) => rm(file, { force: true })));
}

/** Whether a value holds only what a parsed pipeline file can (strings, numbers, booleans, null, arrays and plain objects), at most 1000 deep. */
function isPlainTree(value: unknown, depth = 0): boolean {
  if (depth > 1000) return false;
  if (value === null || typeof value === "string" || typeof value === "number" || typeof value === "boolean") return true;
  // why: a parsed file's lists have no holes and no other keys.
  if (Array.isArray(value)) return Object.keys(value).length === value.length && value.every((item) => isPlainTree(item, depth + 1));
  if (typeof value !== "object") return false;
  // why: written as the parse leaves them (without prototype), read back as plain objects.
  const prototype = Object.getPrototypeOf(value) as unknown;
  if (prototype !== Object.prototype && prototype !== null) return false;
  return Object.values(value).every((item) => isPlainTree(item, depth + 1));
}
