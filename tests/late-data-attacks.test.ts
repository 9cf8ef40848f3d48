import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { sqlite, Workspace } from "./helpers/workspace.js";

// Attacks on the rule "an incremental run equals a fresh load of the same final files": sequences the
// property test does not generate. Each runs the CLI in-process on local files, then one run of the
// final files on an empty database (--db fresh.sqlite), and compares the tables and the pending rows.

let ws: Workspace;
beforeEach(() => {
  ws = new Workspace({ withClientPipeline: false });
});
afterEach(() => ws.remove());

/** A pipeline of items and events whose foreign key (item_id) is outside the events' key (day, slot). */
const eventsYaml = (mode: string, extra = "") => `version: 1
database: db.sqlite
tables:
  items:
    columns: { id: { type: integer } }
    primary_key: [id]
  events:
    columns:
      day: { type: date, required: true }
      slot: { type: integer, required: true }
      item_id: { type: integer, required: true }
      qty: { type: integer, required: true }
    unique: [[day, slot]]
    foreign_keys: [{ columns: [item_id], references: { table: items, columns: [id] } }]
steps:
  - { name: load_items, type: load, source: items.csv, table: items, mode: upsert, columns: { id: Id } }
  - name: load_events
    type: load
    source: events.csv
    table: events
    mode: ${mode}
    key: [day, slot]
    columns: { day: Day, slot: Slot, item_id: Item, qty: Qty }
${extra}`;

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

describe("several lines with one key, some pending for a reference", () => {
  test.each(["insert_new", "upsert"])(
    "under %s, a pending line between two identical loaded lines gets what file order gives",
    async (mode) => {
      ws.write("pipeline.yaml", eventsYaml(mode));
      ws.write("items.csv", "Id\n1\n");
      ws.write("events.csv", "Day,Slot,Item,Qty\n2024-01-01,1,1,2\n2024-01-01,1,9,1\n2024-01-01,1,1,2\n");
      await run();
      ws.write("items.csv", "Id\n1\n9\n");
      await run();
      await expectFreshEqual();
    },
  );

  test.each(["insert_new", "upsert"])("under %s, two pending lines before a loaded line, loaded later in file order", async (mode) => {
    ws.write("pipeline.yaml", eventsYaml(mode));
    ws.write("items.csv", "Id\n1\n");
    ws.write("events.csv", "Day,Slot,Item,Qty\n2024-01-01,1,9,1\n2024-01-01,1,8,1\n2024-01-01,1,1,2\n");
    await run();
    ws.write("items.csv", "Id\n1\n8\n9\n");
    await run();
    await expectFreshEqual();
  });

  test.each(["insert_new", "upsert"])("under %s, pending lines whose references arrive one run apart, latest first", async (mode) => {
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

  test.each(["insert_new", "upsert"])("under %s, a pending line, then the file grows with the same key twice", async (mode) => {
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
