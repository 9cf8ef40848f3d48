import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { clientFixtures, root, sqlite, Workspace } from "./helpers/workspace.js";
import { eventsPipeline } from "./helpers/events-pipeline.js";

// Attacks on the rule "an incremental run equals a fresh load of the same final files": sequences the
// property test does not generate. Each runs the CLI in-process on local files, then one run of the
// final files on an empty database (--db fresh.sqlite), and compares the tables and the pending rows.

let ws: Workspace;
beforeEach(() => {
  ws = new Workspace({ withClientPipeline: false });
});
afterEach(() => ws.remove());

const eventsYaml = eventsPipeline;

const detailOf = (report: { steps: { name: string; detail?: string }[] }) =>
  report.steps.find((s) => s.name === "load_events")?.detail ?? "";
const rejected = (file = "db.sqlite") =>
  sqlite(ws.path(file), "SELECT line, status, raw FROM pipeline_rejected_rows ORDER BY line, rejection_id");

async function run(argv: string[] = []): Promise<{ code: number; status: string; steps: { name: string; detail?: string }[] }> {
  const result = await ws.cli(["run", "--json", ...argv]);
  const report = JSON.parse(result.stdout) as { status: string; steps: { name: string; detail?: string }[]; error?: unknown };
  expect([0, 4], result.stdout).toContain(result.code);
  return { code: result.code, ...report };
}

/** The events, the items and the pending rejections (line, kind, raw) of a database, as text. */
const state = (file: string) =>
  [
    sqlite(file, "SELECT day, slot, item_id, qty FROM events ORDER BY day, slot, item_id, qty"),
    sqlite(file, "SELECT id FROM items ORDER BY id"),
    sqlite(file, "SELECT step, line, kind, raw FROM pipeline_rejected_rows WHERE status = 'pending' ORDER BY step, line, kind"),
  ].join("\n--\n");

/** Runs the final files on an empty database and expects the incremental database to equal it. */
async function expectFreshEqual(): Promise<void> {
  const incremental = state(ws.path("db.sqlite"));
  await run(["--db", "fresh.sqlite"]);
  expect(incremental).toBe(state(ws.path("fresh.sqlite")));
}

/** The keyed modes; under on_conflict: update a later line overwrites an earlier one, as under upsert. */
const modes = ["insert_new", "upsert", "insert_new\n    on_conflict: update"];

describe("several lines with one key, some pending for a reference", () => {
  test.each(modes)("under %s, a pending line between two identical loaded lines gets what file order gives", async (mode) => {
    ws.write("pipeline.yaml", eventsYaml(mode));
    ws.write("items.csv", "Id\n1\n");
    ws.write("events.csv", "Day,Slot,Item,Qty\n2024-01-01,1,1,2\n2024-01-01,1,9,1\n2024-01-01,1,1,2\n");
    await run();
    ws.write("items.csv", "Id\n1\n9\n");
    await run();
    await expectFreshEqual();
  });

  test.each(modes)("under %s, two pending lines before a loaded line, loaded later in file order", async (mode) => {
    ws.write("pipeline.yaml", eventsYaml(mode));
    ws.write("items.csv", "Id\n1\n");
    ws.write("events.csv", "Day,Slot,Item,Qty\n2024-01-01,1,9,1\n2024-01-01,1,8,1\n2024-01-01,1,1,2\n");
    await run();
    ws.write("items.csv", "Id\n1\n8\n9\n");
    await run();
    await expectFreshEqual();
  });

  test.each(modes)("under %s, pending lines whose references arrive one run apart, latest first", async (mode) => {
    ws.write("pipeline.yaml", eventsYaml(mode));
    ws.write("items.csv", "Id\n1\n");
    ws.write("events.csv", "Day,Slot,Item,Qty\n2024-01-01,1,9,1\n2024-01-01,1,8,1\n2024-01-01,1,1,2\n");
    await run();
    ws.write("items.csv", "Id\n1\n8\n");
    await run();
    ws.write("items.csv", "Id\n1\n8\n9\n");
    await run();
    await expectFreshEqual();
  });

  test.each(modes)("under %s, a pending line, then the file grows with the same key twice", async (mode) => {
    ws.write("pipeline.yaml", eventsYaml(mode));
    ws.write("items.csv", "Id\n1\n");
    ws.write("events.csv", "Day,Slot,Item,Qty\n2024-01-01,2,1,1\n2024-01-01,1,9,1\n");
    await run();
    ws.write("events.csv", "Day,Slot,Item,Qty\n2024-01-01,2,1,1\n2024-01-01,1,9,1\n2024-01-01,1,1,2\n2024-01-01,1,1,3\n");
    const grown = await run();
    expect(grown.steps.find((s) => s.name === "load_events")?.detail).toMatch(/file grew/);
    ws.write("items.csv", "Id\n1\n9\n");
    await run();
    await expectFreshEqual();
  });
});

