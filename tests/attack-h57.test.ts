import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { leftToChecks } from "../engine/db/constraints.js";
import { startServer, type TestServer } from "./helpers/http-server.js";
import { root, sqlite, Workspace } from "./helpers/workspace.js";

// An attack pass (h57) on three changes: the foreign keys the checks verified are not verified again before the
// commit (engine/run.ts verifiedByChecks), up to 512 rows per INSERT (steps/load.ts batchWriter), and the CLI's
// explicit exit once only the standard streams remain (engine/cli.ts). Each test fails if the change let through
// what the runner promises to refuse, lost a row's fate, or lost output.

const engines = ["sqljs", "native"] as const;

interface Report {
  ok: boolean;
  error?: { code: string; message: string };
  steps: { name: string; status: string; detail?: string; counts: Record<string, number> }[];
}

describe.each(engines)("on %s, a foreign key broken by a step the checks' verification does not cover", (engine) => {
  let ws: Workspace;
  beforeEach(() => (ws = new Workspace({ withClientPipeline: false })));
  afterEach(() => ws.remove());
  const run = async (argv: string[] = []) => {
    const result = await ws.cli(["run", "--json", ...argv], { PIPELINE_ENGINE: engine });
    return { code: result.code, report: JSON.parse(result.stdout) as Report };
  };
  const db = () => ws.path("db.sqlite");
  const violation = /foreign key violation\(s\) at the end of the run, so nothing was saved/;

  /** Nodes referencing their parent node (a self-reference: the load step does not look it up row by row). */
  const nodes = (severity: "error" | "warn", extra = "") => `version: 1
database: db.sqlite
tables:
  nodes:
    columns: { id: { type: integer }, parent_id: { type: integer } }
    primary_key: [id]
    foreign_keys: [{ columns: [parent_id], references: { table: nodes, columns: [id] } }]
    checks:
      - { name: nodes_parent_present, check: relationships, column: parent_id, to: nodes, field: id, severity: ${severity} }
steps:
  - { name: load_nodes, type: load, source: nodes.csv, table: nodes, mode: upsert, columns: { id: Id, parent_id: Parent } }
${extra}`;

  test("a self-reference to a missing row, counted by a warn check, is still refused at the commit", async () => {
    ws.write("pipeline.yaml", nodes("warn"));
    ws.write("nodes.csv", "Id,Parent\n1,\n2,1\n3,99\n");
    const { code, report } = await run();
    expect(code).not.toBe(0);
    expect(report.error).toMatchObject({ code: "E_DB", message: expect.stringMatching(violation) });
    expect([...leftToChecks]).toEqual([]);
    expect(existsSync(db()) && sqlite(db(), "SELECT count(*) FROM sqlite_schema WHERE name = 'nodes'")).not.toBe("1");
  });

  test("a self-reference held by a first run, then broken by a later step rewriting the table, is refused", async () => {
    ws.write("pipeline.yaml", nodes("warn"));
    ws.write("nodes.csv", "Id,Parent\n1,\n2,1\n");
    expect((await run()).code).toBe(0);
    expect([...leftToChecks]).toEqual(["nodes"]);
    // why: the check (warn) runs after orphan, the last step writing nodes; it counts the broken key and the commit refuses.
    ws.write("pipeline.yaml", nodes("warn", '  - { name: orphan, type: sql, sql: "SELECT 2 AS id, 1 AS parent_id", into: nodes }\n'));
    const { code, report } = await run();
    expect(code).not.toBe(0);
    expect(report.error).toMatchObject({ code: "E_DB", message: expect.stringMatching(violation) });
    expect(sqlite(db(), "SELECT id, coalesce(parent_id, '-') FROM nodes ORDER BY id")).toBe("1|-\n2|1");
  });

  /** Items and slots; events reference both; the one check counts the item key only, `extra` steps follow. */
  const events = (extra = "") => `version: 1
database: db.sqlite
tables:
  items: { columns: { id: { type: integer } }, primary_key: [id] }
  slots: { columns: { id: { type: integer } }, primary_key: [id] }
  events:
    columns: { id: { type: integer }, item_id: { type: integer }, slot_id: { type: integer } }
    primary_key: [id]
    foreign_keys:
      - { columns: [item_id], references: { table: items, columns: [id] } }
      - { columns: [slot_id], references: { table: slots, columns: [id] } }
    checks:
      - { name: events_items_present, check: relationships, column: item_id, to: items, field: id, severity: warn }
steps:
  - { name: load_items, type: load, source: items.csv, table: items, mode: upsert, columns: { id: Id } }
  - { name: load_slots, type: load, source: slots.csv, table: slots, mode: upsert, columns: { id: Id } }
  - { name: load_events, type: load, source: events.csv, table: events, mode: insert_new, columns: { id: Id, item_id: Item, slot_id: Slot } }
${extra}`;
  const writeEvents = (extra = "") => {
    ws.write("pipeline.yaml", events(extra));
    ws.write("items.csv", "Id\n1\n2\n");
    ws.write("slots.csv", "Id\n1\n2\n");
    ws.write("events.csv", "Id,Item,Slot\n1,1,1\n2,2,2\n");
  };

  test("a sql step writing an event whose slot is missing, while the check counts only the item key, is refused", async () => {
    // why: the check reads events and items only: it runs after stray (the last step writing events) and finds the item key held.
    writeEvents('  - { name: stray, type: sql, sql: "SELECT 3 AS id, 1 AS item_id, 99 AS slot_id", into: events, mode: append }\n');
    const { code, report } = await run();
    expect(code).not.toBe(0);
    expect(report.error).toMatchObject({ code: "E_DB", message: expect.stringMatching(violation) });
    expect([...leftToChecks]).toEqual([]);
  });

  test("a later step left out by --select: the run commits, and the keys hold in the saved file", async () => {
    writeEvents('  - { name: one_slot, type: sql, sql: "SELECT 1 AS id", into: slots }\n');
    const first = await run(["--select", "load_items,load_slots,load_events"]);
    expect(first.code, JSON.stringify(first.report.error)).toBe(0);
    expect(sqlite(db(), "PRAGMA foreign_key_check")).toBe("");
    // the step left out now runs alone: it empties slots of slot 2, which event 2 references
    const second = await run(["--select", "one_slot"]);
    expect(second.code).not.toBe(0);
    expect(second.report.error).toMatchObject({ code: "E_DB", message: expect.stringMatching(violation) });
    expect(sqlite(db(), "SELECT count(*) FROM slots")).toBe("2");
  });

  test("a table of the user's own in the stored file, referencing a declared one with a broken key, is refused", async () => {
    writeEvents();
    expect((await run()).code).toBe(0);
    sqlite(db(), "PRAGMA foreign_keys = OFF; CREATE TABLE notes (item_id INTEGER REFERENCES items (id)); INSERT INTO notes VALUES (99);");
    ws.write("items.csv", "Id\n1\n2\n3\n");
    const { code, report } = await run();
    expect(code).not.toBe(0);
    expect(report.error).toMatchObject({ code: "E_DB", message: expect.stringMatching(/notes row/) });
  });

  test("a foreign key added outside to a declared table is refused before any step (E_DRIFT)", async () => {
    writeEvents();
    expect((await run()).code).toBe(0);
    sqlite(
      db(),
      `PRAGMA foreign_keys = OFF; PRAGMA writable_schema = ON;
       UPDATE sqlite_schema SET sql = replace(sql, 'REFERENCES "slots" ("id")', 'REFERENCES "slots" ("id"), FOREIGN KEY ("id") REFERENCES "items" ("id")') WHERE name = 'events';`,
    );
    ws.write("events.csv", "Id,Item,Slot\n1,1,1\n2,2,2\n3,1,1\n");
    const { code, report } = await run();
    expect(code).not.toBe(0);
    expect(report.error?.code).toBe("E_DRIFT");
  });
});

