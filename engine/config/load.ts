import { constants, readFileSync } from "node:fs";
import { open } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { Document, Node, Pair, YAMLMap } from "yaml";
import { ConfigError, PipelineError, type Diagnostic, type SourcePlace } from "../errors.js";
import { fileKind } from "../paths.js";
import { interpolate } from "./interpolate.js";
import { parseCache, type ParseCache } from "./parse-cache.js";

type Yaml = typeof import("yaml");
const require = createRequire(import.meta.url);
let loadedYaml: Yaml | undefined;

/**
 * The yaml package, loaded when first needed.
 * why: its 72 modules take ~50 ms to load; a run whose file's parse is kept (./parse-cache.ts) needs it only to
 * name a place in the file. Its `node` entry is CommonJS, so it loads synchronously, as `locate` must.
 */
function yaml(): Yaml {
  return (loadedYaml ??= require("yaml") as Yaml);
}

/**
 * The kept parses of pipeline files, named by what they depend on besides the text: the yaml package (its version), and this
 * module's code (the file it is in: once built, the bundle's chunk that holds it, so any change there also renews the parses).
 */
export function configParseCache(): ParseCache | undefined {
  return parseCache(parserIdentity());
}

function parserIdentity(): string {
  // why: read as text, not required, so that a run whose parse is kept loads nothing of yaml.
  return `${readFileSync(require.resolve("yaml/package.json"), "utf8")}\0${readFileSync(fileURLToPath(import.meta.url), "utf8")}`;
}

/** A parsed pipeline file: its plain value, and a way back from any path in it to line:col. */
export interface LoadedConfig {
  file: string;
  /** The directory relative paths in the file resolve against. */
  baseDir: string;
  text: string;
  value: unknown;
  /** The place of the value at `path` (or of its key when `key` is given), falling back to the nearest parent. */
  locate(path: readonly (string | number)[], key?: string): SourcePlace;
}

/** The largest pipeline file read: a real one is a few KB (the client's, 8 KB), and parsing holds about 45 times its size in memory, its errors as much again. */
const maxConfigBytes = 2 ** 20;

/** Reads a pipeline file from disk; see {@link parseConfig}. */
export async function loadConfigFile(file: string, env: Readonly<Record<string, string | undefined>>, cwd: string): Promise<LoadedConfig> {
  let text: string;
  try {
    // why: opened without blocking and checked before reading: a FIFO or a device would hang or never end.
    const handle = await open(path.resolve(cwd, file), constants.O_RDONLY | constants.O_NONBLOCK);
    try {
      const info = await handle.stat();
      if (!info.isFile()) throw new Error(`it is ${fileKind(info)}, not a regular file`);
      if (info.size > maxConfigBytes)
        throw new Error(`it is ${Math.ceil(info.size / 2 ** 20)} MiB; a pipeline file is at most ${maxConfigBytes / 2 ** 20} MiB`);
      text = await handle.readFile("utf8");
    } finally {
      await handle.close();
    }
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code === "ENOENT" ? "no such file" : (error as Error).message;
    throw new PipelineError("E_USAGE", `cannot read the configuration ${file}: ${reason}`, { exitCode: 2 });
  }
  const resolved = path.resolve(cwd, file);
  const shown = path.relative(cwd, resolved) || file;
  const cache = configParseCache();
  const kept = await cache?.read(text);
  const fromKept = kept === undefined ? undefined : substituted(kept, text, resolved, env, shown);
  if (fromKept) return fromKept;
  let tree: unknown;
  const loaded = parseConfig(text, resolved, env, shown, (parsed) => (tree = parsed));
  if (tree !== undefined) await cache?.write(text, tree);
  return loaded;
}

/**
 * The config from a kept parse: `${VAR}` substituted in every string value, as {@link parseConfig} does on the
 * file's scalars; undefined when a substitution fails (the full parse then says where). A place in the file is
 * found by parsing it when one is first asked for (a diagnostic).
 */