describe("the start and the end of a file that grows", () => {
  test("a BOM followed by a blank line: the grown file is read from its tail, with the file's own line numbers", async () => {
    ws.write("pipeline.yaml", eventsYaml("insert_new"));
    ws.write("items.csv", "Id\n1\n");
    const body = "\uFEFF\r\nDay,Slot,Item,Qty\r\n2024-01-01,1,1,2\r\n";
    ws.write("events.csv", body);
    await run();
    ws.write("events.csv", body + "2024-01-01,2,9,1\r\n");
    const grown = await run();
    expect(detailOf(grown)).toMatch(/file grew/);
    expect(rejected()).toBe("4|pending|2024-01-01,2,9,1");
    await expectFreshEqual();
  });

  test("a quoted line break in the last row before the old end, and in the first appended row", async () => {
    ws.write("pipeline.yaml", eventsYaml("insert_new"));
    ws.write("items.csv", "Id\n1\n");
    const body = 'Day,Slot,Item,Qty\n2024-01-01,1,1,"2"\n2024-01-01,"2\n",1,2\n';
    ws.write("events.csv", body);
    await run();
    ws.write("events.csv", body + '2024-01-01,"3\r\n",9,1\n2024-01-01,4,x,1\n');
    const grown = await run();
    expect(detailOf(grown)).toMatch(/file grew/);
    expect(rejected()).toBe('5|pending|2024-01-01,"3\r\n",9,1\n7|pending|2024-01-01,4,x,1');
    await expectFreshEqual();
  });

  test("a file that shrinks, then grows back longer with the same start, is read in full, never from a stale offset", async () => {
    ws.write("pipeline.yaml", eventsYaml("upsert"));
    ws.write("items.csv", "Id\n1\n");
    const head = "Day,Slot,Item,Qty\n2024-01-01,1,1,2\n";
    ws.write("events.csv", head + "2024-01-01,2,1,5\n2024-01-01,3,1,5\n");
    await run();
    ws.write("events.csv", head);
    await run();
    ws.write("events.csv", head + "2024-01-01,2,1,7\n2024-01-01,3,9,5\n2024-01-01,4,1,1\n");
    await run();
    // Policy: under upsert a row that left the file stays stored; slot 3 keeps its stored values while its line waits.
    expect(sqlite(ws.path("db.sqlite"), "SELECT slot, item_id, qty FROM events ORDER BY slot")).toBe("1|1|2\n2|1|7\n3|1|5\n4|1|1");
    expect(sqlite(ws.path("db.sqlite"), "SELECT line FROM pipeline_rejected_rows WHERE status = 'pending'")).toBe("4");
  });

  test("latin1: the appended part is decoded as the configuration says", async () => {
    ws.write(
      "pipeline.yaml",
      eventsYaml("insert_new")
        .replace(
          "columns: { day: Day, slot: Slot, item_id: Item, qty: Qty }",
          "csv: { encoding: latin1 }\n    columns: { day: Jour, slot: Crï¿½neau, item_id: Item, qty: Qty }",
        )
        .replace("Crï¿½neau", "Créneau"),
    );
    ws.write("items.csv", "Id\n1\n");
    const body = Buffer.from("Jour,Créneau,Item,Qty\n2024-01-01,1,1,2\n", "latin1");
    ws.write("events.csv", body.toString("latin1"));
    await import("node:fs").then((fs) => fs.writeFileSync(ws.path("events.csv"), body));
    await run();
    await import("node:fs").then((fs) =>
      fs.writeFileSync(ws.path("events.csv"), Buffer.concat([body, Buffer.from("2024-01-01,2,9,é\n", "latin1")])),
    );
    const grown = await run();
    expect(detailOf(grown)).toMatch(/file grew/);
    expect(sqlite(ws.path("db.sqlite"), "SELECT line, value FROM pipeline_rejected_rows")).toBe("3|é");
  });

  test("a quote character of two UTF-8 bytes: a header byte that is its last byte does not hide the header's end", async () => {
    // « is C2 AB in UTF-8; ë is C3 AB: a scan for the quote's code unit as one byte took each ë for a quote.
    ws.write(
      "pipeline.yaml",
      eventsYaml("insert_new").replace(
        "columns: { day: Day, slot: Slot, item_id: Item",
        'csv: { quote: "«" }\n    columns: { day: Day, slot: Slot, item_id: Itëm',
      ),
    );
    ws.write("items.csv", "Id\n1\n");
    const body = "Day,Slot,Itëm,Qty\n2024-01-01,1,ë,2\n2024-01-01,2,1,2\n";
    ws.write("events.csv", body);
    await run();
    ws.write("events.csv", body + "2024-01-01,3,1,2\n");
    // why: a quote of more than one byte cannot be told from other bytes, so the file is read whole, as a fresh load reads it.
    expect(detailOf(await run())).not.toMatch(/file grew/);
    expect(rejected()).toBe("2|pending|2024-01-01,1,ë,2");
    await expectFreshEqual();
  });

  test("csv.quote: ' with csv-parse's escape, a double quote, before a quote in the header: the header still ends on its line", async () => {
    // why: csv-parse escapes a quote inside a quoted field with a double quote (its default escape) whatever the quote.
    ws.write(
      "pipeline.yaml",
      eventsYaml("insert_new").replace(
        "columns: { day: Day, slot: Slot, item_id: Item, qty: Qty",
        `csv: { quote: "'" }\n    columns: { day: Day, slot: Slot, item_id: Item, qty: "Q'ty"`,
      ),
    );
    ws.write("items.csv", "Id\n1\n");
    const body = `Day,Slot,Item,'Q"'ty'\n2024-01-01,1,1,'1"'2'\n2024-01-01,2,1,2\n`;
    ws.write("events.csv", body);
    await run();
    ws.write("events.csv", body + "2024-01-01,3,1,2\n");
    expect(detailOf(await run())).toMatch(/file grew/);
    expect(rejected()).toBe(`2|pending|2024-01-01,1,1,'1"'2'`);
    await expectFreshEqual();
  });

  test("invalid UTF-8 in the appended part is reported at its line in the file", async () => {
    ws.write("pipeline.yaml", eventsYaml("insert_new"));
    ws.write("items.csv", "Id\n1\n");
    const body = "Day,Slot,Item,Qty\n2024-01-01,1,1,2\n2024-01-01,2,1,2\n";
    ws.write("events.csv", body);
    await run();
    const fs = await import("node:fs");
    fs.writeFileSync(ws.path("events.csv"), Buffer.concat([Buffer.from(body + "2024-01-01,3,1,2\n"), Buffer.from([0x41, 0xff, 0x0a])]));
    const result = await ws.cli(["run"]);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/events\.csv is not valid UTF-8 \(line 5, byte \d+\)/);
  });

  test("csv.header_line: 2 with CR line ends: each rejected row keeps its line and its text", async () => {
    ws.write("pipeline.yaml", eventsYaml("insert_new").replace("columns: { day: Day", "csv: { header_line: 2 }\n    columns: { day: Day"));
    ws.write("items.csv", "Id\n1\n");
    ws.write("events.csv", "exported 2024-01-02\rDay,Slot,Item,Qty\r2024-01-01,1,1,2\r2024-01-01,2,9,1\r\r2024-01-01,3,x,1\r");
    await run();
    expect(rejected()).toBe("4|pending|2024-01-01,2,9,1\n6|pending|2024-01-01,3,x,1");
  });
});

