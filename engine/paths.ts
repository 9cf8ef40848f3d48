import {
  closeSync,
  constants,
  fstatSync,
  lstatSync,
  openSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  statSync,
  type Stats,
} from "node:fs";
import path from "node:path";

/**
 * The path a write to `file` lands on: absolute, `..` and symlinks resolved (a dangling link is
 * followed to where it points), with the part that does not exist yet kept as written.
 */
export function canonicalPath(file: string, depth = 0): string {
  const absolute = path.resolve(file);
  const rest: string[] = [];
  let head = absolute;
  for (;;) {
    try {
      return path.join(realpathSync(head), ...rest);
    } catch {
      const link = depth < 40 ? readLink(head) : undefined;
      if (link !== undefined) return path.join(canonicalPath(path.resolve(path.dirname(head), link), depth + 1), ...rest);
    }
    const parent = path.dirname(head);
    if (parent === head) return absolute;
    rest.unshift(path.basename(head));
    head = parent;
  }
}

function readLink(file: string): string | undefined {
  try {
    return lstatSync(file).isSymbolicLink() ? readlinkSync(file) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Whether two paths may name the same file: the same canonical path in any case (a case-insensitive
 * file system makes `Sales.db` and `sales.db` one file), or, both existing, the same inode (a hard link).
 */
export function sameFile(a: string, b: string): boolean {
  const [ca, cb] = [canonicalPath(a), canonicalPath(b)];
  if (ca.toLowerCase() === cb.toLowerCase()) return true;
  try {
    const [sa, sb] = [statSync(ca), statSync(cb)];
    return sa.dev === sb.dev && sa.ino === sb.ino;
  } catch {
    return false;
  }
}

/**
 * Keys under which a file is known, such that two paths name the same file when they share one:
 * its canonical path in lower case, and its device and inode when it exists. Lets many paths be
 * compared through a Map instead of pair by pair.
 */
export function fileKeys(file: string): string[] {
  const canonical = canonicalPath(file);
  const keys = [`path:${canonical.toLowerCase()}`];
  try {
    const info = statSync(canonical);
    keys.push(`inode:${info.dev}:${info.ino}`);
  } catch {
    // why: a file that does not exist yet is known by its path only.
  }
  return keys;
}

/** Whether `file` lies in `directory` (compared like {@link sameFile}) with a name starting with `prefix`, any case. */
export function isNamedLike(file: string, directory: string, prefix: string): boolean {
  const canonical = canonicalPath(file);
  return sameFile(path.dirname(canonical), directory) && path.basename(canonical).toLowerCase().startsWith(prefix.toLowerCase());
}

/** What a path that is not a regular file is, for a message: "a FIFO", "a directory", "a device", "a socket". */
export function fileKind(info: Stats): string {
  if (info.isDirectory()) return "a directory";
  if (info.isFIFO()) return "a FIFO";
  if (info.isCharacterDevice() || info.isBlockDevice()) return "a device";
  if (info.isSocket()) return "a socket";
  return info.isFile() ? "a regular file" : "not a regular file";
}

/** Thrown by {@link readRegularFileSync} for a path that is not a regular file; the message says what it is. */
export class NotARegularFileError extends Error {
  override readonly name = "NotARegularFileError";
}

/**
 * Reads a regular file as UTF-8. A FIFO, a device or a directory is refused without blocking
 * (opened with O_NONBLOCK, then checked with fstat before any read).
 */
export function readRegularFileSync(file: string): string {
  const fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const info = fstatSync(fd);
    if (!info.isFile()) throw new NotARegularFileError(`it is ${fileKind(info)}, not a regular file`);
    return readFileSync(fd, "utf8");
  } finally {
    closeSync(fd);
  }
}
