import { execFileSync } from "node:child_process";
import { closeSync, openSync, readFileSync, statSync, writeFileSync, writeSync } from "node:fs";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { clientFileEnv, sqlite, testEngine, Workspace } from "./helpers/workspace.js";

// The stored database is not taken on faith: objects the runner did not create (triggers, views,
// indexes) on the tables it declares, and damaged indexes, are refused before anything is saved.
// Each attack is planted with the real sqlite3 CLI in a database the runner wrote.

let ws: Workspace;
const env = { ...clientFileEnv, REPORT_DIR: "reports" };
const db = () => ws.path("output/sales.db");
const sales = "tests/fixtures/client/ventes.csv";

beforeEach(async () => {
  ws = new Workspace();
  ws.copyClientFiles();
  expect((await ws.cli(["run"], env)).code).toBe(0);
});
afterEach(() => ws.remove());

/** Adds one sale the database does not hold yet, so the next run inserts a row and recomputes every analysis. */
function addSale(): void {
  ws.write(sales, readFileSync(ws.path(sales), "utf8").replace(/\r?\n?$/, "\r\n2023-06-26,REF001,1,1"));
}

/** Runs again and checks the run was refused with E_DRIFT, exit 1, and left the file byte-identical. */
async function expectRefused(plant: string, ...messages: (string | RegExp)[]) {
  sqlite(db(), plant);
  addSale();
  const before = ws.bytes();
  const run = await ws.cli(["run"], env);
  expect(run.code).toBe(1);
  expect(run.stderr).toMatch(/^error E_DRIFT /);
  for (const message of messages) expect(run.stderr).toMatch(message);
  expect(run.stderr).not.toMatch(/\n\s+at /);
  expect(ws.bytes()).toEqual(before);
  expect(sqlite(db(), "SELECT count(*) FROM sales")).toBe("30");
  return run;
}

