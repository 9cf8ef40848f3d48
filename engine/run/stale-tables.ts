import type { StepSpec } from "../config/schema.js";
import { steadyInputs } from "../checks.js";
import type { SqlDatabase } from "../db/database.js";
import { readSqlText } from "../sql-source.js";
import type { StepDefinition } from "../step.js";

/**
 * Which derived steps a run whose sources did not change must run again when some tables are not
 * proven as the last commit left them (another program wrote them): a step reading or writing such
 * a table, or one a step run again wrote, and a step whose reads cannot be told (a script, a query
 * calling a function that may read any table, a view that is not plain). Every other derived step
 * keeps the last commit's tables, as when every table is proven: its inputs are as they were.
 */
export class StaleTables {
  private readonly written = new Set<string>();
  /** The script that ran again, after which no table is known as the last commit left it. */
  private script: string | undefined;

  constructor(
    /** The tables proven as the last commit left them (engine/db/engines/engine.ts, UntouchedTables). */
    private readonly untouched: ReadonlySet<string>,
    private readonly baseDir: string,
  ) {}

  /** Why the derived step `spec` must run again; undefined when every table it reads and writes is as the last commit left it. */
  why(db: SqlDatabase, spec: StepSpec, definition: StepDefinition): string | undefined {
    if (this.script !== undefined) return `step ${this.script} ran again, and may have written any table`;
    if (definition.writesUndeclared?.(spec)) return "it runs a script, which may read any table";
    const stale = (table: string) => this.written.has(table) || !this.untouched.has(table);
    const writes = definition.writes(spec).find(stale);
    if (writes !== undefined) return `it writes ${writes}`;
    const queries = definition.queries?.(spec);
    if (!queries) return "which tables it reads is not known";
    for (const query of queries) {
      // why: only a query whose result depends on the tables its plan shows alone (no function that may read others) says all it reads.
      const inputs = steadyInputs(db, readSqlText(query, this.baseDir));
      if ("reason" in inputs) return `which tables it reads is not known (${query.label}: ${inputs.reason})`;
      const reads = [...inputs.tables].find(stale);
      if (reads !== undefined) return `it reads ${reads}`;
    }
    return undefined;
  }

  /** Records that the derived step `spec` ran again: the tables it wrote are no longer as the last commit left them. */
  ran(name: string, spec: StepSpec, definition: StepDefinition): void {
    if (definition.writesUndeclared?.(spec)) this.script = name;
    for (const table of definition.writes(spec)) this.written.add(table);
  }
}