describe("max_rejected and rows that wait", () => {
  test("a percentage is judged on the whole file, not on the appended rows alone", async () => {
    ws.write("pipeline.yaml", eventsYaml("insert_new").replace("columns: { day: Day", 'max_rejected: "20%"\n    columns: { day: Day'));
    ws.write("items.csv", "Id\n1\n");
    const rows = Array.from({ length: 9 }, (_, i) => `2024-01-01,${i + 1},1,1`).join("\n");
    ws.write("events.csv", `Day,Slot,Item,Qty\n${rows}\n`);
    await run();
    ws.write("events.csv", `Day,Slot,Item,Qty\n${rows}\n2024-01-02,1,9,1\n`);
    const grown = await ws.cli(["run", "--json"]);
    expect(grown.code, grown.stdout).toBe(0);
    await expectFreshEqual();
  });
});

describe("a database written by the version before pending rejections (commit 404957e)", () => {
  // tests/fixtures/legacy/sales-404957e.sql: `sqlite3 .dump` of the database that version wrote after one run of the
  // client's files with two late rows appended to ventes.csv (REF006 before its product, and a quantity "x").
  const late = "\r\n2023-06-26,REF006,1,1\r\n2023-06-26,REF001,x,1";
  const env = { PRODUCTS_URL: "f/produits.csv", STORES_URL: "f/magasins.csv", SALES_URL: "f/ventes.csv" };
  let client: Workspace;
  beforeEach(() => {
    client = new Workspace();
    for (const name of ["produits", "magasins", "ventes"])
      client.write(`f/${name}.csv`, readFileSync(path.join(clientFixtures, `${name}.csv`), "utf8"));
    client.write("f/ventes.csv", readFileSync(client.path("f/ventes.csv"), "utf8") + late);
    mkdirSync(client.path("output"));
    execFileSync("sqlite3", [client.path("output/sales.db")], {
      input: readFileSync(path.join(root, "tests/fixtures/legacy/sales-404957e.sql")),
    });
  });
  afterEach(() => client.remove());

  test("the rejections command lists its rejected rows without the columns it lacks", async () => {
    const listed = await client.cli(["rejections", "--json"], env);
    expect(listed.code, listed.stdout + listed.stderr).toBe(0);
    const { rejections } = JSON.parse(listed.stdout) as { rejections: { step: string; line: number; kind: string | null }[] };
    expect(rejections.map((r) => `${r.step}:${r.line}:${r.kind}`)).toEqual(["load_sales:32:null", "load_sales:33:null"]);
    expect(await client.cli(["rejections"], env)).toMatchObject({ code: 0, stdout: expect.stringMatching(/load_sales\s+32\s+product_id/) });
  });

  test("its first run reads the rejecting source in full and closes the old rows; the late sale loads once its product comes", async () => {
    const first = await client.cli(["run", "--json"], env);
    expect(first.code, first.stdout).toBe(0);
    const db = client.path("output/sales.db");
    expect(sqlite(db, "SELECT line, status, kind FROM pipeline_rejected_rows ORDER BY rejection_id")).toBe(
      "32|superseded|\n33|superseded|\n32|pending|reference\n33|pending|cast",
    );
    client.write("f/produits.csv", readFileSync(client.path("f/produits.csv"), "utf8") + "\r\nProduit F,REF006,20.00,5");
    expect((await client.cli(["run"], env)).code).toBe(0);
    expect((await client.cli(["run", "--db", "output/fresh.db"], { ...env, REPORT_DIR: "fresh" })).code).toBe(0);
    const figures = "SELECT revenue_cents, sales_lines FROM revenue_total";
    expect(sqlite(db, figures)).toBe(sqlite(client.path("output/fresh.db"), figures));
    expect(sqlite(db, figures)).toBe("528878|31");
  });
});

