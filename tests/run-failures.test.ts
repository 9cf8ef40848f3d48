import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { serveClientData } from "./helpers/client-server.js";
import { startServer, type TestServer } from "./helpers/http-server.js";
import { clientFixtures, clientPipeline, onPostgres, sqlite, Workspace } from "./helpers/workspace.js";

let server: TestServer;
let ws: Workspace;
let env: Record<string, string>;
let close: () => Promise<void>;

beforeEach(async () => {
  ({ server, ws, env, close } = await serveClientData());
  expect((await ws.cli(["run"], env)).code).toBe(0);
});
afterEach(() => close());

/**
 * Runs again after `breakIt`, and checks the run failed with `message` and left the database as it
 * was: the file byte-identical (its failure journaled beside it), or on a server every table as it
 * was but the failed run, recorded at once in pipeline_runs.
 */
async function expectFailedRun(breakIt: () => void, message: RegExp | string, extraEnv: Record<string, string> = {}) {
  const before = ws.state();
  breakIt();
  const run = await ws.cli(["run"], { ...env, ...extraEnv });
  expect(run.code).toBe(1);
  expect(run.stderr).toMatch(message);
  expect(run.stderr).not.toMatch(/\n\s+at /);
  expect(run.stdout).toContain("was not changed");
  expect(ws.state()).toEqual(before);
  expect(ws.query("SELECT status FROM pipeline_runs ORDER BY run_id")).toBe(onPostgres ? "succeeded\nfailed" : "succeeded");
  return run;
}

describe("a failed run leaves the database byte-identical", () => {
  test("a source answering 404 is named in the error", async () => {
    await expectFailedRun(
      () => server.route("/ventes.csv", (_q, r) => void r.writeHead(404, "Not Found").end()),
      new RegExp(`E_FETCH GET ${server.url("/ventes.csv")} -> 404 Not Found`),
    );
  });

  test("a source that refuses connections fails after its retries", async () => {
    const closed = await startServer();
    const url = closed.url("/ventes.csv");
    await closed.close();
    await expectFailedRun(() => undefined, new RegExp(`E_FETCH GET ${url} failed after 4 attempts: .*ECONNREFUSED`), { SALES_URL: url });
  });

  test("a source serving an HTML page instead of CSV", async () => {
    await expectFailedRun(
      () => server.file("/produits.csv", "<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body></body></html>", "text/html"),
      /E_HEADER http:\/\/127\.0\.0\.1:\d+\/produits\.csv sent an HTML page, not CSV; first line: "<!DOCTYPE html>"/,
    );
  });

  test("a header that lacks a mapped column shows what was expected and what came", async () => {
    const run = await expectFailedRun(
      () => server.file("/ventes.csv", "Date,ID Reference produit,Quantité,ID Magasin\r\n2023-06-26,REF001,1,1"),
      /E_HEADER http:\/\/127\.0\.0\.1:\d+\/ventes\.csv: the header does not have the expected columns: missing "ID Référence produit" \(for sales\.product_id\) \(did you mean "ID Reference produit"\?\)/,
    );
    expect(run.stderr).toContain('got ["Date","ID Reference produit","Quantité","ID Magasin"]');
    // why: the fix is either in the file or in the mapping; the message says where the mapping is.
    const lines = readFileSync(ws.path("pipeline.yaml"), "utf8").split("\n");
    const mapping = lines.findIndex(
      (line, i) => i > lines.indexOf("  - name: load_sales") && line.startsWith('      product_id: "ID Référence produit"'),
    );
    expect(run.stderr).toContain(`(mapped at pipeline.yaml:${mapping + 1}:19)`);
  });

  test("a failing SQL step", async () => {
    await expectFailedRun(
      () =>
        writeFileSync(
          ws.path("sql/revenue_total.sql"),
          readFileSync(ws.path("sql/revenue_total.sql"), "utf8").replace(
            "coalesce(sum(sales_lines), 0)",
            "1 / 0 + abs(-9223372036854775808)",
          ),
        ),
      // why: SQLite's 1 / 0 is NULL and the overflow stops it; PostgreSQL stops at the division.
      onPostgres ? /E_SQL sql\/revenue_total\.sql: division by zero/ : /E_SQL sql\/revenue_total\.sql: integer overflow/,
    );
  });

  test("a Latin-1 file is refused with a hint, not loaded as mojibake", async () => {
    await expectFailedRun(
      () => server.file("/ventes.csv", Buffer.from("Date,ID Référence produit,Quantité,ID Magasin\r\n2023-06-26,REF001,1,1", "latin1")),
      /E_DECODE .*ventes\.csv is not valid UTF-8 \(line 1, byte 9\); if the file is Latin-1, set csv\.encoding: latin1/,
    );
  });
});

