#!/usr/bin/env node
// `npm run build`: tsc compiles engine/, steps/ and the bench into dist/ (checking the types), then esbuild bundles the
// command, dist/engine/cli.js, in place: one file and a few chunks beside it, so that an unchanged run reads 20 files, not 68 modules.
// Plain JavaScript on purpose, like pipeline.js: it runs before dist/ exists, on whatever node started it.
import { spawnSync } from "node:child_process";
import { readdirSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const out = path.join(root, "dist/engine");

// why: tsc reports on stdout; stdout may belong to a command (bin/pipeline.js builds before a `--json` run), so its report goes to stderr.
const tsc = spawnSync(
  process.execPath,
  [path.join(root, "node_modules/typescript/bin/tsc"), "-p", path.join(root, "tsconfig.build.json")],
  {
    stdio: ["ignore", 2, 2],
  },
);
if (tsc.status !== 0) process.exit(tsc.status ?? 1);

// why: chunk names carry a hash of their content; an earlier build's chunks would stay beside the new ones.
for (const name of readdirSync(out)) if (/^chunk-.*\.js(\.map)?$/.test(name)) rmSync(path.join(out, name));

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
writeFileSync(path.join(out, "bundle-modules.json"), JSON.stringify(modules, null, 1) + "\n");
