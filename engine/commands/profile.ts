import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { stepType } from "../../steps/index.js";
import { PipelineError } from "../errors.js";
import type { Command } from "../main.js";
import { profileSources } from "../profile.js";
import { renderProfile, replaceGenerated } from "../profile-report.js";

/** `profile`: reads every source like a run would and reports what it holds; `--update FILE` refreshes a generated section. */
export const profileCommand: Command = {
  pipeline: true,
  async run({ args, io, json, c }, { config, pipeline }) {
    const profiles = await profileSources(pipeline, config.baseDir, stepType);
    if (json) io.stdout.write(JSON.stringify({ ok: profiles.every((p) => !p.error), sources: profiles }, null, 2) + "\n");
    else if (args.update) await updateGenerated(path.resolve(io.cwd, args.update), "profile", renderProfile(profiles, "markdown", c));
    else io.stdout.write(renderProfile(profiles, args.markdown ? "markdown" : "text", c));
    return profiles.every((p) => !p.error) ? 0 : 1;
  },
};

async function updateGenerated(file: string, name: string, body: string): Promise<void> {
  let document: string;
  try {
    document = await readFile(file, "utf8");
  } catch (error) {
    throw new PipelineError("E_USAGE", `cannot read ${file}: ${(error as Error).message}`, { exitCode: 2 });
  }
  try {
    await writeFile(file, replaceGenerated(document, name, body));
  } catch (error) {
    throw new PipelineError("E_USAGE", `${file}: ${(error as Error).message}`, { exitCode: 2 });
  }
}
