import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { negatedComparison } from "../engine/check-comparison.js";
import { declaredChecks, failingRowsSql, indexedFailingCondition, runCheck } from "../engine/checks.js";
import type { Pipeline } from "../engine/config/schema.js";
import { checkForeignKeys, leftToChecks } from "../engine/db/constraints.js";
import { openNativeMemory } from "../engine/db/engines/native.js";
import { SpooledBody } from "../engine/sources/spool.js";
import { eventsPipeline } from "./helpers/events-pipeline.js";
import { sqlite, Workspace } from "./helpers/workspace.js";

// The shortcuts of a re-run (docs/performance.md, "Native re-runs"): each gives what the whole work
// gives, and each test here fails if its shortcut is taken where its proof does not hold.

const engines = ["sqljs", "native"] as const;

describe("the line ends of a grown source's old part, counted as it is spooled", () => {
  /** Line ends in `text` as a whole read counts them: LF, CRLF, a lone CR (one at the end counts alone). */
  const reference = (bytes: Buffer) => bytes.toString("latin1").split(/\r\n|\r|\n/).length - 1;
  const bodies = ["a,b\r\n1,2\r\n3,4\r\n", "a\n\n1\r\r\n2\r3\n\r\n", "\r\n\r\n\n\r\r", "x,y\r\n1,2\r"];

  test("equal a count of the old part read back, wherever the chunks and the old end cut a CRLF", () => {
    for (const body of bodies.map((text) => Buffer.from(text + "tail\r\n"))) {
      for (let prefix = 1; prefix <= body.length; prefix++) {
        for (const chunk of [1, 2, 3, 5, body.length]) {
          const spool = new SpooledBody("t", { prefixBytes: prefix, utf8: true, quote: 0x22 });
          try {
            for (let at = 0; at < body.length; at += chunk) spool.write(body.subarray(at, at + chunk));
            expect(spool.summary().prefixLineEnds, `${JSON.stringify(body.toString())} prefix ${prefix} chunk ${chunk}`).toBe(
              reference(body.subarray(0, prefix)),
            );
          } finally {
            spool.close();
          }
        }
      }
    }
  });

  test("equal it on long random bodies of line ends and text, in random chunks", () => {
    let seed = 7;
    const next = (n: number) => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % n;
    for (let round = 0; round < 20; round++) {
      const body = Buffer.from(Array.from({ length: 3000 }, () => "ab,\r\n\r\n"[next(7)]).join(""));
      const prefix = 1 + next(body.length);
      const spool = new SpooledBody("t", { prefixBytes: prefix, utf8: true, quote: 0x22 });
      try {
        for (let at = 0; at < body.length;) {
          const size = 1 + next(97);
          spool.write(body.subarray(at, at + size));
          at += size;
        }
        expect(spool.summary().prefixLineEnds, `round ${round}`).toBe(reference(body.subarray(0, prefix)));
      } finally {
        spool.close();
      }
    }
  });

  test("are not given for a body shorter than the old part, and start over when a retried fetch resets the spool", () => {
    const spool = new SpooledBody("t", { prefixBytes: 10, utf8: true, quote: 0x22 });
    try {
      spool.write(Buffer.from("a\nb\n"));
      expect(spool.summary().prefixLineEnds).toBeUndefined();
      spool.reset();
      spool.write(Buffer.from("a\r\nb\r\nc\r\nd\r\n"));
      expect(spool.summary().prefixLineEnds).toBe(reference(Buffer.from("a\r\nb\r\nc\r\nd\r\n").subarray(0, 10)));
    } finally {
      spool.close();
    }
  });
});

