import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { serveClientData, type ClientServer } from "./helpers/client-server.js";
import { postgresBinDir } from "./helpers/postgres.js";
import { spawnCli, waitFor } from "./helpers/spawn-cli.js";
import { clientFixtures, Workspace } from "./helpers/workspace.js";

// Faults only a server has: outside sessions holding locks, a runner stopped while it waits, objects
// planted on the server. Runs in the postgres vitest project (its cluster: tests/helpers/postgres-global.ts).

let client: ClientServer;
let ws: Workspace;
let env: Record<string, string>;
const outside: ChildProcess[] = [];
beforeEach(async () => {
  client = await serveClientData();
  ({ ws, env } = client);
});
afterEach(async () => {
  endOutsideSessions();
  await client.close();
});

/** Ends the outside sessions: their psql processes, and their server processes (a pg_sleep does not notice its client has gone). */
function endOutsideSessions(): void {
  for (const child of outside.splice(0)) child.kill("SIGKILL");
  q(
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'psql' AND pid <> pg_backend_pid() AND datname = current_database()",
  );
}

const q = (sql: string) => ws.query(sql);
const fixture = (file: string) => readFileSync(path.join(clientFixtures, file), "utf8");
/** The runner's own connections still open on the server. */
const runnerConnections = () => q("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'pipeline-runner%'");

/** An outside session (the real psql) that runs `sql` and then holds its transaction open until killed. */
function outsideSession(sql: string): ChildProcess {
  const child = spawn(path.join(postgresBinDir()!, "psql"), ["-X", "-q", "-d", ws.databaseUrl(), "-c", `${sql}; SELECT pg_sleep(120)`], {
    stdio: "ignore",
  });
  outside.push(child);
  return child;
}

/** Waits until an outside session holds a lock of `locktype` (granted). */
async function outsideHolds(locktype: string): Promise<void> {
  await waitFor(
    () =>
      q(
        `SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE l.locktype = '${locktype}' AND l.granted AND a.application_name = 'psql'`,
      ) !== "0",
    20_000,
  );
}

describe("a runner waiting on the server", () => {
  test("SIGTERM while waiting for the run lock exits 130 at once and leaves no connection", async () => {
    expect((await ws.cli(["run"], env)).code).toBe(0);
    outsideSession("SELECT pg_advisory_lock(1346981957, 1)");
    await outsideHolds("advisory");
    const run = spawnCli(ws.argv(["run", "--lock-timeout", "60s"]), ws.dir, env);
    await waitFor(
      () => q("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND application_name LIKE 'pipeline-runner%'") === "1",
      20_000,
    );
    const stopped = Date.now();
    run.child.kill("SIGTERM");
    const done = await run.done;
    expect(Date.now() - stopped).toBeLessThan(5_000);
    expect(done.code, done.stderr).toBe(130);
    expect(done.stderr).toContain("interrupted while waiting for the database lock; nothing was changed");
    await waitFor(() => runnerConnections() === "0", 5_000);
    expect(q("SELECT status FROM pipeline_runs ORDER BY run_id")).toBe("succeeded");
  }, 60_000);

  test("a table locked by an outside session fails the run within the lock timeout, naming the table; nothing is saved", async () => {
    expect((await ws.cli(["run"], env)).code).toBe(0);
    const before = ws.state();
    outsideSession("BEGIN; LOCK TABLE sales IN ACCESS EXCLUSIVE MODE");
    await outsideHolds("relation");
    client.server.file("/ventes.csv", fixture("ventes.csv") + "\r\n2023-06-26,REF001,1,1");
    const started = Date.now();
    const run = await ws.cli(["run", "--lock-timeout", "2s"], env);
    expect(Date.now() - started).toBeLessThan(15_000);
    expect(run.code).toBe(3);
    expect(run.stderr).toMatch(
      /E_LOCK postgres:\/\/\*\*\*@\S+: table sales is locked by another session \("psql" from 127\.0\.0\.1, server process \d+, AccessExclusiveLock\); waited 2 s \(--lock-timeout\)\. Nothing was saved\./,
    );
    expect(run.stdout).toContain("this failure is recorded in pipeline_runs");
    // why: reading sales waits for the outside session too; it ends first.
    endOutsideSessions();
    expect(ws.state()).toEqual(before);
    expect(q("SELECT status FROM pipeline_runs ORDER BY run_id")).toBe("succeeded\nfailed");
    await waitFor(() => runnerConnections() === "0", 5_000);
  }, 60_000);
});

