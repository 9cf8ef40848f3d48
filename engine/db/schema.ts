import type { TableSpec } from "../config/schema.js";
import { systemTables } from "../history.js";
import { refuseForeignObjects } from "./schema-objects.js";
import type { SqlDatabase } from "./database.js";
import { ensureTables, storedDefinitions } from "./tables.js";

/** What preparing a database's schema changed (or, in a preview, would change). */
export interface SchemaChanges {
  /** The pipeline's tables that were absent. */
  createdTables: string[];
  /** `table.column`, for the engine's own tables written by an older version. */
  addedColumns: string[];
}

/** The tables the runner declares: the engine's and the pipeline's. */
export function declaredTables(pipelineTables: Readonly<Record<string, unknown>>): string[] {
  return [...Object.keys(systemTables), ...Object.keys(pipelineTables)];
}

/**
 * Refuses triggers, views and indexes the runner did not create on the tables it declares, then
 * creates the engine's tables and the pipeline's that are absent, and adds to the engine's tables
 * the columns a newer version declares (never to the pipeline's; any other difference is E_DRIFT).
 */
export function ensureSchema(db: SqlDatabase, pipelineTables: Readonly<Record<string, TableSpec>>, database: string): SchemaChanges {
  refuseForeignObjects(db, declaredTables(pipelineTables), database);
  // why: read once for both sets (on a server, a read of every column of the schema); the engine's tables
  // and the pipeline's have different names (validation reserves the engine's), so creating one set leaves the other's rows as read.
  const stored = storedDefinitions(db);
  const system = ensureTables(db, systemTables as Record<string, TableSpec>, { addColumns: true, stored });
  const pipeline = ensureTables(db, pipelineTables as Record<string, TableSpec>, { stored });
  return { createdTables: pipeline.created, addedColumns: system.addedColumns };
}
