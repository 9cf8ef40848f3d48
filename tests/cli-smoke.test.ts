import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { describe, expect, test } from "vitest";
import { clientFileEnv, clientPipeline, root, Workspace } from "./helpers/workspace.js";

const cli = path.join(root, "dist/engine/cli.js");

describe("the built CLI", () => {
  test("runs on the Node major the project declares (24)", () => {
    expect(process.versions.node.split(".")[0]).toBe("24");
    expect(execFileSync(process.execPath, ["-p", "process.versions.node.split('.')[0]"], { encoding: "utf8" }).trim()).toBe("24");
  });

  test("validates the client's pipeline and exits 0, and exits 2 on a usage error", () => {
    expect(existsSync(cli), "run `npm run build` first (npm test does)").toBe(true);
    const ok = spawnSync(process.execPath, [cli, "validate"], {
      cwd: clientPipeline,
      encoding: "utf8",
      env: { ...process.env, NO_COLOR: "1" },
    });
    expect(ok.stdout).toBe("pipeline.yaml is valid: 11 steps, 10 tables\n");
    expect(ok.status).toBe(0);
    const bad = spawnSync(process.execPath, [cli, "nonsense"], { cwd: root, encoding: "utf8" });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain('error E_USAGE unknown command "nonsense"');
  });

  test("prints no colour codes when NO_COLOR is set or the output is not a terminal", () => {
    const result = spawnSync(process.execPath, [cli, "run", "--dry-run"], {
      cwd: clientPipeline,
      encoding: "utf8",
      env: { ...process.env, FORCE_COLOR: "1" },
    });
    expect(result.status).toBe(0);
    expect(result.stdout).not.toMatch(/\x1b\[/);
  });
});

describe("a run that finds nothing changed (a cron job's usual start)", () => {
  test("on the native engine with file sources, loads neither sql.js, node-fetch, node:http nor the other commands", () => {
    const workspace = new Workspace();
    workspace.copyClientFiles();
    // why: node's module hooks see every module the CLI loads, built-in or not; the list is written at exit.
    const loaded = workspace.path("loaded-modules.txt");
    const hook = workspace.write(
      "record-loads.mjs",
      `import { registerHooks } from "node:module";
import { writeFileSync } from "node:fs";
const urls = [];
registerHooks({ load: (url, context, next) => (urls.push(url), next(url, context)) });
process.on("exit", () => writeFileSync(${JSON.stringify(loaded)}, urls.join("\\n")));
`,
    );
    const run = () =>
      spawnSync(process.execPath, ["--import", pathToFileURL(hook).href, cli, "run", "--json", "--engine", "native"], {
        cwd: workspace.dir,
        encoding: "utf8",
        env: { ...process.env, NO_COLOR: "1", ...clientFileEnv },
      });
    expect(run().status).toBe(0);
    writeFileSync(loaded, "");
    const again = run();
    expect(again.status).toBe(0);
    expect((JSON.parse(again.stdout) as { status: string }).status).toBe("unchanged");
    const urls = readFileSync(loaded, "utf8").split("\n");
    expect(urls).toContainEqual(expect.stringContaining("/engine/run.js"));
    expect(urls.filter((url) => /\/node_modules\/(sql\.js|node-fetch)\/|^node:https?$|\/engine\/commands\//.test(url))).toEqual([]);
    workspace.remove();
  });
});

describe("npm run demo", () => {
  test("walks through the brief's demo: empty database, run, results, a run that imports nothing, new sales", () => {
    const demo = path.join(root, "dist/tests/demo/demo.js");
    const result = spawnSync(process.execPath, [demo, "--pause", "0"], {
      cwd: root,
      encoding: "utf8",
      env: { ...process.env, NO_COLOR: "1" },
    });
    expect(result.stderr).toBe("");
    expect(result.status).toBe(0);
    const out = result.stdout;
    const chapters = [
      "1. La base de données, vide",
      "2. Le pipeline",
      "3. Les tables et les résultats",
      "4. Deuxième exécution",
      "5. Le fichier des ventes s'actualise",
    ];
    let at = 0;
    for (const chapter of chapters) {
      const found = out.indexOf(chapter, at);
      expect(found, chapter).toBeGreaterThan(at);
      at = found;
    }
    expect(out).toContain("(aucune table)");
    expect(out).toMatch(/│ 2023-05-27 +│ 2023-06-25 +│ 30 +│ 122 +│ 5268\.78 │/);
    expect(out).toContain("✓ 30 read, 30 inserted");
    expect(out).toContain("= unchanged source not modified (HTTP 304)");
    expect(out).toContain("✓ 2 read, 2 inserted; the file grew: only what follows its first 738 bytes (read by an earlier run) was parsed");
    expect(out).toMatch(/│ 32 +│ 5548\.73 +│/);
  });
});

describe("npm run bench (a small smoke run; timings belong to the benchmark, not to tests)", () => {
  test("ours (on each engine) and the sqlite3 CLI agree, and each engine's figures are written as JSON", () => {
    const out = path.join(mkdtempSync(path.join(tmpdir(), "bench-smoke-")), "bench.json");
    const result = spawnSync(
      process.execPath,
      [path.join(root, "dist/tests/bench/bench.js"), "--rows", "3000", "--repeat", "1", "--out", out],
      {
        cwd: root,
        encoding: "utf8",
      },
    );
    expect(result.stderr).toBe("");
    expect(result.status).toBe(0);
    for (const engine of ["sqljs", "native"]) {
      expect(result.stdout).toContain(`results agree with the sqlite3 CLI (${engine}): yes`);
      const figures = JSON.parse(readFileSync(out.replace(/\.json$/, `.${engine}.json`), "utf8")) as {
        engine: string;
        rows: number;
        agree: boolean;
        ratios: Record<string, number>;
        machine: { node: string };
      };
      expect(figures).toMatchObject({ engine, rows: 3000, agree: true });
      expect(Object.keys(figures.ratios).sort()).toEqual(["full", "incremental", "rss"]);
      expect(figures.machine.node.split(".")[0]).toBe("24");
    }
  });
});
