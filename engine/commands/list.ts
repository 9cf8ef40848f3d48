import { stepType } from "../../steps/index.js";
import { stepLinks } from "../dependencies.js";
import type { Command } from "../main.js";
import { alignedTable } from "./table-text.js";

/** `list`: every step in run order, with its type, the tables it reads and the tables (or files) it writes. */
export const listCommand: Command = {
  pipeline: true,
  async run({ io, json, c }, { config, pipeline }) {
    const steps = await stepLinks(pipeline, config, stepType);
    if (json) {
      io.stdout.write(JSON.stringify({ ok: true, command: "list", config: config.file, steps }, null, 2) + "\n");
      return 0;
    }
    const rows = steps.map((step) => [
      String(step.index + 1),
      step.name,
      step.type,
      step.reads.join(", ") || "-",
      [...step.writes, ...step.files].join(", ") || "-",
    ]);
    io.stdout.write(alignedTable(["#", "step", "type", "reads", "writes"], rows, c));
    return 0;
  },
};
