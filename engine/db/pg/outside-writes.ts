import { quoteIdent, type SqlDatabase } from "../database.js";

/**
 * PostgreSQL's stand-in for SQLite's commit mark (engine/db/commit-mark.ts): what proves a table is
 * exactly as the runner's last commit left it. Each table the runner checked carries a statement
 * trigger of the runner's (AFTER INSERT, UPDATE, DELETE or TRUNCATE, ENABLE ALWAYS so that
 * `session_replication_role = replica` does not silence it) whose SECURITY DEFINER function logs
 * every write not made by a runner's transaction into pipeline_outside_writes, taking a number from
 * its identity sequence (which no rollback gives back). At commit each table gets a mark: the
 * sequence's value and the identity of the table, its trigger and the function; a table whose mark
 * still holds at the next run (same identity, no number taken since) was written by nobody else.
 * A trigger dropped, replaced, disabled or re-enabled, a function replaced, a table re-created or
 * rewritten (TRUNCATE, VACUUM FULL) changes the identity, so the proof fails and the run checks all.
 */

/** The name of the runner's trigger on each checked table, and of its function. */
const guardTrigger = "pipeline_outside_write";
const guardFunction = "pipeline_note_outside_write";
const writesTable = "pipeline_outside_writes";
const marksTable = "pipeline_table_marks";
/** The transaction-local setting naming the runner's transaction: writes made under it are the runner's own. */
const writerSetting = "pipeline.writer";
/** tgtype of a statement-level AFTER trigger on INSERT (4), DELETE (8), UPDATE (16) and TRUNCATE (32). */
const guardType = 4 + 8 + 16 + 32;

/**
 * Whether trigger `t` (pg_trigger) is the runner's, always enabled, calling the runner's function
 * `p` (pg_proc) in the table's schema `n` (pg_namespace) with exactly its body, the one parameter.
 */
export const isGuardTrigger = `(t.tgname = '${guardTrigger}' AND t.tgenabled = 'A' AND t.tgtype = ${guardType} AND t.tgqual IS NULL
  AND t.tgnargs = 0 AND p.proname = '${guardFunction}' AND p.pronamespace = n.oid AND p.prosecdef AND p.prosrc = ?)`;

/** The body of the runner's function in `schema` (the text pg_proc keeps, compared to refuse any other). */
export function guardSource(schema: string): string {
  return `
BEGIN
  IF current_setting('${writerSetting}', true) IS DISTINCT FROM pg_current_xact_id()::text THEN
    INSERT INTO ${quoteIdent(schema)}.${writesTable} (table_oid, table_name, operation, by_user) VALUES (TG_RELID, TG_TABLE_NAME, TG_OP, session_user);
  END IF;
  RETURN NULL;
END
`;
}

/** Marks the run's transaction as the runner's: its writes are not logged as outside writes. */
export function markRunnerTransaction(db: SqlDatabase): void {
  db.all(`SELECT set_config('${writerSetting}', pg_current_xact_id()::text, true)`);
}

/**
 * The identity of each ordinary table of the current schema as the proof compares it: the table
 * (oid, storage file), the runner's trigger on it (oid, row version, state, type) and the trigger's
 * function (oid, row version); `guarded` when that trigger is the runner's, always enabled.
 */
function identities(db: SqlDatabase): Map<string, { identity: string; guarded: boolean; created: boolean }> {
  const rows = db.all(
    `SELECT c.relname AS name, concat_ws(' ', c.oid, c.relfilenode, t.oid, t.xmin, t.tgenabled, t.tgtype, p.oid, p.xmin) AS identity,
       coalesce(${isGuardTrigger}, false)::int AS guarded,
       (c.xmin::text = (pg_current_xact_id()::text::numeric % 4294967296)::text)::int AS created
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     LEFT JOIN pg_trigger t ON t.tgrelid = c.oid AND t.tgname = '${guardTrigger}'
     LEFT JOIN pg_proc p ON p.oid = t.tgfoid
     WHERE n.nspname = current_schema() AND c.relkind = 'r'`,
    [guardSource(currentSchema(db))],
  );
  return new Map(
    rows.map((row) => [
      String(row["name"]),
      { identity: String(row["identity"]), guarded: Number(row["guarded"]) === 1, created: Number(row["created"]) === 1 },
    ]),
  );
}

function currentSchema(db: SqlDatabase): string {
  return String(db.all("SELECT current_schema() AS s")[0]?.["s"]);
}

/** The last number the outside-write log's sequence gave (0 when none or no log). */
function outsideWritesSoFar(db: SqlDatabase): number {
  const sequence = db.all(`SELECT pg_get_serial_sequence(quote_ident(current_schema()) || '.${writesTable}', 'id') AS s`)[0]?.["s"];
  if (sequence === null || sequence === undefined) return 0;
  const row = db.all(`SELECT last_value, is_called::int AS is_called FROM ${String(sequence)}`)[0];
  return Number(row?.["is_called"]) === 1 ? Number(row?.["last_value"]) : 0;
}

function exists(db: SqlDatabase, table: string): boolean {
  return (
    db.all(`SELECT (to_regclass(quote_ident(current_schema()) || '.' || quote_ident(?)) IS NOT NULL)::int AS found`, [table])[0]?.[
      "found"
    ] === 1
  );
}