function substituted(
  tree: unknown,
  text: string,
  file: string,
  env: Readonly<Record<string, string | undefined>>,
  shown: string,
): LoadedConfig | undefined {
  let complete = true;
  const value = withoutPrototypes(tree, (scalar) => {
    const { value, missing, malformed } = interpolate(scalar, env);
    if (missing.length > 0 || malformed) complete = false;
    return value;
  });
  if (!complete) return undefined;
  let parsed: LoadedConfig | undefined;
  return {
    file: shown,
    baseDir: path.dirname(file),
    text,
    value,
    locate: (p, key) => (parsed ??= parseConfig(text, file, env, shown)).locate(p, key),
  };
}

/**
 * Parses YAML keeping node positions, and substitutes `${VAR}` in every scalar value
 * (keys are left alone). Problems are thrown together as one {@link ConfigError}.
 * `keep` is given the parse before substitution when it can be kept (./parse-cache.ts): no problem, only scalar keys.
 */
export function parseConfig(
  text: string,
  file: string,
  env: Readonly<Record<string, string | undefined>>,
  shown: string = path.basename(file),
  keep?: (tree: unknown) => void,
): LoadedConfig {
  const { LineCounter, parseDocument, visit } = yaml();
  const lineCounter = new LineCounter();
  // why: yaml's own unique-key check compares each key with every earlier one (quadratic: 40k keys took seconds); duplicateKeys does it with a Set.
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: false });
  const at = (offset: number): SourcePlace => {
    const { line, col } = lineCounter.linePos(offset);
    return { file: shown, line, col };
  };
  const diagnostics: Diagnostic[] = doc.errors.map((e) => ({ code: "E_YAML", message: e.message.split("\n")[0]!, place: at(e.pos[0]) }));
  if (diagnostics.length === 0)
    diagnostics.push(
      ...duplicateKeys(doc).map((offset) => ({ code: "E_YAML" as const, message: "Map keys must be unique", place: at(offset) })),
    );
  if (diagnostics.length > 0) throw new ConfigError(diagnostics);
  if (keep && onlyScalarKeys(doc)) {
    try {
      keep(withoutPrototypes(doc.toJS()));
    } catch {
      // why: too many aliases; the same toJS below says so.
    }
  }

  visit(doc, {
    Scalar(key, node) {
      if (key === "key" || typeof node.value !== "string") return;
      const { value, missing, malformed } = interpolate(node.value, env);
      const [start, end] = [node.range?.[0] ?? 0, node.range?.[1] ?? 0];
      // why: the n-th "${" of the value is the n-th of its source text, whatever quotes or escapes surround it.
      const referenceAt = (n: number) => {
        let offset = -1;
        for (let k = 0; k <= n; k++) offset = text.indexOf("${", offset + 1);
        return offset >= start && offset < end ? offset : start;
      };
      const occurrence = (index: number) => (node.value as string).slice(0, index).split("${").length - 1;
      for (const name of missing) {
        diagnostics.push({
          code: "E_ENV",
          message: `environment variable ${name} is not set and has no default (write \${${name}:-default} to give one)`,
          place: at(referenceAt(occurrence((node.value as string).indexOf(`\${${name}`)))),
        });
      }
      for (const problem of malformed ?? [])
        diagnostics.push({ code: "E_ENV", message: problem.message, place: at(referenceAt(occurrence(problem.index))) });
      node.value = value;
    },
  });
  if (diagnostics.length > 0) throw new ConfigError(diagnostics);

  let value: unknown;
  try {
    value = withoutPrototypes(doc.toJS());
  } catch (error) {
    // why: yaml refuses to expand more than 100 aliases (a "billion laughs" defence) with a bare ReferenceError.
    if (!(error instanceof ReferenceError)) throw error;
    const alias = firstAliasOffset(doc);
    throw new ConfigError([
      {
        code: "E_YAML",
        message: `too many aliases (*name) to expand: ${error.message.split("\n")[0]}; write the values out, or use fewer aliases`,
        place: at(alias),
      },
    ]);
  }

  const index = pairIndex();
  return {
    file: shown,
    baseDir: path.dirname(path.resolve(file)),
    text,
    value,
    locate: (p, key) => at(findOffset(doc, p, key, index)),
  };
}

