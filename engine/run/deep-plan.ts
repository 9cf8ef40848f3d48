import type { StepSpec } from "../config/schema.js";
import { quoteIdent, type SqlDatabase } from "../db/database.js";
import type { Plan } from "../plan.js";
import type { StepDefinition } from "../step.js";
import type { RunReport } from "./report.js";

/**
 * What a deep plan (`plan --deep`) adds to a run: which tables it would change, judged before its
 * transaction is rolled back, while their rows can still be compared.
 */
export class DeepPlan {
  private copies: Map<string, string> | undefined;

  constructor(
    private readonly plan: Plan,
    private readonly typeOf: (step: StepSpec) => StepDefinition,
  ) {}

  /**
   * Takes a temporary copy of each table a derived step writes, before the steps, so that a table
   * a step empties and fills again with the same rows reads as unchanged. Rolled back with the
   * run's transaction; never in the database file.
   */
  copyDerivedTables(db: SqlDatabase): void {
    const copies = new Map<string, string>();
    for (const step of this.plan.steps) {
      const definition = this.typeOf(step.spec);
      if (!definition.derived) continue;
      for (const table of definition.writes(step.spec)) {
        if (copies.has(table)) continue;
        const copy = `deep_plan_before_${copies.size}`;
        db.exec(`CREATE TEMP TABLE ${quoteIdent(copy)} AS SELECT * FROM main.${quoteIdent(table)}`);
        copies.set(table, copy);
      }
    }
    this.copies = copies;
  }

  /**
   * Puts on the report the tables the run's steps would change, in step order: a table copied
   * before the steps when its rows differ from the copy; another when its step inserted, updated or
   * deleted rows, or counts none (a script). Called before the transaction is rolled back.
   */
  judge(report: RunReport, db: SqlDatabase | undefined): void {
    const steps = report.steps;
    const tables = new Set<string>();
    for (const result of steps) {
      if (result.status !== "success") continue;
      const { inserted = 0, updated = 0, deleted = 0 } = result.counts;
      const counted = ["inserted", "updated", "deleted"].some((name) => name in result.counts);
      const spec = this.plan.steps[result.index]!.spec;
      for (const table of this.typeOf(spec).writes(spec)) {
        const copy = this.copies?.get(table);
        const changed = copy !== undefined && db !== undefined ? rowsDiffer(db, table, copy) : inserted + updated + deleted > 0 || !counted;
        if (changed) tables.add(table);
      }
    }
    report.changedTables = [...tables];
  }
}

/** Whether a table's rows differ from its copy (as sets of rows); when they cannot be compared, they differ. */
function rowsDiffer(db: SqlDatabase, table: string, copy: string): boolean {
  const [t, c] = [`main.${quoteIdent(table)}`, `temp.${quoteIdent(copy)}`];
  try {
    const oneOf = (a: string, b: string) => db.all(`SELECT 1 FROM (SELECT * FROM ${a} EXCEPT SELECT * FROM ${b}) LIMIT 1`).length > 0;
    return oneOf(t, c) || oneOf(c, t);
  } catch {
    return true;
  }
}
