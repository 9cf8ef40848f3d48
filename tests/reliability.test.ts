import { execFile, execFileSync, spawnSync } from "node:child_process";
import { DatabaseSync } from "node:sqlite";
import { promisify } from "node:util";
import { existsSync, readdirSync, readFileSync, utimesSync, writeFileSync } from "node:fs";
import { hostname } from "node:os";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { acquireLock, removeLocksLeftAside } from "../engine/db/lock.js";
import { serveClientData } from "./helpers/client-server.js";
import { median } from "./helpers/median.js";
import type { TestServer } from "./helpers/http-server.js";
import { spawnCli, waitFor } from "./helpers/spawn-cli.js";
import { clientFixtures, sqlite, testEngine, Workspace } from "./helpers/workspace.js";

let server: TestServer;
let ws: Workspace;
let env: Record<string, string>;
let close: () => Promise<void>;
const sales = readFileSync(path.join(clientFixtures, "ventes.csv"), "utf8");

beforeEach(async () => {
  ({ server, ws, env, close } = await serveClientData());
});
afterEach(() => close());

const db = () => ws.path("output/sales.db");
const lockFile = () => `${db()}.lock`;

/** Serves the sales file slowly: headers at once, the body after `ms`. */
function slowSales(ms: number, body = sales): void {
  server.route("/ventes.csv", (_q, r) => {
    r.writeHead(200, { "content-type": "text/csv" });
    setTimeout(() => r.end(body), ms);
  });
}

describe("one writer at a time", () => {
  test("a run waits for the lock, then gives up with exit 3 and a clear error", async () => {
    expect((await ws.cli(["run"], env)).code).toBe(0);
    const before = ws.bytes();
    writeFileSync(lockFile(), JSON.stringify({ pid: process.pid, host: hostname(), started_at: "2026-11-22T10:00:00.000Z" }));
    const run = await ws.cli(["run", "--lock-timeout", "300ms"], env);
    expect(run.code).toBe(3);
    expect(run.stderr).toMatch(
      /E_LOCK \S*sales\.db is in use by another run \(pid \d+ on \S+, since 2026-11-22T10:00:00\.000Z\); waited 0 s \(--lock-timeout\)\. Nothing was changed\./,
    );
    expect(ws.bytes()).toEqual(before);
    expect(existsSync(lockFile())).toBe(true);
  });

  test("a lock left by a dead process on this host is taken over", async () => {
    const dead = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"], { encoding: "utf8" });
    ws.write("output/sales.db.lock", JSON.stringify({ pid: Number(dead.stdout), host: hostname(), started_at: "x" }));
    const run = await ws.cli(["run", "--lock-timeout", "0s"], env);
    expect(run.code).toBe(0);
    expect(existsSync(lockFile())).toBe(false);
  });

  test("a lock whose holder stopped its heartbeat (another container, say) is taken over", async () => {
    ws.write("output/sales.db.lock", JSON.stringify({ pid: 1, host: "another-container", started_at: "x" }));
    const old = new Date(Date.now() - 60_000);
    utimesSync(lockFile(), old, old);
    expect((await ws.cli(["run", "--lock-timeout", "0s"], env)).code).toBe(0);
  });

  test.each([
    ["empty", ""],
    ["cut short", '{"pid": 12, "ho'],
  ])("an %s lock file is taken over once not touched for the heartbeat timeout, and waited for before", async (_what, text) => {
    ws.write("output/sales.db.lock", text);
    const fresh = await ws.cli(["run", "--lock-timeout", "300ms"], env);
    expect(fresh.code).toBe(3);
    expect(fresh.stderr).toContain("the lock file holds no readable record");
    const old = new Date(Date.now() - 60_000);
    utimesSync(lockFile(), old, old);
    const run = await ws.cli(["run", "--lock-timeout", "0s"], env);
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    expect(existsSync(lockFile())).toBe(false);
  });

  test("two runs started together both land: neither loses the other's rows", async () => {
    expect((await ws.cli(["run"], env)).code).toBe(0);
    server.file("/a.csv", sales + "\r\n2023-06-26,REF001,1,1");
    server.file("/b.csv", sales + "\r\n2023-06-27,REF002,2,2");
    const a = spawnCli(["run"], ws.dir, { ...env, SALES_URL: server.url("/a.csv") });
    const b = spawnCli(["run"], ws.dir, { ...env, SALES_URL: server.url("/b.csv") });
    const [ra, rb] = await Promise.all([a.done, b.done]);
    expect([ra.code, rb.code]).toEqual([0, 0]);
    expect(sqlite(db(), "SELECT date FROM sales WHERE date > '2023-06-25' ORDER BY date")).toBe("2023-06-26\n2023-06-27");
    expect(sqlite(db(), "SELECT count(*) FROM pipeline_runs")).toBe("3");
  });
});

