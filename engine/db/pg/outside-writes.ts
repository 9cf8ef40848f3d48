import { PipelineError } from "../../errors.js";
import { quoteIdent, type Row, type SqlDatabase } from "../database.js";
import { currentSchema } from "./current-schema.js";

/**
 * PostgreSQL's stand-in for SQLite's commit mark (engine/db/commit-mark.ts): what proves a table is
 * exactly as the runner's last commit left it. Each table the runner checked carries a statement
 * trigger of the runner's (AFTER INSERT, UPDATE, DELETE or TRUNCATE, ENABLE ALWAYS so that
 * `session_replication_role = replica` does not silence it) whose SECURITY DEFINER function logs
 * every write not made by a runner's transaction into pipeline_outside_writes, under the table it
 * wrote (its oid), taking a number from its identity sequence (which no rollback gives back). At
 * commit each table gets a mark: the sequence's value and the identity of the table, its trigger and
 * the function; a table whose mark still holds at the next run (same identity, no write to it logged
 * since) was written by nobody else. A write voids the mark of the table it wrote alone: the others
 * keep their proof (a foreign key's cascade fires the trigger of the table it writes, and is logged
 * under it). A number taken with no row to show is a write rolled back while the log is kept (the
 * runner's trigger on it refuses another session's removal of a row, see {@link keeperTrigger}), and
 * may be any table's write otherwise (see {@link LoggedWrites}).
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
 * The runner's trigger on the log itself, and its function: it refuses to remove or change the log's
 * rows in any transaction but a runner's. While it stands unchanged, a number of the log's sequence
 * with no row to show is a write that rolled back (see {@link LoggedWrites}).
 */
const keeperTrigger = "pipeline_keep_outside_writes";
/** tgtype of a statement-level BEFORE (2) trigger on DELETE (8), UPDATE (16) and TRUNCATE (32). */
const keeperType = 2 + 8 + 16 + 32;

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

/** The body of the function of the runner's trigger on the log, in `schema`. */
function keeperSource(schema: string): string {
  return `
BEGIN
  IF NOT EXISTS (SELECT FROM ${quoteIdent(schema)}.${runnerTable} WHERE xid = pg_current_xact_id()::text) THEN
    RAISE EXCEPTION 'only the pipeline runner removes or changes rows of ${writesTable}: they say which tables other sessions wrote';
  END IF;
  RETURN NULL;
END
`;
}

/**
 * The identity of the outside-write log (oid, storage file) with the runner's trigger on it (oid, row
 * version, state) and its function (oid, row version), when that trigger is exactly the runner's,
 * always enabled; undefined when it is not. Unchanged since a commit recorded it, no session but a
 * runner's removed or changed a row of the log in between.
 */
function keptLog(db: SqlDatabase): string | undefined {
  const row = db.all(
    `SELECT concat_ws(' ', c.oid, c.relfilenode, t.oid, t.xmin, t.tgenabled, t.tgtype, p.oid, p.xmin) AS identity
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     JOIN pg_trigger t ON t.tgrelid = c.oid AND t.tgname = '${keeperTrigger}' JOIN pg_proc p ON p.oid = t.tgfoid
     WHERE n.nspname = current_schema() AND c.relname = '${writesTable}' AND c.relkind = 'r' AND t.tgenabled = 'A'
       AND t.tgtype = ${keeperType} AND t.tgqual IS NULL AND t.tgnargs = 0 AND p.proname = '${keeperTrigger}'
       AND p.pronamespace = n.oid AND p.prosecdef AND p.prosrc = ?`,
    [keeperSource(currentSchema(db))],
  )[0];
  return row === undefined ? undefined : String(row["identity"]);
}

