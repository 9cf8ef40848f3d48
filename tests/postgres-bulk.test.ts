import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, test } from "vitest";
import type { BulkFate } from "../engine/db/database.js";
// why: the engines' table first; imported first, postgres.ts reaches it through a cycle before postgresEngine exists.
import "../engine/db/engines/index.js";
import { postgresEngine } from "../engine/db/engines/postgres.js";
import { eventsPipeline } from "./helpers/events-pipeline.js";
import { postgresBinDir, startPostgres, type TestPostgres } from "./helpers/postgres.js";
import { root, sqlite, Workspace } from "./helpers/workspace.js";

// Loads on PostgreSQL go through COPY into a staging table and set-based INSERT … ON CONFLICT
// (engine/db/pg/bulk-load.ts). The proof that nothing changed: the same sequence of source states
// is loaded on the native SQLite engine (row by row) and on a real server, and after every run the
// step counts, every table and every column of pipeline_rejected_rows agree.

let pg: TestPostgres;
beforeAll(async () => {
  pg = await startPostgres();
}, 60_000);
afterAll(() => pg?.stop());

const workspaces: Workspace[] = [];
afterEach(() => {
  for (const ws of workspaces.splice(0)) ws.remove();
});

const pipeline = (mode: string, extra = "") => eventsPipeline(mode, extra, { text: true });

/** One state of the two sources; `null` leaves a file as the previous state left it. */
interface State {
  items: string | null;
  events: string | null;
}

const items = (...ids: number[]) => ["Id,Name", ...ids.map((id) => `${id},"item ${id}\twith a tab"`)].join("\n") + "\n";
const header = "Day,Slot,Item,Qty,Note\n";
// Line 2 on: stored rows, a quoted line end, a reference to a missing item (3), a cast and a shape
// rejection, a key repeated with other values and with the same values, a backslash, an empty
// field (NULL), and a line waiting for its item whose key a later line holds.
const first =
  header +
  [
    "2024-01-01,1,1,5,a",
    '2024-01-01,2,2,3,"multi\nline"',
    "2024-01-01,3,3,1,waits for item 3",
    "2024-01-02,1,1,x,bad qty",
    "2024-01-02,2,1,2,extra,field",
    "2024-01-01,1,1,6,same key other values",
    '2024-01-01,2,2,3,"multi\nline"',
    "2024-01-03,1,2,7,back\\slash",
    "2024-01-04,1,3,1,waits; a later line holds its key",
    "2024-01-04,1,1,2,holds the key",
    "2024-01-03,1,1,9,",
  ].join("\n") +
  "\n";
const appended = ["2024-01-05,1,4,1,needs item 4", "2024-01-01,1,1,8,a late change", "2024-01-05,2,2,2,new", "2024-01-05,2,2,3,new again"]
  .map((line) => line + "\n")
  .join("");
const rewritten = first
  .replace("2024-01-03,1,2,7", "2024-01-03,1,2,70")
  .replace("2024-01-02,2,1,2,extra,field\n", "")
  .replace(",x,", ",4,");

/** `count` rows with distinct keys; a key repeated across the first batch's end (20 000 rows), with other and with the same values; one missing item. */
function many(count: number, from = 0): string {
  const lines: string[] = [];
  for (let i = from; i < from + count; i++) {
    const day = new Date(Date.UTC(2025, 0, 1 + Math.floor(i / 100))).toISOString().slice(0, 10);
    lines.push(`${day},${i % 100},${1 + (i % 2)},${i % 7},n${i}`);
    if (i === 20_010) lines.push(lines[19_990]!.replace(/,n\d+$/, ",other values"));
    if (i === 50_020) lines.push(lines[5]!);
    if (i === 51_000) lines.push(`${day},${100 + (i % 100)},99,1,no item 99`);
  }
  return lines.join("\n") + "\n";
}

const big = header + many(52_000);
const bigGrown = big + many(500, 52_000) + many(2, 51_990).replace(/,n(\d+)/g, ",changed $1");

const sequence: State[] = [
  { items: items(1, 2), events: first },
  { items: items(1, 2, 3), events: null },
  { items: null, events: first + appended },
  { items: items(1, 2, 3, 4), events: rewritten },
  { items: null, events: big },
  { items: null, events: bigGrown },
  { items: null, events: null },
];

interface Report {
  status: string;
  error?: { code: string; message: string };
  steps: { name: string; status: string; counts?: Record<string, number>; detail?: string }[];
}

