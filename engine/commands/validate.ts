import type { Command } from "../main.js";

/** `validate`: the pipeline loaded, validated and planned (the table does that before `run`); says so, or --json. */
export const validateCommand: Command = {
  pipeline: true,
  async run({ io, json, c }, { config, pipeline, plan }) {
    if (json) io.stdout.write(JSON.stringify({ ok: true, command: "validate", config: config.file, steps: plan.steps.length }) + "\n");
    else io.stdout.write(c.green(`${config.file} is valid: ${plan.steps.length} steps, ${Object.keys(pipeline.tables).length} tables\n`));
    return 0;
  },
};
