import { PipelineError } from "../../errors.js";
import { quoteIdent, type SqlDatabase } from "../database.js";
import { currentSchema } from "./current-schema.js";

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
 *
 * The run locks no table it only reads: another session may write one while the run works. So the
 * commit confirms the proof again (confirmAndMark): it locks those tables briefly, and an outside
 * write logged since the run's start, or a trigger changed, on a table whose proof the run relied on
 * fails the run with nothing saved; a table written so gets no mark, and the next run checks it.
 */

/** The name of the runner's trigger on each checked table, and of its function. */
const guardTrigger = "pipeline_outside_write";
const guardFunction = "pipeline_note_outside_write";
const writesTable = "pipeline_outside_writes";
const marksTable = "pipeline_table_marks";
/**
 * The runner's transaction lists itself here while it runs and removes the row before it commits, so
 * no other session ever sees it: writes made by a transaction listed here are the runner's own. why:
 * not a setting, which any session may set to its own transaction: writing this table takes a grant
 * on it, which another role does not have (a session of the runner's own role can forge the proof,
 * as it can rewrite the runner's tables).
 */
const runnerTable = "pipeline_runner_transactions";
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
  IF NOT EXISTS (SELECT FROM ${quoteIdent(schema)}.${runnerTable} WHERE xid = pg_current_xact_id()::text) THEN
    INSERT INTO ${quoteIdent(schema)}.${writesTable} (table_oid, table_name, operation, by_user) VALUES (TG_RELID, TG_TABLE_NAME, TG_OP, session_user);
  END IF;
  RETURN NULL;
END
`;
}

/** Marks the run's transaction as the runner's: its writes are not logged as outside writes. */
export function markRunnerTransaction(db: SqlDatabase): void {
  const table = `${quoteIdent(currentSchema(db))}.${runnerTable}`;
  db.exec(`CREATE TABLE IF NOT EXISTS ${table} (xid text PRIMARY KEY); INSERT INTO ${table} (xid) VALUES (pg_current_xact_id()::text)`);
}

/** Removes the run's transaction from the runner's list before it commits (see {@link runnerTable}). */
export function unmarkRunnerTransaction(db: SqlDatabase): void {
  db.exec(`DELETE FROM ${quoteIdent(currentSchema(db))}.${runnerTable} WHERE xid = pg_current_xact_id()::text`);
}

/**
 * The identity of each ordinary table of the current schema as the proof compares it: the table
 * (oid, storage file), the runner's trigger on it (oid, row version, state, type) and the trigger's
 * function (oid, row version); `guard` is the part of the trigger and function alone (the run's own
 * writes, a TRUNCATE included, leave it); `guarded` when that trigger is the runner's, always enabled.
 */
function identities(db: SqlDatabase): Map<string, { identity: string; guard: string; guarded: boolean; created: boolean }> {
  const rows = db.all(
    `SELECT c.relname AS name, concat_ws(' ', c.oid, c.relfilenode, t.oid, t.xmin, t.tgenabled, t.tgtype, p.oid, p.xmin) AS identity,
       concat_ws(' ', t.oid, t.xmin, t.tgenabled, t.tgtype, p.oid, p.xmin) AS guard,
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
      {
        identity: String(row["identity"]),
        guard: String(row["guard"]),
        guarded: Number(row["guarded"]) === 1,
        created: Number(row["created"]) === 1,
      },
    ]),
  );
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
  /**
   * The tables carrying the runner's trigger at the start, with its {@link identities}' `guard` then:
   * their outside writes since are logged, so they are the only ones a commit may mark besides those it created.
   */
  guards: Map<string, string>;
  /** The tables another session was writing at the start: a write numbered before {@link sequence} may land during the run. */
  beingWritten: Set<string>;
  /** The outside-write log's sequence at the start. */
  sequence: number;
  /** The tables that existed at the start: any other was created during the run. */
  existing: Set<string>;
}

/** A proof that holds for no table (a transaction that only records a failed run). */
export const noProof = (): OutsideWriteProof => ({
  untouched: new Set(),
  why: new Map(),
  guards: new Map(),
  beingWritten: new Set(),
  sequence: 0,
  existing: new Set(),
});

/**
 * At the start of a run, without locking any table: compares each table's mark with the table as
 * it is now. Another session's write that lands later is caught at the commit ({@link confirmAndMark}).
 */
