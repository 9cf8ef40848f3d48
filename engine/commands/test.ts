import { stepType } from "../../steps/index.js";
import type { Command } from "../main.js";
import { testStoredDatabase } from "../test-command.js";

/** `test`: every check and freshness limit against the stored database; loads nothing, never writes the file. */
export const testCommand: Command = {
  pipeline: true,
  async run({ args, io, json, c }, { database, engine, plan }) {
    const options = { json, stdout: io.stdout, colors: c, typeOf: stepType, now: io.now ?? (() => new Date()), engine };
    return testStoredDatabase(plan, database, { ...options, lockTimeoutMs: args.lockTimeoutMs });
  },
};
