// Signals on Node 20, which the runner supports for doctor and the sqljs engine. Its guard against Node 20's hang at exit
// (engine/cli.ts) must keep the runner one process: bb2db83 started it again with a V8 flag, and both tests failed there
// (helper h60's attack pass): the parent ignored a SIGINT meant for the run, and a process group's SIGTERM reached the
// run twice, the second one the "insist" path that stops without cleaning up.
import { spawnSync } from "node:child_process";
import { copyFileSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { afterEach, expect, test } from "vitest";
import { builtCli, spawnCli, systemNode20 as system, waitFor } from "./helpers/spawn-cli.js";
import { clientFixtures, Workspace } from "./helpers/workspace.js";

const workspaces: Workspace[] = [];
afterEach(() => {
  for (const ws of workspaces.splice(0)) ws.remove();
});

/** A directory with the client's three CSV files and a pipeline.yaml drafted by `init` (on this Node 24). */
function workspace(salesRows?: number): string {
  const ws = new Workspace({ withClientPipeline: false });
  workspaces.push(ws);
  const files = ["produits.csv", "magasins.csv", "ventes.csv"];
  for (const file of files) copyFileSync(path.join(clientFixtures, file), ws.path(file));
  const init = spawnSync(process.execPath, [builtCli, "init", ...files], { cwd: ws.dir, encoding: "utf8" });
  expect(init.status, init.stderr).toBe(0);
  if (salesRows !== undefined) {
    const lines = ["Date,ID Référence produit,Quantité,ID Magasin"];
    for (let i = 0; i < salesRows; i++)
      lines.push(`2023-05-${String((i % 28) + 1).padStart(2, "0")},REF00${(i % 5) + 1},${(i % 9) + 1},${(i % 7) + 1}`);
    ws.write(files[2]!, lines.join("\r\n") + "\r\n");
  }
  return ws.dir;
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
      const run = spawnCli(["run", "--engine", "sqljs"], dir, {}, { node: system!, detached: true });
      await waitFor(() => held.length > 0, 20_000);
      run.child.kill("SIGINT");
      const outcome = await Promise.race([
        run.done,
        new Promise<"still running">((resolve) => setTimeout(() => resolve("still running"), 5_000)),
      ]);
      if (outcome === "still running") process.kill(-run.child.pid!, "SIGKILL");
      expect(outcome === "still running" ? outcome : { code: outcome.code, signal: outcome.signal }, run.output()).toEqual({
        code: 130,
        signal: null,
      });
      expect((await run.done).stderr).toContain("SIGINT: stopping");
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
    const run = spawnCli(["run", "--engine", "sqljs"], dir, {}, { node: system!, detached: true });
    await waitFor(() => run.output().includes("[3/3] load_ventes"), 30_000);
    process.kill(-run.child.pid!, "SIGTERM");
    const done = await run.done;
    // why: handled once, the run stops cleanly (or ends its step and saves) and leaves no lock behind; a runner that got
    // it twice (from the group, then forwarded by a parent) would exit at once with 130, as for a second Ctrl-C.
    expect(done.stderr.match(/SIGTERM: stopping/g), done.stderr).toHaveLength(1);
    expect(existsSync(path.join(dir, "output/pipeline.db.lock")), `exit ${done.code}; ${done.stderr}`).toBe(false);
  },
  60_000,
);
