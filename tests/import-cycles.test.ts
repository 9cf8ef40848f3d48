import { readdirSync, readFileSync, existsSync } from "node:fs";
import path from "node:path";
import { describe, expect, test } from "vitest";
import { root } from "./helpers/workspace.js";

// Modules that import each other (not only their types) see each other half-initialised: an engine
// read from the registry before its module ran is `undefined` under vitest, or throws in Node,
// depending on which module a program imports first. The runner's modules form no such loop.

/** The relative modules `file` imports for their values (`import type` erased), as source paths. */
function valueImports(file: string): string[] {
  const text = readFileSync(file, "utf8");
  const found: string[] = [];
  for (const match of text.matchAll(/^(?:import|export)\s+(?!type\b)[^;]*?from\s+"(\.[^"]+)"/gms)) {
    const target = path.resolve(path.dirname(file), match[1]!.replace(/\.js$/, ".ts"));
    if (existsSync(target)) found.push(target);
  }
  return found;
}

function sources(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: "utf8" })
    .filter((name) => name.endsWith(".ts"))
    .map((name) => path.join(dir, name));
}

/** The first import loop found among `files`, as a list of paths relative to the repository, or undefined. */
function firstLoop(files: readonly string[]): string[] | undefined {
  const graph = new Map(files.map((file) => [file, valueImports(file)]));
  const state = new Map<string, "open" | "done">();
  const trail: string[] = [];
  const visit = (file: string): string[] | undefined => {
    if (state.get(file) === "done") return undefined;
    if (state.get(file) === "open") return [...trail.slice(trail.indexOf(file)), file];
    state.set(file, "open");
    trail.push(file);
    for (const next of graph.get(file) ?? []) {
      const loop = visit(next);
      if (loop) return loop;
    }
    trail.pop();
    state.set(file, "done");
    return undefined;
  };
  for (const file of files) {
    const loop = visit(file);
    if (loop) return loop.map((f) => path.relative(root, f));
  }
  return undefined;
}

describe("the runner's modules", () => {
  test("import one another without a loop (engine/ and steps/)", () => {
    const files = [...sources(path.join(root, "engine")), ...sources(path.join(root, "steps"))];
    expect(files.length).toBeGreaterThan(50);
    expect(firstLoop(files)).toBeUndefined();
  });
});
