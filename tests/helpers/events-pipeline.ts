/**
 * A pipeline of items and events whose foreign key (item_id) lies outside the events' key
 * (day, slot): the one shape where a line can wait for its item while a later line takes its key.
 * `extra` is appended after the events step (more options or steps).
 */
export function eventsPipeline(mode: string, extra = ""): string {
  return `version: 1
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
}
