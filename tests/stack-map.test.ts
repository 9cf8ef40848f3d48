import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { buildSync } from "esbuild";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { describeError } from "../engine/errors.js";
import { mapStack } from "../engine/stack-map.js";

// An internal error (a bug) is printed, journaled and stored with its stack. The command is bundled
// (dist/engine/cli.js and chunk-XXXX.js beside it), so its frames would name chunks; they name the
// TypeScript sources instead, read from the source maps the build writes beside each file.

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), "stack-map-"));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** Bundles `files` (name -> TypeScript) from entry.ts into out/bundle.js with a linked source map, and runs it; returns its stderr. */
function crash(files: Record<string, string>): string {
  for (const [name, text] of Object.entries(files)) writeFileSync(path.join(dir, name), text);
  buildSync({
    entryPoints: [path.join(dir, "entry.ts")],
    outfile: path.join(dir, "out", "bundle.js"),
    bundle: true,
    format: "esm",
    platform: "node",
    sourcemap: "linked",
    logLevel: "silent",
  });
  return spawnSync(process.execPath, [path.join(dir, "out", "bundle.js")], { encoding: "utf8" }).stderr;
}

const files = {
  "entry.ts": 'import { total } from "./sums.js";\n\nconsole.log(total([1, 2, 3]));\n',
  "sums.ts": [
    "// padding, so that the bundle's lines are not the source's",
    "export function total(values: number[]): number {",
    "  let sum = 0;",
    "  for (const value of values) sum += value;",
    '  if (sum > 5) throw new TypeError("a bug");',
    "  return sum;",
    "}",
    "",
  ].join("\n"),
};

describe("an internal error's stack names the sources, not the bundle", () => {
  test("each frame of a bundled file with a source map gives the .ts file, line and column", () => {
    const printed = crash(files);
    const stack = printed.slice(printed.indexOf("TypeError"));
    expect(stack).toMatch(/bundle\.js:\d+:\d+/);
    const mapped = mapStack(stack);
    expect(mapped).toContain(`${path.join(dir, "sums.ts")}:5:22`);
    expect(mapped).toContain(`${path.join(dir, "entry.ts")}:3:13`);
    expect(mapped).not.toMatch(/bundle\.js:\d+:\d+/);
    // Node's own frames, which have no map, stay as they were.
    expect(mapped.split("\n").filter((line) => line.includes("node:"))).toEqual(stack.split("\n").filter((line) => line.includes("node:")));
  });

  test("frames given as file: URLs are mapped too, and describeError maps an internal error's stack", () => {
    const stack = crash(files);
    const bundle = path.join(dir, "out", "bundle.js");
    const asUrl = stack.replaceAll(bundle, pathToFileURL(bundle).href);
    expect(asUrl).toContain("file://");
    expect(mapStack(asUrl)).toContain(`${path.join(dir, "sums.ts")}:5:22`);

    const error = new TypeError("a bug");
    error.stack = asUrl.slice(asUrl.indexOf("TypeError"));
    const described = describeError(error);
    expect(described.code).toBe("E_INTERNAL");
    expect(described.message).toContain(`${path.join(dir, "sums.ts")}:5:22`);
  });

  test("a frame with no map beside its file, or a map that cannot be read, is left as it is", () => {
    const stack = crash(files);
    writeFileSync(path.join(dir, "out", "bundle.js.map"), "{ not json");
    expect(mapStack(stack)).toBe(stack);
    rmSync(path.join(dir, "out", "bundle.js.map"));
    expect(mapStack(stack)).toBe(stack);
  });

  test("the built command has a map beside each of its files, leading back to engine/ and steps/", () => {
    const built = path.resolve("dist/engine");
    const outputs = readdirSync(built).filter((name) => /^(cli|pg-worker|chunk-.*)\.js$/.test(name));
    expect(outputs.length).toBeGreaterThan(5);
    const sources = new Set<string>();
    for (const name of outputs) {
      const map = JSON.parse(readFileSync(path.join(built, `${name}.map`), "utf8")) as { sources: string[] };
      for (const source of map.sources) sources.add(path.relative(process.cwd(), path.resolve(built, source)));
    }
    expect([...sources].filter((source) => source.startsWith("engine/") && source.endsWith(".ts")).length).toBeGreaterThan(30);
    expect(sources).toContain("steps/load.ts");
  });
});
