import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { onPostgres, Workspace } from "./helpers/workspace.js";

let ws: Workspace;
beforeEach(() => {
  ws = new Workspace({ withClientPipeline: false });
});
afterEach(() => ws.remove());

const tables = `
tables:
  items:
    columns:
      id: { type: integer }
      label: { type: text, required: true }
      price: { type: decimal, scale: 2 }
      day: { type: date }
      active: { type: boolean }
    primary_key: [id]
  events:
    columns:
      day: { type: date, required: true }
      item_id: { type: integer, required: true }
      qty: { type: integer, required: true }
    unique: [[day, item_id]]
    foreign_keys: [{ columns: [item_id], references: { table: items, columns: [id] } }]
`;

/** A pipeline that loads items.csv then events.csv with the given modes and extra step options. */
function pipeline(options: { items?: string; events?: string; itemsExtra?: string; eventsExtra?: string } = {}): string {
  return `version: 1
database: db.sqlite
${tables}
steps:
  - name: load_items
    type: load
    source: items.csv
    table: items
    mode: ${options.items ?? "upsert"}
${options.itemsExtra ?? ""}
    columns:
      id: Id
      label: Label
      price: { from: Price, decimal_separator: "," }
      day: { from: Day, format: dd/MM/yyyy }
      active: { from: Active, true_values: [oui], false_values: [non] }
  - name: load_events
    type: load
    source: events.csv
    table: events
    mode: ${options.events ?? "insert_new"}
${options.eventsExtra ?? ""}
    columns:
      day: Day
      item_id: Item
      qty: Qty
`;
}

const items = "Id;Label;Price;Day;Active\n1;Un;1,50;31/12/2023;oui\n2;Deux;2;01/01/2024;non\n";
const itemsComma = "Id,Label,Price,Day,Active\n1,Un,1,31/12/2023,oui\n2,Deux,2,01/01/2024,non\n";

interface Report {
  ok: boolean;
  status: string;
  error?: { code: string; message: string };
  steps: { name: string; status: string; counts: Record<string, number> }[];
}

async function run(argv: string[] = []): Promise<Report & { code: number }> {
  const result = await ws.cli(["run", "--json", ...argv]);
  return { code: result.code, ...(JSON.parse(result.stdout) as Report) };
}

const counts = (report: Report, step: string) => report.steps.find((s) => s.name === step)?.counts;
/** Runs SQL on the database the runs wrote, whatever the engine. */
const query = (sql: string) => ws.query(sql, "db.sqlite");

