import { PipelineError } from "../errors.js";
import { quoteIdent, type SqlDatabase } from "./database.js";

/** Refuses a transaction that leaves foreign keys pointing at missing rows (E_DB, naming the first few), before it is committed. */
export function checkForeignKeys(db: SqlDatabase): void {
  if (db.dialect) return db.dialect.checkConstraints(db);
  const violations = db.all("PRAGMA foreign_key_check");
  if (violations.length === 0) return;
  const first = violations.slice(0, 5).map((v) => {
    const table = String(v["table"]);
    const row = db.all(`SELECT * FROM ${quoteIdent(table)} WHERE rowid = ?`, [v["rowid"] ?? null])[0];
    return `${table} row ${JSON.stringify(row ?? { rowid: v["rowid"] })} references a missing ${String(v["parent"])} row`;
  });
  throw new PipelineError(
    "E_DB",
    `${violations.length} foreign key violation(s) at the end of the run, so nothing was saved: ${first.join("; ")}`,
  );
}