describe("a pending row whose step is renamed or removed", () => {
  test("renamed: the rows wait under the new name only, as on a fresh load", async () => {
    ws.write("pipeline.yaml", eventsYaml("insert_new"));
    ws.write("items.csv", "Id\n1\n");
    ws.write("events.csv", "Day,Slot,Item,Qty\n2024-01-01,1,1,2\n2024-01-01,2,9,1\n");
    await run();
    ws.write("pipeline.yaml", eventsYaml("insert_new").replace("name: load_events", "name: load_events_v2"));
    await run();
    await expectFreshEqual();
    const listed = JSON.parse((await ws.cli(["rejections", "--json"])).stdout) as { rejections: { step: string }[] };
    expect(listed.rejections.map((r) => r.step)).toEqual(["load_events_v2"]);
  });

  test("removed: its rows are no longer listed as pending; they are kept, superseded by the run that no longer has the step", async () => {
    ws.write("pipeline.yaml", eventsYaml("insert_new"));
    ws.write("items.csv", "Id\n1\n");
    ws.write("events.csv", "Day,Slot,Item,Qty\n2024-01-01,1,1,2\n2024-01-01,2,9,1\n");
    await run();
    ws.write("pipeline.yaml", eventsYaml("insert_new").replace(/  - name: load_events[\s\S]*$/, ""));
    ws.write("items.csv", "Id\n1\n2\n");
    await run();
    expect(rejected()).toBe("3|superseded|2024-01-01,2,9,1");
    const listed = await ws.cli(["rejections", "--json"]);
    expect((JSON.parse(listed.stdout) as { rejections: unknown[] }).rejections).toEqual([]);
  });
});

