/** How an events pipeline varies from the usual one (events keyed by day and slot, no text columns). */
export interface EventsShape {
  /** Events keyed by their slot alone: the table's primary key, which the step takes as its key. */
  bySlot?: boolean;
  /** A text column on each table (items.name, events.note) and in each file (Name, Note). */
  text?: boolean;
}

/**
 * A pipeline of items and events whose foreign key (item_id) lies outside the events' key
 * (day, slot): the one shape where a line can wait for its item while a later line takes its key.
 * `mode` may carry the step's further options in flow form (`insert_new, on_conflict: update`);
 * `extra` is appended after the events step (more options or steps).
 */
export function eventsPipeline(mode: string, extra = "", shape: EventsShape = {}): string {
  const day = shape.bySlot !== true;
  const text = shape.text === true;
  return `version: 1
database: db.sqlite
tables:
  items:
    columns: { id: { type: integer }${text ? ", name: { type: text }" : ""} }
    primary_key: [id]
  events:
    columns:
${day ? "      day: { type: date, required: true }\n" : ""}      slot: { type: integer, required: true }
      item_id: { type: integer, required: true }
      qty: { type: integer, required: true }
${text ? "      note: { type: text }\n" : ""}    ${day ? "unique: [[day, slot]]" : "primary_key: [slot]"}
    foreign_keys: [{ columns: [item_id], references: { table: items, columns: [id] } }]
steps:
  - { name: load_items, type: load, source: items.csv, table: items, mode: upsert, columns: { id: Id${text ? ", name: Name" : ""} } }
  - name: load_events
    type: load
    source: events.csv
    table: events
    mode: ${mode.replaceAll(", ", "\n    ")}
${day ? "    key: [day, slot]\n" : ""}    columns: { ${day ? "day: Day, " : ""}slot: Slot, item_id: Item, qty: Qty${text ? ", note: Note" : ""} }
${extra}`;
}
