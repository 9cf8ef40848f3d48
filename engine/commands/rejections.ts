import { readDatabase } from "../db/session.js";
import type { EngineName } from "../db/engines/index.js";
import { existingTables } from "../db/tables.js";
import { pendingRejections, type PendingRejection } from "../history.js";
import type { Command } from "../main.js";
import { renderRejections } from "../rejections-report.js";

/** `rejections`: the rows kept out of the tables and still pending; reads the database, writes nothing. */
export const rejectionsCommand: Command = {
  pipeline: true,
  async run({ args, io, json, c }, { database, engine, plan }) {
    const rejections = await readPendingRejections(database, engine, args.lockTimeoutMs);
    if (json) io.stdout.write(JSON.stringify({ ok: true, command: "rejections", database: plan.database, rejections }, null, 2) + "\n");
    else io.stdout.write(renderRejections(plan.database, rejections, c));
    return 0;
  },
};

/** The pending rejections stored in the database file; none when it does not exist yet. Never writes. */
async function readPendingRejections(database: string, engine: EngineName, lockTimeoutMs: number): Promise<PendingRejection[]> {
  return readDatabase(database, engine, lockTimeoutMs, (db) =>
    existingTables(db).has("pipeline_rejected_rows") ? pendingRejections(db) : [],
  );
}
