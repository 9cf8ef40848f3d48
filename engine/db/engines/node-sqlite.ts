import { PipelineError } from "../../errors.js";

/** The `node:sqlite` module, loaded on first use, so that the CLI still starts (and says what it needs) on an older Node. */
export function nodeSqlite(): typeof import("node:sqlite") {
  const module = process.getBuiltinModule?.("node:sqlite") as typeof import("node:sqlite") | undefined;
  if (!module) {
    throw new PipelineError(
      "E_DB",
      `the database engines need node:sqlite, built into Node 24; this is Node ${process.versions.node}. Use Node 24.`,
    );
  }
  return module;
}
