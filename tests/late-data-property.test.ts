import { readFileSync } from "node:fs";
import type { ServerResponse } from "node:http";
import path from "node:path";
import { describe, expect, test } from "vitest";
import { eventsPipeline } from "./helpers/events-pipeline.js";
import { random, type Random } from "./helpers/random.js";
import { serveClientData, type ClientServer } from "./helpers/client-server.js";
import { clientFixtures, onPostgres, Workspace } from "./helpers/workspace.js";

// The rule: for any sequence of source states, the tables after incremental runs equal one run of
// the final files on an empty database, except where a declared policy says otherwise:
//   - insert_new: a stored sale whose line changed or left the file stays stored as it was (an
//     edited one is kept aside as a pending conflict whose new values are the fresh load's row);
//   - upsert: a late product may leave the file (and come back later); it stays stored, and the sales
//     that reference it load, where a fresh load rejects them: that is the policy. Stores never leave.
// The files also change form: line ends, a blank first line, a BOM, quoted dates, columns in another
// order, a row moved to another line, served with or without an ETag.
// Each sequence runs the client's own pipeline.yaml against a real HTTP server.

// why: on PostgreSQL a run costs two connections (a worker thread each, ~0.15 s); LATE_DATA_SEQUENCES=N runs more.
const sequences = Number(process.env["LATE_DATA_SEQUENCES"] ?? (onPostgres ? 3 : 24));
const statesPerSequence = 6;

interface Product {
  name: string;
  id: string;
  price: string;
  stock: string;
}
interface Store {
  id: number;
  city: string;
  employees: number;
}
interface Sale {
  date: string;
  product: string;
  qty: string;
  store: number;
}
interface Render {
  eol: "\r\n" | "\n" | "\r";
  trailing: boolean;
  blankFirst: boolean;
  quoteDates: boolean;
  etag: boolean;
  bom: boolean;
  /** The columns' order: the sheet's own, or turned by this many places. */
  rotate: number;
}
interface World {
  products: Product[];
  stores: Store[];
  sales: Sale[];
  render: Render;
}

function parse(text: string): string[][] {
  return text
    .split(/\r\n|\n|\r/)
    .slice(1)
    .filter((line) => line !== "")
    .map((line) => line.split(","));
}

/** The client's three files as they are today. */
function initialWorld(): World {
  const fixture = (name: string) => parse(readFileSync(path.join(clientFixtures, name), "utf8"));
  return {
    products: fixture("produits.csv").map(([name, id, price, stock]) => ({ name: name!, id: id!, price: price!, stock: stock! })),
    stores: fixture("magasins.csv").map(([id, city, employees]) => ({ id: Number(id), city: city!, employees: Number(employees) })),
    sales: fixture("ventes.csv").map(([date, product, qty, store]) => ({
      date: date!,
      product: product!,
      qty: qty!,
      store: Number(store),
    })),
    render: { eol: "\r\n", trailing: false, blankFirst: false, quoteDates: false, etag: true, bom: false, rotate: 0 },
  };
}

const lateProducts: Product[] = [
  { name: "Produit F", id: "REF006", price: "24.99", stock: "5" },
  { name: "Produit G", id: "REF007", price: "5.49", stock: "0" },
];
const lateStores: Store[] = [
  { id: 8, city: "Toulouse", employees: 12 },
  { id: 9, city: "Nice", employees: 4 },
];

function render(world: World, header: string, rows: string[][], dateColumn = -1): string {
  const { eol, trailing, blankFirst, quoteDates, bom, rotate } = world.render;
  const turn = <T>(cells: T[]) => [...cells.slice(rotate % cells.length), ...cells.slice(0, rotate % cells.length)];
  const lines = rows.map((row) => turn(row.map((cell, i) => (quoteDates && i === dateColumn ? `"${cell}"` : cell))).join(","));
  return (bom ? "\uFEFF" : "") + (blankFirst ? eol : "") + [turn(header.split(",")).join(","), ...lines].join(eol) + (trailing ? eol : "");
}

function files(world: World): Record<string, string> {
  return {
    "produits.csv": render(
      world,
      "Nom,ID Référence produit,Prix,Stock",
      world.products.map((p) => [p.name, p.id, p.price, p.stock]),
    ),
    "magasins.csv": render(
      world,
      "ID Magasin,Ville,Nombre de salariés",
      world.stores.map((s) => [String(s.id), s.city, String(s.employees)]),
    ),
    "ventes.csv": render(
      world,
      "Date,ID Référence produit,Quantité,ID Magasin",
      world.sales.map((s) => [s.date, s.product, s.qty, String(s.store)]),
      0,
    ),
  };
}

