/** The YAML, under `tables:`, of a table of priced items (a text id, a price with two decimals); `checks` are its lines under the table. */
export function pricedItemsTable(name: string, options: { description?: string; checks?: string } = {}): string {
  return `  ${name}:
${options.description === undefined ? "" : `    description: ${options.description}\n`}    columns:
      id: { type: text }
      price: { type: decimal, scale: 2, required: true }
    primary_key: [id]
${options.checks ?? ""}`;
}

/** How a sales table varies: the name of its item column, a store column, keyed by a sale id, its checks (lines under the table). */
export interface SalesShape {
  item: string;
  store?: boolean;
  bySaleId?: boolean;
  checks?: string;
}

/** The YAML, under `tables:`, of a sales table: one line per day and item (and store), or per sale id. */
export function salesTable(shape: SalesShape): string {
  const store = shape.store === true;
  const key = shape.bySaleId === true ? "primary_key: [sale_id]" : `unique:\n      - [day, ${shape.item}${store ? ", store" : ""}]`;
  return `  sales:
    columns:
${shape.bySaleId === true ? "      sale_id: { type: integer }\n" : ""}      day: { type: date, required: true }
      ${shape.item}: { type: text, required: true }
${store ? "      store: { type: integer, required: true }\n" : ""}      qty: { type: integer, required: true }
    ${key}
${shape.checks ?? ""}`;
}

/** The step, under `steps:`, that loads `<table>.csv` (columns id, price) into a priced items table. */
export const loadPricedItems = (table: string, mode: string) =>
  `  - { name: load_${table}, type: load, source: ${table}.csv, table: ${table}, mode: ${mode}, columns: { id: id, price: price } }\n`;
