import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

/** A frame's location: a .js file (a path or a file: URL), its line and column. */
const location = /((?:file:\/\/)?\/[^\s()]+?\.[cm]?js):(\d+):(\d+)/g;

/**
 * `stack` with each frame in a file that has a source map beside it (`<file>.map`: the runner's
 * bundled dist/engine/*.js, whose names say nothing, such as chunk-XXXX.js:412) given as the source it
 * was built from (.../engine/run.ts:120:7). Only an internal error's stack goes through it, so that a
 * bug report names the code whatever build ran; the runner's every other path never reads a map.
 * A frame without a map, or one the map does not cover, is left as it is; this never throws.
 */
export function mapStack(stack: string): string {
  try {
    const { SourceMap } = process.getBuiltinModule("node:module");
    const maps = new Map<string, InstanceType<typeof SourceMap> | undefined>();
    const mapOf = (file: string) => {
      if (!maps.has(file)) {
        let map: InstanceType<typeof SourceMap> | undefined;
        try {
          map = new SourceMap(JSON.parse(readFileSync(`${file}.map`, "utf8")));
        } catch {
          map = undefined;
        }
        maps.set(file, map);
      }
      return maps.get(file);
    };
    return stack.replace(location, (whole, where: string, line: string, column: string) => {
      const file = where.startsWith("file:") ? fileURLToPath(where) : where;
      const entry = mapOf(file)?.findEntry(Number(line) - 1, Number(column) - 1);
      if (!entry || !("originalSource" in entry) || !entry.originalSource) return whole;
      const source = entry.originalSource.startsWith("file:")
        ? fileURLToPath(entry.originalSource)
        : path.resolve(path.dirname(file), entry.originalSource);
      return `${source}:${entry.originalLine + 1}:${entry.originalColumn + 1}`;
    });
  } catch {
    return stack;
  }
}
