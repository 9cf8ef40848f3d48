import { describe, expect, test } from "vitest";
import { random } from "./helpers/random.js";
import { loadPricedItems, pricedItemsTable, salesTable } from "./helpers/sales-pipeline.js";
import { onPostgres, testEngine, Workspace } from "./helpers/workspace.js";

// The rule for a sql step with a declared incremental policy (`incremental: appended, key, add`):
// whatever the sequence of changes, the tables after incremental runs equal one run of the final
// files on an empty database. Appends take the incremental path (on SQLite, when the last commit's
// mark proves the rest unchanged); an edited sale (upsert), a sale deleted by another program, a
// new price, a new item or a configuration change must make the step run its whole query instead.

const sequences = Number(process.env["INCREMENTAL_SEQUENCES"] ?? (onPostgres ? 3 : 14));
const statesPerSequence = 7;

const pipeline = (description: string) => `version: 1
description: ${description}
database: db.sqlite
tables:
${pricedItemsTable("items")}${salesTable({ item: "item", store: true })}  per_item_store:
    columns:
      item: { type: text }
      store: { type: integer }
      lines: { type: integer, required: true }
      qty: { type: integer, required: true }
      revenue_cents: { type: integer, required: true }
    primary_key: [item, store]
  total:
    columns:
      lines: { type: integer }
      revenue_cents: { type: integer }
steps:
${loadPricedItems("items", "upsert")}  - name: load_sales
    type: load
    source: sales.csv
    table: sales
    mode: upsert
    key: [day, item, store]
    columns: { day: day, item: item, store: store, qty: qty }
  - name: per_item_store
    type: sql
    file: per_item_store.sql
    into: per_item_store
    incremental: { appended: sales, key: [item, store], add: [lines, qty, revenue_cents] }
  - { name: total, type: sql, sql: "SELECT sum(lines) AS lines, sum(revenue_cents) AS revenue_cents FROM per_item_store", into: total }
`;

const query = `-- lines, units and revenue per item and store
SELECT s.item, s.store, count(*) AS lines, sum(s.qty) AS qty, sum(s.qty) * i.price AS revenue_cents
FROM sales AS s
JOIN items AS i ON i.id = s.item
GROUP BY s.item, s.store, i.price;
`;

interface Sale {
  day: number;
  item: string;
  store: number;
  qty: number;
}

const dayOf = (n: number) => new Date(Date.UTC(2024, 0, 1) + n * 86_400_000).toISOString().slice(0, 10);

const tables = {
  items: "SELECT id, price FROM items ORDER BY id",
  sales: "SELECT day, item, store, qty FROM sales ORDER BY day, item, store",
  per_item_store: "SELECT item, store, lines, qty, revenue_cents FROM per_item_store ORDER BY item, store",
  total: "SELECT lines, revenue_cents FROM total",
};

describe(`on ${testEngine}, an incremental sql step equals a fresh load of the same final files (property)`, () => {
  test(
    `${sequences} seeded sequences of ${statesPerSequence} states: appends, edits, deletes, prices, items, configuration`,
    async () => {
      const paths = new Map<string, number>();
      for (let seed = 1; seed <= sequences; seed++) {
        const r = random(seed * 2_654_435_761);
        const ws = new Workspace({ withClientPipeline: false });
        const history: string[] = [];
        try {
          const items = new Map([
            ["A", "1.50"],
            ["B", "2.25"],
            ["C", "10.00"],
          ]);
          const sales: Sale[] = [];
          let day = 0;
          let description = "v1";
          const sale = (): Sale => ({ day: day++, item: r.pick([...items.keys()]), store: r.int(1, 3), qty: r.int(1, 9) });
          for (let n = r.int(1, 6); n > 0; n--) sales.push(sale());
          ws.write("per_item_store.sql", query);
          for (let state = 0; state < statesPerSequence; state++) {
            if (state > 0) {
              const what = r.pick([
                "append",
                "append",
                "append",
                "append",
                "edit",
                "delete",
                "price",
                "item",
                "config",
                "nothing",
              ] as const);
              if (what === "append") for (let n = r.int(1, 4); n > 0; n--) sales.push(sale());
              else if (what === "edit" && sales.length > 0) r.pick(sales).qty = r.int(1, 9);
              else if (what === "delete" && sales.length > 0) {
                // An old sale leaves the sheet and another program deletes it from the database (upsert would keep it).
                const [gone] = sales.splice(r.int(0, sales.length - 1), 1);
                ws.query(
                  `DELETE FROM sales WHERE day = '${dayOf(gone!.day)}' AND item = '${gone!.item}' AND store = ${gone!.store}`,
                  "db.sqlite",
                );
              } else if (what === "price") items.set(r.pick([...items.keys()]), `${r.int(1, 30)}.${r.int(10, 99)}`);
              else if (what === "item") {
                const id = `N${items.size}`;
                items.set(id, `${r.int(1, 30)}.${r.int(10, 99)}`);
                sales.push({ day: day++, item: id, store: r.int(1, 3), qty: r.int(1, 9) });
              } else if (what === "config") description = `v${state}`;
              history.push(what);
            }
            ws.write("pipeline.yaml", pipeline(description));
            ws.write("items.csv", ["id,price", ...[...items].map(([id, price]) => `${id},${price}`)].join("\n") + "\n");
            ws.write(
              "sales.csv",
              ["day,item,store,qty", ...sales.map((s) => `${dayOf(s.day)},${s.item},${s.store},${s.qty}`)].join("\n") + "\n",
            );
            const result = await ws.cli(["run", "--json"]);
            const context = `seed ${seed}: ${history.join(", ")}`;
            expect(result.code, `${context}\n${result.stdout}${result.stderr}`).toBe(0);
            const report = JSON.parse(result.stdout) as { status: string; steps: { name: string; incremental?: { full?: string } }[] };
            const incremental = report.steps.find((step) => step.name === "per_item_store")?.incremental;
            if (report.status !== "unchanged") {
              const how = incremental === undefined ? "none" : incremental.full === undefined ? "appended" : "full";
              paths.set(how, (paths.get(how) ?? 0) + 1);
              history.push(`run ${state + 1}: ${incremental?.full ?? "appended rows"}`);
            }
            // After every run, the stored result is the whole query on what is stored.
            expect(ws.query(tables.per_item_store, "db.sqlite"), context).toBe(
              ws.query(`SELECT * FROM (${query.replace(/;\s*$/, "")}) AS q ORDER BY item, store`, "db.sqlite"),
            );
          }
          expect((await ws.cli(["run", "--json", "--db", "fresh.sqlite"])).code).toBe(0);
          const context = `seed ${seed}: ${history.join(", ")}`;
          for (const [name, sql] of Object.entries(tables))
            expect(ws.query(sql, "db.sqlite"), `${context}\ntable ${name}`).toBe(ws.query(sql, "fresh.sqlite"));
        } finally {
          ws.remove();
        }
      }
      // The sequences went through both paths, on every engine (on a server, the runner's trigger proves the tables untouched).
      expect(paths.get("none") ?? 0).toBe(0);
      expect(paths.get("full") ?? 0).toBeGreaterThan(0);
      expect(paths.get("appended") ?? 0).toBeGreaterThan(sequences);
    },
    Math.max(120_000, sequences * statesPerSequence * (onPostgres ? 3_000 : 1_000)),
  );
});
