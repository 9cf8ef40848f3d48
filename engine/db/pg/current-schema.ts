import type { SqlDatabase } from "../database.js";

const known = new WeakMap<SqlDatabase, string>();

/**
 * The schema the runner's unqualified names resolve to on this connection (`current_schema()`: the
 * first schema of search_path that exists), read once per connection. why: it was read before each
 * query compiled and at each step of the change proof, about 30 round trips to the server a run;
 * the runner never changes search_path. A connection on which no schema of search_path exists yet
 * is asked again each time.
 */
export function currentSchema(db: SqlDatabase): string {
  const cached = known.get(db);
  if (cached !== undefined) return cached;
  const schema = db.all("SELECT current_schema() AS s")[0]?.["s"];
  if (typeof schema !== "string") return String(schema);
  known.set(db, schema);
  return schema;
}
