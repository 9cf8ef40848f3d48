import type { ColumnSpec, ColumnType, TableSpec } from "../config/schema.js";
import { PipelineError } from "../errors.js";
import { quoteIdent, type SqlDatabase } from "./database.js";
import type { Dialect } from "./dialect.js";

const storage: Record<ColumnType, "TEXT" | "INTEGER" | "REAL"> = {
  text: "TEXT",
  integer: "INTEGER",
  decimal: "INTEGER",
  real: "REAL",
  date: "TEXT",
  boolean: "INTEGER",
};

/** The SQLite storage class of a declared column type (decimals are integers of 10^-scale units). */
export function storageType(type: ColumnType): "TEXT" | "INTEGER" | "REAL" {
  return storage[type];
}

/** Whether a column must hold a value: declared required, or part of the primary key. */
export function isRequired(table: TableSpec, column: string): boolean {
  return table.columns[column]?.required === true || (table.primary_key?.includes(column) ?? false);
}

function columnSql(table: TableSpec, name: string, column: ColumnSpec, dialect?: Dialect): string {
  const q = quoteIdent(name);
  if (dialect) {
    const generated = column.type === "integer" && table.primary_key?.length === 1 && table.primary_key[0] === name;
    const required = isRequired(table, name) ? " NOT NULL" : "";
    return `${q} ${dialect.columnType(column.type)}${required}${generated ? dialect.generatedKey : ""}`;
  }
  const parts = [q, storageType(column.type)];
  if (isRequired(table, name)) parts.push("NOT NULL");
  if (column.type === "boolean") parts.push(`CHECK (${q} IN (0, 1))`);
  if (column.type === "date") parts.push(`CHECK (${q} IS date(${q}))`);
  return parts.join(" ");
}

/** The CREATE TABLE statement for a declared table: a STRICT table with its keys (on a server, its dialect's types). */
export function createTableSql(name: string, table: TableSpec, dialect?: Dialect): string {
  const lines = Object.entries(table.columns).map(([column, spec]) => columnSql(table, column, spec, dialect));
  const list = (columns: readonly string[]) => columns.map(quoteIdent).join(", ");
  if (table.primary_key) lines.push(`PRIMARY KEY (${list(table.primary_key)})`);
  for (const unique of table.unique ?? []) lines.push(`UNIQUE (${list(unique)})`);
  for (const fk of table.foreign_keys ?? []) {
    lines.push(
      `FOREIGN KEY (${list(fk.columns)}) REFERENCES ${quoteIdent(fk.references.table)} (${list(fk.references.columns)})${dialect?.foreignKeySuffix ?? ""}`,
    );
  }
  return `CREATE TABLE ${quoteIdent(name)} (\n  ${lines.join(",\n  ")}\n)${dialect ? dialect.tableSuffix : " STRICT"}`;
}

/** The stored tables' CREATE TABLE statements, by name. */
export function storedDefinitions(db: SqlDatabase): Map<string, string> {
  if (db.dialect) return db.dialect.storedDefinitions(db);
  return new Map(
    db.all("SELECT name, sql FROM sqlite_schema WHERE type = 'table'").map((row) => [String(row["name"]), String(row["sql"])]),
  );
}

/** The names of a stored table's columns, whichever engine holds it. */
export function storedColumnNames(db: SqlDatabase, table: string): Set<string> {
  if (db.dialect) return new Set(db.dialect.storedColumns(db, table).map((column) => column.name));
  return new Set(db.all("SELECT name FROM pragma_table_info(?)", [table]).map((row) => String(row["name"])));
}

/** Names of the tables that exist in the database. */
export function existingTables(db: SqlDatabase): Set<string> {
  return new Set(storedDefinitions(db).keys());
}

/** What ensureTables did beyond checking: tables created, and columns added to existing tables. */
export interface EnsuredTables {
  created: string[];
  /** `table.column` for each column added. */
  addedColumns: string[];
}