describe.each(engines)("on %s, another program deleting a parent row after the checks verified the keys", (engine) => {
  let ws: Workspace;
  let server: TestServer;
  beforeEach(async () => {
    ws = new Workspace({ withClientPipeline: false });
    server = await startServer();
  });
  afterEach(async () => {
    await server.close();
    ws.remove();
  });
  const run = async () => {
    const result = await ws.cli(["run", "--json"], { PIPELINE_ENGINE: engine });
    return { code: result.code, report: JSON.parse(result.stdout) as Report };
  };
  const db = () => ws.path("db.sqlite");

  // why: on sqljs the checks read the file through node:sqlite before the image is loaded (engine/db/read-first.ts); the
  // image loaded after them must be the file they read. On native the run holds the write lock: the other program waits.
  test("while a later load step fetches its source: the run does not save a file where an event lost its item", async () => {
    ws.write(
      "pipeline.yaml",
      `version: 1
database: db.sqlite
tables:
  items: { columns: { id: { type: integer } }, primary_key: [id] }
  events:
    columns: { id: { type: integer }, item_id: { type: integer } }
    primary_key: [id]
    foreign_keys: [{ columns: [item_id], references: { table: items, columns: [id] } }]
    checks:
      - { name: events_items_present, check: relationships, column: item_id, to: items, field: id }
  notes: { columns: { id: { type: integer } }, primary_key: [id] }
steps:
  - { name: load_items, type: load, source: "${server.url("/items.csv")}", table: items, mode: upsert, columns: { id: Id } }
  - { name: load_events, type: load, source: "${server.url("/events.csv")}", table: events, mode: upsert, columns: { id: Id, item_id: Item } }
  - { name: load_notes, type: load, source: "${server.url("/notes.csv")}", table: notes, mode: upsert, columns: { id: Id } }
`,
    );
    server.file("/items.csv", "Id\n1\n2\n");
    server.file("/events.csv", "Id,Item\n1,1\n2,2\n");
    let outside: string | undefined;
    let notes = "Id\n1\n";
    server.route("/notes.csv", (_request, response, hit) => {
      if (hit === 1) {
        try {
          sqlite(db(), "DELETE FROM items WHERE id = 2");
          outside = "written";
        } catch (error) {
          outside = (error as Error).message;
        }
      }
      response.writeHead(200, { "content-type": "text/csv" }).end(notes);
    });
    expect((await run()).code).toBe(0);
    // another program's harmless write: the commit mark no longer vouches for the tables, so the check runs again
    sqlite(db(), "CREATE TABLE other (x INTEGER); DROP TABLE other;");
    notes = "Id\n1\n2\n";
    const { code, report } = await run();
    if (engine === "native") {
      expect(code, JSON.stringify(report.error)).toBe(0);
      expect(outside).toMatch(/locked|busy/i);
      expect(sqlite(db(), "SELECT count(*) FROM notes")).toBe("2");
      expect([...leftToChecks]).toEqual(["events"]);
      expect(sqlite(db(), "PRAGMA foreign_key_check")).toBe("");
    } else {
      // the other program's change is kept as it made it; the run saved nothing on top of it
      expect(outside).toBe("written");
      expect(report.error?.code).toBe("E_CHANGED");
      expect(sqlite(db(), "SELECT count(*) FROM pipeline_runs")).toBe("1");
    }
  });
});

