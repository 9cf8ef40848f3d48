import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterEach, beforeAll, beforeEach, describe, expect, test } from "vitest";
import { median } from "./helpers/median.js";
import { spawnCli } from "./helpers/spawn-cli.js";
import { clientFileEnv, clientFixtures, sqlite, testEngine, Workspace } from "./helpers/workspace.js";

let ws: Workspace;
const env = { ...clientFileEnv, REPORT_DIR: "reports" };
const header = "Date,ID Référence produit,Quantité,ID Magasin";
const sales = readFileSync(path.join(clientFixtures, "ventes.csv"), "utf8");

beforeEach(() => {
  ws = new Workspace();
  ws.copyClientFiles();
});
afterEach(() => ws.remove());

type Expectation = { code: 0 | 1; stderr?: RegExp; rejected?: string; stored?: string };

const badSales: [name: string, body: string | Buffer, expected: Expectation][] = [
  [
    "a wrong delimiter",
    header.replaceAll(",", ";") + "\r\n2023-06-26;REF001;1;1",
    { code: 1, stderr: /E_HEADER .*missing "Date".*got \["Date;ID Référence produit;Quantité;ID Magasin"\]/ },
  ],
  [
    "ragged rows",
    `${header}\r\n2023-06-26,REF001,1\r\n2023-06-27,REF001,1,1,9\r\n2023-06-28,REF001,1,1`,
    { code: 0, rejected: "2|expected 4 fields as in the header, found 3\n3|expected 4 fields as in the header, found 5", stored: "1" },
  ],
  [
    "an unterminated quote",
    `${header}\r\n2023-06-26,"REF001,1,1\r\n2023-06-27,REF001,1,1`,
    { code: 1, stderr: /E_CSV \S+ line \d+: .*quote/ },
  ],
  [
    "binary garbage",
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0xff, 0xfe, 0x01]),
    { code: 1, stderr: /E_DECODE bad\.csv looks like a binary file, not CSV text \(a NUL byte at byte 8\)/ },
  ],
  [
    "Latin-1 text",
    Buffer.from(`${header}\r\n2023-06-26,REF001,1,1`, "latin1"),
    { code: 1, stderr: /E_DECODE .*set csv\.encoding: latin1/ },
  ],
  ["an empty file", "", { code: 1, stderr: /E_HEADER \S+ is empty: no header line/ }],
  ["a header only", header, { code: 0, stored: "0" }],
  ["a duplicated header", `${header},Quantité\r\n2023-06-26,REF001,1,1,2`, { code: 1, stderr: /E_HEADER .*"Quantité" appears twice/ }],
  [
    "a missing header",
    "2023-06-26,REF001,1,1\r\n2023-06-27,REF001,1,1",
    { code: 1, stderr: /E_HEADER .*missing "Date" \(for sales\.date\)/ },
  ],
  ["extra columns", `${header},Commentaire\r\n2023-06-26,REF001,1,1,"rien, vraiment"`, { code: 0, stored: "1" }],
  ["a UTF-8 BOM", "\uFEFF" + `${header}\r\n2023-06-26,REF001,1,1`, { code: 0, stored: "1" }],
];

describe("bad files give a clear error or rejected rows with line numbers, never a stack trace or a partial import", () => {
  test.each(badSales)("%s", async (_name, body, expected) => {
    writeFileSync(ws.path("bad.csv"), body);
    const run = await ws.cli(["run", "--db", "fresh.db"], { ...env, SALES_URL: "bad.csv" });
    expect(run.stderr).not.toMatch(/\n\s+at /);
    expect(run.code, run.stderr).toBe(expected.code);
    if (expected.stderr) expect(run.stderr).toMatch(expected.stderr);
    if (expected.code === 1) expect(existsSync(ws.path("fresh.db"))).toBe(false);
    if (expected.rejected !== undefined)
      expect(sqlite(ws.path("fresh.db"), "SELECT line, reason FROM pipeline_rejected_rows ORDER BY line")).toBe(expected.rejected);
    if (expected.stored !== undefined) expect(sqlite(ws.path("fresh.db"), "SELECT count(*) FROM sales")).toBe(expected.stored);
  });

  test("a one-megabyte field, quotes, emoji and SQL-looking text are stored verbatim", async () => {
    const big = "x".repeat(1024 * 1024);
    const names = [big, `Robert'); DROP TABLE sales;--`, 'a "quoted" name', "emoji 🛒🇫🇷", "Produit E"];
    const products =
      "Nom,ID Référence produit,Prix,Stock\r\n" + names.map((n, i) => `"${n.replaceAll('"', '""')}",REF00${i + 1},1.00,1`).join("\r\n");
    writeFileSync(ws.path("products.csv"), products);
    const run = await ws.cli(["run", "--db", "fresh.db"], { ...env, PRODUCTS_URL: "products.csv" });
    expect(run.code, run.stderr).toBe(0);
    const stored = sqlite(ws.path("fresh.db"), "SELECT json_group_array(name) FROM (SELECT name FROM products ORDER BY product_id)");
    expect(JSON.parse(stored)).toEqual(names);
    expect(sqlite(ws.path("fresh.db"), "SELECT count(*) FROM sales")).toBe("30");
  });
});

