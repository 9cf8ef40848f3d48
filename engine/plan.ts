import type { LoadedConfig } from "./config/load.js";
import type { Pipeline, StepSpec } from "./config/schema.js";
import type { PlanDetail, StepDefinition } from "./step.js";

/** One step as the plan shows it and the run executes it. */
export interface PlannedStep {
  index: number;
  name: string;
  type: StepSpec["type"];
  spec: StepSpec;
  /** The line that is both the plan line and the run's log line. */
  description: string;
  details: PlanDetail[];
  writes: string[];
}

/** A validated pipeline turned into the ordered steps a run executes. */
export interface Plan {
  pipeline: Pipeline;
  config: LoadedConfig;
  database: string;
  steps: PlannedStep[];
}

/** Orders the pipeline's steps and lets each describe itself once. */
export function planPipeline(pipeline: Pipeline, config: LoadedConfig, database: string, typeOf: (step: StepSpec) => StepDefinition): Plan {
  const steps = pipeline.steps.map((spec, index) => {
    const definition = typeOf(spec);
    return {
      index,
      name: spec.name,
      type: spec.type,
      spec,
      description: definition.describe(spec, pipeline),
      details: definition.details(spec, pipeline),
      writes: definition.writes(spec),
    };
  });
  return { pipeline, config, database, steps };
}
