import { execFileSync } from "node:child_process";
import { existsSync, lstatSync, mkdirSync, readFileSync, symlinkSync, truncateSync } from "node:fs";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { acquireLock } from "../engine/db/lock.js";
import { spawnCli } from "./helpers/spawn-cli.js";
import { clientFileEnv, sqlite, Workspace } from "./helpers/workspace.js";

let ws: Workspace;
beforeEach(() => {
  ws = new Workspace();
  ws.copyClientFiles();
});
afterEach(() => ws.remove());

/** Runs the built CLI in its own process, killed after 15 s: what hangs fails the test instead of the test runner. */
async function runBounded(args: string[], env: Record<string, string> = clientFileEnv) {
  const run = spawnCli(args, ws.dir, env);
  const timer = setTimeout(() => run.child.kill("SIGKILL"), 15_000);
  const result = await run.done;
  clearTimeout(timer);
  return result;
}

const addSale = () =>
  ws.write(
    "tests/fixtures/client/ventes.csv",
    readFileSync(ws.path("tests/fixtures/client/ventes.csv"), "utf8") + "\r\n2023-06-26,REF001,1,1",
  );

describe("a database path that is a symlink", () => {
  test("the save writes through the link to the real file, and the link stays a link", async () => {
    mkdirSync(ws.path("real"));
    symlinkSync("real/sales.db", ws.path("link.db"));
    expect((await ws.cli(["run", "--db", "link.db"], clientFileEnv)).code).toBe(0);
    addSale();
    const again = await ws.cli(["run", "--db", "link.db"], clientFileEnv);
    expect(again.code).toBe(0);
    expect(lstatSync(ws.path("link.db")).isSymbolicLink()).toBe(true);
    expect(sqlite(ws.path("real/sales.db"), "SELECT count(*) FROM sales")).toBe("31");
    expect(existsSync(ws.path("link.db.lock"))).toBe(false);
  });

  test("a run through the link waits for the lock held through the real path", async () => {
    mkdirSync(ws.path("real"));
    symlinkSync("real/sales.db", ws.path("link.db"));
    expect((await ws.cli(["run", "--db", "real/sales.db"], clientFileEnv)).code).toBe(0);
    const before = readFileSync(ws.path("real/sales.db"));
    const lock = await acquireLock(ws.path("real/sales.db"), { timeoutMs: 0 });
    try {
      addSale();
      const run = await ws.cli(["run", "--db", "link.db", "--lock-timeout", "300ms"], clientFileEnv);
      expect(run.code).toBe(3);
      expect(run.stderr).toContain("is in use by another run");
      expect(readFileSync(ws.path("real/sales.db"))).toEqual(before);
    } finally {
      await lock.release();
    }
  });
});

describe("paths that are not regular files are refused, never waited on", () => {
  test.each([
    ["a FIFO", () => execFileSync("mkfifo", [ws.path("pipe.db")]), "pipe.db", "is a FIFO"],
    ["a directory", () => mkdirSync(ws.path("dir.db")), "dir.db", "is a directory"],
    ["a device", () => undefined, "/dev/zero", "is a device"],
  ])("--db naming %s", async (_what, make, db, message) => {
    make();
    for (const args of [["run"], ["run", "--dry-run"]]) {
      const result = await runBounded([...args, "--db", db]);
      expect(result.signal).toBeNull();
      expect(result.code).toBe(2);
      expect(result.stderr).toContain(`E_DB ${db.startsWith("/") ? db : ws.path(db)} ${message}`);
      expect(result.stderr).toContain("the database must be a regular SQLite file");
    }
  });

  test("doctor fails its database check for a FIFO", async () => {
    execFileSync("mkfifo", [ws.path("pipe.db")]);
    const result = await runBounded(["doctor", "--db", "pipe.db"]);
    expect(result.signal).toBeNull();
    expect(result.stdout).toContain(`✗ database: ${ws.path("pipe.db")} is a FIFO, not a regular SQLite file`);
  });

  test.each([
    ["a FIFO", () => execFileSync("mkfifo", [ws.path("sql/revenue_total.sql")]), "is a FIFO"],
    ["a directory", () => mkdirSync(ws.path("sql/revenue_total.sql")), "is a directory"],
  ])("a SQL file that is %s is refused by validate", async (_what, make, message) => {
    execFileSync("rm", [ws.path("sql/revenue_total.sql")]);
    make();
    const result = await runBounded(["validate"]);
    expect(result.signal).toBeNull();
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(new RegExp(`pipeline\\.yaml:\\d+:\\d+ error E_CONFIG SQL file sql/revenue_total\\.sql ${message}`));
  });

  test("a configuration file larger than 1 MiB is refused before it is read", async () => {
    ws.write("p.yaml", "");
    truncateSync(ws.path("p.yaml"), 1024 * 1024 * 1024);
    const result = await runBounded(["validate", "-c", "p.yaml"]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("cannot read the configuration p.yaml: it is 1024 MiB; a pipeline file is at most 1 MiB");
  });

  test("a configuration file that is a FIFO is refused", async () => {
    execFileSync("mkfifo", [ws.path("p.yaml")]);
    const result = await runBounded(["validate", "-c", "p.yaml"]);
    expect(result.signal).toBeNull();
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("cannot read the configuration p.yaml: it is a FIFO, not a regular file");
  });
});