describe("casting and rejected rows", () => {
  test("values are cast to their declared types, and semicolon CSV is read with csv.delimiter", async () => {
    ws.write("pipeline.yaml", pipeline({ itemsExtra: '    csv: { delimiter: ";" }' }));
    ws.write("items.csv", items);
    ws.write("events.csv", "Day,Item,Qty\n2024-01-01,1,3\n");
    const report = await run();
    expect(report.code).toBe(0);
    expect(query("SELECT id, label, price, day, active FROM items ORDER BY id")).toBe("1|Un|150|2023-12-31|1\n2|Deux|200|2024-01-01|0");
    expect(
      query(
        onPostgres
          ? "SELECT data_type FROM information_schema.columns WHERE table_name = 'items' AND column_name = 'price'"
          : "SELECT DISTINCT typeof(price) FROM items",
      ),
    ).toBe(onPostgres ? "bigint" : "integer");
  });

  test("a row that cannot be cast goes to pipeline_rejected_rows with its line, raw text, column and reason", async () => {
    ws.write("pipeline.yaml", pipeline({ itemsExtra: '    csv: { delimiter: ";" }' }));
    ws.write("items.csv", items);
    ws.write(
      "events.csv",
      "Day,Item,Qty\n2024-01-01,1,3\n\n2024-01-02,1,12.5\n2024-02-30,1,1\n2024-01-03,9,1\n2024-01-04,2\n2024-01-05,2,\n2024-01-06,2,4\n",
    );
    const report = await run();
    expect(report.code).toBe(0);
    expect(report.status).toBe("succeeded_with_rejections");
    expect(counts(report, "load_events")).toEqual({ read: 7, inserted: 2, updated: 0, unchanged: 0, rejected: 5, conflicting: 0 });
    expect(query("SELECT line, raw, coalesce(\"column\", '-'), reason FROM pipeline_rejected_rows ORDER BY line")).toBe(
      [
        '4|2024-01-02,1,12.5|qty|"12.5" is not an integer',
        '5|2024-02-30,1,1|day|"2024-02-30" is not a real date (format yyyy-MM-dd)',
        "6|2024-01-03,9,1|item_id|item_id 9 is not in items (id)",
        "7|2024-01-04,2|-|expected 3 fields as in the header, found 2",
        "8|2024-01-05,2,|qty|a value is required, the field is empty",
      ].join("\n"),
    );
    expect(query("SELECT count(*) FROM events")).toBe("2");
  });

  test("more rejected rows than max_rejected fails the run and saves nothing", async () => {
    ws.write("pipeline.yaml", pipeline({ itemsExtra: '    csv: { delimiter: ";" }', eventsExtra: "    max_rejected: 1" }));
    ws.write("items.csv", items);
    ws.write("events.csv", "Day,Item,Qty\n2024-01-01,1,x\n2024-01-02,1,y\n2024-01-03,1,3\n");
    const report = await run();
    expect(report.code).toBe(1);
    expect(report.error?.message).toContain("events.csv: 2 of 3 rows rejected, more than max_rejected (1); first: line 2, qty:");
    expect(ws.state("db.sqlite")).toBeUndefined();
  });

  test("quotes, emoji, multi-line fields and SQL-looking text come back verbatim", async () => {
    ws.write("pipeline.yaml", pipeline());
    const labels = [`Robert'); DROP TABLE items;--`, `say "hi"`, "emoji 🧾✓", "two\nlines", "  spaced  "];
    const csv = "Id,Label,Price,Day,Active\n" + labels.map((l, i) => `${i + 1},"${l.replaceAll('"', '""')}",1,01/01/2024,oui`).join("\r\n");
    ws.write("items.csv", csv);
    ws.write("events.csv", "Day,Item,Qty\n");
    expect((await run()).code).toBe(0);
    const stored = ws.rows("SELECT label FROM items ORDER BY id", "db.sqlite").map((row) => row["label"]);
    expect(stored).toEqual(labels.map((l) => l.trim()));
  });
});