describe.each(engines)("on %s, rows written 512 to an INSERT", (engine) => {
  let ws: Workspace;
  beforeEach(() => (ws = new Workspace({ withClientPipeline: false })));
  afterEach(() => ws.remove());
  const run = async () => {
    const result = await ws.cli(["run", "--json"], { PIPELINE_ENGINE: engine });
    return { code: result.code, report: JSON.parse(result.stdout) as Report };
  };
  const query = (sql: string) => sqlite(ws.path("db.sqlite"), sql);
  const pipeline = (mode: string, extra = "") => `version: 1
database: db.sqlite
tables:
  t: { columns: { id: { type: integer }, v: { type: text, required: true } }, primary_key: [id] }
steps:
  - { name: load_t, type: load, source: t.csv, table: t, mode: ${mode}, columns: { id: Id, v: V }${extra} }
`;
  const records = 1500;
  /**
   * 1500 records; record 2 spans two lines (a quoted line break), so record r > 2 is on line r + 2. `dups` maps a
   * record to the record whose key it repeats, with its value (the same as the first's, or another).
   */
  const csv = (dups: Map<number, { of: number; same: boolean }>) => {
    const lines = ["Id,V"];
    for (let r = 1; r <= records; r++) {
      const dup = dups.get(r);
      const id = dup ? dup.of : r;
      const v = r === 2 ? '"two\nlines"' : dup?.same ? `v${dup.of}` : `v${r}`;
      lines.push(`${id},${v}`);
    }
    return lines.join("\n") + "\n";
  };
  const lineOf = (record: number) => (record <= 2 ? record + 1 : record + 2);
  // record 700 repeats 600 in the same batch (513..1024), 1400 repeats 5 (an earlier batch), 1450 repeats 1449 (the last, partial batch)
  const dups = (same: boolean) =>
    new Map([
      [700, { of: 600, same }],
      [1400, { of: 5, same }],
      [1450, { of: 1449, same }],
    ]);
  const rejected = () => query("SELECT line, kind FROM pipeline_rejected_rows ORDER BY line");
  const stepCounts = (report: Report) => report.steps.find((s) => s.name === "load_t")?.counts;

  test("append: a repeated key in the middle of a batch is rejected alone, on its own line; the batch's other rows are kept", async () => {
    ws.write("pipeline.yaml", pipeline("append"));
    ws.write("t.csv", csv(dups(false)));
    const { code, report } = await run();
    expect(code, JSON.stringify(report.error)).toBe(0);
    expect(stepCounts(report)).toMatchObject({ read: records, inserted: records - 3, rejected: 3 });
    expect(rejected()).toBe([700, 1400, 1450].map((r) => `${lineOf(r)}|constraint`).join("\n"));
    expect(query("SELECT count(*), sum(id), max(v = 'v600'), min(id) FROM t")).toBe(
      `${records - 3}|${(records * (records + 1)) / 2 - 700 - 1400 - 1450}|1|1`,
    );
    expect(query("SELECT v FROM t WHERE id = 2")).toBe("two\nlines");
  });

  test("insert_new (reject): a key repeated with other values is kept aside on its line; with the same values it is unchanged", async () => {
    ws.write("pipeline.yaml", pipeline("insert_new"));
    const mixed = new Map([
      [700, { of: 600, same: false }],
      [1400, { of: 5, same: true }],
      [1450, { of: 1449, same: false }],
    ]);
    ws.write("t.csv", csv(mixed));
    const { code, report } = await run();
    expect(code, JSON.stringify(report.error)).toBe(0);
    expect(stepCounts(report)).toMatchObject({ read: records, inserted: records - 3, unchanged: 1, conflicting: 2, rejected: 0 });
    expect(rejected()).toBe(`${lineOf(700)}|conflict\n${lineOf(1450)}|conflict`);
    expect(query("SELECT v FROM t WHERE id IN (600, 1449) ORDER BY id")).toBe("v600\nv1449");
  });

  test("a key repeated across a batch boundary (the last row of a batch, then the first of the next) under each policy", async () => {
    const boundary = new Map([
      [513, { of: 512, same: false }],
      [1025, { of: 1024, same: true }],
    ]);
    ws.write("t.csv", csv(boundary));
    ws.write("pipeline.yaml", pipeline("insert_new"));
    const kept = await run();
    expect(kept.code, JSON.stringify(kept.report.error)).toBe(0);
    expect(stepCounts(kept.report)).toMatchObject({ inserted: records - 2, unchanged: 1, conflicting: 1 });
    expect(rejected()).toBe(`${lineOf(513)}|conflict`);
    expect(query("SELECT v FROM t WHERE id = 512")).toBe("v512");
    rmSync(ws.path("db.sqlite"));
    ws.write("pipeline.yaml", pipeline("append"));
    const appended = await run();
    expect(stepCounts(appended.report)).toMatchObject({ inserted: records - 2, rejected: 2 });
    expect(rejected()).toBe(`${lineOf(513)}|constraint\n${lineOf(1025)}|constraint`);
    rmSync(ws.path("db.sqlite"));
    ws.write("pipeline.yaml", pipeline("upsert"));
    const upserted = await run();
    expect(stepCounts(upserted.report)).toMatchObject({ inserted: records - 2, updated: 1, unchanged: 1 });
    expect(query("SELECT v FROM t WHERE id = 512")).toBe("v513");
  });

  test("insert_new (update): the later line of a key repeated within a batch wins", async () => {
    ws.write("pipeline.yaml", pipeline("insert_new", ", on_conflict: update"));
    ws.write("t.csv", csv(dups(false)));
    const { code, report } = await run();
    expect(code, JSON.stringify(report.error)).toBe(0);
    expect(stepCounts(report)).toMatchObject({ read: records, inserted: records - 3, updated: 3 });
    expect(query("SELECT v FROM t WHERE id IN (5, 600, 1449) ORDER BY id")).toBe("v1400\nv700\nv1450");
    expect(rejected()).toBe("");
  });

  test("insert_new (fail): the run stops naming the line of the first repeated key, in the middle of a batch", async () => {
    ws.write("pipeline.yaml", pipeline("insert_new", ", on_conflict: fail"));
    ws.write("t.csv", csv(dups(false)));
    const { code, report } = await run();
    expect(code).not.toBe(0);
    expect(report.error).toMatchObject({ code: "E_CONFLICT", message: expect.stringContaining(`t.csv line ${lineOf(700)}:`) });
  });

  test("upsert: the last line of a key wins, and a later run of the same file changes nothing", async () => {
    ws.write("pipeline.yaml", pipeline("upsert"));
    ws.write("t.csv", csv(dups(false)));
    const first = await run();
    expect(first.code, JSON.stringify(first.report.error)).toBe(0);
    expect(query("SELECT count(*) FROM t")).toBe(String(records - 3));
    expect(query("SELECT v FROM t WHERE id IN (5, 600, 1449) ORDER BY id")).toBe("v1400\nv700\nv1450");
    ws.write("t.csv", csv(dups(false)) + `${records + 1},new\n`);
    const second = await run();
    expect(second.code, JSON.stringify(second.report.error)).toBe(0);
    expect(query("SELECT count(*) FROM t")).toBe(String(records - 2));
    expect(query("SELECT v FROM t WHERE id IN (5, 600, 1449) ORDER BY id")).toBe("v1400\nv700\nv1450");
  });

  test("a grown file: a key repeated in the middle of a batch of the tail read is kept aside on its line in the file", async () => {
    ws.write("pipeline.yaml", pipeline("insert_new"));
    const whole = csv(dups(false));
    const lines = whole.split("\n");
    // the first 600 records (601 lines and record 2's second line), then the file grows by the rest
    ws.write("t.csv", lines.slice(0, 602).join("\n") + "\n");
    const first = await run();
    expect(first.code, JSON.stringify(first.report.error)).toBe(0);
    expect(query("SELECT count(*) FROM t")).toBe("600");
    ws.write("t.csv", whole);
    const second = await run();
    expect(second.code, JSON.stringify(second.report.error)).toBe(0);
    expect(second.report.steps[0]?.detail).toMatch(/file grew/);
    expect(stepCounts(second.report)).toMatchObject({ inserted: records - 600 - 3, conflicting: 3 });
    expect(rejected()).toBe([700, 1400, 1450].map((r) => `${lineOf(r)}|conflict`).join("\n"));
    expect(query("SELECT count(*) FROM t")).toBe(String(records - 3));
  });

  test("a table of 2000 columns (SQLite's most): 16 rows to an INSERT, a repeated key in a batch rejected alone, upserts", async () => {
    const width = 2000;
    const names = Array.from({ length: width }, (_, i) => `c${i}`);
    const row = (id: number, base: number) => [id, ...names.slice(1).map((_, i) => base + i)].join(",");
    const file = (rows: string[]) => [names.join(","), ...rows].join("\n") + "\n";
    const wide = (mode: string) => `version: 1
database: db.sqlite
tables:
  w: { columns: { ${names.map((name) => `${name}: { type: integer }`).join(", ")} }, primary_key: [c0] }
steps:
  - { name: load_w, type: load, source: w.csv, table: w, mode: ${mode}, columns: { ${names.map((name) => `${name}: ${name}`).join(", ")} } }
`;
    ws.write("pipeline.yaml", wide("append"));
    const rows = Array.from({ length: 40 }, (_, r) => row(r, r * 10));
    rows[20] = row(18, 7); // line 22 repeats the key of line 20, in the second batch of 16
    ws.write("w.csv", file(rows));
    const { code, report } = await run();
    expect(code, JSON.stringify(report.error)).toBe(0);
    expect(report.steps[0]?.counts).toMatchObject({ read: 40, inserted: 39, rejected: 1 });
    expect(rejected()).toBe("22|constraint");
    expect(query("SELECT count(*), sum(c1999) FROM w")).toBe(`39|${rows.reduce((s, _, r) => (r === 20 ? s : s + r * 10 + 1998), 0)}`);
    ws.write("pipeline.yaml", wide("upsert"));
    ws.write("w.csv", file(Array.from({ length: 40 }, (_, r) => row(r, r === 33 ? 5 : r * 10))));
    const second = await run();
    expect(second.code, JSON.stringify(second.report.error)).toBe(0);
    expect(second.report.steps[0]?.counts).toMatchObject({ read: 40, inserted: 1, updated: 1, unchanged: 38 });
    expect(query("SELECT c1999 FROM w WHERE c0 = 33")).toBe(String(5 + 1998));
  });
});

