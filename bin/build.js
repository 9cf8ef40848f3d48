#!/usr/bin/env node
// `npm run build`: tsc compiles engine/, steps/ and the bench into dist/ (checking the types), then esbuild bundles the
// command, dist/engine/cli.js, in place: one file and a few chunks beside it, so that an unchanged run reads 20 files, not 68 modules.
// Plain JavaScript on purpose, like pipeline.js: it runs before dist/ exists, on whatever node started it.
// `--if-missing` (bin/pipeline.js's first build): builds only when no finished build is there once the lock is held.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const out = path.join(root, "dist/engine");
const finished = path.join(out, "bundle-modules.json");

// why: two builds at once (two `npx pipeline` on a fresh clone, `npm start` in two terminals: prestart builds) rewrite the
// same files under each other; the second waits for the first. A lock left by a build that died (its pid gone) is taken over.
const lock = path.join(root, "dist/.build-lock");
mkdirSync(path.dirname(lock), { recursive: true });
const pause = new Int32Array(new SharedArrayBuffer(4));
for (let said = false; ;) {
  try {
    writeFileSync(lock, String(process.pid), { flag: "wx" });
    break;
  } catch (error) {
    if (error.code !== "EEXIST") throw error;
  }
  let holder;
  try {
    holder = Number(readFileSync(lock, "utf8").trim() || 0);
  } catch (error) {
    if (error.code === "ENOENT") continue; // why: released between the two calls: take it now.
    throw error;
  }
  // why: a lock without its pid yet is being written by a build starting now, unless it has stayed so for seconds.
  const fresh = holder === 0 && Date.now() - (statSync(lock, { throwIfNoEntry: false })?.mtimeMs ?? 0) < 10_000;
  if (!fresh && !alive(holder)) {
    rmSync(lock, { force: true });
    continue;
  }
  if (!said)
    process.stderr.write(`build: waiting for the build started by pid ${holder || "?"} (${path.relative(process.cwd(), lock) || lock})\n`);
  said = true;
  Atomics.wait(pause, 0, 0, 200);
}
process.on("exit", () => rmSync(lock, { force: true }));
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => process.exit(130));
if (process.argv.includes("--if-missing") && existsSync(finished)) process.exit(0);

function alive(pid) {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return error.code === "EPERM";
  }
}

// why: tsc reports on stdout; stdout may belong to a command (bin/pipeline.js builds before a `--json` run), so its report goes to stderr.
const tsc = spawnSync(
  process.execPath,
  [path.join(root, "node_modules/typescript/bin/tsc"), "-p", path.join(root, "tsconfig.build.json")],
  {
    stdio: ["ignore", 2, 2],
  },
);
if (tsc.status !== 0) process.exit(tsc.status ?? 1);

const earlierChunks = readdirSync(out).filter((name) => /^chunk-.*\.js(\.map)?$/.test(name));

const { build } = await import("esbuild");
const result = await build({
  absWorkingDir: root,
  // why: bundled from tsc's output, so that the bundle is the code the types were checked on, and its source maps lead back to the .ts files.
  // pg-worker.js lands beside the chunks: sync-connection.ts starts it as "./pg-worker.js" relative to its own module, compiled or bundled.
  entryPoints: { cli: "dist/engine/cli.js", "pg-worker": "dist/engine/db/pg/pg-worker.js" },
  outdir: "dist/engine",
  allowOverwrite: true,
  bundle: true,
  // why: each `await import()` stays a chunk of its own, loaded only by a run that needs it (sql.js, yaml, node-fetch, a command).
  splitting: true,
  chunkNames: "chunk-[hash]",
  format: "esm",
  platform: "node",
  target: "node24",
  // why: sql.js finds its .wasm beside its own file, and pg requires pg-native only if it is installed; both stay in node_modules.
  external: ["sql.js", "pg", "pg-copy-streams"],
  sourcemap: "linked",
  metafile: true,
  logLevel: "warning",
});
// why: which source modules each output file holds; tests/cli-smoke.test.ts reads it to tell what a run loaded.
const modules = Object.fromEntries(
  Object.entries(result.metafile.outputs)
    .filter(([file]) => file.endsWith(".js"))
    .map(([file, output]) => [path.basename(file), Object.keys(output.inputs)]),
);
// why: chunk names carry a hash of their content; an earlier build's chunks that this one did not write again are removed
// once the new ones are in place, so that a command running meanwhile (run --every) never finds a chunk of its own missing.
const written = new Set(Object.keys(result.metafile.outputs).map((file) => path.basename(file)));
for (const name of earlierChunks) if (!written.has(name) && !written.has(name.replace(/\.map$/, ""))) rmSync(path.join(out, name));
writeFileSync(finished, JSON.stringify(modules, null, 1) + "\n");