const tables = [
  "SELECT * FROM items ORDER BY id",
  "SELECT * FROM events ORDER BY day, slot",
  // why: a broken constraint is worded by each engine (SQLite's "UNIQUE constraint failed", the server's "duplicate key value").
  `SELECT run_id, step, source, line, raw, "column", CASE WHEN kind = 'constraint' THEN 'a constraint' ELSE reason END, stored_values, new_values, status, kind, value, fields, key_values,
     last_run_id, resolved_run_id, shadowed_line, shadowed_raw FROM pipeline_rejected_rows ORDER BY step, line, kind, status, raw, run_id`,
  // why: the server records a failed run at once; SQLite keeps it in a journal file until the next run.
  "SELECT status FROM pipeline_runs WHERE status <> 'failed' ORDER BY run_id",
];

/** Runs `states` on native SQLite and on the server, comparing the report, every table and the rejected rows after each run. */
async function compare(yaml: string, states: State[]): Promise<Report[]> {
  const native = new Workspace({ withClientPipeline: false });
  const server = new Workspace({ withClientPipeline: false });
  workspaces.push(native, server);
  const url = pg.createDatabase(`bulk_${workspaces.length}_${Date.now()}`);
  const reports: Report[] = [];
  for (const [i, state] of states.entries()) {
    for (const ws of [native, server]) {
      ws.write("pipeline.yaml", yaml);
      if (state.items !== null) ws.write("items.csv", state.items);
      if (state.events !== null) ws.write("events.csv", state.events);
    }
    const a = await native.cli(["run", "--json"], { PIPELINE_ENGINE: "native" });
    const b = await server.cli(["run", "--json", "--db", url]);
    const [ra, rb] = [a, b].map((result) => JSON.parse(result.stdout) as Report);
    const shown = (report: Report) => ({
      status: report.status,
      error: report.error?.message.replace(/postgres:\/\/\S+/g, "DB").replace(/db\.sqlite/g, "DB"),
      steps: report.steps.map(({ name, status, counts, detail }) => ({ name, status, counts, detail })),
    });
    expect(b.code, `state ${i + 1}: exit code (${rb?.error?.message ?? b.stderr})`).toBe(a.code);
    expect(shown(rb!), `state ${i + 1}: report`).toEqual(shown(ra!));
    for (const sql of tables) {
      expect(psql(url, sql), `state ${i + 1}: ${sql.slice(0, 40)}`).toBe(sqlite(native.path("db.sqlite"), sql));
    }
    reports.push(ra!);
  }
  return reports;
}

/** The server's answer as psql prints it (`|` between columns), with room for every row of the tables compared. */
const psql = (url: string, sql: string) =>
  execFileSync(path.join(postgresBinDir()!, "psql"), ["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql], {
    encoding: "utf8",
    maxBuffer: 256 * 1024 * 1024,
  }).trimEnd();

const events = (report: Report) => report.steps.find((step) => step.name === "load_events")!;

describe("a load on PostgreSQL (COPY, staging table, set-based INSERT … ON CONFLICT) equals the row-by-row load on SQLite", () => {
  test("insert_new: the first line of a key holds it, later ones are kept aside; late data, tail reads and batches of 20 000", async () => {
    const reports = await compare(pipeline("insert_new"), sequence);
    expect(events(reports[0]!).counts).toMatchObject({ inserted: 4, unchanged: 1, conflicting: 2, rejected: 4 });
    expect(events(reports[4]!).counts).toMatchObject({ conflicting: 1, unchanged: 1, rejected: 1 });
  }, 180_000);

  test("upsert: the last line of a key wins", async () => {
    const reports = await compare(pipeline("upsert"), sequence);
    expect(events(reports[0]!).counts).toMatchObject({ updated: 2 });
  }, 180_000);

  test("insert_new with on_conflict: update: the last line wins, the stored row is updated", async () => {
    await compare(pipeline("insert_new", "    on_conflict: update\n"), sequence);
  }, 180_000);

  test("replace: the table is emptied and refilled, a key repeated in the file kept aside", async () => {
    const reports = await compare(pipeline("replace"), sequence);
    expect(events(reports[4]!).counts).toMatchObject({ deleted: 6 });
  }, 180_000);

  test("append: a key already stored breaks the unique constraint and the row is rejected (the batch goes row by row)", async () => {
    const reports = await compare(pipeline("append"), sequence.slice(0, 4));
    expect(events(reports[2]!).counts?.["rejected"]).toBeGreaterThan(0);
  }, 180_000);

  test("on_conflict: fail stops the run at the same line with the same message, and a failed run changes nothing", async () => {
    const clean = first.replace("2024-01-01,1,1,6,same key other values\n", "").replace("2024-01-03,1,1,9,\n", "");
    const reports = await compare(pipeline("insert_new", "    on_conflict: fail\n"), [
      { items: items(1, 2), events: clean },
      { items: null, events: clean + appended },
      { items: null, events: big },
    ]);
    expect(reports[0]!.status).toBe("succeeded_with_rejections");
    expect(reports[1]!.error?.message).toMatch(/line 14: key \(day, slot\) is already stored with other values/);
    expect(reports[2]!.error?.message).toMatch(/line 20013: key \(day, slot\) is already stored with other values/);
  }, 180_000);
});

