import type { SqlDatabase } from "./database.js";
import type { EngineName } from "./engines/engine.js";

/**
 * Runs `body`, which compiles a pipeline's SQL against an empty in-memory database and returns the
 * problems it found, on the SQLite the run will use: node:sqlite for `native` (no WebAssembly to
 * load and warm up), sql.js for `sqljs`, so that validation accepts exactly what the run's SQLite
 * does; node:sqlite for `postgres`, whose run uses no SQLite (its SQL is compiled on the server by
 * `validate`). On `sqljs`, node:sqlite stands in first, refusing what sql.js's build lacks
 * ({@link nodeOnly}), so that a valid pipeline's run does not load sql.js before it knows it writes;
 * only when it finds a problem does `body` run again on sql.js, whose verdict is the one returned.
 */
export async function withScratch<T>(engine: EngineName | undefined, body: (scratch: SqlDatabase) => T[] | Promise<T[]>): Promise<T[]> {
  if (engine === "native" || engine === "postgres") return onScratch(await nativeScratch(), body);
  const standIn = await nativeScratch({ refuseNodeOnly: true }).catch(() => undefined);
  if (standIn) {
    const problems = await onScratch(standIn, body);
    if (problems.length === 0) return problems;
  }
  return onScratch(await (await import("./sqljs.js")).openSqlJs(), body);
}

async function onScratch<T>(scratch: SqlDatabase, body: (scratch: SqlDatabase) => T[] | Promise<T[]>): Promise<T[]> {
  try {
    return await body(scratch);
  } finally {
    scratch.close();
  }
}

/**
 * What node:sqlite's build has and sql.js's lacks (functions, and modules for virtual tables); a
 * test compares both builds, so that an upgrade of either says when this list must change.
 */
export const nodeOnly = {
  functions: [
    "bm25",
    "fts5",
    "fts5_get_locale",
    "fts5_insttoken",
    "fts5_locale",
    "fts5_source_id",
    "geopoly_area",
    "geopoly_bbox",
    "geopoly_blob",
    "geopoly_ccw",
    "geopoly_contains_point",
    "geopoly_debug",
    "geopoly_group_bbox",
    "geopoly_json",
    "geopoly_overlap",
    "geopoly_regular",
    "geopoly_svg",
    "geopoly_within",
    "geopoly_xform",
    "highlight",
    "load_extension",
    "percentile",
    "percentile_cont",
    "percentile_disc",
    "rtreecheck",
    "rtreedepth",
    "rtreenode",
  ],
  modules: ["dbstat", "fts5", "fts5vocab", "geopoly", "rtree", "rtree_i32"],
};

/** An empty node:sqlite database, foreign keys enforced; with `refuseNodeOnly`, what {@link nodeOnly} names does not compile. */
async function nativeScratch(options: { refuseNodeOnly?: boolean } = {}): Promise<SqlDatabase> {
  const { openNativeMemory } = await import("./engines/native.js");
  const { nodeSqlite } = await import("./engines/node-sqlite.js");
  return openNativeMemory((db) => {
    if (!options.refuseNodeOnly) return;
    const { constants } = nodeSqlite();
    const functions = new Set(nodeOnly.functions);
    const modules = new Set(nodeOnly.modules);
    db.setAuthorizer((action, first, second) => {
      const refused =
        (action === constants.SQLITE_FUNCTION && functions.has(String(second).toLowerCase())) ||
        (action === constants.SQLITE_CREATE_VTABLE && modules.has(String(second).toLowerCase())) ||
        (action === constants.SQLITE_READ && modules.has(String(first).toLowerCase()));
      return refused ? constants.SQLITE_DENY : constants.SQLITE_OK;
    });
  });
}