/** What the run learnt at its start: the tables proven untouched, why the others are not, and what the commit needs. */
export interface OutsideWriteProof {
  untouched: Set<string>;
  /** Why a table with no proof has none, by table (a table absent here had no mark). */
  why: Map<string, string>;
  /** The tables locked since the run's start (their trigger was in place): the only ones a commit may mark besides those it created. */
  locked: Set<string>;
  /** The outside-write log's sequence at the start, after the locks. */
  sequence: number;
  /** The tables that existed at the start: any other was created during the run. */
  existing: Set<string>;
}

/**
 * At the start of a run: locks every table carrying the runner's trigger SHARE (no other session
 * writes it until the commit, so the proof holds for the whole run), then compares each table's
 * mark with the table as it is now.
 */
export function proveUntouched(db: SqlDatabase): OutsideWriteProof {
  const before = identities(db);
  const proof: OutsideWriteProof = {
    untouched: new Set(),
    why: new Map(),
    locked: new Set(),
    sequence: 0,
    existing: new Set(before.keys()),
  };
  if (!exists(db, marksTable) || !exists(db, writesTable)) return proof;
  const guarded = [...before].filter(([, table]) => table.guarded).map(([name]) => name);
  // why: db.run, not exec: past the lock timeout, the error names the table and who holds it (E_LOCK).
  if (guarded.length > 0) db.run(`LOCK TABLE ${guarded.map(quoteIdent).join(", ")} IN SHARE MODE`);
  proof.locked = new Set(guarded);
  // why: read after the locks: a write of another session that was under way has committed, and its number is counted.
  proof.sequence = outsideWritesSoFar(db);
  const now = identities(db);
  const marks = db.all(`SELECT table_name, identity, outside_writes FROM ${marksTable}`);
  const outside = (since: number) =>
    db.all(`SELECT operation, table_name, by_user FROM ${writesTable} WHERE id > ? ORDER BY id LIMIT 1`, [since])[0];
  for (const mark of marks) {
    const table = String(mark["table_name"]);
    const current = now.get(table);
    if (!current || !proof.locked.has(table))
      proof.why.set(table, `${table} was dropped, or the runner's trigger on it is missing or disabled`);
    else if (current.identity !== String(mark["identity"]))
      proof.why.set(
        table,
        `${table}, its trigger or the trigger's function was re-created, replaced, re-enabled or rewritten (e.g. TRUNCATE)`,
      );
    else if (proof.sequence !== Number(mark["outside_writes"])) {
      const first = outside(Number(mark["outside_writes"]));
      proof.why.set(
        table,
        first
          ? `another session wrote the database since the last run (${String(first["operation"])} on ${String(first["table_name"])} by ${String(first["by_user"])})`
          : "another session wrote the database since the last run (and rolled back, or its log was removed)",
      );
    } else proof.untouched.add(table);
  }
  return proof;
}

/**
 * Before the commit: puts the runner's trigger on each of `tables` (checked by this run) and
 * records their marks. Only a table locked since the run's start or created by this run gets one,
 * and none when an outside write was logged during the run: their state is what this run checked.
 */
export function recordTableMarks(db: SqlDatabase, tables: readonly string[], proof: OutsideWriteProof): void {
  const schema = quoteIdent(currentSchema(db));
  db.exec(`CREATE TABLE IF NOT EXISTS ${schema}.${writesTable} (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, table_oid oid NOT NULL, table_name text NOT NULL,
    operation text NOT NULL, by_user text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());
  CREATE TABLE IF NOT EXISTS ${schema}.${marksTable} (table_name text PRIMARY KEY, identity text NOT NULL, outside_writes bigint NOT NULL)`);
  const source = guardSource(currentSchema(db));
  const fn = db.all(`SELECT prosrc, prosecdef::int AS prosecdef FROM pg_proc WHERE oid = to_regprocedure(?)`, [
    `${schema}.${guardFunction}()`,
  ])[0];
  if (!fn || fn["prosrc"] !== source || Number(fn["prosecdef"]) !== 1) {
    db.exec(`CREATE OR REPLACE FUNCTION ${schema}.${guardFunction}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
      SET search_path = pg_catalog, pg_temp AS $guard$${source}$guard$`);
  }
  const before = identities(db);
  const present = tables.filter((table) => before.has(table));
  for (const table of present) {
    if (before.get(table)!.guarded) continue;
    db.exec(`DROP TRIGGER IF EXISTS ${guardTrigger} ON ${quoteIdent(table)};
      CREATE TRIGGER ${guardTrigger} AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ${quoteIdent(table)}
        FOR EACH STATEMENT EXECUTE FUNCTION ${schema}.${guardFunction}();
      ALTER TABLE ${quoteIdent(table)} ENABLE ALWAYS TRIGGER ${guardTrigger}`);
  }
  // why: a write of another session under way is waited for; it is then logged, and counted below.
  if (present.length > 0) db.run(`LOCK TABLE ${present.map(quoteIdent).join(", ")} IN SHARE MODE`);
  const sequence = outsideWritesSoFar(db);
  db.exec(`DELETE FROM ${schema}.${marksTable}`);
  if (sequence !== proof.sequence) return;
  const now = identities(db);
  for (const table of present) {
    const current = now.get(table)!;
    // why: a table that did not exist at the start and whose catalog row is this transaction's was created by this run, unseen by others until the commit.
    const created = !proof.existing.has(table) && before.get(table)!.created;
    if (!current.guarded || !(proof.locked.has(table) || created)) continue;
    db.run(`INSERT INTO ${schema}.${marksTable} (table_name, identity, outside_writes) VALUES (?, ?, ?)`, [
      table,
      current.identity,
      sequence,
    ]);
  }
}