/** Whether this machine lets us mount a small tmpfs (root in a sandbox that allows it). */
function canMount(): boolean {
  const probe = path.join(process.env["TMPDIR"] ?? "/tmp", `mount-probe-${process.pid}`);
  mkdirSync(probe, { recursive: true });
  const ok = spawnSync("mount", ["-t", "tmpfs", "-o", "size=64k", "tmpfs", probe]).status === 0;
  if (ok) spawnSync("umount", [probe]);
  if (!ok) console.warn("fault-injection: cannot mount a tmpfs here (not root?); the full-disk and read-only tests are skipped");
  return ok;
}

describe("saving fails", () => {
  let mountable = false;
  beforeAll(() => {
    mountable = canMount();
  });

  test.skipIf(!canMount() && !process.env["CI"])("a full disk: clear error, the previous file intact, no temporary file left", async () => {
    expect(mountable, "CI runs as root and can mount a tmpfs").toBe(true);
    // why: each database gets its own reports; a run on another database does not replace the sheet of the first.
    expect((await ws.cli(["run", "--db", "probe.db"], { ...env, REPORT_DIR: "probe-reports" })).code).toBe(0);
    const size = statSync(ws.path("probe.db")).size;
    const mnt = ws.path("mnt");
    mkdirSync(mnt);
    execFileSync("mount", ["-t", "tmpfs", "-o", `size=${Math.ceil((size * 1.6) / 4096) * 4096}`, "tmpfs", mnt]);
    try {
      expect((await ws.cli(["run", "--db", "mnt/sales.db"], env)).code).toBe(0);
      const before = readFileSync(ws.path("mnt/sales.db"));
      writeFileSync(ws.path("more.csv"), sales + "\r\n2023-06-26,REF001,1,1");
      const run = await ws.cli(["run", "--db", "mnt/sales.db"], { ...env, SALES_URL: "more.csv" });
      expect(run.code).toBe(1);
      expect(run.stderr).toMatch(
        testEngine === "sqljs"
          ? /E_SAVE cannot save the database \S+mnt\/sales\.db: ENOSPC: no space left on device.*; the previous file is unchanged/
          : /E_SAVE cannot write the database \S+mnt\/sales\.db: the disk is full .*; its previous content is unchanged/,
      );
      expect(readFileSync(ws.path("mnt/sales.db"))).toEqual(before);
      // The temporary file is gone, which leaves room for the failure's line in the journal.
      expect(execFileSync("ls", ["-A", mnt], { encoding: "utf8" }).trim().split("\n")).toEqual([
        "sales.db",
        "sales.db.checked",
        "sales.db.failed-runs.jsonl",
      ]);
      expect(readFileSync(ws.path("mnt/sales.db.failed-runs.jsonl"), "utf8")).toMatch(
        testEngine === "sqljs"
          ? /"error":"E_SAVE cannot save the database .*ENOSPC/
          : /"error":"E_SAVE cannot write the database .*disk is full/,
      );
    } finally {
      execFileSync("umount", [mnt]);
    }
  });

  test.skipIf(!canMount() && !process.env["CI"])("a read-only directory: clear error, the previous file intact", async () => {
    const mnt = ws.path("mnt");
    mkdirSync(mnt);
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=4m", "tmpfs", mnt]);
    try {
      expect((await ws.cli(["run", "--db", "mnt/sales.db"], env)).code).toBe(0);
      const before = readFileSync(ws.path("mnt/sales.db"));
      execFileSync("mount", ["-o", "remount,ro", mnt]);
      const run = await ws.cli(["run", "--db", "mnt/sales.db"], env);
      expect(run.code).toBe(1);
      expect(run.stderr).toMatch(/E_LOCK cannot create the lock \S+mnt\/sales\.db\.lock: EROFS: read-only file system/);
      expect(readFileSync(ws.path("mnt/sales.db"))).toEqual(before);
    } finally {
      execFileSync("umount", [mnt]);
    }
  });
});