describe("someone else wrote the file", () => {
  test.skipIf(testEngine !== "sqljs")("a change made with the sqlite3 CLI during a run is kept, and the run says so", async () => {
    expect((await ws.cli(["run"], env)).code).toBe(0);
    slowSales(1500, sales + "\r\n2023-06-26,REF001,1,1");
    const run = spawnCli(["run"], ws.dir, env);
    await waitFor(() => run.output().includes("load_sales"));
    execFileSync("sqlite3", [db(), "UPDATE stores SET employees = 99 WHERE store_id = 1"]);
    const result = await run.done;
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("E_CHANGED");
    expect(result.stderr).toContain("was changed by another program while this run was in progress");
    expect(sqlite(db(), "SELECT employees FROM stores WHERE store_id = 1; SELECT count(*) FROM sales;")).toBe("99\n30");
  });

  test.skipIf(testEngine !== "sqljs")(
    "sqljs: a sqlite3 CLI write between the run's reads and its load of the image is refused at that load, before any row is written",
    async () => {
      expect((await ws.cli(["run"], env)).code).toBe(0);
      // why: the run reads the stored state (sources, history) through node:sqlite, then waits on the sales; the write lands there.
      slowSales(1500, sales + "\r\n2023-06-26,REF001,1,1");
      const run = spawnCli(["run", "--json"], ws.dir, env);
      await waitFor(() => server.requests("/ventes.csv").length === 2);
      execFileSync("sqlite3", [db(), "UPDATE stores SET employees = 99 WHERE store_id = 1"]);
      const result = await run.done;
      expect(result.code).toBe(1);
      const report = JSON.parse(result.stdout) as {
        error: { code: string };
        steps: { name: string; status: string; error?: { code: string } }[];
      };
      expect(report.error.code).toBe("E_CHANGED");
      // why: refused when the sales step readied the database for its rows, not at the save after every step ran on a newer image.
      expect(report.steps.find((step) => step.name === "load_sales")).toMatchObject({ status: "error", error: { code: "E_CHANGED" } });
      expect(report.steps.filter((step) => step.status === "not_executed").length).toBeGreaterThan(0);
      expect(sqlite(db(), "SELECT employees FROM stores WHERE store_id = 1; SELECT count(*) FROM sales; PRAGMA integrity_check;")).toBe(
        "99\n30\nok",
      );
    },
  );

  test.skipIf(testEngine !== "native")(
    "native: a sqlite3 CLI write during a run waits for the run's commit, and both are kept",
    async () => {
      expect((await ws.cli(["run"], env)).code).toBe(0);
      slowSales(1500, sales + "\r\n2023-06-26,REF001,1,1");
      const run = spawnCli(["run"], ws.dir, env);
      await waitFor(() => run.output().includes("load_sales"));
      const write = promisify(execFile)("sqlite3", ["-cmd", ".timeout 20000", db(), "UPDATE stores SET employees = 99 WHERE store_id = 1"]);
      const result = await run.done;
      await write;
      expect(result.code, result.stderr).toBe(0);
      expect(sqlite(db(), "SELECT employees FROM stores WHERE store_id = 1; SELECT count(*) FROM sales; PRAGMA integrity_check;")).toBe(
        "99\n31\nok",
      );
    },
  );

  test.skipIf(testEngine !== "sqljs").each([
    ["-wal", "a write-ahead log from another SQLite program"],
    ["-journal", "a rollback journal"],
  ])("a database with a %s file is not loaded", async (suffix, message) => {
    expect((await ws.cli(["run"], env)).code).toBe(0);
    const before = ws.bytes();
    ws.write(`output/sales.db${suffix}`, "not empty");
    const run = await ws.cli(["run"], env);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(message);
    expect(ws.bytes()).toEqual(before);
  });

  test.skipIf(testEngine !== "native")(
    "native: a database in WAL mode with committed changes still in its -wal is run in place, keeping them",
    async () => {
      expect((await ws.cli(["run"], env)).code).toBe(0);
      const other = new DatabaseSync(db());
      try {
        other.exec("PRAGMA journal_mode = WAL; UPDATE stores SET employees = 77 WHERE store_id = 1;");
        expect(readFileSync(`${db()}-wal`).byteLength).toBeGreaterThan(0);
        server.route("/ventes.csv", (_q, r) => r.writeHead(200).end(sales + "\r\n2023-06-26,REF001,1,1"));
        const run = await ws.cli(["run"], env);
        expect(run.code, run.stderr).toBe(0);
      } finally {
        other.close();
      }
      expect(
        sqlite(
          db(),
          "PRAGMA journal_mode; SELECT employees FROM stores WHERE store_id = 1; SELECT count(*) FROM sales; PRAGMA integrity_check;",
        ),
      ).toBe("wal\n77\n31\nok");
    },
  );
});