// SQLite only: a file that is not a database (a server has no file to garble).
describe.skipIf(onPostgres)("a database file that is not SQLite", () => {
  test("is refused with a clear error and left as it is", async () => {
    const garbage = Buffer.from("this is not a database, just text that someone saved here\n".repeat(100));
    writeFileSync(ws.path("output/sales.db"), garbage);
    const run = await ws.cli(["run"], env);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^error E_DB \S*output\/sales\.db is not a readable SQLite database: file is not a database\n$/);
    expect(ws.state()).toEqual(garbage);
    expect((await ws.cli(["plan"], env)).code).toBe(1);
  });
});

describe("the files a run writes fail with it", () => {
  const newSale = () =>
    server.file("/ventes.csv", readFileSync(path.join(clientFixtures, "ventes.csv"), "utf8") + "\r\n2023-06-26,REF001,1,1");
  const strays = () => execFileSync("find", [ws.dir, "-name", "*.tmp-*"], { encoding: "utf8" });

  test("a report that cannot be written fails the run before the database is saved", async () => {
    await expectFailedRun(
      () => {
        newSale();
        ws.write("blocker", "a file where the report directory should be");
      },
      /E_SAVE cannot write \S*blocker\/reports\/fiche-synthese\.md: ENOTDIR: not a directory, mkdir \S*blocker\/reports\S*; nothing was saved/,
      { REPORT_DIR: "blocker/reports" },
    );
    expect(strays()).toBe("");
    expect((await ws.cli(["run"], env)).code).toBe(0);
    expect(ws.query("SELECT count(*) FROM sales")).toBe("31");
  });

  test("a directory where a report should go fails the run before the database is saved, the other report untouched", async () => {
    const html = ws.bytes("output/fiche-synthese.html");
    await expectFailedRun(() => {
      newSale();
      rmSync(ws.path("output/fiche-synthese.md"));
      mkdirSync(ws.path("output/fiche-synthese.md"));
    }, /E_SAVE cannot write \S*output\/fiche-synthese\.md: it is a directory; nothing was saved/);
    expect(ws.bytes("output/fiche-synthese.html")).toEqual(html);
    expect(strays()).toBe("");
  });
});