describe("the CLI's exit once only the standard streams remain", () => {
  let ws: Workspace;
  let cache: string;
  beforeEach(() => {
    ws = new Workspace({ withClientPipeline: false });
    cache = mkdtempSync(path.join(os.tmpdir(), "h57-cache-"));
  });
  afterEach(() => {
    ws.remove();
    rmSync(cache, { recursive: true, force: true });
  });
  const cli = path.join(root, "dist/engine/cli.js");

  /** A pipeline loading 8 000 items, every other one rejected (an id that is not an integer, with a 250-character name). */
  const writeItemsHalfRejected = () => {
    ws.write(
      "pipeline.yaml",
      `version: 1
database: db.sqlite
tables:
  items: { columns: { id: { type: integer }, name: { type: text } }, primary_key: [id] }
steps:
  - { name: load_items, type: load, source: items.csv, table: items, mode: upsert, columns: { id: Id, name: Name } }
`,
    );
    const lines = ["Id,Name", ...Array.from({ length: 8000 }, (_, i) => (i % 2 ? `${i},n${i}` : `bad${i},${"y".repeat(250)}`))];
    ws.write("items.csv", lines.join("\n") + "\n");
  };

  /**
   * Runs the built CLI as `cli ARGS | (sleep WAIT; cat > out)` in bash: its stdout is a pipe read only after the
   * wait (a slow reader); the CLI's exit code, every byte that reached the reader, and its stderr.
   */
  const slowly = (argv: string[], waitSeconds: number) =>
    new Promise<{ code: number; stdout: Buffer; stderr: string }>((resolve, reject) => {
      const out = path.join(cache, "out");
      const script = `"$0" "$@" 2>"${cache}/err" | (sleep ${waitSeconds}; cat > "${out}"); exit \${PIPESTATUS[0]}`;
      const child = spawn("bash", ["-c", script, process.execPath, cli, ...argv], {
        cwd: ws.dir,
        env: { ...process.env, NO_COLOR: "1", NODE_COMPILE_CACHE: path.join(cache, "compile") },
        stdio: "ignore",
      });
      child.on("error", reject);
      child.on("close", (code) =>
        resolve({ code: code ?? -1, stdout: readFileSync(out), stderr: readFileSync(path.join(cache, "err"), "utf8") }),
      );
    });

  test("keeps the exit code of --strict, writes every byte of a 0.9 MB --json listing to a slow reader, leaves the compile cache", async () => {
    writeItemsHalfRejected();
    // why: --strict exits 4 when the run saved with rejected rows; the explicit exit must keep that code.
    const ran = await slowly(["run", "--json", "--strict"], 0.3);
    expect(ran.code, ran.stderr).toBe(4);
    expect(JSON.parse(ran.stdout.toString())).toMatchObject({ saved: true });
    const listed = await slowly(["rejections", "--json"], 1.5);
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stdout.length).toBeGreaterThan(800_000);
    const rows = JSON.parse(listed.stdout.toString()) as unknown;
    expect(JSON.stringify(rows)).toContain(`bad7998`);
    expect(readdirSync(path.join(cache, "compile"), { recursive: true }).length).toBeGreaterThan(10);
  });

  test("a reader that stops early (| head -c 10) gets its bytes; the run still saves, keeps its exit code and prints no EPIPE crash", async () => {
    writeItemsHalfRejected();
    const out = path.join(cache, "out");
    const head = (argv: string[]) =>
      new Promise<{ code: number; stderr: string; stdout: string }>((resolve, reject) => {
        const script = `"$0" "$@" 2>"${cache}/err" | head -c 10 > "${out}"; exit \${PIPESTATUS[0]}`;
        const child = spawn("bash", ["-c", script, process.execPath, cli, ...argv], {
          cwd: ws.dir,
          env: { ...process.env, NO_COLOR: "1" },
          stdio: "ignore",
        });
        child.on("error", reject);
        child.on("close", (code) =>
          resolve({ code: code ?? -1, stderr: readFileSync(path.join(cache, "err"), "utf8"), stdout: readFileSync(out, "utf8") }),
        );
      });
    // why: --strict exits 4 when the run saved with rejected rows; the closed pipe must change neither the code nor what is saved.
    const ran = await head(["run", "--json", "--strict"]);
    expect(ran.stderr).not.toMatch(/EPIPE|Unhandled/);
    expect(ran.code, ran.stderr).toBe(4);
    expect(ran.stdout).toHaveLength(10);
    const listed = await head(["rejections", "--json"]);
    expect(listed.stderr).not.toMatch(/EPIPE|Unhandled/);
    expect(listed.code, listed.stderr).toBe(0);
    expect(sqlite(path.join(ws.dir, "db.sqlite"), "SELECT count(*) FROM items")).toBe("4000");
  });

  test("keeps a failed run's exit code and message when stdout is read slowly", async () => {
    ws.write("pipeline.yaml", "version: 1\ndatabase: db.sqlite\ntables: {}\nsteps: []\nnonsense: 1\n");
    const failed = await slowly(["run", "--json"], 0.5);
    expect(failed.code).toBe(2);
    expect(JSON.parse(failed.stdout.toString())).toMatchObject({ ok: false, diagnostics: [{ code: "E_SCHEMA" }, {}, {}] });
  });
});
