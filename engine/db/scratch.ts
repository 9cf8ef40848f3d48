import type { SqlDatabase } from "./database.js";
import type { EngineName } from "./engines/engine.js";

/**
 * An empty in-memory database to compile a pipeline's SQL against before anything runs, on the
 * SQLite the run will use: node:sqlite for `native` (no WebAssembly to load and warm up), sql.js
 * for `sqljs`, so that validation accepts exactly what the run's SQLite does; node:sqlite for
 * `postgres`, whose run uses no SQLite (its SQL is compiled on the server by `validate`).
 */
export async function openScratch(engine: EngineName | undefined): Promise<SqlDatabase> {
  if (engine === "native" || engine === "postgres") return (await import("./engines/native.js")).openNativeMemory();
  return (await import("./sqljs.js")).openSqlJs();
}
