import type { Params, SqlValue } from "../database.js";

/**
 * Rewrites SQLite-style parameters (`?` in order, `:name`) as PostgreSQL's `$n`, outside quotes,
 * comments and dollar-quoted text (a `::type` cast is left alone), and orders the values to match.
 * A named value the statement does not use is ignored, as the SQLite engines do.
 */
export function toPositional(sql: string, params: Params | undefined): { text: string; values: unknown[] } {
  const values: unknown[] = [];
  const named = new Map<string, number>();
  const positional = Array.isArray(params) ? (params as readonly SqlValue[]) : [];
  const byName = params && !Array.isArray(params) ? (params as Readonly<Record<string, SqlValue>>) : {};
  let next = 0;
  let out = "";
  let i = 0;
  while (i < sql.length) {
    const c = sql[i]!;
    const rest = sql.slice(i);
    let skip = 0;
    if (c === "'" || c === '"') {
      let j = i + 1;
      while (j < sql.length && !(sql[j] === c && sql[j + 1] !== c)) j += sql[j] === c ? 2 : 1;
      skip = j + 1 - i;
    } else if (rest.startsWith("--")) {
      const end = sql.indexOf("\n", i);
      skip = (end < 0 ? sql.length : end) - i;
    } else if (rest.startsWith("/*")) {
      const end = sql.indexOf("*/", i + 2);
      skip = (end < 0 ? sql.length : end + 2) - i;
    } else if (c === "$" && /^\$[A-Za-z_]?\w*\$/.test(rest)) {
      const tag = /^\$[A-Za-z_]?\w*\$/.exec(rest)![0];
      const end = sql.indexOf(tag, i + tag.length);
      skip = (end < 0 ? sql.length : end + tag.length) - i;
    }
    if (skip > 0) {
      out += sql.slice(i, i + skip);
      i += skip;
      continue;
    }
    if (c === "?") {
      values.push(bindable(positional[next++] ?? null));
      out += `$${values.length}`;
      i++;
      continue;
    }
    const name = c === ":" && sql[i - 1] !== ":" && sql[i + 1] !== ":" ? /^:([A-Za-z_]\w*)/.exec(rest)?.[1] : undefined;
    if (name !== undefined) {
      let index = named.get(name);
      if (index === undefined) {
        values.push(bindable(byName[name] ?? null));
        named.set(name, (index = values.length));
      }
      out += `$${index}`;
      i += name.length + 1;
      continue;
    }
    out += c;
    i++;
  }
  return { text: out, values };
}

/** A value as the `pg` client sends it: bigints as decimal text, bytes as a Buffer. */
function bindable(value: SqlValue): unknown {
  if (typeof value === "bigint") return value.toString();
  if (value instanceof Uint8Array) return Buffer.from(value);
  return value;
}