describe.each(engines)("on %s, a grown file's appended rows keep their lines in the file", (engine) => {
  let ws: Workspace;
  beforeEach(() => (ws = new Workspace({ withClientPipeline: false })));
  afterEach(() => ws.remove());
  const run = (argv: string[] = []) => ws.cli(["run", "--json", ...argv], { PIPELINE_ENGINE: engine });
  const pending = (file: string) =>
    sqlite(ws.path(file), "SELECT line, raw FROM pipeline_rejected_rows WHERE status = 'pending' ORDER BY line");

  // why: the old file's last line end is cut from the appended part in each way grownTail tells apart.
  test.each([
    ["LF", "\n", "\n"],
    ["CR | LF", "\r", "\n"],
    ["a lone CR", "\r", ""],
    ["| LF", "", "\n"],
    ["| CRLF", "", "\r\n"],
    ["| a lone CR", "", "\r"],
  ])("the old end cut at %s", async (_, oldEnd, newStart) => {
    ws.write("pipeline.yaml", eventsPipeline("insert_new"));
    ws.write("items.csv", "Id\n1\n");
    const old = "Day,Slot,Item,Qty\r\n\r\n2024-01-01,1,1,2\n2024-01-01,2,9,1\r2024-01-01,3,1,1" + oldEnd;
    ws.write("events.csv", old);
    await run();
    ws.write("events.csv", old + newStart + "2024-01-01,4,9,1\r\n\n2024-01-01,5,9,1\r\n");
    const grown = JSON.parse((await run()).stdout) as { steps: { name: string; detail?: string }[] };
    expect(grown.steps.find((step) => step.name === "load_events")?.detail).toMatch(/file grew/);
    await run(["--db", "fresh.sqlite"]);
    expect(pending("db.sqlite")).toBe(pending("fresh.sqlite"));
    expect(pending("db.sqlite").split("\n")).toHaveLength(3);
  });
});

describe.each(engines)("on %s, the foreign keys verified before the commit", (engine) => {
  let ws: Workspace;
  beforeEach(() => (ws = new Workspace({ withClientPipeline: false })));
  afterEach(() => ws.remove());
  const run = (argv: string[] = []) => ws.cli(["run", "--json", ...argv], { PIPELINE_ENGINE: engine });
  const items = (ids: number[]) => `Id\n${ids.join("\n")}\n`;
  /** Runs again, and expects the run to save nothing for the one events row that references the missing item `item`. */
  const expectViolation = async (item: number) => {
    const result = await run();
    expect(result.code, result.stdout).not.toBe(0);
    expect(JSON.parse(result.stdout).error.message).toMatch(
      new RegExp(
        `1 foreign key violation\\(s\\) at the end of the run, so nothing was saved: events row .*"item_id":${item}.* references a missing items row`,
      ),
    );
  };

  test("a row another program wrote breaking a key is found on a run that only appends: the file is not the one the last commit checked", async () => {
    ws.write("pipeline.yaml", eventsPipeline("insert_new"));
    ws.write("items.csv", items([1, 2]));
    ws.write("events.csv", "Day,Slot,Item,Qty\n2024-01-01,1,1,2\n");
    expect((await run()).code).toBe(0);
    // why: the sqlite3 CLI does not enforce foreign keys unless told to.
    sqlite(ws.path("db.sqlite"), "INSERT INTO events (day, slot, item_id, qty) VALUES ('2024-01-02', 1, 77, 1)");
    ws.write("events.csv", "Day,Slot,Item,Qty\n2024-01-01,1,1,2\n2024-01-03,1,2,1\n");
    await expectViolation(77);
  });

  test("a referenced row deleted by this run is found although the referencing table only grew", async () => {
    ws.write("pipeline.yaml", eventsPipeline("insert_new").replace("mode: upsert", "mode: replace"));
    ws.write("items.csv", items([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]));
    ws.write("events.csv", "Day,Slot,Item,Qty\n2024-01-01,1,10,2\n");
    expect((await run()).code).toBe(0);
    ws.write("items.csv", items([1, 2, 3, 4, 5, 6, 7, 8, 9]));
    ws.write("events.csv", "Day,Slot,Item,Qty\n2024-01-01,1,10,2\n2024-01-02,1,1,1\n");
    await expectViolation(10);
  });

  test("a referenced row a script step deletes is found although no declared step wrote that table", async () => {
    ws.write(
      "pipeline.yaml",
      eventsPipeline(
        "insert_new",
        '  - { name: tidy, type: sql, sql: "DELETE FROM items WHERE id = 10 AND (SELECT count(*) FROM events) > 1" }\n',
      ),
    );
    ws.write("items.csv", items([1, 10]));
    ws.write("events.csv", "Day,Slot,Item,Qty\n2024-01-01,1,10,2\n");
    expect((await run()).code).toBe(0);
    // why: the script deletes item 10 once the events have grown, on a run that only appends to them.
    ws.write("events.csv", "Day,Slot,Item,Qty\n2024-01-01,1,10,2\n2024-01-02,1,1,1\n");
    await expectViolation(10);
  });
});