describe("a run's connection", () => {
  test("a run holds one connection to the server: its run lock and its transaction share it", async () => {
    expect((await ws.cli(["run"], env)).code).toBe(0);
    outsideSession("BEGIN; LOCK TABLE sales IN ACCESS EXCLUSIVE MODE");
    await outsideHolds("relation");
    client.server.file("/ventes.csv", fixture("ventes.csv") + "\r\n2023-06-26,REF001,1,1");
    const run = spawnCli(ws.argv(["run", "--lock-timeout", "60s"]), ws.dir, env);
    await waitFor(
      () => q("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND application_name LIKE 'pipeline-runner%'") === "1",
      20_000,
    );
    expect(runnerConnections()).toBe("1");
    expect(
      q(
        `SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
         WHERE l.locktype = 'advisory' AND l.granted AND a.application_name LIKE 'pipeline-runner%' AND a.wait_event_type = 'Lock'`,
      ),
    ).toBe("1");
    endOutsideSessions();
    const done = await run.done;
    expect(done.code, done.stderr).toBe(0);
    expect(q("SELECT count(*) FROM sales WHERE date = '2023-06-26'")).toBe("1");
    await waitFor(() => runnerConnections() === "0", 5_000);
    expect(q("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")).toBe("0");
  }, 60_000);
});

describe("foreign keys of a first load", () => {
  test("tables the run created are loaded without their foreign keys, which are back, checked, when it commits", async () => {
    expect((await ws.cli(["run"], env)).code).toBe(0);
    expect(
      q(
        `SELECT conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint
         WHERE contype = 'f' AND conrelid = 'sales'::regclass ORDER BY conname`,
      ),
    ).toBe(
      "sales_product_id_fkey FOREIGN KEY (product_id) REFERENCES products(product_id) DEFERRABLE INITIALLY DEFERRED\n" +
        "sales_store_id_fkey FOREIGN KEY (store_id) REFERENCES stores(store_id) DEFERRABLE INITIALLY DEFERRED",
    );
    expect(() => q("INSERT INTO sales (date, product_id, store_id, quantity) VALUES ('2023-06-26', 'NOPE', 1, 1)")).toThrow(
      /violates foreign key constraint "sales_product_id_fkey"/,
    );
  }, 60_000);
});

describe("reports of a database on a server", () => {
  test("a run from another working directory replaces the reports the database wrote", async () => {
    const first = await spawnCli(ws.argv(["run"]), ws.dir, env).done;
    expect(first.code, first.stderr).toBe(0);
    client.server.file("/ventes.csv", fixture("ventes.csv") + "\r\n2023-06-26,REF001,1,1");
    const elsewhere = await spawnCli(ws.argv(["run", "-c", "../pipeline.yaml"]), ws.path("sql"), env).done;
    expect(elsewhere.stderr).toBe("");
    expect(elsewhere.code).toBe(0);
    // why: 526 878 cents plus one REF001 sale at 49,99 €, formatted as the sheet does (narrow no-break space, no-break space).
    expect(readFileSync(ws.path("output/fiche-synthese.md"), "utf8")).toContain("5\u202f318,77\u00a0€");
  }, 60_000);
});

