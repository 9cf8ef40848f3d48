import { execFileSync, spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, expect, test } from "vitest";
import { clientFixtures, root, sqlite } from "./helpers/workspace.js";

const readme = readFileSync(path.join(root, "README.md"), "utf8");

/** The command lines of the README's ```sh blocks, in order (comments and blank lines left out). */
function commandLines(markdown: string): string[] {
  const lines: string[] = [];
  for (const [, block] of markdown.matchAll(/^```sh\n([\s\S]*?)^```$/gm))
    for (const line of block!.split("\n")) if (line.trim() !== "" && !line.trim().startsWith("#")) lines.push(line.trim());
  return lines;
}

/** The words of a shell line, a quoted argument kept whole (without its quotes). */
function words(line: string): string[] {
  return [...line.matchAll(/'([^']*)'|"([^"]*)"|(\S+)/g)].map((m) => m[1] ?? m[2] ?? m[3]!);
}

describe("the README", () => {
  test("is short: about 150 lines, the full reference lives in docs/", () => {
    const lines = readme.split("\n").length;
    expect(lines).toBeLessThanOrEqual(170);
    expect(readme).toContain("[docs/pipeline-reference.md](docs/pipeline-reference.md)");
    for (const [, target] of readme.matchAll(/\]\((docs\/[^)#]+)/g)) expect(existsSync(path.join(root, target!)), target).toBe(true);
  });

  test("its quick start is two commands: install, then run the example", () => {
    const quickStart = readme.slice(readme.indexOf("## Quick start"));
    expect(commandLines(quickStart).slice(0, 2)).toEqual(["npm ci", "npm run example"]);
  });

  test("every docker line is run, as written, by the compose e2e (npm run test:docker)", () => {
    const e2e = readFileSync(path.join(root, "tests/docker/e2e.sh"), "utf8");
    const docker = commandLines(readme).filter((line) => line.startsWith("docker "));
    expect(docker.length).toBeGreaterThanOrEqual(4);
    for (const line of docker) {
      // why: the e2e adds -T (no terminal), -q, --wait and -batch; every word of the README's line must be there, in order.
      const wanted = words(line).filter((word) => !word.includes(" "));
      const found = e2e.split("\n").some((e2eLine) => {
        let at = 0;
        const have = words(e2eLine);
        for (const word of have) if (word === wanted[at]) at++;
        return at === wanted.length;
      });
      expect(found, `tests/docker/e2e.sh runs: ${line}`).toBe(true);
      for (const quoted of words(line).filter((word) => word.includes(" "))) expect(e2e, line).toContain(quoted);
    }
  });

  // why: in a copy of the repository as a newcomer has it (no node_modules, no dist), each line in order,
  // with the three sources pointing at local copies, so "the real sources" lines need no network either.
  test("every other command line runs and succeeds, in order, in a fresh copy of the repository", () => {
    const copy = mkdtempSync(path.join(tmpdir(), "readme-"));
    try {
      const files = execFileSync("git", ["ls-files", "-z", "--cached", "--others", "--exclude-standard"], { cwd: root, encoding: "utf8" })
        .split("\0")
        .filter((file) => file !== "" && existsSync(path.join(root, file)));
      for (const file of files) cpSync(path.join(root, file), path.join(copy, file));
      const env = {
        ...process.env,
        NO_COLOR: "1",
        PRODUCTS_URL: path.join(clientFixtures, "produits.csv"),
        STORES_URL: path.join(clientFixtures, "magasins.csv"),
        SALES_URL: path.join(clientFixtures, "ventes.csv"),
      };
      const ran: string[] = [];
      for (const line of commandLines(readme).filter((l) => !l.startsWith("docker "))) {
        const result = spawnSync("bash", ["-c", line], { cwd: copy, env, encoding: "utf8", timeout: 300_000 });
        expect(result.status, `${line}\n${result.stdout}\n${result.stderr}`).toBe(0);
        ran.push(line);
        if (line === "npm run example")
          expect(sqlite(path.join(copy, "output/example/sales.db"), "SELECT revenue_cents, quantity FROM revenue_total")).toBe(
            "526878|122",
          );
        if (line.startsWith("sqlite3 ")) expect(result.stdout).toContain("|30|122|526878|5268.78");
        if (line.includes("validate")) expect(result.stdout).toContain("pipeline.yaml is valid: 11 steps, 10 tables");
      }
      expect(ran).toContain("npm ci");
      expect(ran.length).toBeGreaterThanOrEqual(6);
      expect(existsSync(path.join(copy, "output/example/fiche-synthese.html"))).toBe(true);
      expect(existsSync(path.join(copy, "output/mixed.db"))).toBe(true);
      expect(existsSync(path.join(copy, "output/mixed/fiche-synthese.md"))).toBe(true);
    } finally {
      rmSync(copy, { recursive: true, force: true });
    }
  }, 600_000);
});