describe.each(engines)("on %s, the foreign keys the checks verified", (engine) => {
  let ws: Workspace;
  beforeEach(() => (ws = new Workspace({ withClientPipeline: false })));
  afterEach(() => ws.remove());
  const run = (argv: string[] = []) => ws.cli(["run", "--json", ...argv], { PIPELINE_ENGINE: engine });
  /**
   * Events referencing items and slots; the check on events' items counts both keys with SQLite's own check (it runs
   * after load_events, the last step writing a table it reads); `extra` steps come after it.
   */
  const pipeline = (extra = "") => `version: 1
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
      - { name: events_items_present, check: relationships, column: item_id, to: items, field: id }
steps:
  - { name: load_items, type: load, source: items.csv, table: items, mode: upsert, columns: { id: Id } }
  - { name: load_slots, type: load, source: slots.csv, table: slots, mode: upsert, columns: { id: Id } }
  - { name: load_events, type: load, source: events.csv, table: events, mode: insert_new, columns: { id: Id, item_id: Item, slot_id: Slot } }
${extra}`;
  const write = (extra = "") => {
    ws.write("pipeline.yaml", pipeline(extra));
    ws.write("items.csv", "Id\n1\n2\n");
    ws.write("slots.csv", "Id\n1\n2\n");
    ws.write("events.csv", "Id,Item,Slot\n1,1,1\n2,2,2\n");
  };
  const violation = /1 foreign key violation\(s\) at the end of the run, so nothing was saved: events row .* references a missing/;

  test("are not verified again before the commit when nothing wrote them or their parents since", async () => {
    write();
    const result = await run();
    expect(result.code, result.stdout).toBe(0);
    expect([...leftToChecks]).toEqual(["events"]);
    expect(sqlite(ws.path("db.sqlite"), "PRAGMA foreign_key_check")).toBe("");
  });

  test("are verified again when a later step deletes a referenced row of a table the check did not read", async () => {
    write('  - { name: one_slot, type: sql, sql: "SELECT 1 AS id", into: slots }\n');
    const result = await run();
    expect(result.code, result.stdout).not.toBe(0);
    expect(JSON.parse(result.stdout).error).toMatchObject({ code: "E_DB", message: expect.stringMatching(violation) });
    expect([...leftToChecks]).toEqual([]);
  });

  // why: the script writes only where the pipeline's rows are (validation runs it on empty tables).
  test("are verified again when a later script writes a row breaking a key", async () => {
    write('  - { name: stray, type: sql, sql: "INSERT INTO events SELECT 3, 1, 99 WHERE EXISTS (SELECT 1 FROM slots)" }\n');
    const result = await run();
    expect(result.code, result.stdout).not.toBe(0);
    expect(JSON.parse(result.stdout).error).toMatchObject({ code: "E_DB", message: expect.stringMatching(violation) });
  });
});

describe("the foreign key lookup of appended rows", () => {
  const schema = `CREATE TABLE items (id INTEGER PRIMARY KEY, code TEXT NOT NULL UNIQUE) STRICT;
    CREATE TABLE events (id INTEGER NOT NULL, item_id INTEGER REFERENCES items (id), code TEXT REFERENCES items (code)) STRICT;
    INSERT INTO items VALUES (1, 'a'), (2, 'b');
    INSERT INTO events VALUES (1, 1, 'a'), (2, 2, NULL), (3, NULL, 'b');`;

  /** Runs `use` on a fresh in-memory database of `schema`, then closes it. */
  const onSchema = (use: (db: ReturnType<typeof openNativeMemory>) => void) => {
    const db = openNativeMemory();
    try {
      db.exec(schema);
      use(db);
    } finally {
      db.close();
    }
  };
  /** Appends rows with `sql` in a transaction that defers foreign keys, as a run does, checks them, and rolls them back. */
  const afterAppending = (db: ReturnType<typeof openNativeMemory>, sql: string, check: () => void) => {
    db.exec(`BEGIN; PRAGMA defer_foreign_keys = ON; ${sql}`);
    check();
    db.exec("ROLLBACK");
  };

  test("finds a broken key in the rows after the last one, and reports it as the whole check does", () =>
    onSchema((db) =>
      afterAppending(db, "INSERT INTO events VALUES (4, 1, 'a'), (5, 1, 'zz')", () => {
        const whole = messageOf(() => checkForeignKeys(db));
        expect(whole).toMatch(/1 foreign key violation/);
        expect(messageOf(() => checkForeignKeys(db, () => 3))).toBe(whole);
      }),
    ));

  test("looks only after the last row, and checks a table whose key it cannot look up exactly (no STRICT, another type) whole", () =>
    onSchema((db) => {
      afterAppending(db, "INSERT INTO events VALUES (9, 5, NULL)", () => {
        // why: the proof says the rows up to the last one are as a checked commit left them; here it is false on purpose.
        expect(() => checkForeignKeys(db, () => 4)).not.toThrow();
        expect(() => checkForeignKeys(db, () => 3)).toThrow(/1 foreign key violation/);
      });
      db.exec(
        `INSERT INTO items VALUES (3, '01'), (4, '5'); CREATE TABLE loose (code INTEGER REFERENCES items (code)); INSERT INTO loose VALUES (5)`,
      );
      afterAppending(db, "INSERT INTO loose VALUES (1)", () => {
        // why: \`=\` compares the integer 1 with the text '01' as numbers (a match); the foreign key compares them as text (none).
        expect(() => checkForeignKeys(db, () => 1)).toThrow(
          /^1 foreign key violation.*: loose row {"code":1} references a missing items row$/,
        );
      });
    }));

  test("checks every table whole when a table's proof is missing, or a referenced table's", () =>
    onSchema((db) =>
      afterAppending(db, "INSERT INTO events VALUES (4, 7, NULL)", () => {
        expect(() => checkForeignKeys(db, (table) => (table === "events" ? 4 : 2))).not.toThrow();
        expect(() => checkForeignKeys(db, (table) => (table === "events" ? 4 : undefined))).toThrow(/1 foreign key violation/);
        expect(() => checkForeignKeys(db, (table) => (table === "items" ? 2 : undefined))).toThrow(/1 foreign key violation/);
      }),
    ));
});