describe("load modes", () => {
  beforeEach(() => {
    ws.write("items.csv", itemsComma);
    ws.write("events.csv", "Day,Item,Qty\n2024-01-01,1,3\n2024-01-02,2,4\n");
  });

  test("upsert inserts new keys, updates changed rows and counts unchanged ones", async () => {
    ws.write("pipeline.yaml", pipeline({ items: "upsert" }));
    expect((await run()).code).toBe(0);
    ws.write("items.csv", "Id,Label,Price,Day,Active\n1,Un,1,31/12/2023,oui\n2,Deux,5,01/01/2024,non\n3,Trois,3,02/01/2024,non\n");
    const report = await run();
    expect(counts(report, "load_items")).toEqual({ read: 3, inserted: 1, updated: 1, unchanged: 1, rejected: 0, conflicting: 0 });
    expect(query("SELECT id, price FROM items ORDER BY id")).toBe("1|100\n2|500\n3|300");
  });

  test.each([
    ["reject", 0, { inserted: 1, updated: 0, unchanged: 1, conflicting: 1 }, "3"],
    ["update", 0, { inserted: 1, updated: 1, unchanged: 1, conflicting: 0 }, "30"],
    ["fail", 1, undefined, "3"],
  ] as const)("insert_new with on_conflict: %s", async (policy, code, expected, storedQty) => {
    ws.write("pipeline.yaml", pipeline({ eventsExtra: `    on_conflict: ${policy}` }));
    const first = await run();
    expect(first.code, first.error?.message).toBe(0);
    ws.write("events.csv", "Day,Item,Qty\n2024-01-01,1,30\n2024-01-02,2,4\n2024-01-03,2,5\n");
    const report = await run();
    expect(report.code).toBe(code);
    if (expected) expect(counts(report, "load_events")).toEqual({ read: 3, rejected: 0, ...expected });
    else
      expect(report.error?.message).toMatch(
        /events\.csv line 2: key \(day, item_id\) is already stored with other values: stored \{"day":"2024-01-01","item_id":1,"qty":3\}, new \{"day":"2024-01-01","item_id":1,"qty":30\} \(on_conflict: fail\)/,
      );
    expect(query("SELECT qty FROM events WHERE day = '2024-01-01'")).toBe(storedQty);
  });

  test("a key repeated inside one file follows the same policy", async () => {
    ws.write("pipeline.yaml", pipeline({ eventsExtra: "    on_conflict: reject" }));
    ws.write("events.csv", "Day,Item,Qty\n2024-01-01,1,3\n2024-01-01,1,3\n2024-01-01,1,4\n");
    const report = await run();
    expect(counts(report, "load_events")).toEqual({ read: 3, inserted: 1, updated: 0, unchanged: 1, rejected: 0, conflicting: 1 });
    expect(query("SELECT line, new_values FROM pipeline_rejected_rows")).toBe('4|{"day":"2024-01-01","item_id":1,"qty":4}');
  });

  test("replace refuses an empty or much smaller download unless forced", async () => {
    ws.write("pipeline.yaml", pipeline({ items: "replace", itemsExtra: "    min_replace_ratio: 0.9" }));
    expect((await run()).code).toBe(0);
    ws.write("events.csv", "Day,Item,Qty\n");
    ws.write("items.csv", "Id,Label,Price,Day,Active\n");
    const before = ws.state("db.sqlite");
    const refused = await run();
    expect(refused.code).toBe(1);
    expect(refused.error).toMatchObject({ code: "E_REPLACE" });
    expect(refused.error?.message).toContain("items.csv has no data rows; replacing would empty items (2 rows)");
    expect(ws.state("db.sqlite")).toEqual(before);

    ws.write("items.csv", "Id,Label,Price,Day,Active\n1,Un,1,31/12/2023,oui\n");
    const smaller = await run();
    expect(smaller.error?.message).toContain("has 1 rows, less than 90% of the 2 stored in items; refusing to replace (min_replace_ratio)");
    // why: item 2 is still referenced by an event, so even a forced replace must not orphan it.
    const forced = await run(["--force"]);
    expect(forced.code).toBe(1);
    expect(forced.error?.message).toMatch(
      onPostgres
        ? /a constraint is broken at the end of the run, so nothing was saved: .*"items" violates foreign key constraint .* on table "events" \(Key \(id\)=\(2\) is still referenced/
        : /1 foreign key violation\(s\) at the end of the run, so nothing was saved: events row .* references a missing items row/,
    );
    expect(ws.state("db.sqlite")).toEqual(before);
  });

  test("replace swaps the table's content and reports what it deleted", async () => {
    ws.write("pipeline.yaml", pipeline({ items: "replace" }));
    expect((await run()).code).toBe(0);
    ws.write("items.csv", "Id,Label,Price,Day,Active\n1,One,1,31/12/2023,oui\n2,Two,2,01/01/2024,non\n");
    const report = await run();
    expect(counts(report, "load_items")).toEqual({
      read: 2,
      inserted: 2,
      updated: 0,
      unchanged: 0,
      rejected: 0,
      conflicting: 0,
      deleted: 2,
    });
    expect(query("SELECT label FROM items ORDER BY id")).toBe("One\nTwo");
  });

  test("append inserts every row; a unique-key collision is a rejected row", async () => {
    ws.write("pipeline.yaml", pipeline({ events: "append" }));
    expect((await run()).code).toBe(0);
    ws.write("events.csv", "Day,Item,Qty\n2024-01-01,1,3\n2024-01-09,1,4\n");
    const report = await run();
    expect(counts(report, "load_events")).toMatchObject({ read: 2, inserted: 1, rejected: 1 });
    expect(query("SELECT reason FROM pipeline_rejected_rows")).toMatch(
      onPostgres
        ? /duplicate key value violates unique constraint .*\(day, item_id\)=\(2024-01-01, 1\)/
        : /UNIQUE constraint failed: events\.day, events\.item_id/,
    );
  });
});

describe("a wide table", () => {
  const width = 300;
  const names = Array.from({ length: width }, (_, i) => `c${i}`);
  const csv = (rows: number[]) =>
    [names.map((name) => name.toUpperCase()).join(","), ...rows.map((r) => names.map((_, i) => r * width + i).join(","))].join("\n") + "\n";
  const sum = (rows: number[]) => rows.reduce((total, r) => total + r * width + width - 1, 0);

  // why: 128 rows of 300 values went past SQLite's limit on the values bound to one INSERT (32 766): the step failed.
  test("loads in batches of fewer rows, within SQLite's limit on bound values, first in full then stored keys left alone", async () => {
    ws.write(
      "pipeline.yaml",
      `version: 1
database: db.sqlite
tables:
  wide:
    columns: { ${names.map((name) => `${name}: { type: integer }`).join(", ")} }
    primary_key: [c0]
steps:
  - { name: load_wide, type: load, source: wide.csv, table: wide, mode: insert_new, columns: { ${names.map((name) => `${name}: ${name.toUpperCase()}`).join(", ")} } }
`,
    );
    const first = Array.from({ length: 500 }, (_, r) => r);
    ws.write("wide.csv", csv(first));
    const report = await run();
    expect(report.code, JSON.stringify(report.error)).toBe(0);
    expect(counts(report, "load_wide")).toMatchObject({ read: 500, inserted: 500 });
    const all = [...first, ...Array.from({ length: 250 }, (_, r) => 1000 + r)];
    ws.write("wide.csv", csv([...all].reverse()));
    expect(counts(await run(), "load_wide")).toMatchObject({ read: 750, inserted: 250, unchanged: 500 });
    expect(query(`SELECT count(*), sum(c${width - 1}) FROM wide`)).toBe(`750|${sum(all)}`);
  });
});

describe("stored schema", () => {
  test("a declaration that no longer matches the stored table is an error, and nothing is touched", async () => {
    ws.write("items.csv", itemsComma);
    ws.write("events.csv", "Day,Item,Qty\n2024-01-01,1,3\n");
    ws.write("pipeline.yaml", pipeline());
    expect((await run()).code).toBe(0);
    const before = ws.state("db.sqlite");
    ws.write(
      "pipeline.yaml",
      pipeline().replace(
        "qty: { type: integer, required: true }",
        "qty: { type: decimal, scale: 1, required: true }\n      note: { type: text }",
      ),
    );
    const report = await run();
    expect(report.code).toBe(1);
    expect(report.error?.code).toBe("E_DRIFT");
    expect(report.error?.message).toContain(
      "table events in the database does not match its declaration: column note is declared but not stored",
    );
    expect(ws.state("db.sqlite")).toEqual(before);
  });
});

describe("a source that only grew", () => {
  const base = "Day,Item,Qty\r\n2024-01-01,1,3\r\n2024-01-02,2,4";
  beforeEach(() => {
    ws.write("items.csv", itemsComma);
    ws.write("pipeline.yaml", pipeline());
  });

  test("only the new tail is parsed, and its rows keep their real line numbers", async () => {
    ws.write("events.csv", base);
    expect((await run()).code).toBe(0);
    ws.write("events.csv", base + "\r\n2024-01-03,1,5\r\n2024-01-04,1,x");
    const report = await run();
    expect(counts(report, "load_events")).toEqual({ read: 2, inserted: 1, updated: 0, unchanged: 0, rejected: 1, conflicting: 0 });
    expect(report.steps.find((s) => s.name === "load_events")).toMatchObject({ detail: expect.stringContaining("the file grew") });
    expect(query("SELECT line, raw FROM pipeline_rejected_rows")).toBe("5|2024-01-04,1,x");
    expect(query("SELECT count(*) FROM events")).toBe("3");
  });

  test("a file that ended with a newline grows the same way", async () => {
    ws.write("events.csv", base + "\n");
    expect((await run()).code).toBe(0);
    ws.write("events.csv", base + "\n2024-01-03,1,x\n");
    const report = await run();
    expect(counts(report, "load_events")).toMatchObject({ read: 1, rejected: 1 });
    expect(query("SELECT line FROM pipeline_rejected_rows")).toBe("4");
  });

  test.each([
    [
      "a row changed before the end",
      base.replace("2024-01-01,1,3", "2024-01-01,1,9") + "\r\n2024-01-03,1,5",
      { read: 3, inserted: 1, unchanged: 1, conflicting: 1 },
    ],
    [
      "the last row extended (no line break where the old file ended)",
      base + "0\r\n2024-01-03,1,5",
      { read: 3, inserted: 1, unchanged: 1, conflicting: 1 },
    ],
  ])("%s: the whole file is read again", async (_name, grown, expected) => {
    ws.write("events.csv", base);
    expect((await run()).code).toBe(0);
    ws.write("events.csv", grown);
    const report = await run();
    expect(counts(report, "load_events")).toMatchObject(expected);
  });
});