/** One change of the sheet between two runs; returns what it did, for the failure message. */
function mutate(world: World, r: Random): string {
  const what = r.pick([
    "append",
    "append",
    "append",
    "product",
    "product",
    "store",
    "edit",
    "remove",
    "price",
    "nothing",
    "render",
    "move",
    "gone",
  ] as const);
  switch (what) {
    case "append": {
      const added: string[] = [];
      for (let n = r.int(1, 4); n > 0; n--) {
        const existing = world.sales.length > 0 && r.chance(0.15) ? r.pick(world.sales) : undefined;
        const sale: Sale = existing
          ? { ...existing, qty: String(r.int(1, 9)) }
          : {
              date: `2023-06-${String(r.int(1, 30)).padStart(2, "0")}`,
              product: r.pick(["REF001", "REF002", "REF003", "REF004", "REF005", "REF006", "REF007"]),
              qty: r.chance(0.08) ? "x" : String(r.int(1, 9)),
              store: r.int(1, 9),
            };
        world.sales.push(sale);
        added.push(Object.values(sale).join(","));
      }
      return `append ${added.join(" ")}`;
    }
    case "product": {
      const next = lateProducts.find((p) => !world.products.some((q) => q.id === p.id));
      if (next) world.products.push({ ...next });
      return `product ${next?.id ?? "(none left)"}`;
    }
    case "store": {
      const next = lateStores.find((s) => !world.stores.some((t) => t.id === s.id));
      if (next) world.stores.push({ ...next });
      return `store ${next?.id ?? "(none left)"}`;
    }
    case "edit": {
      const sale = r.pick(world.sales);
      sale.qty = r.chance(0.2) ? "x" : String(r.int(1, 9));
      return `edit ${sale.date},${sale.product},${sale.store} -> ${sale.qty}`;
    }
    case "remove": {
      const [removed] = world.sales.splice(r.int(0, world.sales.length - 1), 1);
      return `remove ${Object.values(removed!).join(",")}`;
    }
    case "price": {
      const product = r.pick(world.products);
      product.price = `${r.int(1, 99)}.${String(r.int(0, 99)).padStart(2, "0")}`;
      return `price ${product.id} ${product.price}`;
    }
    case "nothing":
      return "nothing";
    case "move": {
      const [moved] = world.sales.splice(r.int(0, world.sales.length - 1), 1);
      world.sales.splice(r.int(0, world.sales.length), 0, moved!);
      return `move ${Object.values(moved!).join(",")}`;
    }
    case "gone": {
      // A late product leaves the sheet (the "product" change brings it back, at the end of the file).
      const product = world.products.find((p) => lateProducts.some((q) => q.id === p.id));
      if (!product) return "gone (no late product)";
      world.products.splice(world.products.indexOf(product), 1);
      return `gone ${product.id}`;
    }
    case "render": {
      const key = r.pick(["eol", "trailing", "blankFirst", "quoteDates", "etag", "bom", "rotate"] as const);
      if (key === "eol") world.render.eol = r.pick(["\r\n", "\n", "\r"] as const);
      else if (key === "rotate") world.render.rotate = r.int(0, 3);
      else world.render[key] = !world.render[key];
      return `render ${key}=${JSON.stringify(world.render[key])}`;
    }
  }
}

function serve(client: ClientServer, world: World): void {
  for (const [name, body] of Object.entries(files(world))) {
    if (world.render.etag) client.server.file(`/${name}`, body);
    else
      client.server.route(
        `/${name}`,
        (_, response: ServerResponse) => void response.writeHead(200, { "content-type": "text/csv" }).end(body),
      );
  }
}

async function run(client: ClientServer): Promise<{ code: number; status: string }> {
  const result = await client.ws.cli(["run", "--json"], client.env);
  const report = JSON.parse(result.stdout) as { status: string; error?: { message: string } };
  if (result.code !== 0 && result.code !== 4) throw new Error(`run failed (${result.code}): ${report.error?.message ?? result.stdout}`);
  return { code: result.code, status: report.status };
}

type Rows = Map<string, string>;

/** A query's rows on the database `ws` holds as `file`, whatever the engine, keyed by their column k. */
function rows(ws: Workspace, sql: string, file = "output/sales.db"): Rows {
  return new Map(ws.rows(sql, file).map((row) => [String(row["k"]), JSON.stringify(row)]));
}