describe("objects planted in the stored database", () => {
  test("a trigger that multiplies the quantities the runner inserts is refused, naming it and how to remove it", async () => {
    await expectRefused(
      "CREATE TRIGGER x100 AFTER INSERT ON sales BEGIN UPDATE sales SET quantity = quantity * 100 WHERE rowid = new.rowid; END;",
      'trigger "x100" on table sales',
      /sqlite3 \S*output\/sales\.db 'DROP TRIGGER "x100";'/,
      /Nothing was changed/,
    );
  });

  test("a trigger that ignores the DELETE of a replace (stale results stay) is refused", async () => {
    await expectRefused(
      "CREATE TRIGGER keep_old BEFORE DELETE ON revenue_total BEGIN SELECT RAISE(IGNORE); END;",
      'trigger "keep_old" on table revenue_total',
    );
  });

  test("a trigger on an engine table is refused too", async () => {
    await expectRefused(
      "CREATE TRIGGER forget AFTER INSERT ON pipeline_runs BEGIN DELETE FROM pipeline_rejected_rows; END;",
      'trigger "forget" on table pipeline_runs',
    );
  });

  test("a trigger given a reserved sqlite_ name through PRAGMA writable_schema is refused too", async () => {
    await expectRefused(
      `PRAGMA writable_schema = ON;
       INSERT INTO sqlite_schema VALUES ('trigger', 'sqlite_x100', 'sales', 0,
         'CREATE TRIGGER sqlite_x100 AFTER INSERT ON sales BEGIN UPDATE sales SET quantity = quantity * 100 WHERE rowid = new.rowid; END');`,
      'trigger "sqlite_x100" on table sales',
    );
  });

  test("a table stored under a declared name in another case is refused, with the renames that fix it", async () => {
    const run = await expectRefused(
      'ALTER TABLE stores RENAME TO "Stores_x"; ALTER TABLE "Stores_x" RENAME TO "Stores";',
      'table "Stores" named like the declared table stores in another case',
    );
    const fix = /'(ALTER TABLE "Stores" RENAME TO .*;)'/.exec(run.stderr)?.[1];
    expect(fix).toBeDefined();
    sqlite(db(), fix!);
    const again = await ws.cli(["run"], env);
    expect(again.stderr).toBe("");
    expect(again.code).toBe(0);
  });

  test("a view in place of a declared table is refused", async () => {
    await expectRefused(
      "DROP TABLE sales_by_region; CREATE VIEW sales_by_region AS SELECT 'Nowhere' AS region, 1 AS cities, 1 AS sales_lines, 1 AS quantity, 100 AS revenue_cents, 1.0 AS revenue, 100.0 AS revenue_share_pct;",
      'view "sales_by_region" in place of the declared table sales_by_region',
      `DROP VIEW "sales_by_region";`,
    );
  });

  test("an index the runner did not create on a declared table is refused (a UNIQUE one would drop rows)", async () => {
    await expectRefused(
      "CREATE UNIQUE INDEX one_sale_a_day ON sales (date, store_id) WHERE quantity > 100;",
      'index "one_sale_a_day" on table sales',
    );
  });

  test("a trigger on the user's own table that writes into a declared table is refused", async () => {
    await expectRefused(
      'CREATE TABLE notes (text TEXT); CREATE TRIGGER sneaky AFTER INSERT ON notes BEGIN DELETE FROM "SALES"; END;',
      'trigger "sneaky" on table notes names the declared table sales',
    );
  });

  test("every planted object is named at once, and plan / --dry-run report the same refusal", async () => {
    sqlite(db(), "CREATE TRIGGER a AFTER INSERT ON sales BEGIN SELECT 1; END; CREATE INDEX b ON stores (city); CREATE VIEW c AS SELECT 1;");
    const before = ws.bytes();
    for (const argv of [["plan"], ["run", "--dry-run"]]) {
      const plan = await ws.cli(argv, env);
      expect(plan.code, argv.join(" ")).toBe(1);
      expect(plan.stderr).toMatch(/^error E_DRIFT /);
      expect(plan.stderr).toContain('trigger "a" on table sales');
      expect(plan.stderr).toContain('index "b" on table stores');
      expect(plan.stderr).not.toContain('"c"');
    }
    expect(ws.bytes()).toEqual(before);
  });

  test("the user's own tables may keep their triggers, views and indexes when they do not touch declared tables", async () => {
    sqlite(
      db(),
      [
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT, at TEXT)",
        "CREATE INDEX notes_at ON notes (at)",
        "CREATE TRIGGER notes_stamp AFTER INSERT ON notes BEGIN UPDATE notes SET at = 'now' WHERE id = new.id; END",
        "CREATE VIEW top_cities AS SELECT city, revenue_cents FROM sales_by_city ORDER BY revenue_cents DESC LIMIT 3",
      ].join(";\n"),
    );
    addSale();
    const run = await ws.cli(["run"], env);
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    expect(sqlite(db(), "SELECT count(*) FROM sales")).toBe("31");
    expect(sqlite(db(), "SELECT count(*) FROM top_cities; SELECT name FROM sqlite_schema WHERE type = 'trigger'")).toBe("3\nnotes_stamp");
  });
});