describe("the server's bulk writer", () => {
  test("a writer given nothing to write (304, same content) makes no staging table", async () => {
    const url = pg.createDatabase(`bulk_idle_${Date.now()}`);
    const transaction = await postgresEngine.begin(url, { busyTimeoutMs: 5000 });
    try {
      const { db } = transaction;
      db.exec("CREATE TABLE t (k bigint PRIMARY KEY)");
      const writer = db.bulkWriter!({ table: "t", columns: ["k"], key: ["k"], lastWins: false });
      const stage = () => db.all("SELECT to_regclass('pg_temp.pipeline_load_stage') IS NOT NULL AS made")[0]?.["made"];
      expect(stage()).toBe(0);
      writer.write([[1]], () => undefined);
      expect(stage()).toBe(1);
      writer.free();
      expect(stage()).toBe(0);
    } finally {
      await transaction.rollback();
      transaction.close();
    }
  });

  test("COPYs a batch into a staging table and says what became of each row in file order", async () => {
    const url = pg.createDatabase(`bulk_writer_${Date.now()}`);
    const transaction = await postgresEngine.begin(url, { busyTimeoutMs: 5000 });
    try {
      const { db } = transaction;
      db.exec("CREATE TABLE t (k bigint PRIMARY KEY, v text, d date)");
      db.run("INSERT INTO t VALUES (1, 'stored', '2024-01-01'), (2, 'same', '2024-01-02')");
      const writer = db.bulkWriter!({ table: "t", columns: ["k", "v", "d"], key: ["k"], lastWins: false });
      const text = "tab\there, line\nend, back\\slash, \\N and \r";
      let fates: BulkFate[] | undefined;
      // New keys only: the server copies and inserts while this thread goes on; the next statement settles the batch first.
      writer.write(
        [
          [3, "new", "2024-01-03"],
          [4, text, null],
        ],
        (settled) => (fates = settled),
      );
      expect(db.all("SELECT k, v, d FROM pg_temp.pipeline_load_stage ORDER BY k")).toEqual([
        { k: 3, v: "new", d: "2024-01-03" },
        { k: 4, v: text, d: null },
      ]);
      expect(fates).toEqual([{ kind: "inserted" }, { kind: "inserted" }]);
      // Stored and repeated keys: decided in SQL against the staged batch, in file order.
      writer.write(
        [
          [1, "other", "2024-01-01"],
          [2, "same", "2024-01-02"],
          [5, text, null],
          [5, "later", null],
          [5, text, null],
        ],
        (settled) => (fates = settled),
      );
      writer.drain();
      expect(fates).toEqual([
        { kind: "conflict", stored: [1, "stored", "2024-01-01"] },
        { kind: "unchanged" },
        { kind: "inserted" },
        { kind: "conflict", stored: [5, text, null] },
        { kind: "unchanged" },
      ]);
      expect(db.all("SELECT count(*) AS n FROM pg_temp.pipeline_load_stage")[0]?.["n"]).toBe(5);
      expect(db.all("SELECT k, v, d FROM t ORDER BY k")).toEqual([
        { k: 1, v: "stored", d: "2024-01-01" },
        { k: 2, v: "same", d: "2024-01-02" },
        { k: 3, v: "new", d: "2024-01-03" },
        { k: 4, v: text, d: null },
        { k: 5, v: text, d: null },
      ]);
      writer.free();
    } finally {
      await transaction.rollback();
      transaction.close();
    }
  });
});

describe("npm run bench -- --engine postgres (a small smoke run; timings belong to the benchmark)", () => {
  test("starts its own cluster, and ours and psql \\copy agree; the figures are written as JSON", () => {
    const out = path.join(mkdtempSync(path.join(tmpdir(), "bench-pg-")), "bench.json");
    const result = spawnSync(
      process.execPath,
      [path.join(root, "dist/tests/bench/bench.js"), "--rows", "3000", "--repeat", "1", "--engine", "postgres", "--out", out],
      { cwd: root, encoding: "utf8" },
    );
    expect(result.stderr).toBe("");
    expect(result.status).toBe(0);
    expect(result.stdout).toContain("results agree with the psql \\copy (postgres): yes");
    const figures = JSON.parse(readFileSync(out.replace(/\.json$/, ".postgres.json"), "utf8")) as Record<string, unknown>;
    expect(figures).toMatchObject({ engine: "postgres", rows: 3000, agree: true });
    expect(Object.keys(figures["ratios"] as object).sort()).toEqual(["full", "incremental", "rss"]);
    expect(Object.keys((figures["psql"] as { median: object }).median).sort()).toEqual(["full", "incremental"]);
  }, 120_000);
});
