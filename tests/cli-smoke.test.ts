import { execFile, execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { promisify } from "node:util";
import { describe, expect, test } from "vitest";
import { startServer } from "./helpers/http-server.js";
import { clientFileEnv, clientFixtures, clientPipeline, root, Workspace } from "./helpers/workspace.js";

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
  /** The modules an unchanged run loads (after a first run): their URLs as module hooks see them, and Node's internal ones; and its report. */
  async function loadedByUnchangedRun(
    env: Readonly<Record<string, string>>,
    engine = "native",
  ): Promise<{
    urls: string[];
    files: string[];
    builtins: string[];
    report: { status: string; steps: { name: string; status: string }[] };
  }> {
    const workspace = new Workspace();
    workspace.copyClientFiles();
    const loaded = workspace.path("loaded-modules.json");
    // why: node's module hooks see every module imported or required; process.moduleLoadList, Node's own internal ones too.
    const hook = workspace.write(
      "record-loads.mjs",
      `import { registerHooks } from "node:module";
import { writeFileSync } from "node:fs";
const urls = [];
registerHooks({ load: (url, context, next) => (urls.push(url), next(url, context)) });
process.on("exit", () => writeFileSync(${JSON.stringify(loaded)}, JSON.stringify({ urls, builtins: process.moduleLoadList })));
`,
    );
    // why: asynchronous, so that a server in this process can answer the CLI.
    const run = () =>
      promisify(execFile)(process.execPath, ["--import", pathToFileURL(hook).href, cli, "run", "--json", "--engine", engine], {
        cwd: workspace.dir,
        encoding: "utf8",
        env: { ...process.env, NO_COLOR: "1", ...env },
      });
    await run();
    const again = await run();
    const report = JSON.parse(again.stdout) as { status: string; steps: { name: string; status: string }[] };
    expect(report.status).toBe("unchanged");
    const modules = JSON.parse(readFileSync(loaded, "utf8")) as { urls: string[]; builtins: string[] };
    workspace.remove();
    // why: the CLI is bundled (bin/build.js); each file it loads stands for the source modules the bundle put in it.
    expect(modules.urls.some((url) => bundled.has(url))).toBe(true);
    const urls = modules.urls.flatMap((url) => bundled.get(url) ?? [url]);
    expect(urls).toContainEqual(expect.stringContaining("/engine/run.js"));
    return { urls, files: modules.urls, builtins: modules.builtins, report };
  }
  const bundled = new Map(
    Object.entries(JSON.parse(readFileSync(path.join(root, "dist/engine/bundle-modules.json"), "utf8")) as Record<string, string[]>).map(
      ([file, inputs]) => [
        pathToFileURL(path.join(root, "dist/engine", file)).href,
        inputs.map((input) => pathToFileURL(path.join(root, input)).href),
      ],
    ),
  );
  // why: yaml too: the file's parse is kept between runs (engine/config/parse-cache.ts), and the run's second start finds it;
  // nor the other engines' modules (engine/db/engines/index.ts).
  const notNeeded =
    /\/node_modules\/(sql\.js|node-fetch|csv-parse|yaml)\/|\/engine\/commands\/|\/engine\/db\/(pg\/|engines\/(postgres|sqljs)\.)/;

  test("on the native engine with file sources, loads neither sql.js, csv-parse, yaml, node-fetch, node:http, the other engines nor the other commands", async () => {
    const { urls, files, builtins } = await loadedByUnchangedRun(clientFileEnv);
    expect(urls.filter((url) => notNeeded.test(url))).toEqual([]);
    // why: what bundling is for: a start reads a third of the files it would read compiled (68 modules in 20 files on 2026-12-02).
    const ownFiles = files.filter((url) => url.startsWith("file:")).length;
    expect(ownFiles).toBeLessThan(urls.filter((url) => url.startsWith("file:")).length / 3);
    expect(builtins.filter((name) => /^NativeModule (https?|internal\/deps\/undici\/undici)$/.test(name))).toEqual([]);
  });

  test("on the native engine with HTTP sources (answered 304), loads neither sql.js, csv-parse, yaml, the other engines nor the other commands", async () => {
    const server = await startServer();
    try {
      for (const name of ["produits", "magasins", "ventes"])
        server.file(`/${name}.csv`, readFileSync(path.join(clientFixtures, `${name}.csv`)));
      const env = {
        PRODUCTS_URL: server.url("/produits.csv"),
        STORES_URL: server.url("/magasins.csv"),
        SALES_URL: server.url("/ventes.csv"),
      };
      const { urls, builtins } = await loadedByUnchangedRun(env);
      expect(server.requests("/ventes.csv").at(-1)!["if-none-match"]).toBeDefined();
      // why: node-fetch (the design's HTTP client) is needed here; importing it loads node:http's ES module facade, and undici with it.
      expect(urls.filter((url) => notNeeded.test(url) && !url.includes("/node_modules/node-fetch/"))).toEqual([]);
      expect(urls).toContainEqual(expect.stringContaining("/node_modules/node-fetch/"));
      expect(builtins).toContain("NativeModule http");
    } finally {
      await server.close();
    }
  });

  test("on the sqljs engine, reads the file through node:sqlite: loads neither sql.js nor csv-parse, and reports as before", async () => {
    const sqljs = await loadedByUnchangedRun(clientFileEnv, "sqljs");
    expect(sqljs.urls.filter((url) => notNeeded.test(url) && !url.endsWith("/engine/db/engines/sqljs.js"))).toEqual([]);
    expect(sqljs.urls).toContainEqual(expect.stringMatching(/\/engine\/db\/engines\/sqljs\.js$/));
    // why: the same report as a run that loads the image (the native engine's, on the same files), step by step.
    const native = await loadedByUnchangedRun(clientFileEnv, "native");
    const comparable = (report: object) =>
      JSON.stringify(report, (key, value: unknown) => (/^(durationMs|rssBytes)$/.test(key) ? undefined : value));
    expect(comparable(sqljs.report)).toBe(comparable(native.report));
    expect(sqljs.report.steps.map((step) => step.status)).toContain("skipped");
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
