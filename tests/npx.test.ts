import { execFileSync, spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { clientFixtures, root } from "./helpers/workspace.js";

let copy: string;
let env: NodeJS.ProcessEnv;

// why: a fresh copy of the repository as a clone has it (no node_modules, no dist/), then `npm ci`; the shell's PATH
// without this repository's node_modules/.bin, as a user's shell has it.
beforeAll(() => {
  copy = mkdtempSync(path.join(tmpdir(), "npx-"));
  const files = execFileSync("git", ["ls-files", "-z", "--cached", "--others", "--exclude-standard"], { cwd: root, encoding: "utf8" })
    .split("\0")
    .filter((file) => file !== "" && existsSync(path.join(root, file)));
  for (const file of files) cpSync(path.join(root, file), path.join(copy, file));
  const pathWithoutProject = (process.env["PATH"] ?? "")
    .split(path.delimiter)
    .filter((dir) => !dir.includes("node_modules"))
    .join(path.delimiter);
  env = {
    ...process.env,
    PATH: pathWithoutProject,
    NO_COLOR: "1",
    PRODUCTS_URL: path.join(clientFixtures, "produits.csv"),
    STORES_URL: path.join(clientFixtures, "magasins.csv"),
    SALES_URL: path.join(clientFixtures, "ventes.csv"),
  };
  const ci = spawnSync("npm", ["ci", "--no-audit", "--no-fund"], { cwd: copy, env, encoding: "utf8", timeout: 300_000 });
  expect(ci.status, ci.stderr).toBe(0);
}, 300_000);
afterAll(() => rmSync(copy, { recursive: true, force: true }));

function shell(line: string) {
  return spawnSync("bash", ["-c", line], { cwd: copy, env, encoding: "utf8", timeout: 120_000 });
}

describe("npx pipeline, from a fresh clone after npm ci", () => {
  test("builds dist/ on its first call and prints the version alone on stdout; two first calls at once build it once", () => {
    expect(existsSync(path.join(copy, "dist/engine/cli.js"))).toBe(false);
    // why: both find dist/ missing; the one that takes the build's lock builds, the other waits, then finds the build done.
    const result = shell(
      "npx pipeline --version > a.out 2> a.err & a=$!; npx pipeline --version > b.out 2> b.err & b=$!; wait $a; echo $?; wait $b; echo $?",
    );
    expect(result.stdout).toBe("0\n0\n");
    const [a, b] = ["a", "b"].map((name) => ({
      stdout: readFileSync(path.join(copy, `${name}.out`), "utf8"),
      stderr: readFileSync(path.join(copy, `${name}.err`), "utf8"),
    }));
    for (const call of [a!, b!]) {
      expect(call.stdout).toBe("pipeline-runner 0.1.0\n");
      expect(call.stderr).toContain("pipeline: building dist/");
    }
    expect([a!, b!].filter((call) => /build: waiting for the build started by pid (\d+|\?)/.test(call.stderr))).toHaveLength(1);
    expect(existsSync(path.join(copy, "dist/engine/cli.js"))).toBe(true);
    expect(existsSync(path.join(copy, "dist/.build-lock"))).toBe(false);
  }, 180_000);

  test("a build again leaves the chunks of the command in place (a command running meanwhile may still import one)", () => {
    const chunks = readdirSync(path.join(copy, "dist/engine")).filter((name) => name.startsWith("chunk-"));
    const inodes = chunks.map((name) => statSync(path.join(copy, "dist/engine", name)).ino);
    const build = shell("npm run build --silent");
    expect(build.status, build.stderr).toBe(0);
    expect(readdirSync(path.join(copy, "dist/engine")).filter((name) => name.startsWith("chunk-"))).toEqual(chunks);
    expect(chunks.map((name) => statSync(path.join(copy, "dist/engine", name)).ino)).toEqual(inodes);
  }, 120_000);

  test("validates the pipeline, runs on Node 24, and --json is one JSON document, through npx and npm start --silent", () => {
    const validate = shell("npx pipeline validate");
    expect(validate.status, validate.stderr).toBe(0);
    expect(validate.stdout).toBe("pipeline.yaml is valid: 11 steps, 10 tables\n");
    const doctor = shell("npx pipeline doctor --json");
    const checks = (JSON.parse(doctor.stdout) as { checks: { name: string; detail: string }[] }).checks;
    expect(checks.find((check) => check.name === "node")?.detail).toMatch(/^24\./);
    for (const line of [
      "npx pipeline validate --json",
      "npm start --silent -- validate --json",
      "npx pipeline list --json",
      "npx pipeline nonsense --json",
    ]) {
      const result = shell(line);
      expect(() => JSON.parse(result.stdout), `${line}\n${result.stdout}`).not.toThrow();
    }
    const usage = shell("npx pipeline nonsense --json");
    expect(usage.status).toBe(2);
    expect(JSON.parse(usage.stdout)).toMatchObject({ ok: false, error: { code: "E_USAGE" } });
  }, 120_000);
});
