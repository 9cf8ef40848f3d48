import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, test } from "vitest";
import { openSqlJs, roomyImage, type ImageDatabase } from "../engine/db/sqljs.js";
import { readDatabaseFile } from "../engine/db/store.js";
import { sqlite } from "./helpers/workspace.js";

// The sqljs engine keeps the database file in a buffer with room to grow and, when it can prove the
// committed file is that buffer's first bytes, saves those instead of sql.js's export (a copy).
// Whichever it saves, the image must hold exactly what sql.js's own export holds.

const directory = mkdtempSync(path.join(tmpdir(), "sqljs-image-"));
afterAll(() => rmSync(directory, { recursive: true, force: true }));

/**
 * The header's file change counter (offset 24), schema cookie (40) and version-valid-for (92): sql.js's
 * export is a backup into a new file, which counts its own commits and schema changes from there.
 */
const counterOffsets = [24, 25, 26, 27, 40, 41, 42, 43, 92, 93, 94, 95];

/** The bytes of `image` that differ from `expected`, the counters apart. */
function differences(image: Uint8Array, expected: Uint8Array): number[] {
  expect(image.byteLength).toBe(expected.byteLength);
  const differing: number[] = [];
  for (let i = 0; i < image.byteLength; i++) if (image[i] !== expected[i] && !counterOffsets.includes(i)) differing.push(i);
  return differing;
}

/** Inserts `rows` rows of about 100 bytes, in batches, with a batch rolled back to a savepoint now and then. */
function fill(db: ImageDatabase, rows: number, from = 0): void {
  const insert = db.prepare("INSERT INTO t (id, body) VALUES (?, ?)");
  for (let i = from; i < from + rows; i++) {
    if (i % 1000 === 0) db.exec("SAVEPOINT batch");
    insert.run([i, `row ${i} `.padEnd(100, "x")]);
    if (i % 1000 === 999) db.exec(i % 5000 === 999 ? "ROLLBACK TO batch; RELEASE batch" : "RELEASE batch");
  }
  insert.free();
}

/** Commits, and checks the image against sql.js's export of the same database; returns the image. */
function commitAndCompare(db: ImageDatabase): Uint8Array {
  const image = db.commitImage();
  expect(differences(image, db.export())).toEqual([]);
  return image;
}

function saved(name: string, image: Uint8Array): string {
  const file = path.join(directory, name);
  writeFileSync(file, image);
  return file;
}

describe("the image the sqljs engine saves", () => {
  test("a new database that grows within its room is saved from its own buffer, with what sql.js exports", async () => {
    const db = await openSqlJs(undefined, { roomy: true });
    db.exec("BEGIN; CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)");
    fill(db, 30_000);
    const image = commitAndCompare(db);
    // why: no copy: the image is a view of the buffer the database lived in.
    expect(image.buffer.byteLength).toBeGreaterThan(image.byteLength);
    const file = saved("new.db", image);
    expect(sqlite(file, "PRAGMA integrity_check; SELECT count(*), sum(id) FROM t")).toBe(`ok\n24000|${sumOfKept(30_000)}`);
    db.close();
  });

  test("a database read from its file and changed keeps counting commits in its header", async () => {
    const db = await openSqlJs(undefined, { roomy: true });
    db.exec("BEGIN; CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)");
    fill(db, 5_000);
    const file = saved("read.db", commitAndCompare(db));
    db.close();
    const before = sqlite(file, "SELECT count(*) FROM t");
    const image = (await readDatabaseFile(file, { roomy: true }))!;
    const counter = Buffer.from(image.buffer, image.byteOffset, 28).readUInt32BE(24);
    const again = await openSqlJs(image, { roomy: true });
    again.exec("BEGIN");
    fill(again, 20_000, 5_000);
    const next = commitAndCompare(again);
    expect(next.buffer).toBe(image.buffer);
    expect(Buffer.from(next.buffer, next.byteOffset, 28).readUInt32BE(24)).toBe(counter + 1);
    const changed = saved("read.db", next);
    expect(sqlite(changed, "PRAGMA integrity_check; SELECT count(*) FROM t")).toBe(`ok\n${Number(before) + 16_000}`);
    again.close();
  });

  test("a database that outgrows its room, while it runs or while it commits, is saved from sql.js's export", async () => {
    for (const cacheKiB of [2_000, 200_000]) {
      // why: with a large cache nothing is written before the commit, which writes the first page, then grows the file past the room.
      const seed = await openSqlJs(undefined, { roomy: true });
      seed.exec("BEGIN; CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)");
      const first = seed.commitImage();
      const small = roomyImage(first.byteLength, first.byteLength + 64 * 1024);
      small.set(first);
      seed.close();
      const db = await openSqlJs(small, { roomy: true });
      db.exec(`PRAGMA cache_size = -${cacheKiB}; BEGIN`);
      fill(db, 30_000);
      const image = commitAndCompare(db);
      expect(image.buffer).not.toBe(small.buffer);
      expect(sqlite(saved(`outgrown-${cacheKiB}.db`, image), "PRAGMA integrity_check; SELECT count(*), sum(id) FROM t")).toBe(
        `ok\n24000|${sumOfKept(30_000)}`,
      );
      db.close();
    }
  });
});

/** The sum of the ids `fill` keeps out of `rows`: every fifth batch of 1 000 is rolled back. */
function sumOfKept(rows: number): number {
  let sum = 0;
  for (let i = 0; i < rows; i++) if (Math.floor(i / 1000) % 5 !== 0) sum += i;
  return sum;
}