/** Sales in the client's format, `rows` of them, every (date, product, store) distinct. */
function manySales(rows: number): string {
  const lines = [header];
  const day = new Date(Date.UTC(2000, 0, 1));
  for (let i = 0; i < rows; i++) {
    if (i > 0 && i % 35 === 0) day.setUTCDate(day.getUTCDate() + 1);
    lines.push(`${day.toISOString().slice(0, 10)},REF00${(i % 5) + 1},${(i % 8) + 1},${(Math.floor(i / 5) % 7) + 1}`);
  }
  return lines.join("\r\n");
}

describe("SIGKILL at random moments of a large load", () => {
  const kills = Number(process.env["RELIABILITY_KILLS"] ?? 12);

  test(
    `leaves a database that passes integrity_check and holds the state before or after the run (${kills} kills)`,
    { timeout: 600_000 },
    async () => {
      expect((await ws.cli(["run"], env)).code).toBe(0);
      const baseline = readFileSync(ws.path("output/sales.db"));
      writeFileSync(ws.path("big.csv"), manySales(60_000));
      const restore = () => writeFileSync(ws.path("output/sales.db"), baseline);
      /** How long the same run takes now, uninterrupted: the machine's load changes while the test runs. */
      const timeOneRun = async () => {
        restore();
        const run = spawnCli(["run"], ws.dir, { ...env, SALES_URL: "big.csv" });
        const started = performance.now();
        expect((await run.done).code).toBe(0);
        return performance.now() - started;
      };
      const durations: number[] = [];
      const seen = { before: 0, after: 0 };
      for (let i = 0; i < kills; i++) {
        if (i % 5 === 0) durations.push(await timeOneRun());
        restore();
        const run = spawnCli(["run"], ws.dir, { ...env, SALES_URL: "big.csv" });
        // why: up to 1.4 times the run's length, so that kills land in the save at the end, and some after it.
        const delay = Math.random() * durations.at(-1)! * 1.4;
        await new Promise((resolve) => setTimeout(resolve, delay));
        run.child.kill("SIGKILL");
        await run.done;
        expect(sqlite(ws.path("output/sales.db"), "PRAGMA integrity_check")).toBe("ok");
        const count = sqlite(ws.path("output/sales.db"), "SELECT count(*) FROM sales");
        expect(["30", "60030"]).toContain(count);
        seen[count === "30" ? "before" : "after"]++;
        if (count === "30") expect(readFileSync(ws.path("output/sales.db"))).toEqual(baseline);
      }
      const typical = median(durations);
      console.log(
        `SIGKILL test: ${kills} kills over a ${Math.round(typical)} ms run (median of ${durations.length} timings): ${seen.before} left the state before, ${seen.after} the state after`,
      );
      // why: a window that never reached the save would test only half the promise. About 2 kills in 7 land
      // after the run; with 30 kills or more (CI), seeing none by chance is about 1 in 24 000.
      if (kills >= 30) expect(Math.min(seen.before, seen.after)).toBeGreaterThan(0);
      const next = await ws.cli(["run"], { ...env, SALES_URL: "big.csv" });
      expect(next.code).toBe(0);
      expect(sqlite(ws.path("output/sales.db"), "SELECT count(*) FROM sales")).toBe("60030");
      expect(execFileSync("ls", ["-A", ws.path("output")], { encoding: "utf8" })).not.toMatch(/\.tmp-|\.lock/);
    },
  );
});
