import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { declaredChecks } from "./checks.js";
import type { StepSpec } from "./config/schema.js";
import type { Plan } from "./plan.js";
import type { StepDefinition } from "./step.js";

/**
 * A hash of everything that decides what derived steps compute and what the checks judge: the
 * configuration, every file a derived step reads (its `inputs`) and the SQL files of `check: sql`.
 */
export function configFingerprint(plan: Plan, typeOf: (step: StepSpec) => StepDefinition): string {
  const hash = createHash("sha256").update(JSON.stringify(plan.pipeline));
  const files = plan.pipeline.steps.flatMap((step) => (typeOf(step).derived ? (typeOf(step).inputs?.(step) ?? []) : []));
  for (const { spec } of declaredChecks(plan.pipeline))
    if (spec.check === "sql" && spec.file !== undefined) files.push({ file: spec.file, what: "check" });
  for (const { file } of files) hash.update(`\0${file}\0`).update(readFileSync(path.resolve(plan.config.baseDir, file)));
  return hash.digest("hex");
}
