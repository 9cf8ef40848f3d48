import { createHash } from "node:crypto";
import { chmodSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { serialize } from "node:v8";
import { afterEach, describe, expect, test } from "vitest";
import { configParseCache, loadConfigFile, parseConfig } from "../engine/config/load.js";
import { parseCache } from "../engine/config/parse-cache.js";
import { ConfigError } from "../engine/errors.js";

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function temporaryDir(): string {
  const dir = mkdtempSync(path.join(tmpdir(), "parse-cache-"));
  dirs.push(dir);
  return dir;
}

/** A pipeline file whose text no other test has (entries are named by the text). */
function pipelineFile(text: string): { file: string; dir: string; text: string } {
  const dir = temporaryDir();
  const unique = `# ${path.basename(dir)}\n${text}`;
  writeFileSync(path.join(dir, "pipeline.yaml"), unique);
  return { file: path.join(dir, "pipeline.yaml"), dir, text: unique };
}

const tricky = `version: 1
anchored: &a { url: "\${URL:-http://h/x}", n: 3 }
again: *a
numbers: [.inf, -.inf, .nan, -0, 0x1F, 1e3, 007, 12.50]
flags: [true, false, null, ~, "true"]
__proto__: { polluted: true }
constructor: plain
quoted: "a $$ b \${UNSET_X:-d} \${URL}"
block: |
  line \${URL}
`;

describe("the kept parse of a pipeline file", () => {
  test("gives the config the file parses to, with ${VAR} substituted from each run's environment", async () => {
    const { file, dir, text } = pipelineFile(tricky);
    const first = await loadConfigFile(file, { URL: "http://e" }, dir);
    expect(await configParseCache()!.read(text)).toBeDefined();
    const again = await loadConfigFile(file, { URL: "http://e" }, dir);
    expect(again.value).toEqual(first.value);
    const value = again.value as Record<string, unknown>;
    expect(Object.getPrototypeOf(value)).toBe(null);
    expect(Object.getPrototypeOf(value["anchored"])).toBe(null);
    expect(Object.hasOwn(value, "__proto__")).toBe(true);
    expect(Object.is((value["numbers"] as number[])[3], -0)).toBe(true);
    expect(value["numbers"]).toEqual([Infinity, -Infinity, NaN, -0, 31, 1000, 7, 12.5]);
    expect(value["again"]).toEqual({ url: "http://e", n: 3 });
    expect(value["quoted"]).toBe("a $ b d http://e");
    const elsewhere = await loadConfigFile(file, { URL: "http://other" }, dir);
    expect((elsewhere.value as Record<string, unknown>)["block"]).toBe("line http://other\n");
    expect(elsewhere.value).toEqual(parseConfig(text, file, { URL: "http://other" }, "pipeline.yaml").value);
  });

  test("still says where a problem is: a variable unset in this run, a place asked for", async () => {
    const { file, dir, text } = pipelineFile("version: 1\nsteps:\n  - name: a\n    source: ${SOURCE_URL}\n");
    await loadConfigFile(file, { SOURCE_URL: "http://s" }, dir);
    expect(await configParseCache()!.read(text)).toBeDefined();
    const kept = await loadConfigFile(file, { SOURCE_URL: "http://s" }, dir);
    expect(kept.locate(["steps", 0, "source"])).toEqual({ file: "pipeline.yaml", line: 5, col: 13 });
    expect(kept.locate(["steps", 0], "source")).toEqual({ file: "pipeline.yaml", line: 5, col: 5 });
    const error = await loadConfigFile(file, {}, dir).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).diagnostics).toEqual([
      expect.objectContaining({ code: "E_ENV", place: { file: "pipeline.yaml", line: 5, col: 13 } }),
    ]);
  });

  test("is not kept for a file with a problem, nor for one with a key that is a list or a mapping", async () => {
    const duplicate = pipelineFile("version: 1\nversion: 2\n");
    await expect(loadConfigFile(duplicate.file, {}, duplicate.dir)).rejects.toThrow(ConfigError);
    expect(await configParseCache()!.read(duplicate.text)).toBeUndefined();
    const complex = pipelineFile('? [a, "${A}"]\n: value\n');
    expect((await loadConfigFile(complex.file, { A: "x" }, complex.dir)).value).toEqual({ '[ a, "x" ]': "value" });
    expect(await configParseCache()!.read(complex.text)).toBeUndefined();
  });
});

describe("the parse cache's entries", () => {
  /** A cache in a new private directory, with one entry written. */
  async function cacheWithEntry() {
    const dir = path.join(temporaryDir(), "cache");
    const cache = parseCache("parser 1", dir)!;
    await cache.write("text", { a: ["b", 1] });
    const [entry] = readdirSync(dir);
    return { dir, cache, entry: path.join(dir, entry!) };
  }

  test("are read back as written, by the same parser and text only", async () => {
    const { dir, cache } = await cacheWithEntry();
    expect(await cache.read("text")).toEqual({ a: ["b", 1] });
    expect(await cache.read("other text")).toBeUndefined();
    expect(await parseCache("parser 2", dir)!.read("text")).toBeUndefined();
  });

  test("are not used when damaged, renamed, or in a directory others can write or that is a link", async () => {
    const damaged = await cacheWithEntry();
    const bytes = readFileSync(damaged.entry);
    bytes.writeUInt8(bytes.readUInt8(bytes.length - 2) ^ 1, bytes.length - 2);
    writeFileSync(damaged.entry, bytes);
    expect(await damaged.cache.read("text")).toBeUndefined();

    const renamed = await cacheWithEntry();
    await renamed.cache.write("second", { b: 2 });
    const second = readdirSync(renamed.dir)
      .map((name) => path.join(renamed.dir, name))
      .find((file) => file !== renamed.entry)!;
    writeFileSync(renamed.entry, readFileSync(second));
    expect(await renamed.cache.read("text")).toBeUndefined();

    const open = await cacheWithEntry();
    chmodSync(open.dir, 0o777);
    expect(await open.cache.read("text")).toBeUndefined();

    const linked = await cacheWithEntry();
    const link = path.join(path.dirname(linked.dir), "link");
    symlinkSync(linked.dir, link);
    expect(await parseCache("parser 1", link)!.read("text")).toBeUndefined();
  });

  test("are at most 200: the least recently written go first", async () => {
    const dir = path.join(temporaryDir(), "cache");
    const cache = parseCache("parser 1", dir)!;
    for (let n = 0; n < 205; n++) await cache.write(`text ${n}`, n);
    expect(readdirSync(dir)).toHaveLength(200);
    expect(await cache.read("text 204")).toBe(204);
  });

  test("hold only plain values, at most 1000 deep: anything else found there is not used, nor written", async () => {
    let deep: unknown = "x";
    for (let depth = 0; depth < 1100; depth++) deep = [deep];
    const { cache, entry } = await cacheWithEntry();
    for (const tree of [new Date(0), { a: new Map() }, [1, , 3], Object.assign([1], { extra: 2 }), deep]) {
      // why: as this user could write it: named and digested as the cache does.
      const payload = serialize([path.basename(entry), tree]);
      writeFileSync(entry, Buffer.concat([createHash("sha256").update(payload).digest(), payload]));
      expect(await cache.read("text")).toBeUndefined();
      await cache.write("text", { kept: true });
      await cache.write("text", tree);
      expect(await cache.read("text")).toEqual({ kept: true });
    }
  });
});