describe("failed runs are kept in the history", () => {
  const journal = () => ws.path("output/sales.db.failed-runs.jsonl");

  // SQLite only (these three): the journal beside the file; a server records a failed run at once (the test after them).
  test.skipIf(onPostgres)(
    "a failed run waits in a journal beside the database, and the next run that saves records it with its error",
    async () => {
      const before = ws.state();
      server.route("/ventes.csv", (_q, r) => void r.writeHead(404, "Not Found").end());
      const failed = await ws.cli(["run"], env);
      expect(failed.code).toBe(1);
      expect(failed.stdout).toContain("this failure is kept in sales.db.failed-runs.jsonl (beside the database); the next run that saves");
      expect(ws.state()).toEqual(before);
      const kept = readFileSync(journal(), "utf8").trim().split("\n");
      expect(kept).toHaveLength(1);
      expect(JSON.parse(kept[0]!)).toMatchObject({ status: "failed", error: expect.stringMatching(/^E_FETCH GET .*ventes\.csv -> 404/) });

      server.file("/ventes.csv", readFileSync(path.join(clientFixtures, "ventes.csv")));
      const next = await ws.cli(["run"], env);
      expect(next.code).toBe(0);
      expect(next.stdout).toContain("recorded 1 earlier failed run(s) in pipeline_runs");
      expect(existsSync(journal())).toBe(false);
      const db = ws.path("output/sales.db");
      expect(sqlite(db, "SELECT run_id, status, error IS NULL FROM pipeline_runs ORDER BY run_id")).toBe(
        ["1|succeeded|1", "2|failed|0", "3|succeeded|1"].join("\n"),
      );
      expect(sqlite(db, "SELECT error FROM pipeline_runs WHERE run_id = 2")).toMatch(/^E_FETCH GET .*ventes\.csv -> 404 Not Found/);
      // The steps that ran keep their detail as in a successful run; the failed one keeps its error.
      expect(sqlite(db, "SELECT detail FROM pipeline_run_steps WHERE run_id = 2 AND step = 'load_products'")).toMatch(/^source /);
      expect(sqlite(db, "SELECT detail FROM pipeline_run_steps WHERE run_id = 2 AND step = 'load_sales'")).toMatch(
        /ventes\.csv -> 404 Not Found/,
      );
      expect(sqlite(db, "SELECT step, status FROM pipeline_run_steps WHERE run_id = 2 ORDER BY step_index")).toBe(
        ["load_products|unchanged", "load_stores|unchanged", "load_city_regions|unchanged", "load_sales|error"].join("\n"),
      );
      expect(sqlite(db, "PRAGMA integrity_check; PRAGMA foreign_key_check;")).toBe("ok");
    },
  );

  test.skipIf(onPostgres)("failures are recorded even when the sources have not changed since, and only once", async () => {
    const sql = ws.path("sql/revenue_total.sql");
    writeFileSync(sql, readFileSync(sql, "utf8").replace("coalesce(sum(sales_lines), 0)", "1 / 0 + abs(-9223372036854775808)"));
    await ws.cli(["run"], env);
    await ws.cli(["run"], env);
    expect(readFileSync(journal(), "utf8").trim().split("\n")).toHaveLength(2);
    const kept = readFileSync(journal());
    writeFileSync(sql, readFileSync(path.join(clientPipeline, "sql/revenue_total.sql")));
    const next = await ws.cli(["run"], env);
    expect(next.code).toBe(0);
    expect(next.stdout).toContain("recorded 2 earlier failed run(s)");
    // A crash between saving the database and emptying the journal leaves both: nothing is recorded twice.
    writeFileSync(journal(), kept);
    const again = await ws.cli(["run"], env);
    expect(again.code).toBe(0);
    expect(again.stdout).toContain("nothing changed since run 4");
    expect(existsSync(journal())).toBe(false);
    expect(ws.query("SELECT group_concat(status, ' ') FROM pipeline_runs ORDER BY run_id")).toBe("succeeded failed failed succeeded");
  });

  test.skipIf(onPostgres)("a line cut short in the journal is skipped with a note, the rest recorded", async () => {
    server.route("/ventes.csv", (_q, r) => void r.writeHead(404, "Not Found").end());
    await ws.cli(["run"], env);
    writeFileSync(journal(), readFileSync(journal(), "utf8") + '{"startedAt":"2026-');
    server.file("/ventes.csv", readFileSync(path.join(clientFixtures, "ventes.csv")));
    const next = await ws.cli(["run"], env);
    expect(next.code).toBe(0);
    expect(next.stdout).toContain("skipped 1 unreadable line(s) of");
    expect(next.stdout).toContain("recorded 1 earlier failed run(s)");
    expect(ws.query("SELECT count(*) FROM pipeline_runs WHERE status = 'failed'")).toBe("1");
  });

  test.skipIf(!onPostgres)(
    "on a server, a failed run is recorded at once with its error and its steps, every other table as it was",
    async () => {
      const before = ws.state();
      server.route("/ventes.csv", (_q, r) => void r.writeHead(404, "Not Found").end());
      const failed = await ws.cli(["run"], env);
      expect(failed.code).toBe(1);
      expect(failed.stdout).toContain("this failure is recorded in pipeline_runs");
      expect(ws.state()).toEqual(before);
      expect(ws.query("SELECT status, error IS NULL FROM pipeline_runs ORDER BY run_id")).toBe("succeeded|1\nfailed|0");
      expect(ws.query("SELECT error FROM pipeline_runs WHERE status = 'failed'")).toMatch(/^E_FETCH GET .*ventes\.csv -> 404 Not Found/);
      const steps =
        "SELECT step, status FROM pipeline_run_steps WHERE run_id = (SELECT max(run_id) FROM pipeline_runs) ORDER BY step_index";
      expect(ws.query(steps)).toBe(
        ["load_products|unchanged", "load_stores|unchanged", "load_city_regions|unchanged", "load_sales|error"].join("\n"),
      );
      server.file("/ventes.csv", readFileSync(path.join(clientFixtures, "ventes.csv")));
      const next = await ws.cli(["run"], env);
      expect(next.code, next.stderr).toBe(0);
      expect(next.stdout).toContain("nothing changed since run 1");
      expect(ws.query("SELECT status FROM pipeline_runs ORDER BY run_id")).toBe("succeeded\nfailed");
    },
  );

  test("a database written before pipeline_runs had its error column gets it added, rows kept", async () => {
    ws.query("ALTER TABLE pipeline_runs DROP COLUMN error");
    const before = ws.state();
    const plan = await ws.cli(["run", "--dry-run"], env);
    expect(plan.stdout).toContain("would add columns: pipeline_runs.error");
    expect(ws.state()).toEqual(before);
    const run = await ws.cli(["run"], env);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain("added the column(s) pipeline_runs.error");
    expect(ws.query("SELECT run_id, status FROM pipeline_runs ORDER BY run_id")).toBe("1|succeeded\n2|succeeded");
    expect((await ws.cli(["run"], env)).stdout).toContain("nothing changed since run 2");
  });

  test("a stored engine table that differs in more than a missing last column is still refused", async () => {
    ws.query("ALTER TABLE pipeline_runs DROP COLUMN error; ALTER TABLE pipeline_runs DROP COLUMN rejected_rows");
    const before = ws.state();
    const run = await ws.cli(["run"], env);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(
      /E_DRIFT table pipeline_runs in the database does not match its declaration: column rejected_rows is declared but not stored/,
    );
    expect(ws.state()).toEqual(before);
  });
});