/**
 * The same value with every mapping as an object without prototype, so that a name such as
 * `constructor`, `toString` or `__proto__` is only ever an own key: `tables[name]` and
 * `name in columns` never find Object.prototype's members; each string value (not key) passes through `substitute`.
 */
function withoutPrototypes(value: unknown, substitute: (text: string) => string = (text) => text): unknown {
  if (typeof value === "string") return substitute(value);
  if (Array.isArray(value)) return value.map((item) => withoutPrototypes(item, substitute));
  if (typeof value !== "object" || value === null) return value;
  const copy = Object.create(null) as Record<string, unknown>;
  for (const [key, item] of Object.entries(value)) copy[key] = withoutPrototypes(item, substitute);
  return copy;
}

/**
 * Whether every mapping key is a scalar. why: a key that is a list or a mapping becomes a string after `${VAR}`
 * substitution inside it; a kept parse, whose keys are never substituted, could not give the same key.
 */
function onlyScalarKeys(doc: Document): boolean {
  const { isScalar, visit } = yaml();
  let only = true;
  visit(doc, {
    Pair(_key, pair) {
      if (isScalar(pair.key)) return undefined;
      only = false;
      return visit.BREAK;
    },
  });
  return only;
}

function firstAliasOffset(doc: Document): number {
  const { visit } = yaml();
  let offset = 0;
  visit(doc, {
    Alias(_key, node) {
      offset = node.range?.[0] ?? 0;
      return visit.BREAK;
    },
  });
  return offset;
}

/** The offsets of keys that repeat an earlier key of the same mapping. */
function duplicateKeys(doc: Document): number[] {
  const { isScalar, visit } = yaml();
  const offsets: number[] = [];
  visit(doc, {
    Map(_key, map) {
      const seen = new Set<unknown>();
      for (const pair of map.items) {
        if (!isScalar(pair.key)) continue;
        // why: as yaml compares them: 1 and "1" are different keys.
        const key = pair.key.value;
        if (seen.has(key)) offsets.push(pair.key.range?.[0] ?? 0);
        seen.add(key);
      }
    },
  });
  return offsets;
}

function findOffset(doc: Document, p: readonly (string | number)[], key: string | undefined, index: PairIndex): number {
  const { isMap, isSeq } = yaml();
  let node: unknown = doc.contents;
  let offset = (node as Node | null)?.range?.[0] ?? 0;
  for (const segment of p) {
    const child = isMap(node) ? index(node).get(String(segment))?.value : isSeq(node) ? node.items[Number(segment)] : undefined;
    if (!child) return offset;
    node = child;
    offset = (child as Node).range?.[0] ?? offset;
  }
  if (key !== undefined && isMap(node)) return (index(node).get(key)?.key as Node | undefined)?.range?.[0] ?? offset;
  return offset;
}

type PairIndex = (map: YAMLMap) => Map<string, Pair<unknown, unknown>>;

/** Finds a mapping's pair by key in constant time: each mapping is indexed once, the first time it is searched. */
function pairIndex(): PairIndex {
  const { isScalar } = yaml();
  const indexes = new WeakMap<YAMLMap, Map<string, Pair<unknown, unknown>>>();
  return (map) => {
    let index = indexes.get(map);
    if (!index) {
      index = new Map();
      for (const item of map.items as Pair<unknown, unknown>[]) {
        const key = isScalar(item.key) ? String(item.key.value) : undefined;
        if (key !== undefined && !index.has(key)) index.set(key, item);
      }
      indexes.set(map, index);
    }
    return index;
  };
}