function messageOf(action: () => void): string {
  try {
    action();
  } catch (error) {
    return (error as Error).message;
  }
  return "";
}

describe("an expression check that is one comparison, counted through its negation", () => {
  test.each([
    ["date <= date(:run_started_at)", "date > date ( :run_started_at )"],
    ['"qty" <> -1', '"qty" = -1'],
    ["qty >= 0.5e1", "qty < 0.5e1"],
    ["lower(code) = 'it''s'", "lower ( code ) <> 'it''s'"],
    ["date(:run_started_at, '-1 day') < date", "date ( :run_started_at , '-1 day' ) >= date"],
    ["date <= date(:run_started_at) AND qty > 0", undefined],
    ["qty > 0 OR qty IS NULL", undefined],
    ["NOT (qty) <= 3", undefined],
    ["(qty) <= 3", undefined],
    ["qty <= 1 - 2", undefined],
    ["qty <= 3 COLLATE nocase", undefined],
    ["qty <= random()", undefined],
    ["qty <= (SELECT max(qty) FROM t)", undefined],
    ["abs((SELECT 1)) <= qty", undefined],
    ["qty <= 3 -- a comment", undefined],
    ["qty <= 3 /* a comment */", undefined],
    ["qty BETWEEN 1 AND 3", undefined],
    ["qty IS 3", undefined],
  ])("%s", (expression, negated) => {
    expect(negatedComparison(expression)).toBe(negated);
  });

  test("selects exactly the rows NOT (…) selects, for every operator and any values, NULL included", () => {
    const db = openNativeMemory();
    try {
      db.exec("CREATE TABLE t (a ANY, b ANY) STRICT");
      const values = ["NULL", "1", "2", "-1", "1.5", "'1'", "'a'", "'B'", "x'01'", "''"];
      for (const a of values) for (const b of values) db.exec(`INSERT INTO t VALUES (${a}, ${b})`);
      for (const op of ["<", "<=", ">", ">=", "=", "==", "<>", "!="]) {
        for (const [left, right] of [
          ["a", "b"],
          ["a", "1"],
          ["lower(a)", "'b'"],
        ]) {
          const expression = `${left} ${op} ${right}`;
          const count = (where: string) => Number(db.all(`SELECT count(*) AS n FROM t WHERE ${where}`)[0]?.["n"]);
          expect(count(negatedComparison(expression)!), expression).toBe(count(`NOT (${expression})`));
        }
      }
    } finally {
      db.close();
    }
  });

  test("a check the negation does not cover runs as written: a row failing one side of an AND is found", () => {
    const db = openNativeMemory();
    try {
      db.exec("CREATE TABLE sales (date TEXT NOT NULL, qty INTEGER NOT NULL) STRICT; CREATE INDEX sales_date ON sales (date)");
      db.exec("INSERT INTO sales VALUES ('2024-01-01', 2), ('2024-01-02', -1)");
      const pipeline = {
        version: 1,
        database: "x.db",
        tables: {
          sales: {
            columns: { date: { type: "date" }, qty: { type: "integer" } },
            checks: [
              { name: "in_the_past", check: "expression", column: "date", expression: "date <= date(:run_started_at)" },
              { name: "past_and_positive", check: "expression", expression: "date <= date(:run_started_at) AND qty > 0" },
            ],
          },
        },
        steps: [],
      } as unknown as Pipeline;
      const values = { run_id: 1, run_started_at: "2024-06-01T00:00:00.000Z" };
      const [inThePast, pastAndPositive] = declaredChecks(pipeline).map((check) => runCheck(db, check, "/", values));
      expect(inThePast).toMatchObject({ status: "passed", failingRows: 0, samples: [] });
      expect(pastAndPositive).toMatchObject({ status: "failed", failingRows: 1, samples: [{ date: "2024-01-02", qty: -1 }] });
      db.exec("INSERT INTO sales VALUES ('2024-07-01', 3)");
      const late = runCheck(db, declaredChecks(pipeline)[0]!, "/", values);
      expect(late).toMatchObject({ status: "failed", failingRows: 1, samples: [{ date: "2024-07-01", qty: 3 }] });
    } finally {
      db.close();
    }
  });
});