describe("max_rejected and the rows that wait, after a file grew", () => {
  test("a count includes the earlier rows still pending, as a fresh load of the whole file counts them", async () => {
    ws.write("pipeline.yaml", eventsYaml("insert_new").replace("columns: { day: Day", "max_rejected: 2\n    columns: { day: Day"));
    ws.write("items.csv", "Id\n1\n");
    const body = "Day,Slot,Item,Qty\n2024-01-01,1,1,2\n2024-01-01,2,9,1\n2024-01-01,3,9,1\n";
    ws.write("events.csv", body);
    await run();
    ws.write("events.csv", body + "2024-01-01,4,9,1\n");
    const grown = await ws.cli(["run", "--json"]);
    const fresh = await ws.cli(["run", "--json", "--db", "fresh.sqlite"]);
    expect(fresh.code).toBe(1);
    expect(fresh.stdout).toMatch(/E_REJECTED/);
    expect(grown.code, grown.stdout).toBe(1);
    expect(grown.stdout).toMatch(
      /"E_REJECTED",\s+"message": "events.csv: 3 rows rejected \(1 of the 1 appended rows, and 2 earlier rows still pending\)/,
    );
  });

  test("a file that held only its header, then grows with rows that are all rejected, fails as a fresh load does", async () => {
    ws.write("pipeline.yaml", eventsYaml("insert_new"));
    ws.write("items.csv", "Id\n1\n");
    ws.write("events.csv", "Day,Slot,Item,Qty\n");
    await run();
    ws.write("events.csv", "Day,Slot,Item,Qty\n2024-01-01,1,9,1\n");
    const grown = await ws.cli(["run", "--json"]);
    const fresh = await ws.cli(["run", "--json", "--db", "fresh.sqlite"]);
    expect(fresh.code).toBe(1);
    expect(grown.code, grown.stdout).toBe(1);
    expect(grown.stdout).toMatch(/"E_REJECTED",\s+"message": "events.csv: all 1 rows read were rejected/);
  });
});

describe("other sequences that hold", () => {
  test("a CR line end split from its LF exactly at the old end of the file", async () => {
    ws.write("pipeline.yaml", eventsYaml("insert_new"));
    ws.write("items.csv", "Id\n1\n");
    const body = "Day,Slot,Item,Qty\r\n2024-01-01,1,1,2\r\n2024-01-01,2,9,1\r";
    ws.write("events.csv", body);
    await run();
    ws.write("events.csv", body + "\n2024-01-01,3,9,1\r\n2024-01-01,4,1,1\r\n");
    const grown = await run();
    expect(detailOf(grown)).toMatch(/file grew/);
    expect(rejected()).toBe("3|pending|2024-01-01,2,9,1\n4|pending|2024-01-01,3,9,1");
    ws.write("items.csv", "Id\n1\n9\n");
    await run();
    await expectFreshEqual();
  });

  test.each(["replace", "append"])(
    "under %s, pending rows with a key taken twice are retried once each on unchanged files",
    async (mode) => {
      ws.write("pipeline.yaml", eventsYaml(mode).replace("    key: [day, slot]\n", "").replace("unique: [[day, slot]]", "unique: []"));
      ws.write("items.csv", "Id\n1\n");
      ws.write("events.csv", "Day,Slot,Item,Qty\n2024-01-01,1,9,1\n2024-01-01,1,1,2\n2024-01-01,1,9,1\n");
      await run();
      ws.write("items.csv", "Id\n1\n9\n");
      await run();
      await run();
      await expectFreshEqual();
    },
  );

  test("--full-refresh re-reads the pending rows, and a run failed in between (a missing source) changes nothing", async () => {
    ws.write("pipeline.yaml", eventsYaml("insert_new"));
    ws.write("items.csv", "Id\n1\n");
    ws.write("events.csv", "Day,Slot,Item,Qty\n2024-01-01,1,1,2\n2024-01-01,2,9,1\n");
    await run();
    ws.write("pipeline.yaml", eventsYaml("insert_new").replace("source: items.csv", "source: gone.csv"));
    expect((await ws.cli(["run"])).code).not.toBe(0);
    ws.write("pipeline.yaml", eventsYaml("insert_new"));
    await run(["--full-refresh"]);
    expect(rejected()).toBe("3|pending|2024-01-01,2,9,1");
    ws.write("items.csv", "Id\n1\n9\n");
    await run();
    await expectFreshEqual();
  });
});

describe("a BOM in the middle of a file", () => {
  test("an appended part that starts with a BOM keeps it in its first row, as a fresh load reads it", async () => {
    ws.write("pipeline.yaml", eventsYaml("insert_new"));
    ws.write("items.csv", "Id\n1\n");
    const body = "Day,Slot,Item,Qty\n2024-01-01,1,1,2\n";
    ws.write("events.csv", body);
    await run();
    ws.write("events.csv", body + "\uFEFF2024-01-01,2,9,1\n");
    const grown = await run();
    expect(detailOf(grown)).toMatch(/file grew/);
    await expectFreshEqual();
  });
});

describe("two load steps into one table", () => {
  test("policy: a row of the first step that waited for its item is kept aside when the second step's row took its key meanwhile", async () => {
    const yaml = eventsYaml("insert_new").replace(
      "    columns: { day: Day, slot: Slot, item_id: Item, qty: Qty }\n",
      "    columns: { day: Day, slot: Slot, item_id: Item, qty: Qty }\n" +
        "  - { name: load_more_events, type: load, source: more.csv, table: events, mode: insert_new, key: [day, slot], columns: { day: Day, slot: Slot, item_id: Item, qty: Qty } }\n",
    );
    ws.write("pipeline.yaml", yaml);
    ws.write("items.csv", "Id\n1\n");
    ws.write("events.csv", "Day,Slot,Item,Qty\n2024-01-01,1,9,1\n2024-01-01,2,1,1\n");
    ws.write("more.csv", "Day,Slot,Item,Qty\n2024-01-01,1,1,2\n");
    await run();
    ws.write("items.csv", "Id\n1\n9\n");
    await run();
    const incremental = state(ws.path("db.sqlite"));
    await run(["--db", "fresh.sqlite"]);
    // A fresh load runs load_events first: its line 2 holds the key, and more.csv's line is the conflict.
    expect(state(ws.path("fresh.sqlite"))).toBe(
      "2024-01-01|1|9|1\n2024-01-01|2|1|1\n--\n1\n9\n--\nload_more_events|2|conflict|2024-01-01,1,1,2",
    );
    // Incrementally, more.csv's line took the key while line 2 waited: line 2 is the conflict, a person decides.
    expect(incremental).toBe("2024-01-01|1|1|2\n2024-01-01|2|1|1\n--\n1\n9\n--\nload_events|2|conflict|2024-01-01,1,9,1");
  });
});

describe("the rejected-rows table over many runs", () => {
  test("a full read that rejects a line again the same way keeps its record: edits elsewhere in the sheet add no copies", async () => {
    ws.write("pipeline.yaml", eventsYaml("insert_new"));
    ws.write("items.csv", "Id\n1\n");
    for (let qty = 1; qty <= 4; qty++) {
      ws.write("events.csv", `Day,Slot,Item,Qty\n2024-01-01,1,1,${qty}\n2024-01-01,2,9,1\n2024-01-01,3,1,x\n`);
      await run();
    }
    const db = ws.path("db.sqlite");
    expect(
      sqlite(db, "SELECT line, status, kind, run_id, last_run_id FROM pipeline_rejected_rows WHERE kind <> 'conflict' ORDER BY line"),
    ).toBe("3|pending|reference|1|4\n4|pending|cast|1|4");
    // The edited line is a conflict each time (policy): one record per new value, never a copy of the same one.
    expect(sqlite(db, "SELECT count(*), count(DISTINCT raw) FROM pipeline_rejected_rows WHERE kind = 'conflict'")).toBe("3|3");
    ws.write("items.csv", "Id\n1\n9\n");
    await run();
    expect(sqlite(db, "SELECT status, resolved_run_id FROM pipeline_rejected_rows WHERE line = 3")).toBe("resolved|5");
    expect(sqlite(db, "SELECT item_id FROM events WHERE slot = 2")).toBe("9");
  });
});
