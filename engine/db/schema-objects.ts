import { PipelineError } from "../errors.js";
import { quoteIdent, type SqlDatabase } from "./database.js";

/** An object stored in the database that would run on, stand in for, or change a declared table. */
export interface ForeignObject {
  type: "trigger" | "view" | "index" | "table" | "rule" | "constraint";
  name: string;
  /** The declared table it is on, stands in for or names. */
  table: string;
  /** Why it is refused, e.g. `on table sales`. */
  reason: string;
}

/**
 * Lists the objects of the stored schema that the runner did not create and that touch a declared
 * table (the pipeline's or the engine's; names compared as SQLite does, ignoring ASCII case):
 * - any trigger on a declared table, and any trigger elsewhere whose text names one (it could write
 *   into it when the runner's statements fire it, e.g. through a `sql` script step);
 * - a view or a table whose name is a declared table's in another case (it would stand in for it);
 * - any index on a declared table other than those its PRIMARY KEY and UNIQUE clauses create.
 * Objects of the user's own tables that name no declared table are left alone.
 */
export function findForeignObjects(db: SqlDatabase, declared: Iterable<string>): ForeignObject[] {
  if (db.dialect) {
    const names = new Set(declared);
    const triggers: ForeignObject[] = db.dialect
      .foreignTriggers(db, names)
      .map(({ name, table }) => ({ type: "trigger", name, table, reason: `on table ${table}` }));
    return [...triggers, ...serverObjects(db, names)];
  }
  const tables = new Map([...declared].map((name) => [foldCase(name), name]));
  const found: ForeignObject[] = [];
  // why: no filter on the reserved sqlite_ prefix: PRAGMA writable_schema can plant a trigger under such a name, and SQLite loads it.
  const rows = db.all("SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY rowid");
  for (const row of rows) {
    const [type, name, on, sql] = [String(row["type"]), String(row["name"]), String(row["tbl_name"]), row["sql"]];
    const onDeclared = tables.get(foldCase(on));
    const sameName = tables.get(foldCase(name));
    if (type === "trigger") {
      const named = onDeclared ?? namedTables(typeof sql === "string" ? sql : "", tables)[0];
      if (onDeclared !== undefined) found.push({ type, name, table: onDeclared, reason: `on table ${onDeclared}` });
      else if (named !== undefined) found.push({ type, name, table: named, reason: `on table ${on} names the declared table ${named}` });
    } else if (type === "view" && sameName !== undefined) {
      found.push({ type, name, table: sameName, reason: `in place of the declared table ${sameName}` });
    } else if (type === "table" && sameName !== undefined && sameName !== name) {
      found.push({ type, name, table: sameName, reason: `named like the declared table ${sameName} in another case` });
    } else if (type === "index" && onDeclared !== undefined && sql !== null) {
      // why: an index without SQL is one a PRIMARY KEY or UNIQUE clause creates; SQLite refuses to load any other.
      found.push({ type, name, table: onDeclared, reason: `on table ${onDeclared}, not created by the runner` });
    }
  }
  return found;
}

/**
 * On a PostgreSQL server, in the schema the runner writes (current_schema()): rules on a declared
 * table (one can turn its inserts into nothing, or into writes elsewhere), views and other
 * relations named like a declared table (standing in for it), indexes on a declared table
 * other than its primary key's and unique constraints' (an expression index runs code on every row),
 * and foreign keys of a declared table with an action that writes it (ON DELETE CASCADE, SET NULL,
 * SET DEFAULT; the runner's own keys have none): the runner's write of the table they reference
 * would change this one unseen, a table whose checks it may carry over as the last commit left it.
 */
