import { fileURLToPath } from "node:url";

/**
 * A file of the runner's own directory (package.json, pipeline.schema.json). This module sits in engine/ under the test
 * runner and in dist/engine/ once built, whether compiled (dist/engine/runner-file.js) or bundled into a chunk beside
 * dist/engine/cli.js; bin/build.js keeps every chunk in that directory.
 */
export function runnerFile(name: string): string {
  return fileURLToPath(new URL((import.meta.url.endsWith(".ts") ? "../" : "../../") + name, import.meta.url));
}