/** Puts the runner's trigger on the log (see {@link keeperTrigger}) unless it is there exactly; returns the log's identity with it. */
function keepLog(db: SqlDatabase): string {
  const kept = keptLog(db);
  if (kept !== undefined) return kept;
  const schema = quoteIdent(currentSchema(db));
  db.exec(`CREATE OR REPLACE FUNCTION ${schema}.${keeperTrigger}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
      SET search_path = pg_catalog, pg_temp AS $keeper$${keeperSource(currentSchema(db))}$keeper$;
    DROP TRIGGER IF EXISTS ${keeperTrigger} ON ${schema}.${writesTable};
    CREATE TRIGGER ${keeperTrigger} BEFORE UPDATE OR DELETE OR TRUNCATE ON ${schema}.${writesTable}
      FOR EACH STATEMENT EXECUTE FUNCTION ${schema}.${keeperTrigger}();
    ALTER TABLE ${schema}.${writesTable} ENABLE ALWAYS TRIGGER ${keeperTrigger}`);
  return keptLog(db)!;
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
 * The identity of each ordinary table of the current schema as the proof compares it (and its oid, by which
 * the log names the table it wrote: a name changes with a rename): the table (oid, storage file), the runner's trigger on it (oid, row version, state, type) and the trigger's
 * function (oid, row version); `guard` is the part of the trigger and function alone (the run's own
 * writes, a TRUNCATE included, leave it); `guarded` when that trigger is the runner's, always enabled;
 * `inherited` when another table inherits from it (its rows show in this one's, written unseen by its trigger) or
 * it inherits from another (a statement on the parent writes its rows, firing the parent's triggers alone);
 * `unlogged` when it is not a permanent table (the server's crash recovery empties it, firing no trigger).
 */
function identities(
  db: SqlDatabase,
): Map<
  string,
  { oid: string; identity: string; guard: string; guarded: boolean; created: boolean; inherited: boolean; unlogged: boolean }
> {
  const rows = db.all(
    `SELECT c.relname AS name, c.oid::text AS oid, concat_ws(' ', c.oid, c.relfilenode, t.oid, t.xmin, t.tgenabled, t.tgtype, p.oid, p.xmin) AS identity,
       concat_ws(' ', t.oid, t.xmin, t.tgenabled, t.tgtype, p.oid, p.xmin) AS guard,
       coalesce(${isGuardTrigger}, false)::int AS guarded,
       (c.xmin::text = (pg_current_xact_id()::text::numeric % 4294967296)::text)::int AS created,
       EXISTS (SELECT FROM pg_inherits i WHERE i.inhparent = c.oid OR i.inhrelid = c.oid)::int AS inherited,
       (c.relpersistence <> 'p')::int AS unlogged
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
        oid: String(row["oid"]),
        identity: String(row["identity"]),
        guard: String(row["guard"]),
        guarded: Number(row["guarded"]) === 1,
        created: Number(row["created"]) === 1,
        inherited: Number(row["inherited"]) === 1,
        unlogged: Number(row["unlogged"]) === 1,
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
  /**
   * The log's identity (see {@link keptLog}) when it is as the last commit recorded it and the run reads
   * in READ COMMITTED (each statement sees every commit before it): a number with no row is then a write
   * rolled back. Undefined: such a number may be any table's write.
   */
  keptLog: string | undefined;
}

/** A proof that holds for no table (a transaction that only records a failed run). */
export const noProof = (): OutsideWriteProof => ({
  untouched: new Set(),
  why: new Map(),
  guards: new Map(),
  beingWritten: new Set(),
  sequence: 0,
  existing: new Set(),
  keptLog: undefined,
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
  const logMark = marks.find((mark) => mark["table_name"] === writesTable)?.["identity"];
  // why: under REPEATABLE READ a statement sees no commit after the transaction's first, so a committed write would show no row.
  const readCommitted = db.all("SELECT current_setting('transaction_isolation') AS level")[0]?.["level"] === "read committed";
  const kept = keptLog(db);
  if (readCommitted && kept !== undefined && kept === logMark) proof.keptLog = kept;
  const logged = new LoggedWrites(db, proof.sequence, proof.keptLog !== undefined);
  for (const mark of marks) {
    const table = String(mark["table_name"]);
    if (table === writesTable) continue;
    const current = now.get(table);
    if (!current || !proof.guards.has(table))
      proof.why.set(table, `${table} was dropped, or the runner's trigger on it is missing or disabled`);
    else if (current.identity !== String(mark["identity"]))
      proof.why.set(
        table,
        `${table}, its trigger or the trigger's function was re-created, replaced, re-enabled or rewritten (e.g. TRUNCATE)`,
      );
    else if (proof.beingWritten.has(table)) proof.why.set(table, `another session was writing ${table} when the run started`);
    // why: a query of a table reads its children's rows too, and a statement on a parent writes its children's rows: either
    // fires the statement triggers of the table it names alone, not the runner's on this one.
    else if (current.inherited)
      proof.why.set(table, `${table} inherits from another table, or another inherits from it: a write through either is not logged`);
    else if (current.unlogged) proof.why.set(table, `${table} is unlogged: a crash of the server empties it, firing no trigger`);
    else {
      const why = logged.since(Number(mark["outside_writes"]), current.oid, table);
      if (why === undefined) proof.untouched.add(table);
      else proof.why.set(table, why);
    }
  }
  return proof;
}

/**
 * The outside-write log as a run's start reads it, up to the sequence's value `to` then. Each write is
 * logged under the table it wrote (its oid), so a write voids that table's mark alone. A number
 * between a mark and `to` with no row to show is a write that rolled back when the log is `kept`
 * (no other session removed a row of it, and each statement sees every commit before it; a writer
 * that took a number and has not ended holds its table's lock, so that table is being written, see
 * {@link tablesBeingWritten}); otherwise it could be any table's write, and voids every mark before
 * it. The rows after a mark are read once for all the marks taken at that number (a commit marks
 * every table at one).
 */
class LoggedWrites {
  private readonly read = new Map<number, { count: number; first: Map<string, Row> }>();

  constructor(
    private readonly db: SqlDatabase,
    private readonly to: number,
    private readonly kept: boolean,
  ) {}

  /** Why the table of `oid` (named `table`), marked at `from`, may have been written since; undefined when it was not. */
  since(from: number, oid: string, table: string): string | undefined {
    // why: a commit removes the log's rows up to its mark, and a write waits for the commit's lock on a marked table, so a
    // row of that table at or below its mark, or a sequence below a mark, is a write numbered after the sequence was set back.
    if (this.to < from) return "the outside-write log's sequence was set back since the last run: which table was written is not known";
    const logged = this.after(from);
    const write = logged.first.get(oid);
    if (write && Number(write["back"]) === 1)
      return `another session wrote ${table} since the last run, with the outside-write log's sequence set back`;
    if (write) return `another session wrote ${table} since the last run (${String(write["operation"])} by ${String(write["by_user"])})`;
    // why: a number with no row is a write rolled back or a row removed; which table it was is not known.
    if (!this.kept && logged.count !== this.to - from)
      return "another session wrote the database since the last run and rolled back, or its log was removed: which table is not known";
    return undefined;
  }

  private after(from: number): { count: number; first: Map<string, Row> } {
    let logged = this.read.get(from);
    if (logged) return logged;
    const rows = this.db.all(
      `SELECT DISTINCT ON (table_oid) table_oid::text AS oid, operation, by_user, (id <= ?)::int AS back,
         count(*) FILTER (WHERE id > ?) OVER () AS total
       FROM ${writesTable} WHERE id <= ? ORDER BY table_oid, id`,
      [from, from, this.to],
    );
    logged = { count: Number(rows[0]?.["total"] ?? 0), first: new Map(rows.map((row) => [String(row["oid"]), row])) };
    this.read.set(from, logged);
    return logged;
  }
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
 * The tables other sessions wrote, by the log, among the numbers after `from` up to `to`, by oid; "unknown"
 * when some number has no row to show (a write rolled back, or a row removed from the log) and the log
 * was not `kept` (see {@link LoggedWrites}) from the run's start to now. When it was, such a number is
 * a write rolled back, or one under way on a table the commit has not locked (a locked table has no
 * write under way): neither is a write to a table the commit relies on or marks.
 */
function outsideWritesBetween(db: SqlDatabase, from: number, to: number, kept: boolean): Set<string> | "unknown" {
  if (to === from) return new Set();
  const rows = db.all(`SELECT id, table_oid::text AS oid FROM ${writesTable} WHERE id > ? AND id <= ?`, [from, to]);
  if (!kept && new Set(rows.map((row) => Number(row["id"]))).size !== to - from) return "unknown";
  return new Set(rows.map((row) => String(row["oid"])));
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
  const written = outsideWritesBetween(db, proof.sequence, sequence, proof.keptLog !== undefined && keptLog(db) === proof.keptLog);
  const now = identities(db);
  const writtenTo = (table: string) => written === "unknown" || written.has(now.get(table)?.oid ?? "");
  const voided = [...reliedOn].filter((table) => writtenTo(table) || now.get(table)?.guard !== proof.guards.get(table));
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
    const unwrittenSinceStart = !writtenTo(table) && !proof.beingWritten.has(table) && now.get(table)!.guard === proof.guards.get(table);
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
  // why: the log's identity, kept from this commit to the next run's start, says no other session removed a row of it in between.
  db.run(`INSERT INTO ${schema}.${marksTable} (table_name, identity, outside_writes) VALUES (?, ?, ?)`, [
    writesTable,
    keepLog(db),
    sequence,
  ]);
}

/**
 * Before a step writes `tables`: locks them SHARE ROW EXCLUSIVE until the commit (other sessions
 * still read them; their writes wait), those not locked yet and that existed at the start (one the
 * run created is seen by nobody else), adding them to `locked`. "all" (a script, which may write
 * any table): every table of the schema that existed at the start but the outside-write log.
 */
export function lockForWrite(db: SqlDatabase, tables: readonly string[] | "all", proof: OutsideWriteProof, locked: Set<string>): void {
  // why: which tables a script writes cannot be told before it runs: a function it calls, a trigger or a foreign key's
  // action may write any other, and a statement may name a table an earlier one creates. The log is left out: only the
  // runner's trigger writes it, for a writer of a table locked here, which waits for this lock before its trigger fires.
  const wanted = tables === "all" ? [...proof.existing].filter((table) => table !== writesTable).sort() : tables;
  const fresh = [...new Set(wanted)].filter((table) => !locked.has(table) && proof.existing.has(table));
  if (fresh.length === 0) return;
  // why: db.run, not exec: past the lock timeout, the error names the table and who holds it (E_LOCK).
  db.run(`LOCK TABLE ${fresh.map(quoteIdent).join(", ")} IN SHARE ROW EXCLUSIVE MODE`);
  for (const table of fresh) locked.add(table);
}
