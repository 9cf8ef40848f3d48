import type { StepSpec } from "../engine/config/schema.js";
import type { StepDefinition } from "../engine/step.js";
import { loadStep } from "./load.js";
import { reportStep } from "./report.js";
import { sqlStep } from "./sql.js";

/** Every step type, by its `type:` in pipeline.yaml. */
export const stepTypes: { [T in StepSpec["type"]]: StepDefinition<Extract<StepSpec, { type: T }>> } = {
  load: loadStep,
  sql: sqlStep,
  report: reportStep,
};

/** The definition of a step's type. */
export function stepType(step: StepSpec): StepDefinition {
  return stepTypes[step.type] as StepDefinition;
}
