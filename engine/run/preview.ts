import { CheckRun, type PlannedCheck } from "../checks.js";
import type { StepSpec } from "../config/schema.js";
import type { EngineName } from "../db/engines/index.js";
import { ensureSchema, type SchemaChanges } from "../db/schema.js";
import { preview } from "../db/session.js";
import type { Plan } from "../plan.js";
import type { StepDefinition } from "../step.js";

/** The tables a run would create, the columns it would add and the checks it will make, through the same session path rolled back; never writes. */
export async function previewPlan(
  plan: Plan,
  engine: EngineName,
  lockTimeoutMs: number,
  typeOf: (step: StepSpec) => StepDefinition,
): Promise<SchemaChanges & { checks: PlannedCheck[] }> {
  return preview(plan.database, engine, lockTimeoutMs, (db) => {
    const changes = ensureSchema(db, plan.pipeline.tables, plan.database);
    return { ...changes, checks: new CheckRun(plan, typeOf, () => new Date()).planned(db) };
  });
}
