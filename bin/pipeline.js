#!/usr/bin/env node
// The `pipeline` command (`npx pipeline ...`): runs dist/engine/cli.js on the project's Node 24, building dist/ first when it is missing (bin/build.js).
// Plain JavaScript on purpose: it must start on whatever node npx finds first on PATH.
import { spawn, spawnSync } from "node:child_process";
import { existsSync, realpathSync } from "node:fs";
import { constants } from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = path.resolve(path.dirname(realpathSync(fileURLToPath(import.meta.url))), "..");
const cli = path.join(root, "dist/engine/cli.js");
const pinned = path.join(root, "node_modules/node/bin/node");
const onPinnedNode = process.versions.node.split(".")[0] === "24";
// why: npx puts the node it runs on first on PATH, not node_modules/.bin; the project pins Node 24 through its `node` devDependency.
const node = onPinnedNode || !existsSync(pinned) ? process.execPath : pinned;

// why: bin/build.js writes bundle-modules.json last; without it, a build stopped half-way (tsc done, esbuild not) would be run unbundled.
if (!existsSync(path.join(root, "dist/engine/bundle-modules.json"))) {
  process.stderr.write("pipeline: building dist/ (first run after npm ci)\n");
  // why: stdout belongs to the command (--json), so the build's report goes to stderr.
  // why: --if-missing: a build another command started meanwhile is waited for, not done twice.
  const built = spawnSync(node, [path.join(root, "bin/build.js"), "--if-missing"], { stdio: ["ignore", 2, 2] });
  if (built.status !== 0) {
    process.stderr.write("pipeline: the build failed; run `npm ci`, then `npm run build` to see why\n");
    process.exit(2);
  }
}

if (node === process.execPath) {
  await import(pathToFileURL(cli).href);
} else {
  const child = spawn(node, ["--disable-warning=ExperimentalWarning", cli, ...process.argv.slice(2)], { stdio: "inherit" });
  // why: Ctrl-C reaches the child from the terminal already (a second SIGINT would make it stop without cleaning up); SIGTERM is sent to this process only.
  process.on("SIGINT", () => undefined);
  process.on("SIGTERM", () => child.kill("SIGTERM"));
  child.on("exit", (code, signal) => {
    process.exitCode = code ?? 128 + (signal ? constants.signals[signal] : 0);
  });
}