describe("crash safety", () => {
  test("SIGTERM during a run stops it cleanly: exit 130, file intact, lock released", async () => {
    expect((await ws.cli(["run"], env)).code).toBe(0);
    const before = ws.bytes();
    slowSales(5000);
    const run = spawnCli(["run"], ws.dir, env);
    await waitFor(() => run.output().includes("load_sales"));
    run.child.kill("SIGTERM");
    const result = await run.done;
    expect(result.code).toBe(130);
    expect(result.stderr).toContain("SIGTERM: stopping; the database file stays as it was");
    expect(result.stderr).toMatch(/E_ABORTED interrupted/);
    expect(ws.bytes()).toEqual(before);
    expect(existsSync(lockFile())).toBe(false);
    const kept = JSON.parse(readFileSync(ws.path("output/sales.db.failed-runs.jsonl"), "utf8")) as { status: string; error: string };
    expect(kept).toMatchObject({
      status: "interrupted",
      error: expect.stringMatching(/^E_ABORTED interrupted while fetching .*ventes\.csv/),
    });
  });

  test("temporary files left by a crash while saving are removed by the next run", async () => {
    expect((await ws.cli(["run"], env)).code).toBe(0);
    ws.write("output/.sales.db.tmp-0123456789ab", "half a database");
    ws.write("output/.fiche-synthese.html.tmp-0123456789ab", "a report staged, never put in place");
    // why: this run changes nothing and writes no report; it removes the strays all the same.
    expect((await ws.cli(["run"], env)).stdout).toContain("nothing changed");
    expect(readdirSync(ws.path("output")).filter((n) => n.includes(".tmp-"))).toEqual([]);
  });

  test("a stale lock moved aside by a run killed while taking it over is removed by the next run", async () => {
    // why: SIGKILL between the take-over's rename and its rm left exactly this in CI (2026-11-23).
    ws.write("output/sales.db.lock.stale-09e7dba3", JSON.stringify({ pid: 999_999, host: hostname(), started_at: "x" }) + "\n");
    expect((await ws.cli(["run"], env)).code).toBe(0);
    expect(readdirSync(ws.path("output")).filter((n) => n.includes(".lock"))).toEqual([]);
  });

  test("a lock moved aside holding the current holder's record is left for its mover to put back", async () => {
    // why: a run that saw a stale lock may move the fresh lock of the run that took over first, then link it back.
    const lock = await acquireLock(db(), { timeoutMs: 0 });
    try {
      writeFileSync(`${lockFile()}.stale-aaaaaaaa`, lock.holderText);
      writeFileSync(`${lockFile()}.stale-bbbbbbbb`, JSON.stringify({ pid: 1, host: "gone", started_at: "x" }) + "\n");
      expect(await removeLocksLeftAside(db(), lock)).toBe(1);
      expect(readdirSync(ws.path("output")).filter((n) => n.includes(".stale-"))).toEqual(["sales.db.lock.stale-aaaaaaaa"]);
    } finally {
      await lock.release();
    }
  });
});