const salesSql = "SELECT date || '|' || product_id || '|' || store_id AS k, date, product_id, store_id, quantity FROM sales";
const productsSql = "SELECT product_id AS k, * FROM products";
const storesSql = "SELECT store_id AS k, * FROM stores";
const pendingSql =
  "SELECT step || '|' || line || '|' || raw || '|' || kind AS k FROM pipeline_rejected_rows WHERE status = 'pending' AND kind <> 'conflict'";

describe("an incremental run equals a fresh load of the same final files (property)", () => {
  test(
    `${sequences} seeded sequences of ${statesPerSequence} source states, through the client's pipeline`,
    async () => {
      for (let seed = 1; seed <= sequences; seed++) {
        const r = random(seed * 7919);
        const client = await serveClientData();
        const fresh = await serveClientData();
        const history: string[] = [];
        try {
          const world = initialWorld();
          const storedSales = new Set<string>();
          for (let state = 0; state < statesPerSequence; state++) {
            if (state > 0) for (let n = r.int(1, 2); n > 0; n--) history.push(mutate(world, r));
            history.push(`run ${state + 1}`);
            serve(client, world);
            await run(client);
            for (const key of rows(client.ws, salesSql).keys()) storedSales.add(key);
          }
          serve(fresh, world);
          await run(fresh);
          const inc = client.ws;
          const ref = fresh.ws;
          const context = `seed ${seed}: ${history.join("; ")}`;

          // Policy (upsert): a product that left the file stays stored, and the sales that reference it load.
          const incProducts = rows(inc, productsSql);
          const refProducts = rows(ref, productsSql);
          const departed = new Set([...incProducts.keys()].filter((id) => !refProducts.has(id)));
          for (const id of departed)
            expect(
              lateProducts.some((p) => p.id === id),
              context,
            ).toBe(true);
          expect(new Map([...incProducts].filter(([id]) => !departed.has(id))), context).toEqual(refProducts);
          expect(rows(inc, storesSql), context).toEqual(rows(ref, storesSql));

          const incSales = rows(inc, salesSql);
          const refSales = rows(ref, salesSql);
          const conflicts = new Set(
            inc
              .query("SELECT new_values FROM pipeline_rejected_rows WHERE status = 'pending' AND kind = 'conflict'")
              .split("\n")
              .filter((line) => line !== ""),
          );
          for (const [key, row] of refSales) {
            const incRow = incSales.get(key);
            if (incRow === row) continue;
            // Policy: a stored sale whose line was edited keeps its stored values; the edit waits as a conflict.
            const parsed = JSON.parse(row) as Record<string, unknown>;
            const newValues = JSON.stringify({
              date: parsed["date"],
              product_id: parsed["product_id"],
              quantity: parsed["quantity"],
              store_id: parsed["store_id"],
            });
            expect(incRow !== undefined && conflicts.has(newValues), `${context}\nsale ${key}: fresh ${row}, incremental ${incRow}`).toBe(
              true,
            );
          }
          for (const key of incSales.keys()) {
            // Policy: a sale that left the file (or whose line became unreadable) stays stored; nothing else may be extra.
            if (!refSales.has(key)) expect(storedSales.has(key), `${context}\nsale ${key} is stored but not in a fresh load`).toBe(true);
          }
          const viaDeparted = (key: string) => {
            const [, , raw, kind] = key.split("|");
            return kind === "reference" && raw!.split(",").some((field) => departed.has(field));
          };
          const incPending = rows(inc, pendingSql);
          const refPending = rows(ref, pendingSql);
          expect(new Map([...refPending].filter(([key]) => incPending.has(key) || !viaDeparted(key))), context).toEqual(incPending);
          // The derived tables were recomputed from what is stored, whatever the run skipped.
          expect(inc.query("SELECT revenue_cents FROM revenue_total"), context).toBe(
            inc.query("SELECT coalesce(sum(s.quantity * p.price_cents), 0) FROM sales s JOIN products p USING (product_id)"),
          );
          if ([...refSales.keys()].every((key) => incSales.get(key) === refSales.get(key)) && incSales.size === refSales.size) {
            expect(inc.query("SELECT * FROM revenue_total"), context).toBe(ref.query("SELECT * FROM revenue_total"));
          }
        } finally {
          await client.close();
          await fresh.close();
        }
      }
    },
    Math.max(120_000, sequences * (onPostgres ? 15_000 : 3_000)),
  );
});

