// Signals on Node 20, which the runner supports for doctor and the sqljs engine. Its guard against Node 20's hang at exit
// (engine/cli.ts) must keep the runner one process: bb2db83 started it again with a V8 flag, and both tests failed there
// (helper h60's attack pass): the parent ignored a SIGINT meant for the run, and a process group's SIGTERM reached the
// run twice, the second one the "insist" path that stops without cleaning up.
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, expect, test } from "vitest";
import { builtCli } from "./helpers/spawn-cli.js";
import { clientFixtures } from "./helpers/workspace.js";

// why: Debian's own node is 20 on this image (as in tests/doctor.test.ts).
const system = ["/usr/bin/node", "/bin/node"].find(
  (file) => existsSync(file) && execFileSync(file, ["-p", "process.versions.node.split('.')[0]"], { encoding: "utf8" }).trim() === "20",
);

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** A directory with the client's three CSV files and a pipeline.yaml drafted by `init` (on this Node 24). */
function workspace(salesRows?: number): string {
  const dir = mkdtempSync(path.join(tmpdir(), "node20-signals-"));
  dirs.push(dir);
  for (const file of ["produits.csv", "magasins.csv", "ventes.csv"]) copyFileSync(path.join(clientFixtures, file), path.join(dir, file));
  const init = spawnSync(process.execPath, [builtCli, "init", "produits.csv", "magasins.csv", "ventes.csv"], {
    cwd: dir,
    encoding: "utf8",
  });
  expect(init.status, init.stderr).toBe(0);
  if (salesRows !== undefined) {
    const lines = ["Date,ID Référence produit,Quantité,ID Magasin"];
    for (let i = 0; i < salesRows; i++)
      lines.push(`2023-05-${String((i % 28) + 1).padStart(2, "0")},REF00${(i % 5) + 1},${(i % 9) + 1},${(i % 7) + 1}`);
    writeFileSync(path.join(dir, "ventes.csv"), lines.join("\r\n") + "\r\n");
  }
  return dir;
}

function start(node: string, dir: string, args: string[]) {
  // why: its own process group, as a shell job, a systemd unit or `timeout` gives it.
  const child = spawn(node, [builtCli, ...args], { cwd: dir, detached: true, env: { ...process.env, NO_COLOR: "1" } });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on("close", (code, signal) => resolve({ code, signal })),
  );
  return { child, out: () => stdout, err: () => stderr, done };
}

async function until(predicate: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > end) throw new Error("timed out");
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

test.skipIf(system === undefined)(
  "Node 20: SIGINT sent to the runner's pid (kill -INT, a supervisor, child.kill('SIGINT')) stops the run, as on Node 24",
  async () => {
    // A source that sends its header, then holds the response: the run waits in its fetch.
    const held: http.ServerResponse[] = [];
    const server = http.createServer((_request, response) => {
      response.writeHead(200, { "content-type": "text/csv" });
      response.write("Date,ID Référence produit,Quantité,ID Magasin\r\n");
      held.push(response);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const dir = workspace();
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/ventes.csv`;
      const yaml = path.join(dir, "pipeline.yaml");
      writeFileSync(yaml, readFileSync(yaml, "utf8").replace('source: "ventes.csv"', `source: "${url}"`));
      const run = start(system!, dir, ["run", "--engine", "sqljs"]);
      await until(() => held.length > 0, 20_000);
      run.child.kill("SIGINT");
      const outcome = await Promise.race([
        run.done,
        new Promise<"still running">((resolve) => setTimeout(() => resolve("still running"), 5_000)),
      ]);
      if (outcome === "still running") process.kill(-run.child.pid!, "SIGKILL");
      expect(outcome, run.err()).toEqual({ code: 130, signal: null });
      expect(run.err()).toContain("SIGINT: stopping");
    } finally {
      for (const response of held) response.destroy();
      server.close();
    }
  },
  40_000,
);

test.skipIf(system === undefined)(
  "Node 20: one SIGTERM to the process group (timeout(1), systemd, kill -- -PGID) is a clean stop, not the second signal that insists",
  async () => {
    const dir = workspace(300_000);
    const run = start(system!, dir, ["run", "--engine", "sqljs"]);
    await until(() => run.out().includes("[3/3] load_ventes"), 30_000);
    process.kill(-run.child.pid!, "SIGTERM");
    const done = await run.done;
    // why: handled once, the run stops cleanly (or ends its step and saves) and leaves no lock behind; a runner that got
    // it twice (from the group, then forwarded by a parent) would exit at once with 130, as for a second Ctrl-C.
    expect(run.err().match(/SIGTERM: stopping/g), run.err()).toHaveLength(1);
    expect(existsSync(path.join(dir, "output/pipeline.db.lock")), `exit ${done.code}; ${run.err()}`).toBe(false);
  },
  60_000,
);