/**
 * Creates each declared table that is absent, and checks that each present one was created
 * from the same declaration. A table whose stored schema differs is an error: the run stops
 * before touching any row, and the message says what differs. With `addColumns`, a table
 * that lacks only nullable columns declared last gets them (used for the engine's own tables,
 * whose rows mean the same with the new column empty; never for a pipeline's tables, whose
 * stored rows would then differ from every new row). `stored` is {@link storedDefinitions} read
 * already, when no statement since changed these tables.
 */
export function ensureTables(
  db: SqlDatabase,
  tables: Readonly<Record<string, TableSpec>>,
  options: { addColumns?: boolean; stored?: ReadonlyMap<string, string> } = {},
): EnsuredTables {
  const result: EnsuredTables = { created: [], addedColumns: [] };
  const stored = options.stored ?? storedDefinitions(db);
  for (const [name, table] of Object.entries(tables)) {
    const wanted = createTableSql(name, table, db.dialect);
    const actual = stored.get(name);
    if (actual === undefined) {
      db.exec(wanted);
      db.dialect?.recordDefinition(db, name, wanted);
      result.created.push(name);
    } else if (!sameDefinition(actual, wanted)) {
      const missing = options.addColumns ? missingLastColumns(name, table, actual, db.dialect) : undefined;
      if (missing === undefined) {
        throw new PipelineError(
          "E_DRIFT",
          `table ${name} in the database does not match its declaration: ${describeDrift(db, name, table)}`,
        );
      }
      for (const column of missing) {
        db.exec(`ALTER TABLE ${quoteIdent(name)} ADD COLUMN ${columnSql(table, column, table.columns[column]!, db.dialect)}`);
        result.addedColumns.push(`${name}.${column}`);
      }
      db.dialect?.recordDefinition(db, name, wanted);
    }
  }
  return result;
}

/** Whether two CREATE TABLE statements are the same but for line breaks (ALTER TABLE ADD COLUMN writes none). */
function sameDefinition(a: string, b: string): boolean {
  const flat = (sql: string) => sql.replace(/\s*\n\s*/g, " ");
  return flat(a) === flat(b);
}

/** The declared columns a stored table lacks, when they are nullable, come last, and the rest matches exactly. */
function missingLastColumns(name: string, table: TableSpec, actual: string, dialect: Dialect | undefined): string[] | undefined {
  const names = Object.keys(table.columns);
  for (let kept = names.length - 1; kept > 0; kept--) {
    const missing = names.slice(kept);
    if (missing.some((column) => isRequired(table, column))) return undefined;
    const columns = Object.fromEntries(names.slice(0, kept).map((column) => [column, table.columns[column]!]));
    if (sameDefinition(actual, createTableSql(name, { ...table, columns }, dialect))) return missing;
  }
  return undefined;
}

function describeDrift(db: SqlDatabase, name: string, table: TableSpec): string {
  const columns = db.dialect
    ? db.dialect.storedColumns(db, name)
    : db
        .all(`PRAGMA table_info(${quoteIdent(name)})`)
        .map((c) => ({ name: String(c["name"]), type: String(c["type"]), notNull: Boolean(c["notnull"]) }));
  const stored = new Map(columns.map((c) => [c.name, `${c.type}${c.notNull ? " NOT NULL" : ""}`]));
  const differences: string[] = [];
  for (const [column, spec] of Object.entries(table.columns)) {
    const type = db.dialect ? db.dialect.columnType(spec.type) : storageType(spec.type);
    const wanted = `${type}${isRequired(table, column) ? " NOT NULL" : ""}`;
    const actual = stored.get(column);
    if (actual === undefined) differences.push(`column ${column} is declared but not stored`);
    else if (actual !== wanted) differences.push(`column ${column} is stored as ${actual}, declared as ${wanted}`);
  }
  for (const column of stored.keys()) {
    if (!(column in table.columns)) differences.push(`column ${column} is stored but not declared`);
  }
  if (differences.length === 0) differences.push("its keys or constraints differ");
  return `${differences.join("; ")}. Nothing was changed; migrate the table by hand (or start from a new database file) and run again`;
}