export function proveUntouched(db: SqlDatabase): OutsideWriteProof {
  const proof = noProof();
  if (!exists(db, marksTable) || !exists(db, writesTable)) {
    proof.existing = new Set(identities(db).keys());
    return proof;
  }
  proof.sequence = outsideWritesSoFar(db);
  const now = identities(db);
  proof.existing = new Set(now.keys());
  for (const [name, table] of now) if (table.guarded) proof.guards.set(name, table.guard);
  // why: read after the sequence: a writer whose number is not above it and that has not ended holds its table's lock now.
  proof.beingWritten = tablesBeingWritten(db);
  const marks = db.all(`SELECT table_name, identity, outside_writes FROM ${marksTable}`);
  const outside = (since: number) =>
    db.all(`SELECT operation, table_name, by_user FROM ${writesTable} WHERE id > ? ORDER BY id LIMIT 1`, [since])[0];
  for (const mark of marks) {
    const table = String(mark["table_name"]);
    const current = now.get(table);
    if (!current || !proof.guards.has(table))
      proof.why.set(table, `${table} was dropped, or the runner's trigger on it is missing or disabled`);
    else if (current.identity !== String(mark["identity"]))
      proof.why.set(
        table,
        `${table}, its trigger or the trigger's function was re-created, replaced, re-enabled or rewritten (e.g. TRUNCATE)`,
      );
    else if (proof.beingWritten.has(table)) proof.why.set(table, `another session was writing ${table} when the run started`);
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
 * The tables of the current schema another session holds a lock on that lets it write rows (or a
 * prepared transaction does). A write whose trigger took its number has that lock until it ends.
 */
function tablesBeingWritten(db: SqlDatabase): Set<string> {
  const rows = db.all(
    `SELECT DISTINCT c.relname AS name FROM pg_locks l
       JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE l.locktype = 'relation' AND l.granted AND l.pid IS DISTINCT FROM pg_backend_pid() AND n.nspname = current_schema()
       AND l.mode IN ('RowExclusiveLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock')`,
  );
  return new Set(rows.map((row) => String(row["name"])));
}

/**
 * The tables other sessions wrote, by the log, among the numbers after `from` up to `to`; "unknown"
 * when some number has no row to show (a write rolled back, or a row removed from the log).
 */
function outsideWritesBetween(db: SqlDatabase, from: number, to: number): Set<string> | "unknown" {
  if (to === from) return new Set();
  const rows = db.all(`SELECT id, table_name FROM ${writesTable} WHERE id > ? AND id <= ?`, [from, to]);
  if (new Set(rows.map((row) => Number(row["id"]))).size !== to - from) return "unknown";
  return new Set(rows.map((row) => String(row["table_name"])));
}

/**
 * Before the commit: confirms the proof the run relied on, then puts the runner's trigger on each of
 * `tables` (checked by this run) and records their marks. Each of them and of `reliedOn` (the tables
 * whose carried-over or appended-rows results the run used, engine/run/committed-tables.ts) is locked
 * SHARE until the commit, so a write of another session under way ends first and is counted. An
 * outside write logged since the run's start, or a trigger changed, on a table of `reliedOn` throws
 * E_CHANGED: the run's results would rest on a proof that no longer holds, so nothing is saved.
 * A table gets a mark only when its trigger was in place since the start (or this run created it),
 * nobody else was writing it then, and no outside write to it was logged since: its state is what this run checked.
 */
export function confirmAndMark(
  db: SqlDatabase,
  tables: readonly string[],
  reliedOn: ReadonlySet<string>,
  proof: OutsideWriteProof,
  where: string,
): void {
  const schema = quoteIdent(currentSchema(db));
  db.exec(`CREATE TABLE IF NOT EXISTS ${schema}.${writesTable} (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, table_oid oid NOT NULL, table_name text NOT NULL,
    operation text NOT NULL, by_user text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());
  CREATE TABLE IF NOT EXISTS ${schema}.${marksTable} (table_name text PRIMARY KEY, identity text NOT NULL, outside_writes bigint NOT NULL)`);
  const before = identities(db);
  const locked = [...new Set([...tables, ...reliedOn])].filter((table) => before.has(table));
  // why: db.run, not exec: past the lock timeout, the error names the table and who holds it (E_LOCK).
  if (locked.length > 0) db.run(`LOCK TABLE ${locked.map(quoteIdent).join(", ")} IN SHARE MODE`);
  const sequence = outsideWritesSoFar(db);
  const written = outsideWritesBetween(db, proof.sequence, sequence);
  const now = identities(db);
  const voided = [...reliedOn].filter(
    (table) => written === "unknown" || written.has(table) || now.get(table)?.guard !== proof.guards.get(table),
  );
  if (voided.length > 0) {
    throw new PipelineError(
      "E_CHANGED",
      `${where}: another session wrote ${voided.join(", ")} during the run${written === "unknown" ? " (or a write was rolled back, or removed from the log)" : ""}, ` +
        "after this run took its checks' results or its appended rows from the last commit; nothing was saved. " +
        "Run again: the next run checks them in full.",
    );
  }
  const source = guardSource(currentSchema(db));
  const fn = db.all(`SELECT prosrc, prosecdef::int AS prosecdef FROM pg_proc WHERE oid = to_regprocedure(?)`, [
    `${schema}.${guardFunction}()`,
  ])[0];
  const replaced = !fn || fn["prosrc"] !== source || Number(fn["prosecdef"]) !== 1;
  if (replaced) {
    db.exec(`CREATE OR REPLACE FUNCTION ${schema}.${guardFunction}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
      SET search_path = pg_catalog, pg_temp AS $guard$${source}$guard$`);
  }
  const present = tables.filter((table) => now.has(table));
  const unguarded = present.filter((table) => !now.get(table)!.guarded);
  for (const table of unguarded) {
    db.exec(`DROP TRIGGER IF EXISTS ${guardTrigger} ON ${quoteIdent(table)};
      CREATE TRIGGER ${guardTrigger} AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ${quoteIdent(table)}
        FOR EACH STATEMENT EXECUTE FUNCTION ${schema}.${guardFunction}();
      ALTER TABLE ${quoteIdent(table)} ENABLE ALWAYS TRIGGER ${guardTrigger}`);
  }
  db.exec(`DELETE FROM ${schema}.${marksTable}`);
  // why: only a trigger or the function made just above changes an identity since `now` was read (the tables are locked).
  const marked = replaced || unguarded.length > 0 ? identities(db) : now;
  const marks: (string | number)[][] = [];
  for (const table of present) {
    const current = marked.get(table)!;
    // why: a table that did not exist at the start and whose catalog row is this transaction's was created by this run, unseen by others until the commit.
    const created = !proof.existing.has(table) && now.get(table)!.created;
    const unwrittenSinceStart =
      written !== "unknown" && !written.has(table) && !proof.beingWritten.has(table) && now.get(table)!.guard === proof.guards.get(table);
    if (!current.guarded || !(unwrittenSinceStart || created)) continue;
    marks.push([table, current.identity, sequence]);
  }
  // why: one statement for every mark, not one round trip each.
  if (marks.length > 0)
    db.run(
      `INSERT INTO ${schema}.${marksTable} (table_name, identity, outside_writes) VALUES ${marks.map(() => "(?, ?, ?)").join(", ")}`,
      marks.flat(),
    );
  // why: every mark now starts after `sequence`, and the SHARE locks above let no write under way end later, so the log's
  // rows up to it are read by no later run: without this, the log would grow by a row per outside statement, forever.
  db.run(`DELETE FROM ${schema}.${writesTable} WHERE id <= ?`, [sequence]);
}

/**
 * Before a step writes `tables`: locks them SHARE ROW EXCLUSIVE until the commit (other sessions
 * still read them; their writes wait), those not locked yet and that existed at the start (one the
 * run created is seen by nobody else), adding them to `locked`.
 */
export function lockForWrite(db: SqlDatabase, tables: readonly string[], proof: OutsideWriteProof, locked: Set<string>): void {
  const fresh = [...new Set(tables)].filter((table) => !locked.has(table) && proof.existing.has(table));
  if (fresh.length === 0) return;
  // why: db.run, not exec: past the lock timeout, the error names the table and who holds it (E_LOCK).
  db.run(`LOCK TABLE ${fresh.map(quoteIdent).join(", ")} IN SHARE ROW EXCLUSIVE MODE`);
  for (const table of fresh) locked.add(table);
}
