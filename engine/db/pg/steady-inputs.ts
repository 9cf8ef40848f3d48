import type { SqlDatabase } from "../database.js";
import { currentSchema } from "./current-schema.js";

/** Words written like a call `word (` that are SQL syntax, not functions. */
const syntax = new Set(
  [
    "select",
    "from",
    "where",
    "and",
    "or",
    "not",
    "in",
    "exists",
    "any",
    "all",
    "some",
    "as",
    "on",
    "join",
    "using",
    "values",
    "coalesce",
    "nullif",
    "greatest",
    "least",
    "case",
    "when",
    "then",
    "else",
    "cast",
    "filter",
    "over",
    "union",
    "intersect",
    "except",
    "with",
    "is",
    "between",
    "like",
    "ilike",
    "distinct",
    "having",
    "by",
    "limit",
    "offset",
    "lateral",
    "row",
    "array",
  ].map((word) => word.toUpperCase()),
);

/** SQL's value functions, written without parentheses: the clock and the connection's state. */
const valueFunctions =
  /\b(CURRENT_DATE|CURRENT_TIME|CURRENT_TIMESTAMP|LOCALTIME|LOCALTIMESTAMP|CURRENT_USER|SESSION_USER|USER|CURRENT_ROLE|CURRENT_SCHEMA|CURRENT_CATALOG|SYSTEM_USER)\b/i;

/** Types whose text form, or whose reading of text, follows the session's settings (DateStyle, TimeZone, IntervalStyle). */
const sessionTypes = /(::|\bAS\s+)"?(text|varchar|character|char|bpchar|name|date|time|timetz|timestamp|timestamptz|interval)\b/i;

/** Text that a date or time type reads as the clock ('now', 'today') or by the session's DateStyle (01/02/2024). */
const clockText = /now|today|tomorrow|yesterday|\d+\s*[/.]\s*\d+/i;

/**
 * PostgreSQL's answer to steadyInputs (engine/checks.ts): the tables a query reads when its result
 * depends on them alone, or why it may depend on more. SQLite's answer reads the compiled program;
 * here, conservatively, the text and the plan: no parameter, no value function (CURRENT_DATE), no
 * call of anything but an immutable built-in function, no cast to a type read or shown by the
 * session's settings, no literal the clock or DateStyle decides, no `||` (it turns any value into
 * text), and every relation of the plan an ordinary table of the current schema.
 */
export function steadyInputsOnServer(
  db: SqlDatabase,
  sql: string,
  plan: (sql: string) => string,
): { tables: Set<string> } | { reason: string } {
  const literals: string[] = [];
  const code = sql
    .replace(/--[^\n]*/g, " ")
    .replace(/\/\*[\s\S]*?(\*\/|$)/g, " ")
    .replace(/'(?:[^']|'')*'/g, (literal) => (literals.push(literal), "''"))
    .replace(/"(?:[^"]|"")*"/g, (name) => (/^"\w+"$/.test(name) ? name.slice(1, -1) : '""'));
  if (/\?|(^|[^:]):[A-Za-z_]|\$\d/.test(code)) return { reason: "it uses a parameter of the run" };
  const value = valueFunctions.exec(code);
  if (value) return { reason: `it uses ${value[1]!.toUpperCase()}` };
  const cast = sessionTypes.exec(code);
  if (cast) return { reason: `it converts to ${cast[2]}, which follows the session's settings` };
  if (code.includes("||")) return { reason: "it uses ||, which turns values into text by the session's settings" };
  const clock = literals.find((literal) => clockText.test(literal));
  if (clock) return { reason: `its text ${clock} may be read by the clock or the session's DateStyle` };
  const called = new Set([...code.matchAll(/([A-Za-z_][\w$]*)\s*\(/g)].map((m) => m[1]!.toUpperCase()).filter((word) => !syntax.has(word)));
  if (called.size > 0) {
    const names = [...called].map((name) => `'${name.toLowerCase()}'`).join(", ");
    const found = db.all(
      `SELECT proname AS name, bool_and(pronamespace = 'pg_catalog'::regnamespace AND provolatile = 'i')::int AS steady
       FROM pg_proc WHERE proname IN (${names}) GROUP BY proname`,
    );
    const steady = new Set(found.filter((row) => Number(row["steady"]) === 1).map((row) => String(row["name"]).toUpperCase()));
    const unsteady = [...called].find((name) => !steady.has(name));
    if (unsteady !== undefined) return { reason: `it calls ${unsteady.toLowerCase()}(), not an immutable built-in function` };
  }
  let explained: string;
  try {
    explained = plan(sql);
  } catch (error) {
    return { reason: (error as Error).message };
  }
  if (/"Function Name"|"Node Type":\s*"(Function Scan|Table Function Scan|Foreign Scan|Custom Scan)"/.test(explained))
    return { reason: "it reads the result of a function" };
  const relations = [...explained.matchAll(/"Relation Name":\s*"([^"]+)",\s*"Schema":\s*"([^"]+)"/g)].map((m) => ({
    table: m[1]!,
    schema: m[2]!,
  }));
  const schema = currentSchema(db);
  const outside = relations.find((relation) => relation.schema !== schema);
  if (outside) return { reason: `it reads ${outside.schema}.${outside.table}, outside the declared tables` };
  const tables = new Set(relations.map((relation) => relation.table));
  const words = [...new Set([...code.matchAll(/[A-Za-z_]\w*/g)].map((m) => m[0]))];
  if (words.length > 0) {
    // why: the plan shows a view's tables, not the view, whose query may call anything.
    const view = db.all(
      `SELECT c.relname AS name FROM pg_class c WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind NOT IN ('r', 'i', 'S', 'c', 't', 'I')
       AND lower(c.relname) IN (${words.map((word) => `'${word.toLowerCase()}'`).join(", ")}) LIMIT 1`,
    )[0];
    if (view) return { reason: `it reads ${String(view["name"])}, which is not a table` };
  }
  return { tables };
}
