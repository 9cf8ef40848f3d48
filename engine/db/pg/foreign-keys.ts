import { quoteIdent, type SqlDatabase } from "../database.js";

/** A foreign key taken off a table for its first load, put back (and so checked in one pass) before the run commits. */
interface SetAside {
  table: string;
  name: string;
  definition: string;
}

const setAside = new WeakMap<SqlDatabase, SetAside[]>();

/**
 * Takes the foreign keys off `table` when both it and every table they reference were created in
 * this transaction (no other session can see them yet, so no lock is taken that anyone waits on):
 * loaded without them, its rows are checked by {@link restoreForeignKeys} in one join per key
 * rather than by the server's per-row trigger (two per sale at commit, as long as the load itself).
 * The test is the catalog row's xmin: a table created in this transaction, or one whose row it
 * rewrote (ALTER TABLE, TRUNCATE), which holds an ACCESS EXCLUSIVE lock until commit already.
 */
export function setForeignKeysAside(db: SqlDatabase, table: string): void {
  const keys = db.all(
    `SELECT con.conname AS name, pg_get_constraintdef(con.oid) AS definition
     FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid JOIN pg_class p ON p.oid = con.confrelid
     WHERE con.contype = 'f' AND c.relname = ? AND c.relnamespace = current_schema()::regnamespace
       AND c.xmin::text = (txid_current() % 4294967296)::text AND p.xmin::text = c.xmin::text
     ORDER BY con.conname`,
    [table],
  );
  if (keys.length === 0) return;
  const list = setAside.get(db) ?? [];
  setAside.set(db, list);
  for (const key of keys) {
    const name = String(key["name"]);
    db.exec(`ALTER TABLE ${quoteIdent(table)} DROP CONSTRAINT ${quoteIdent(name)}`);
    list.push({ table, name, definition: String(key["definition"]) });
  }
}

/** Puts back the foreign keys set aside in this transaction; each is checked over every row of its table as it is added. */
export function restoreForeignKeys(db: SqlDatabase): void {
  const list = setAside.get(db);
  while (list && list.length > 0) {
    const { table, name, definition } = list.shift()!;
    db.exec(`ALTER TABLE ${quoteIdent(table)} ADD CONSTRAINT ${quoteIdent(name)} ${definition}`);
  }
}