// A second pipeline, where a foreign key lies outside the load key (events keyed by day and slot, each
// pointing at an item): lines with one key can wait for different items, so file order decides who holds
// the key. Items arrive late; lines are appended, inserted above others (a full read), or duplicated.
interface EventLine {
  slot: number;
  item: number;
  qty: string;
}

const eventSequences = Math.ceil(sequences / 4);

describe.each(["insert_new", "upsert", "insert_new, on_conflict: update", "replace"])(
  "a foreign key outside the key, under %s (property)",
  (mode) => {
    test(
      `${eventSequences} seeded sequences of ${statesPerSequence} states`,
      async () => {
        for (let seed = 1; seed <= eventSequences; seed++) {
          const r = random(seed * 104729 + mode.length);
          const ws = new Workspace({ withClientPipeline: false });
          const history: string[] = [];
          try {
            ws.write("pipeline.yaml", eventsPipeline(mode, "", { bySlot: true }));
            const items = new Set([1]);
            const events: EventLine[] = [{ slot: 0, item: 1, qty: "1" }];
            let eol = "\n";
            const line = () => ({ slot: r.int(1, 3), item: r.int(1, 4), qty: r.chance(0.1) ? "x" : String(r.int(1, 3)) });
            const write = () => {
              ws.write("items.csv", ["Id", ...[...items].map(String)].join(eol) + eol);
              ws.write("events.csv", ["Slot,Item,Qty", ...events.map((e) => `${e.slot},${e.item},${e.qty}`)].join(eol) + eol);
            };
            const stored = new Set<string>();
            for (let state = 0; state < statesPerSequence; state++) {
              if (state > 0) {
                for (let n = r.int(1, 2); n > 0; n--) {
                  const what = r.pick(["append", "append", "append", "item", "item", "insert", "nothing", "eol"] as const);
                  if (what === "append") for (let k = r.int(1, 3); k > 0; k--) events.push(line());
                  else if (what === "item") items.add(r.int(2, 4));
                  else if (what === "insert") events.splice(r.int(1, events.length), 0, line());
                  else if (what === "eol") eol = r.pick(["\n", "\r\n", "\r"]);
                  history.push(what === "eol" ? `eol ${JSON.stringify(eol)}` : `${what}`);
                }
              }
              write();
              history.push(`run ${state + 1}: ${JSON.stringify(events)} items ${[...items].join(" ")}`);
              const result = await ws.cli(["run", "--json"]);
              expect([0, 4], `seed ${seed}: ${history.join("; ")}\n${result.stdout}`).toContain(result.code);
              for (const key of rows(ws, eventsSql, "db.sqlite").keys()) stored.add(key);
            }
            expect([0, 4]).toContain((await ws.cli(["run", "--json", "--db", "fresh.sqlite"])).code);
            const context = `seed ${seed}: ${history.join("; ")}`;
            const inc = rows(ws, eventsSql, "db.sqlite");
            const ref = rows(ws, eventsSql, "fresh.sqlite");
            const conflicts = new Set(
              ws
                .query("SELECT new_values FROM pipeline_rejected_rows WHERE status = 'pending' AND kind = 'conflict'", "db.sqlite")
                .split("\n")
                .filter((l) => l !== ""),
            );
            // Under upsert and on_conflict: update the last line of a key wins, whatever the runs saw: no policy applies.
            if (mode !== "insert_new") expect(inc, context).toEqual(ref);
            for (const [key, row] of ref) {
              const incRow = inc.get(key);
              if (incRow === row) continue;
              // Policy (insert_new): a stored row keeps its values when a line with its key appears above the one that loaded it.
              const { slot, item_id, qty } = JSON.parse(row) as Record<string, unknown>;
              const newValues = JSON.stringify({ slot, item_id, qty });
              expect(incRow !== undefined && conflicts.has(newValues), `${context}\nslot ${key}: fresh ${row}, incremental ${incRow}`).toBe(
                true,
              );
            }
            for (const key of inc.keys()) expect(ref.has(key) || stored.has(key), context).toBe(true);
            const pending =
              "SELECT step || '|' || line || '|' || raw || '|' || kind AS k FROM pipeline_rejected_rows WHERE status = 'pending' AND kind <> 'conflict'";
            expect(rows(ws, pending, "db.sqlite"), context).toEqual(rows(ws, pending, "fresh.sqlite"));
          } finally {
            ws.remove();
          }
        }
      },
      Math.max(120_000, sequences * (onPostgres ? 15_000 : 3_000)),
    );
  },
);

const eventsSql = "SELECT slot AS k, slot, item_id, qty FROM events";
