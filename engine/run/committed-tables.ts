import type { StepSpec } from "../config/schema.js";
import { quoteIdent, type SqlDatabase } from "../db/database.js";
import { systemTableNames } from "../history.js";
import type { CommittedTables, StepCounts, StepDefinition } from "../step.js";

/**
 * What a run knows that lets it start from the runner's last commit (a check's recorded result, a
 * step's appended rows): the tables exactly as that commit left them (engine/db/commit-mark.ts proves
 * it; none when another program wrote the file since, in WAL mode, or on a server), the run that made
 * that commit, whether the configuration is the same, and this run's step results so far.
 */
export interface CarryOverBasis {
  untouched: ReadonlySet<string> | "all";
  /** Why a table is not among `untouched`, where the engine knows (a server: engine/db/pg/outside-writes.ts). */
  untouchedWhy?: ((table: string) => string | undefined) | undefined;
  previousRunId: number | undefined;
  sameConfig: boolean;
  /** The run's step results, by index: a step `unchanged`, `skipped` or `not_executed` wrote none of its tables. */
  steps: readonly { status: string; counts?: StepCounts | undefined }[];
}

/**
 * What a run can prove about its tables against the runner's last commit, by the rules the checks'
 * carry-over and appended-rows results follow (docs/checks.md): the same configuration, the commit
 * mark vouching for each table (engine/db/commit-mark.ts: nobody wrote the file since), no script
 * step (it may write any table), and this run's step results so far (a step `unchanged`, `skipped`
 * or `not_executed` wrote nothing). Taken before the first step: what selects the rows added to
 * each table later (SQLite: after its last rowid) and, on SQLite, the schema version.
 */
export class RunBasis {
  /** The tables whose proof this run used (a result carried over, rows told apart as appended): the commit confirms them again. */
  readonly reliedOn = new Set<string>();

  private constructor(
    private readonly plan: { steps: readonly { index: number; name: string; spec: StepSpec }[] },
    private readonly typeOf: (step: StepSpec) => StepDefinition,
    private readonly carry: CarryOverBasis,
    /** What selects the rows added to each table since before the steps (SQLite: after `lastRowid`; a server: engine/db/dialect.ts). */
    private readonly addedAfter: ReadonlyMap<string, { where: string; lastRowid?: number }>,
    private readonly schemaBefore: number | undefined,
  ) {}

  /**
   * The basis of a run, read before its first step: what selects the rows added later to each of
   * `tables` (on a server, those proven untouched) and the schema version (on SQLite).
   */
  static before(
    db: SqlDatabase,
    plan: { steps: readonly { index: number; name: string; spec: StepSpec }[] },
    typeOf: (step: StepSpec) => StepDefinition,
    carry: CarryOverBasis,
    tables: readonly string[],
  ): RunBasis {
    const last = new Map<string, { where: string; lastRowid?: number }>();
    let schema: number | undefined;
    const untouched = carry.untouched;
    if (untouched !== "all") {
      if (!db.dialect) schema = schemaVersion(db);
      for (const table of tables) {
        // why: on a server, a failed query would abort the run's transaction; only a table proven untouched is asked.
        if (db.dialect) {
          if (untouched.has(table)) last.set(table, { where: db.dialect.rowsAddedLater(db, table) });
          continue;
        }
        try {
          const lastRowid = Number(db.all(`SELECT coalesce(max(rowid), 0) AS last FROM ${quoteIdent(table)}`)[0]?.["last"] ?? 0);
          last.set(table, { where: `rowid > ${lastRowid}`, lastRowid });
        } catch {
          // why: a table without a rowid has no appended rows to tell apart.
        }
      }
    }
    return new RunBasis(plan, typeOf, carry, last, schema);
  }

  /** The proof as a step at `index` sees it: the tables before it, the steps after it. */
  at(index: number): CommittedTables {
    return {
      previousRunId: this.carry.previousRunId,
      unproven: () => this.unproven(),
      changed: (tables) => this.changed(tables, index),
      appended: (db, table) => this.appended(db, table, index),
      writtenAfter: (tables) => this.writtenAfter(tables, index),
    };
  }

  /**
   * For the foreign key verification before the commit (engine/db/constraints.ts), once every step
   * has run: the last rowid `table` had before the steps, when it is exactly as the runner's last
   * commit left it (that commit's verification passed) but for rows this run's steps appended after
   * it; undefined when that is not proven, or when the schema changed during the steps.
   */
  appendedSince(db: SqlDatabase, table: string): number | undefined {
    if (systemTableNames.has(table) || this.schemaBefore === undefined || schemaVersion(db) !== this.schemaBefore) return undefined;
    const appended = this.appended(db, table, this.plan.steps.length);
    return "where" in appended ? this.addedAfter.get(table)?.lastRowid : undefined;
  }