describe("long-running mode", () => {
  test("run --every keeps going through a source that is down for a while", async () => {
    let hits = 0;
    server.route("/ventes.csv", (_q, r) => {
      hits++;
      if (hits === 2) r.writeHead(404, "Not Found").end();
      else r.writeHead(200).end(hits === 1 ? sales : sales + "\r\n2023-06-26,REF001,1,1");
    });
    const result = await ws.cli(["run", "--every", "50ms", "--max-runs", "3", "--json"], env);
    const runs = result.stdout
      .trimEnd()
      .split("\n")
      .map((line) => JSON.parse(line) as { ok: boolean; error?: { code: string } });
    expect(runs.map((r) => r.ok)).toEqual([true, false, true]);
    expect(runs[1]!.error?.code).toBe("E_FETCH");
    expect(result.code).toBe(0);
    expect(sqlite(db(), "SELECT count(*) FROM sales")).toBe("31");
  });
});

describe.skipIf(!process.env["RELIABILITY_SOAK"])("soak (RELIABILITY_SOAK=1; .ci/run sets it)", () => {
  /** A sales file that gains a row every 10th request, so loads happen and not only 304s. */
  function growingSales(): void {
    let hits = 0;
    server.route("/ventes.csv", (_q, r) => {
      hits++;
      const rows = Array.from(
        { length: Math.floor(hits / 10) },
        (_, i) => `\r\n2024-01-${String((i % 28) + 1).padStart(2, "0")},REF00${(i % 5) + 1},1,${(i % 7) + 1}`,
      );
      r.writeHead(200).end(sales + rows.join(""));
    });
  }

  test(
    "no run leaves live objects behind: the heap and buffers after a full GC are flat over 1000 runs",
    { timeout: 300_000 },
    async () => {
      setFlagsFromString("--expose-gc");
      const gc = runInNewContext("gc") as () => void;
      growingSales();
      const heapAfterGc = (): number => {
        gc();
        gc();
        const memory = process.memoryUsage();
        return memory.heapUsed + memory.external;
      };
      const heap: number[] = [];
      for (let run = 1; run <= 1000; run++) {
        expect((await ws.cli(["run"], env)).code).toBe(0);
        if (run % 100 === 0) heap.push(heapAfterGc());
      }
      const [first, last] = [heap[0]!, heap.at(-1)!];
      console.log(
        `soak: live heap and buffers after GC ${(first / 1e6).toFixed(1)} MB at run 100, ${(last / 1e6).toFixed(1)} MB at run 1000 (+${((last - first) / 1e6).toFixed(1)} MB)`,
      );
      // why: keeping the database image of each saving run (one run in ten here) was tried: +14 MB by run 1000.
      expect(last - first).toBeLessThan(5e6);
    },
  );

  test("run --every: 300 runs in one process all succeed, RSS bounded", { timeout: 300_000 }, async () => {
    growingSales();
    const run = spawnCli(["run", "--every", "1ms", "--max-runs", "300", "--json"], ws.dir, env);
    const result = await run.done;
    expect(result.code).toBe(0);
    const runs = result.stdout
      .trimEnd()
      .split("\n")
      .map((line) => JSON.parse(line) as { ok: boolean; rssBytes: number });
    expect(runs).toHaveLength(300);
    expect(runs.every((r) => r.ok)).toBe(true);
    const early = median(runs.slice(40, 60).map((r) => r.rssBytes));
    const late = median(runs.slice(280, 300).map((r) => r.rssBytes));
    console.log(
      `soak: RSS ${Math.round(early / 1e6)} MB around run 50, ${Math.round(late / 1e6)} MB around run 290 (${(late / early).toFixed(2)}x)`,
    );
    // why: the runner collects garbage between runs (engine/main.ts runEvery): left to V8's own pace, RSS
    // climbed 1.3-1.6x here (native memory held by objects V8 does not weigh); collected, 1.03-1.09x.
    // The test above is the leak check for live objects.
    expect(late / early).toBeLessThan(1.25);
  });
});