describe("a damaged database", () => {
  /** Gives sales an empty UNIQUE index: swaps its root page with that of a new, empty table's same index (PRAGMA writable_schema). */
  function emptySalesIndex(): void {
    sqlite(
      db(),
      "CREATE TABLE shadow (date TEXT NOT NULL, product_id TEXT NOT NULL, store_id INTEGER NOT NULL, UNIQUE (date, product_id, store_id))",
    );
    const page = (name: string) => sqlite(db(), `SELECT rootpage FROM sqlite_schema WHERE name = '${name}'`);
    const [salesPage, shadowPage] = [page("sqlite_autoindex_sales_1"), page("sqlite_autoindex_shadow_1")];
    sqlite(
      db(),
      `PRAGMA writable_schema = ON;
       UPDATE sqlite_schema SET rootpage = ${shadowPage} WHERE name = 'sqlite_autoindex_sales_1';
       UPDATE sqlite_schema SET rootpage = ${salesPage} WHERE name = 'sqlite_autoindex_shadow_1';`,
    );
  }

  test("a UNIQUE index that disagrees with its table (integrity_check fails) is refused: no duplicate is saved", async () => {
    emptySalesIndex();
    expect(sqlite(db(), "PRAGMA integrity_check(sales)")).toMatch(/missing from index sqlite_autoindex_sales_1/);
    // why: the same sales in another order, so the source did not only grow and every row is looked up again.
    const [header, ...lines] = readFileSync(ws.path(sales), "utf8").trim().split(/\r?\n/);
    ws.write(sales, [header, ...lines.reverse()].join("\r\n"));
    const before = ws.bytes();
    const run = await ws.cli(["run"], env);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^error E_DB /);
    expect(run.stderr).toMatch(/table sales: .*index sqlite_autoindex_sales_1/);
    expect(run.stderr).toMatch(/sqlite3 \S*output\/sales\.db 'REINDEX "sales";'/);
    expect(run.stderr).toMatch(/backup/);
    expect(run.stderr).not.toMatch(/\n\s+at /);
    expect(ws.bytes()).toEqual(before);
    expect(sqlite(db(), "SELECT count(*) FROM sales NOT INDEXED")).toBe("30");
  });

  test("after the REINDEX the message gives, the run goes on and imports nothing twice", async () => {
    emptySalesIndex();
    sqlite(db(), 'REINDEX "sales";');
    addSale();
    const run = await ws.cli(["run"], env);
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    expect(sqlite(db(), "SELECT count(*), count(DISTINCT date || product_id || store_id) FROM sales")).toBe("31|31");
  });

  /** Writes the source's sales in reverse order, so the source did not only grow and every row is looked up again. */
  function reverseSales(): void {
    const [header, ...lines] = readFileSync(ws.path(sales), "utf8").trim().split(/\r?\n/);
    ws.write(sales, [header, ...lines.reverse()].join("\r\n"));
  }

  /** The mark a commit of the runner records beside the database, forged from the file as it is now, with `change` applied. */
  function forgeMark(change: Record<string, number>): void {
    const info = statSync(db());
    const counter = readFileSync(db()).readUInt32BE(24);
    const tables = sqlite(db(), "SELECT name FROM sqlite_schema WHERE type = 'table'").split("\n");
    writeFileSync(
      `${db()}.checked`,
      JSON.stringify({ size: info.size, mtimeMs: info.mtimeMs, ino: info.ino, ctimeMs: info.ctimeMs, counter, tables, ...change }),
    );
  }

  test.each([
    ["its change counter", { counter: -1 }],
    ["its size", { size: -1 }],
    ["its modification time", { mtimeMs: -1 }],
    ["its inode", { ino: -1 }],
    ["its change time", { ctimeMs: -1 }],
  ])(
    "the integrity check is skipped only for a file exactly as the runner's last commit left it: a mark that differs in %s is not trusted",
    async (_, change) => {
      emptySalesIndex();
      forgeMark(change);
      reverseSales();
      const before = ws.bytes();
      const run = await ws.cli(["run"], env);
      expect(run.code).toBe(1);
      expect(run.stderr).toMatch(/^error E_DB .*table sales: .*index sqlite_autoindex_sales_1/);
      expect(ws.bytes()).toEqual(before);
    },
  );

  test("a file as the runner's last commit left it is not checked again (the limit: a mark forged to match lets planted damage through)", async () => {
    emptySalesIndex();
    forgeMark({});
    addSale();
    const run = await ws.cli(["run"], env);
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    // why: a fresh mark was recorded by that commit, and the damage is still there for the next run that does check.
    expect(sqlite(db(), "PRAGMA integrity_check(sales)")).toMatch(/missing from index sqlite_autoindex_sales_1/);
  });

  test("the mark a commit records is the file as that commit left it: the runner touches the file no more after it", () => {
    const mark = JSON.parse(readFileSync(`${db()}.checked`, "utf8")) as Record<string, number>;
    const now = statSync(db());
    expect([mark["size"], mark["mtimeMs"], mark["ino"], mark["ctimeMs"]]).toEqual([now.size, now.mtimeMs, now.ino, now.ctimeMs]);
  });

  test("a write that then sets the file's change counter and modification time back is not trusted: its change time moved", async () => {
    const file = db();
    const before = statSync(file);
    const { mtimeNs } = statSync(file, { bigint: true });
    const header = readFileSync(file).subarray(0, 100);
    // why: 5 -> -5 keeps the record's size, so the file keeps its size too.
    sqlite(file, "UPDATE sales SET quantity = -quantity WHERE rowid = (SELECT min(rowid) FROM sales)");
    const fd = openSync(file, "r+");
    try {
      writeSync(fd, header, 24, 4, 24);
      writeSync(fd, header, 92, 4, 92);
    } finally {
      closeSync(fd);
    }
    // why: touch takes the nanoseconds that utimes' seconds in floating point would round.
    execFileSync("touch", ["-m", "-d", `@${mtimeNs / 1_000_000_000n}.${String(mtimeNs % 1_000_000_000n).padStart(9, "0")}`, file]);
    const after = statSync(file);
    expect([after.size, after.mtimeMs, after.ino, readFileSync(file).readUInt32BE(24)]).toEqual([
      before.size,
      before.mtimeMs,
      before.ino,
      header.readUInt32BE(24),
    ]);
    const run = await ws.cli(["run"], env);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^error E_CHECK .*quantities_positive/m);
  });

  test.skipIf(testEngine !== "native")(
    "in WAL mode, where a commit changes neither the header's counter nor the main file, damage planted by the sqlite3 CLI is refused",
    async () => {
      expect(sqlite(db(), "PRAGMA journal_mode = WAL")).toBe("wal");
      addSale();
      expect((await ws.cli(["run"], env)).code).toBe(0);
      emptySalesIndex();
      reverseSales();
      const run = await ws.cli(["run"], env);
      expect(run.code).toBe(1);
      expect(run.stderr).toMatch(/^error E_DB .*table sales: .*index sqlite_autoindex_sales_1/);
      expect(sqlite(db(), "SELECT count(*) FROM sales NOT INDEXED")).toBe("31");
    },
  );

  test("a damaged page met during a step is reported as a damaged database, not as a crash", async () => {
    const root = Number(sqlite(db(), "SELECT rootpage FROM sqlite_schema WHERE name = 'sqlite_autoindex_sales_1'"));
    const pageSize = Number(sqlite(db(), "PRAGMA page_size"));
    const bytes = readFileSync(db());
    // why: garbles cell bytes of the index's root page and leaves its header, so the file opens and the damage shows on the first lookup.
    for (let i = root * pageSize - 200; i < root * pageSize - 100; i++) bytes[i]! ^= 0x5a;
    writeFileSync(db(), bytes);
    const check = () => {
      try {
        return sqlite(db(), "PRAGMA integrity_check");
      } catch (error) {
        return (error as Error).message;
      }
    };
    expect(check()).toMatch(/malformed|Multiple uses|corrupt/);
    const [header, ...lines] = readFileSync(ws.path(sales), "utf8").trim().split(/\r?\n/);
    ws.write(sales, [header, ...lines.reverse()].join("\r\n"));
    const run = await ws.cli(["run"], env);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^error E_DB \S*output\/sales\.db is damaged .*table sales: /);
    expect(run.stderr).not.toMatch(/\n\s+at /);
    expect(ws.bytes()).toEqual(bytes);
  });
});