describe("a range check counted through its bounds compared alone", () => {
  const values = { run_id: 1, run_started_at: "2024-06-01T10:00:00.000Z" };
  const rangeCheck = (range: Record<string, unknown>) =>
    declaredChecks({
      version: 1,
      database: "x.db",
      tables: { sales: { columns: { date: { type: "text" } }, checks: [{ check: "range", column: "date", ...range }] } },
      steps: [],
    } as unknown as Pipeline)[0]!;

  test("counts exactly the rows its own query finds, for any bounds, inclusive or not, NULL included", () => {
    const db = openNativeMemory();
    try {
      db.exec("CREATE TABLE sales (date ANY) STRICT");
      for (const value of [
        "NULL",
        "1",
        "2",
        "-1",
        "1.5",
        "'1'",
        "'a'",
        "'B'",
        "x'01'",
        "''",
        "'2024-05-31'",
        "'2024-06-01'",
        "'2024-06-02'",
      ])
        db.exec(`INSERT INTO sales VALUES (${value})`);
      const bounds = [undefined, 1, 1.5, "a", "2024-06-01", { run: "date" }, { run: "time" }];
      const count = (sql: string) => Number(db.all(`SELECT count(*) AS n FROM (${sql}) AS counted`)[0]?.["n"]);
      let compared = 0;
      for (const min of bounds)
        for (const max of bounds)
          for (const inclusive of [true, false]) {
            if (min === undefined && max === undefined) continue;
            const check = rangeCheck({ min, max, inclusive });
            const indexed = `SELECT * FROM sales WHERE ${indexedFailingCondition(check, values)}`;
            expect(count(indexed), JSON.stringify({ min, max, inclusive })).toBe(count(failingRowsSql(check, "/", values)));
            compared++;
          }
      expect(compared).toBe(96);
    } finally {
      db.close();
    }
  });

  test("reads a bound of the run's day through an index on the column, and a row after that day still fails", () => {
    const db = openNativeMemory();
    try {
      db.exec("CREATE TABLE sales (date TEXT NOT NULL, product TEXT NOT NULL, UNIQUE (date, product)) STRICT");
      db.exec("INSERT INTO sales VALUES ('2024-05-31', 'A'), ('2024-06-01', 'B')");
      const check = rangeCheck({ max: { run: "date" } });
      const plan = db.all(`EXPLAIN QUERY PLAN SELECT count(*) FROM sales WHERE ${indexedFailingCondition(check, values)}`);
      expect(plan.map((row) => row["detail"]).join("\n")).toMatch(/^SEARCH sales USING COVERING INDEX \S+ \(date>\?\)$/);
      expect(runCheck(db, check, "/", values)).toMatchObject({ status: "passed", failingRows: 0 });
      db.exec("INSERT INTO sales VALUES ('2024-06-02', 'C')");
      expect(runCheck(db, check, "/", values)).toMatchObject({
        status: "failed",
        failingRows: 1,
        samples: [{ date: "2024-06-02", product: "C" }],
      });
    } finally {
      db.close();
    }
  });
});