describe("objects planted on the server", () => {
  test.each([
    [
      "a rule that swallows inserts",
      "CREATE RULE swallow AS ON INSERT TO sales DO INSTEAD NOTHING",
      /rule "swallow" on table sales \(DROP RULE "swallow" ON "sales";\)/,
    ],
    [
      "an index the runner did not create",
      "CREATE INDEX planted_index ON sales (quantity)",
      /index "planted_index" on table sales, not created by the runner \(DROP INDEX "planted_index";\)/,
    ],
  ])("%s on a declared table is refused (E_DRIFT) naming it and its DROP; nothing is written", async (_name, plant, named) => {
    expect((await ws.cli(["run"], env)).code).toBe(0);
    q(plant);
    const before = ws.state();
    client.server.file("/ventes.csv", fixture("ventes.csv") + "\r\n2023-06-26,REF001,1,1");
    const run = await ws.cli(["run"], env);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/E_DRIFT postgres:\/\/\*\*\*@\S+ holds 1 object\(s\) the runner did not create/);
    expect(run.stderr).toMatch(named);
    expect(ws.state()).toEqual(before);
  });

  test("a view in place of a declared table is refused (E_DRIFT) naming it and its DROP VIEW; nothing is created", async () => {
    q("CREATE VIEW products AS SELECT 'REF001'::text AS product_id, 'x'::text AS name, 1::bigint AS price_cents, 1::bigint AS stock");
    const run = await ws.cli(["run"], env);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(
      /E_DRIFT .* holds 1 object\(s\) .*view "products" in place of the declared table products \(DROP VIEW "products";\)/,
    );
    expect(q("SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename NOT LIKE 'pipeline\\_%'")).toBe("0");
  });
});

/** `rows` sales lines with keys of their own (from 2000-01-01, the checks' first day, `batch` moving them by 600 days), after the client's. */
function moreSales(rows: number, batch: number): string {
  const lines: string[] = [];
  const day = new Date(Date.UTC(2000, 0, 1 + batch * 600));
  for (let i = 0; i < rows; i++) {
    if (i > 0 && i % 35 === 0) day.setUTCDate(day.getUTCDate() + 1);
    lines.push(`${day.toISOString().slice(0, 10)},REF00${(i % 5) + 1},${(i % 8) + 1},${(Math.floor(i / 5) % 7) + 1}`);
  }
  return fixture("ventes.csv") + "\r\n" + lines.join("\r\n");
}

describe("SIGKILL at random moments of a large load", () => {
  // why: each kill loads a batch of its own dates, and the client's checks allow 2000-01-01 to the client's first sale: 12 batches at most.
  const kills = Math.min(Number(process.env["RELIABILITY_KILLS"] ?? 4), 12);
  const rows = 20_000;

  test(
    `every table as before or after the run, no connection left, and the next run works (${kills} kills)`,
    async () => {
      client.server.file("/ventes.csv", moreSales(rows, 0));
      const started = Date.now();
      const first = await spawnCli(ws.argv(["run"]), ws.dir, env).done;
      expect(first.code, first.stderr).toBe(0);
      const duration = Date.now() - started;
      const seen = { before: 0, after: 0 };
      for (let batch = 1; batch <= kills; batch++) {
        const before = Number(q("SELECT count(*) FROM sales"));
        const runs = q("SELECT count(*) FROM pipeline_runs");
        client.server.file("/ventes.csv", moreSales(rows, batch));
        const run = spawnCli(ws.argv(["run"]), ws.dir, env);
        // why: up to 1.4 times an uninterrupted run, so that kills land in the load, in the commit, and some after it.
        await new Promise((resolve) => setTimeout(resolve, Math.random() * duration * 1.4));
        run.child.kill("SIGKILL");
        await run.done;
        await waitFor(() => runnerConnections() === "0", 10_000);
        const count = Number(q("SELECT count(*) FROM sales"));
        expect([before, before + rows]).toContain(count);
        seen[count === before ? "before" : "after"]++;
        if (count === before) expect(q("SELECT count(*) FROM pipeline_runs WHERE status = 'succeeded'")).toBe(runs);
        expect(q("SELECT count(*) FROM pipeline_rejected_rows")).toBe("0");
      }
      console.log(
        `SIGKILL on PostgreSQL: ${kills} kills over a ${duration} ms run: ${seen.before} left the state before, ${seen.after} after`,
      );
      client.server.file("/ventes.csv", moreSales(rows, kills + 1));
      const before = Number(q("SELECT count(*) FROM sales"));
      const next = await ws.cli(["run", "--lock-timeout", "10s"], env);
      expect(next.code, next.stderr).toBe(0);
      expect(Number(q("SELECT count(*) FROM sales"))).toBeGreaterThanOrEqual(before + rows);
      expect(q("SELECT sum(revenue_cents) FROM sales_by_region")).toBe(q("SELECT revenue_cents FROM revenue_total"));
    },
    60_000 + kills * 30_000,
  );
});