function serverObjects(db: SqlDatabase, declared: ReadonlySet<string>): ForeignObject[] {
  const found: ForeignObject[] = [];
  const rules = db.all(
    `SELECT r.rulename AS name, c.relname AS tbl FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class
     JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND r.rulename <> '_RETURN' ORDER BY 2, 1`,
  );
  for (const row of rules) {
    const table = String(row["tbl"]);
    if (declared.has(table)) found.push({ type: "rule", name: String(row["name"]), table, reason: `on table ${table}` });
  }
  const standIns = db.all(
    `SELECT c.relname AS name, c.relkind AS kind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = current_schema() AND c.relkind IN ('v', 'm', 'f') ORDER BY 1`,
  );
  for (const row of standIns) {
    const name = String(row["name"]);
    if (declared.has(name)) found.push({ type: "view", name, table: name, reason: `in place of the declared table ${name}` });
  }
  const indexes = db.all(
    `SELECT i.relname AS name, c.relname AS tbl FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
     JOIN pg_class c ON c.oid = x.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = current_schema() AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = x.indexrelid AND k.contype IN ('p', 'u'))
     ORDER BY 2, 1`,
  );
  for (const row of indexes) {
    const table = String(row["tbl"]);
    if (declared.has(table))
      found.push({ type: "index", name: String(row["name"]), table, reason: `on table ${table}, not created by the runner` });
  }
  const actions = db.all(
    `SELECT k.conname AS name, c.relname AS tbl FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
     JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = current_schema() AND k.contype = 'f' AND (k.confdeltype IN ('c', 'n', 'd') OR k.confupdtype IN ('c', 'n', 'd'))
     ORDER BY 2, 1`,
  );
  for (const row of actions) {
    const table = String(row["tbl"]);
    if (declared.has(table))
      found.push({
        type: "constraint",
        name: String(row["name"]),
        table,
        reason: `on table ${table}, a foreign key whose action writes it`,
      });
  }
  return found;
}

/**
 * Refuses a database holding objects that would run on or stand in for the declared tables
 * (see {@link findForeignObjects}): E_DRIFT, naming each one and the statement that removes it.
 */
export function refuseForeignObjects(db: SqlDatabase, declared: Iterable<string>, database: string): void {
  const found = findForeignObjects(db, declared);
  if (found.length === 0) return;
  if (db.dialect) {
    const drop = (object: ForeignObject) =>
      object.type === "constraint"
        ? `ALTER TABLE ${quoteIdent(object.table)} DROP CONSTRAINT ${quoteIdent(object.name)};`
        : object.type === "trigger" || object.type === "rule"
          ? `DROP ${object.type.toUpperCase()} ${quoteIdent(object.name)} ON ${quoteIdent(object.table)};`
          : `DROP ${object.type.toUpperCase()} ${quoteIdent(object.name)};`;
    throw new PipelineError(
      "E_DRIFT",
      `${database} holds ${found.length} object(s) the runner did not create, which would run on or stand in for the tables it declares: ${found.map((object) => `${object.type} ${quoteIdent(object.name)} ${object.reason} (${drop(object)})`).join("; ")}. Nothing was changed. If you did not put them there, find out who did; to keep your data as the runner wrote it, remove them with psql, then run again.`,
    );
  }
  const drops = found.map(fixFor);
  const list = found.map((object, i) => `${object.type} ${quoteIdent(object.name)} ${object.reason} (${drops[i]})`);
  throw new PipelineError(
    "E_DRIFT",
    `${database} holds ${found.length} object(s) the runner did not create, which would run on or stand in for the tables it declares: ${list.join("; ")}. Nothing was changed. If you did not put them there, find out who did; to keep your data as the runner wrote it, remove them (or rename a table) with the sqlite3 CLI, e.g. sqlite3 ${database} '${drops.join(" ").replaceAll("'", "'\\''")}' (or start from a backup), then run again.`,
  );
}

/** The statement that removes the object, or (a table named in another case) gives it the declared name in two renames. */
function fixFor(object: ForeignObject): string {
  if (object.type !== "table") return `DROP ${object.type.toUpperCase()} ${quoteIdent(object.name)};`;
  const step = quoteIdent(`${object.name}_renaming`);
  return `ALTER TABLE ${quoteIdent(object.name)} RENAME TO ${step}; ALTER TABLE ${step} RENAME TO ${quoteIdent(object.table)};`;
}

/**
 * The declared tables a piece of SQL text may name: every run of identifier characters, wherever it
 * stands (bare, "quoted", [bracketed], `backticked`, 'string', even in a comment), that is a declared
 * name. It finds more than a parser would (a comment naming a table counts), never less: a table
 * name is made of identifier characters only, so no quoting can hide it from this scan.
 */
function namedTables(sql: string, tables: ReadonlyMap<string, string>): string[] {
  const names = new Set<string>();
  for (const [word] of sql.matchAll(/[A-Za-z0-9_$\u0080-\uffff]+/g)) {
    const table = tables.get(foldCase(word));
    if (table !== undefined) names.add(table);
  }
  return [...names];
}

/** Lower-cases ASCII letters only, as SQLite compares identifiers. */
function foldCase(name: string): string {
  return name.replace(/[A-Z]/g, (c) => c.toLowerCase());
}
