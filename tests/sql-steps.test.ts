import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { runLogger } from "../engine/output.js";
import { colorsFor } from "../engine/output.js";
import { sqlite, Workspace } from "./helpers/workspace.js";

let ws: Workspace;
beforeEach(() => {
  ws = new Workspace({ withClientPipeline: false });
  ws.write("n.csv", "n\n1\n2\n");
});
afterEach(() => ws.remove());

const pipeline = (steps: string) => `version: 1
database: db.sqlite
tables:
  numbers:
    columns: { n: { type: integer } }
    primary_key: [n]
  history:
    columns:
      run_id: { type: integer, required: true }
      total: { type: integer, required: true }
steps:
  - { name: load, type: load, source: n.csv, table: numbers, mode: upsert, columns: { n: n } }
${steps}`;

describe("sql steps", () => {
  test("into: with mode append keeps one row per run, tagged with :run_id", async () => {
    ws.write(
      "pipeline.yaml",
      pipeline("  - { name: keep, type: sql, sql: 'SELECT :run_id AS run_id, sum(n) AS total FROM numbers', into: history, mode: append }"),
    );
    for (let i = 0; i < 3; i++) {
      ws.write("n.csv", `n\n1\n2\n${10 + i}\n`);
      expect((await ws.cli(["run"])).code).toBe(0);
    }
    expect(sqlite(ws.path("db.sqlite"), "SELECT run_id, total FROM history ORDER BY run_id")).toBe("1|13\n2|24\n3|36");
  });

  test("without into:, the statements run as they are (a view here)", async () => {
    ws.write(
      "pipeline.yaml",
      pipeline("  - { name: view, type: sql, sql: 'DROP VIEW IF EXISTS doubled; CREATE VIEW doubled AS SELECT n * 2 AS d FROM numbers;' }"),
    );
    expect((await ws.cli(["run"])).code).toBe(0);
    expect((await ws.cli(["run"])).code).toBe(0);
    expect(sqlite(ws.path("db.sqlite"), "SELECT d FROM doubled ORDER BY d")).toBe("2\n4");
  });

  test("an unknown :parameter is reported before the run", async () => {
    ws.write("pipeline.yaml", pipeline("  - { name: keep, type: sql, sql: 'SELECT :run AS run_id, 1 AS total', into: history }"));
    const result = await ws.cli(["validate"]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("error E_CONFIG unknown parameter :run in sql; available: :run_id, :run_started_at");
  });

  test("with into:, a file of several statements is refused", async () => {
    ws.write(
      "pipeline.yaml",
      pipeline("  - { name: keep, type: sql, sql: 'SELECT 1 AS run_id, 2 AS total; SELECT 3 AS run_id, 4 AS total', into: history }"),
    );
    expect((await ws.cli(["validate"])).stderr).toContain("with into:, sql must hold exactly one SELECT; it holds 2 statements");
  });
});

describe("foreign key actions", () => {
  test("a script's table with ON DELETE CASCADE cascades within the run", async () => {
    ws.write(
      "pipeline.yaml",
      pipeline(
        "  - { name: tags, type: sql, sql: 'CREATE TABLE tags (n INTEGER REFERENCES numbers (n) ON DELETE CASCADE); INSERT INTO tags SELECT n FROM numbers; DELETE FROM numbers WHERE n = 2;' }",
      ),
    );
    const result = await ws.cli(["run"]);
    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
    expect(sqlite(ws.path("db.sqlite"), "SELECT n FROM tags")).toBe("1");
  });

  test("a table another program made with ON DELETE CASCADE cascades when a load replaces its parent rows", async () => {
    ws.write("pipeline.yaml", pipeline("").replace("mode: upsert", "mode: replace"));
    expect((await ws.cli(["run"])).code).toBe(0);
    sqlite(
      ws.path("db.sqlite"),
      "CREATE TABLE notes (n INTEGER REFERENCES numbers (n) ON DELETE CASCADE); INSERT INTO notes VALUES (1), (2)",
    );
    ws.write("n.csv", "n\n1\n3\n");
    const result = await ws.cli(["run"]);
    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
    // why: a replace load deletes every stored row before it inserts the file's rows.
    expect(sqlite(ws.path("db.sqlite"), "SELECT count(*) FROM notes")).toBe("0");
  });
});

describe("a load writes without SQLite evaluating CHECKs; what follows it does not", () => {
  const dated = (sql: string) => `version: 1
database: db.sqlite
tables:
  days:
    columns: { day: { type: date }, open: { type: boolean } }
  copies:
    columns: { day: { type: date }, open: { type: boolean } }
steps:
  - { name: load, type: load, source: d.csv, table: days, mode: append, columns: { day: day, open: open } }
  - { name: copy, type: sql, sql: "${sql}", into: copies }
`;

  test.each([
    ["an impossible date", "SELECT '2023-02-30' AS day, 1 AS open"],
    ["a boolean that is neither 0 nor 1", "SELECT day, 2 AS open FROM days"],
  ])("a sql step right after a load that writes %s fails the run, and nothing is saved", async (_what, sql) => {
    ws.write("d.csv", "day,open\n2024-02-29,yes\n2023-12-31,no\n");
    ws.write("pipeline.yaml", dated(sql));
    const result = await ws.cli(["run"]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("CHECK constraint failed");
    expect(sqlite(ws.path("db.sqlite"), "SELECT count(*) FROM sqlite_schema WHERE name = 'days'")).toBe("0");
  });

  test("a foreign key action (another program's table) writes values no cast made: its table's own CHECK still holds", async () => {
    ws.write(
      "pipeline.yaml",
      `version: 1
database: db.sqlite
tables:
  stores:
    columns: { id: { type: integer }, code: { type: text, required: true } }
    primary_key: [id]
    unique: [[code]]
steps:
  - { name: load, type: load, source: s.csv, table: stores, mode: upsert, columns: { id: id, code: code } }
`,
    );
    ws.write("s.csv", "id,code\n1,ABC\n");
    expect((await ws.cli(["run"])).code).toBe(0);
    sqlite(
      ws.path("db.sqlite"),
      "CREATE TABLE notes (code TEXT REFERENCES stores (code) ON UPDATE CASCADE, CHECK (code = upper(code))); INSERT INTO notes VALUES ('ABC')",
    );
    ws.write("s.csv", "id,code\n1,abc\n");
    const result = await ws.cli(["run"]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("CHECK constraint failed");
    expect(sqlite(ws.path("db.sqlite"), "SELECT code FROM notes; PRAGMA integrity_check;")).toBe("ABC\nok");
  });

  test("the load's own rows are stored as cast, and the table's CHECKs hold on them", async () => {
    ws.write("d.csv", "day,open\n2024-02-29,yes\n2023-12-31,no\n");
    ws.write("pipeline.yaml", dated("SELECT day, open FROM days"));
    expect((await ws.cli(["run"])).code).toBe(0);
    expect(sqlite(ws.path("db.sqlite"), "SELECT day, open FROM copies ORDER BY day")).toBe("2023-12-31|0\n2024-02-29|1");
    expect(sqlite(ws.path("db.sqlite"), "SELECT count(*) FROM days WHERE NOT (day IS date(day)) OR open NOT IN (0, 1)")).toBe("0");
  });
});

describe("progress on a terminal", () => {
  test("long loads show rows and rows/s, then the line is cleared", () => {
    let written = "";
    const tty = { isTTY: true, write: (text: string) => (written += text) };
    const log = runLogger(tty, colorsFor(tty, { NO_COLOR: "1" }), "db.sqlite");
    const step = { index: 0, name: "load", type: "load", description: "load x", details: [], writes: [] } as never;
    log({ kind: "progress", step, rows: 150_000, elapsedMs: 1500 });
    expect(written).toBe("\r      150 000 rows (100 000 rows/s)");
    log({
      kind: "step-end",
      result: { index: 0, name: "load", type: "load", description: "", status: "success", counts: { read: 150_000 }, durationMs: 1600 },
    });
    expect(written.endsWith("\r\x1b[2K      ✓ 150 000 read (1.60 s)\n")).toBe(true);
  });

  test("no progress is written when the output is not a terminal", () => {
    let written = "";
    const pipe = { write: (text: string) => (written += text) };
    const log = runLogger(pipe, colorsFor(pipe, {}), "db.sqlite");
    log({ kind: "progress", step: {} as never, rows: 150_000, elapsedMs: 1500 });
    expect(written).toBe("");
  });
});
