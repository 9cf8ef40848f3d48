import { stepType } from "../../steps/index.js";
import { compileOnServer } from "../compile-on-server.js";
import { engineNamed } from "../db/engines/index.js";
import { ConfigError } from "../errors.js";
import type { Command } from "../main.js";

/** `validate`: the pipeline loaded, validated and planned (the table does that before `run`); on a server, every query compiled by its own planner; says so, or --json. */
export const validateCommand: Command = {
  pipeline: true,
  async run({ args, io, json, c }, { config, pipeline, plan, database, engine }) {
    if ((await engineNamed(engine)).dialect) {
      // why: a server's SQL differs from SQLite's; its own planner says whether each query compiles there.
      const refused = await compileOnServer(pipeline, config.baseDir, database, engine, args.lockTimeoutMs, stepType);
      if (refused.length > 0) throw new ConfigError(refused);
    }
    if (json) io.stdout.write(JSON.stringify({ ok: true, command: "validate", config: config.file, steps: plan.steps.length }) + "\n");
    else io.stdout.write(c.green(`${config.file} is valid: ${plan.steps.length} steps, ${Object.keys(pipeline.tables).length} tables\n`));
    return 0;
  },
};