  /**
   * For the foreign key verification before the commit: whether none of `tables` can have been written from step `next`
   * on: none is the engine's own (the runner writes those outside the steps), no step from `next` on declares writing
   * one (whether or not it did), and no step of the plan runs a script (it may write any table).
   */
  unwrittenFrom(tables: Iterable<string>, next: number): boolean {
    const list = [...tables];
    if (list.some((table) => systemTableNames.has(table))) return false;
    if (this.plan.steps.some((step) => this.typeOf(step.spec).writesUndeclared?.(step.spec))) return false;
    return this.writtenAfter(list, next - 1) === undefined;
  }

  /** Why no table can be proven as the last commit left it, whatever the table; undefined when the proof can start. */
  private unproven(): string | undefined {
    const carry = this.carry;
    if (carry.previousRunId === undefined) return "no earlier run";
    if (carry.untouched === "all") return "the database is new";
    if (!carry.sameConfig) return `the configuration changed since run ${carry.previousRunId}`;
    const script = this.plan.steps.find((step) => this.typeOf(step.spec).writesUndeclared?.(step.spec));
    if (script) return `step ${script.name} runs a script, which may write any table`;
    return undefined;
  }

  /** Why one of `tables` may not be as the last commit left it before step `next`; undefined when each is exactly that. */
  private changed(tables: Iterable<string>, next: number): string | undefined {
    const why = this.unproven();
    if (why !== undefined) return why;
    const untouched = this.carry.untouched as ReadonlySet<string>;
    const list = [...tables];
    for (const table of list) {
      if (systemTableNames.has(table)) return `it reads the engine's table ${table}`;
      if (!untouched.has(table))
        return (
          this.carry.untouchedWhy?.(table) ??
          `no commit mark vouches for ${table} (another program wrote the file since run ${this.carry.previousRunId}, it is in WAL mode, or the mark is missing)`
        );
      const writer = this.writersBefore(table, next)[0];
      if (writer) return `step ${writer.name} wrote ${table} in this run`;
    }
    for (const table of list) this.reliedOn.add(table);
    return undefined;
  }

  /**
   * The rows this run's steps before `next` appended to `table` (those `where` selects: on SQLite,
   * after its last rowid before the steps), when the old rows are provably as the last commit left them: the mark vouches for
   * the table, no step updated or deleted rows of it, and the rows after that rowid are exactly as
   * many as its steps inserted. Otherwise why not.
   */
  private appended(db: SqlDatabase, table: string, next: number): { where: string; rows: number } | { reason: string } {
    const why = this.unproven();
    if (why !== undefined) return { reason: why };
    if (!(this.carry.untouched as ReadonlySet<string>).has(table))
      return {
        reason:
          this.carry.untouchedWhy?.(table) ??
          `no commit mark vouches for ${table} (another program wrote the file since run ${this.carry.previousRunId}, or the mark is missing)`,
      };
    const where = this.addedAfter.get(table)?.where;
    if (where === undefined) return { reason: `${table} has no rowid` };
    let inserted = 0;
    for (const step of this.writersBefore(table, next)) {
      const counts = this.carry.steps[step.index]?.counts ?? {};
      if (counts.inserted === undefined || (counts.updated ?? 0) > 0 || (counts.deleted ?? 0) > 0)
        return { reason: `step ${step.name} changed rows of ${table} (not only inserted)` };
      inserted += counts.inserted;
    }
    const rows = Number(db.all(`SELECT count(*) AS n FROM ${quoteIdent(table)} WHERE ${where}`)[0]?.["n"]);
    if (rows !== inserted)
      return { reason: `${table} holds ${rows} row(s) after its last row before the steps, its steps inserted ${inserted}` };
    this.reliedOn.add(table);
    return { where, rows };
  }

  /** The first step after `index` that writes one of `tables`, by name; undefined when none does. */
  private writtenAfter(tables: Iterable<string>, index: number): string | undefined {
    const wanted = new Set(tables);
    const later = this.plan.steps.find(
      (step) =>
        step.index > index &&
        this.typeOf(step.spec)
          .writes(step.spec)
          .some((t) => wanted.has(t)),
    );
    return later?.name;
  }

  /** The steps before `next` that wrote `table` in this run (not unchanged, skipped or left out). */
  private writersBefore(table: string, next: number) {
    return this.plan.steps.filter((step) => {
      if (step.index >= next) return false;
      const status = this.carry.steps[step.index]?.status;
      if (status === "unchanged" || status === "skipped" || status === "not_executed") return false;
      return this.typeOf(step.spec).writes(step.spec).includes(table);
    });
  }
}

/** SQLite's schema version: it changes with every change to the schema, in this transaction too. */
function schemaVersion(db: SqlDatabase): number {
  return Number(db.all("PRAGMA schema_version")[0]?.["schema_version"]);
}
