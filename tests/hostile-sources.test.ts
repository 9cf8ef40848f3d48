import { execFileSync } from "node:child_process";
import { readFileSync, statSync, writeFileSync } from "node:fs";
import { createServer as createNetServer } from "node:net";
import type { ServerResponse } from "node:http";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { didYouMean } from "../engine/errors.js";
import { startServer, type TestServer } from "./helpers/http-server.js";
import { spawnCli, waitFor } from "./helpers/spawn-cli.js";
import { sqlite, Workspace } from "./helpers/workspace.js";

let server: TestServer;
let ws: Workspace;
beforeEach(async () => {
  server = await startServer();
  ws = new Workspace({ withClientPipeline: false });
});
afterEach(async () => {
  await server.close();
  ws.remove();
});

const journal = () => ws.path("out.db.failed-runs.jsonl");

/** Writes a one-table pipeline whose only step loads `source` (id, name) with the given `http:` options. */
function usePipeline(source: string, http: Record<string, unknown> = {}): void {
  ws.write(
    "pipeline.yaml",
    [
      "version: 1",
      "database: out.db",
      "tables:",
      "  items:",
      "    columns: { id: { type: integer }, name: { type: text } }",
      "    primary_key: [id]",
      "steps:",
      "  - type: load",
      "    name: load_items",
      `    source: ${JSON.stringify(source)}`,
      "    table: items",
      "    mode: upsert",
      "    columns: { id: id, name: name }",
      ...(Object.keys(http).length > 0 ? [`    http: ${JSON.stringify(http)}`] : []),
      "",
    ].join("\n"),
  );
}

/** Runs the built CLI as its own process, killed after `ms` if it has not exited by then (code null). */
async function runBounded(args: string[], ms: number, onStart?: (run: ReturnType<typeof spawnCli>) => Promise<void>) {
  const started = performance.now();
  const run = spawnCli(args, ws.dir);
  const timer = setTimeout(() => run.child.kill("SIGKILL"), ms);
  try {
    await onStart?.(run);
    const result = await run.done;
    return { ...result, ms: performance.now() - started };
  } finally {
    clearTimeout(timer);
  }
}

/** Whether `check` holds within `ms`, polling every 20 ms. */
async function eventually(check: () => Promise<boolean>, ms = 2_000): Promise<boolean> {
  const until = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > until) return false;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return true;
}

/** Answers with `status` and headers, then sends one byte every `everyMs` until the client goes away. */
function trickle(response: ServerResponse, status: number, headers: Record<string, string | number> = {}, everyMs = 50): void {
  response.writeHead(status, { "content-type": "text/csv", ...headers });
  response.write("id,name\n");
  const timer = setInterval(() => response.write("1"), everyMs);
  response.on("close", () => clearInterval(timer));
}

describe("source files that are not regular files", () => {
  test("a FIFO as a source is refused at once, without waiting for a writer", async () => {
    execFileSync("mkfifo", [ws.path("items.csv")]);
    usePipeline("items.csv");
    const result = await runBounded(["run"], 10_000);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/E_FETCH \S+items\.csv is a FIFO \(named pipe\), not a regular file; a source must be a CSV file/);
    expect(result.ms).toBeLessThan(8_000);
  });

  test("/dev/zero and /dev/urandom as sources are refused as devices before a byte is read", async () => {
    for (const device of ["/dev/zero", "/dev/urandom"]) {
      usePipeline(device);
      const result = await runBounded(["run"], 8_000);
      expect(result.code).toBe(1);
      expect(result.stderr).toContain(`E_FETCH ${device} is a character device, not a regular file`);
    }
  });

  test("a directory or a socket as a source is refused, saying what it is", async () => {
    ws.write("folder.csv/inside.txt", "x");
    usePipeline("folder.csv");
    let result = await ws.cli(["run"]);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/E_FETCH \S+folder\.csv is a directory, not a regular file/);

    const socket = createNetServer();
    await new Promise<void>((resolve) => socket.listen(ws.path("items.sock"), resolve));
    try {
      usePipeline("items.sock");
      result = await ws.cli(["run"]);
      expect(result.code).toBe(1);
      expect(result.stderr).toMatch(/E_FETCH \S+items\.sock is a socket, not a regular file/);
    } finally {
      socket.close();
    }
  });

  test("a local file larger than http.max_bytes is refused from its size, before it is read", async () => {
    ws.write("items.csv", "id,name\n" + "1,a\n".repeat(1000));
    usePipeline("items.csv", { max_bytes: 1000 });
    const result = await ws.cli(["run"]);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/E_FETCH \S+items\.csv is larger than the 1000-byte limit \(http\.max_bytes\): 4008 bytes/);
  });
});

describe("servers that never finish", () => {
  test("a server trickling one byte at a time is cut off at http.total_timeout_ms", async () => {
    server.route("/items.csv", (_q, r) => trickle(r, 200));
    usePipeline(server.url("/items.csv"), { timeout_ms: 1000, total_timeout_ms: 1200, retries: 2, backoff_ms: 10 });
    const started = performance.now();
    const result = await ws.cli(["run"]);
    const elapsed = performance.now() - started;
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/E_FETCH GET \S+\/items\.csv not finished within 1200 ms \(http\.total_timeout_ms\); \d+ bytes received/);
    expect(elapsed).toBeLessThan(4_000);
    // why: a deadline is final, not retried: one request.
    expect(server.requests("/items.csv")).toHaveLength(1);
    expect(await eventually(async () => (await server.openConnections()) === 0)).toBe(true);
  });

  test("the total timeout covers the retries and their waits", async () => {
    server.route("/items.csv", (_q, r) => void r.writeHead(503, "Service Unavailable").end());
    usePipeline(server.url("/items.csv"), { total_timeout_ms: 700, retries: 20, backoff_ms: 200, max_backoff_ms: 200 });
    const started = performance.now();
    const result = await ws.cli(["run"]);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(
      /E_FETCH GET \S+ failed after [2-5] attempts: 503 Service Unavailable.*; no time left for another attempt within 700 ms \(http\.total_timeout_ms\)/,
    );
    expect(performance.now() - started).toBeLessThan(3_000);
  });

  test("SIGTERM while a server trickles a source ends the run with exit 130 at once", async () => {
    server.route("/items.csv", (_q, r) => trickle(r, 200));
    usePipeline(server.url("/items.csv"));
    const result = await runBounded(["run"], 10_000, async (run) => {
      await waitFor(() => server.requests("/items.csv").length > 0 && run.output().includes("load_items"));
      run.child.kill("SIGTERM");
    });
    expect(result.code).toBe(130);
    expect(result.stderr).toMatch(/E_ABORTED interrupted while fetching/);
  });

  test("a 404 whose body never ends: the error is printed and the process exits", async () => {
    server.route("/items.csv", (_q, r) => trickle(r, 404));
    usePipeline(server.url("/items.csv"));
    const result = await runBounded(["run"], 10_000);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/E_FETCH GET \S+\/items\.csv -> 404 Not Found/);
  });

  test("a declared Content-Length above http.max_bytes: refused, and the process exits", async () => {
    server.route("/items.csv", (_q, r) => trickle(r, 200, { "content-length": 5_000_000 }));
    usePipeline(server.url("/items.csv"), { max_bytes: 1000 });
    const result = await runBounded(["run"], 10_000);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/E_FETCH \S+\/items\.csv is larger than the 1000-byte limit \(http\.max_bytes\): 5000000 bytes/);
  });

  test("run --every leaves no connection open behind a refused body", async () => {
    server.route("/items.csv", (_q, r, hit) => (hit % 2 === 0 ? trickle(r, 200, { "content-length": 5_000_000 }) : trickle(r, 404)));
    usePipeline(server.url("/items.csv"), { max_bytes: 1000 });
    const result = await ws.cli(["run", "--every", "1ms", "--max-runs", "6", "--json"]);
    const runs = result.stdout
      .trimEnd()
      .split("\n")
      .map((line) => JSON.parse(line) as { ok: boolean });
    expect(runs.map((r) => r.ok)).toEqual([false, false, false, false, false, false]);
    expect(server.requests("/items.csv")).toHaveLength(6);
    // why: before, each refused body kept its connection (and a socket of this process) open for good.
    expect(await eventually(async () => (await server.openConnections()) <= 1)).toBe(true);
    expect(process.getActiveResourcesInfo().filter((r) => r === "TCPSocketWrap").length).toBeLessThanOrEqual(2);
  });
});

describe("huge headers", () => {
  test("a header line of several megabytes is refused with a short E_HEADER, kept short in the journal and the history", async () => {
    const width = 8 * 1024 * 1024;
    // why: streamed in 64 KiB chunks so that the test itself stays light.
    server.route("/items.csv", (_q, r) => {
      r.writeHead(200, { "content-type": "text/csv" });
      const chunk = "x".repeat(64 * 1024);
      let sent = 0;
      const pump = () => {
        while (sent < width) {
          sent += chunk.length;
          if (!r.write(chunk)) return void r.once("drain", pump);
        }
        r.end(",name\n1,a\n");
      };
      pump();
    });
    usePipeline(server.url("/items.csv"));
    const result = await ws.cli(["run"]);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(
      /E_HEADER \S+\/items\.csv: the header line is 8388613 characters long, more than 65536; is this really a CSV file with a header\?/,
    );
    expect(result.stderr.length + result.stdout.length).toBeLessThan(3000);
    expect(statSync(journal()).size).toBeLessThan(3000);

    server.file("/items.csv", "id,name\n1,a\n");
    expect((await ws.cli(["run"])).code).toBe(0);
    const error = sqlite(ws.path("out.db"), "SELECT error FROM pipeline_runs WHERE status = 'failed'");
    expect(error).toMatch(/^E_HEADER /);
    expect(error.length).toBeLessThan(1000);
  });

  test("values quoted in messages are clipped, with their length", async () => {
    const long = "Nom".padEnd(5000, "e");
    server.file("/items.csv", `id,${long}\n1,a\n`);
    usePipeline(server.url("/items.csv"));
    const result = await ws.cli(["run"]);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/E_HEADER .*missing "name".*got \["id","Nome+… \(5000 characters\)"\]/);
    expect(result.stderr.length).toBeLessThan(1500);
  });

  test("a huge value that cannot be cast, or that holds a stray quote, is quoted clipped", async () => {
    ws.write("items.csv", `id,name\n${"9".repeat(5000)},a\n${"8".repeat(4000)}x,b\n3,c\n`);
    usePipeline("items.csv");
    expect((await ws.cli(["run"])).code).toBe(0);
    const reasons = sqlite(ws.path("out.db"), "SELECT line, reason FROM pipeline_rejected_rows ORDER BY line").split("\n");
    expect(reasons).toHaveLength(2);
    expect(reasons[0]).toMatch(/^2\|9+… \(5000 characters\) is outside the exact integer range/);
    expect(reasons[1]).toMatch(/^3\|"8+x?… \(4001 characters\)" is not an integer$/);
    for (const reason of reasons) expect(reason.length).toBeLessThan(300);

    ws.write("items.csv", `id,name\n1,${"a".repeat(5000)}"b\n`);
    let result = await ws.cli(["run"]);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/E_CSV items\.csv line 2: .*value is "a+… \(5000 characters\)"/);
    expect(result.stderr.length).toBeLessThan(1000);

    ws.write(
      "pipeline.yaml",
      readFileSync(ws.path("pipeline.yaml"), "utf8").replace("mode: upsert", "mode: insert_new\n    on_conflict: fail"),
    );
    ws.write("items.csv", `id,name\n3,${"b".repeat(5000)}\n`);
    result = await ws.cli(["run"]);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(
      /E_CONFLICT items\.csv line 2: .*stored \{"id":3,"name":"c"\}, new \{"id":3,"name":"b+… \(5018 characters\) \(on_conflict: fail\)/,
    );
    expect(result.stderr.length).toBeLessThan(1500);
  });

  test("didYouMean gives up on huge inputs instead of computing a quadratic distance", () => {
    const started = performance.now();
    expect(didYouMean("a".repeat(20_000), ["b".repeat(20_000), "a".repeat(20_001)])).toBe("");
    expect(didYouMean("name", ["x".repeat(5_000_000), "nam"])).toBe(' (did you mean "nam"?)');
    expect(performance.now() - started).toBeLessThan(100);
  });
});

describe("credentials and redirects", () => {
  test("credentials in a source URL are sent as Basic auth and never shown: not in the log, the journal or the database", async () => {
    const expected = `Basic ${Buffer.from("ann:s3cret").toString("base64")}`;
    let up = false;
    server.route("/items.csv", (q, r) => {
      if (q.headers.authorization !== expected) return void r.writeHead(401, "Unauthorized").end();
      if (!up) return void r.writeHead(503, "Service Unavailable").end();
      r.writeHead(200, { "content-type": "text/csv" }).end("id,name\n1,a\nx,b\n");
    });
    const source = server.url("/items.csv").replace("http://", "http://ann:s3cret@");
    const shown = server.url("/items.csv").replace("http://", "http://***@");
    usePipeline(source, { retries: 1, backoff_ms: 10 });
    const failed = await ws.cli(["run"]);
    expect(failed.code).toBe(1);
    expect(failed.stderr).toContain(`E_FETCH GET ${shown} failed after 2 attempts: 503 Service Unavailable`);
    const plan = await ws.cli(["plan", "--json"]);
    up = true;
    const saved = await ws.cli(["run"]);
    expect(saved.code).toBe(0);
    expect(saved.stdout).toContain(`load ${shown} -> items`);
    expect(sqlite(ws.path("out.db"), "SELECT source FROM pipeline_rejected_rows")).toBe(shown);
    expect(sqlite(ws.path("out.db"), "SELECT count(*) FROM pipeline_runs WHERE error LIKE '%***@%'")).toBe("1");
    for (const text of [failed.stdout, failed.stderr, plan.stdout, saved.stdout, saved.stderr, readFileSync(ws.path("out.db"), "latin1")]) {
      expect(text).not.toContain("s3cret");
    }
  });

  test.each([["file:///etc/passwd"], ["data:text/csv,id%2Cname%0A1%2Ca"], ["ftp://127.0.0.1/items.csv"]])(
    "a redirect to %s is refused at once, not retried",
    async (target) => {
      server.route("/items.csv", (_q, r) => void r.writeHead(302, { location: target }).end());
      usePipeline(server.url("/items.csv"), { retries: 3, backoff_ms: 10 });
      const result = await ws.cli(["run"]);
      expect(result.code).toBe(1);
      const scheme = target.slice(0, target.indexOf(":") + 1);
      expect(result.stderr).toContain(
        `E_FETCH GET ${server.url("/items.csv")} -> 302 redirect to a ${scheme} URL, refused: a source is only fetched over http(s)`,
      );
      expect(server.requests("/items.csv")).toHaveLength(1);
    },
  );

  test("a redirect to another host is refused unless http.allow_redirect_hosts names it; credentials stay with their host", async () => {
    const other = await startServer("127.0.0.2");
    try {
      other.file("/items.csv", "id,name\n1,a\n");
      server.route("/old.csv", (_q, r) => void r.writeHead(301, { location: "/items.csv" }).end());
      server.route("/items.csv", (_q, r) => void r.writeHead(302, { location: other.url("/items.csv") }).end());
      const source = server.url("/old.csv").replace("http://", "http://ann:s3cret@");
      usePipeline(source, { retries: 3, backoff_ms: 10 });
      const refused = await ws.cli(["run"]);
      expect(refused.code).toBe(1);
      expect(refused.stderr).toContain(
        `-> 302 redirect to ${other.url("/items.csv")}, another host (127.0.0.2), refused; list it in http.allow_redirect_hosts to follow it`,
      );
      expect(server.requests("/items.csv")).toHaveLength(1);
      expect(other.requests("/items.csv")).toHaveLength(0);

      usePipeline(source, { allow_redirect_hosts: ["127.0.0.2"] });
      const followed = await ws.cli(["run"]);
      expect(followed.code).toBe(0);
      expect(followed.stdout).toContain(`redirected to ${other.url("/items.csv")}`);
      expect(sqlite(ws.path("out.db"), "SELECT id, name FROM items")).toBe("1|a");
      expect(server.requests("/items.csv")[1]?.authorization).toMatch(/^Basic /);
      expect(other.requests("/items.csv")[0]?.authorization).toBeUndefined();
    } finally {
      await other.close();
    }
  });
});

describe("CSV errors that point at the right place", () => {
  test("an unterminated quote is reported at the line where it opened", async () => {
    ws.write("items.csv", 'id,name\n1,a\n2,"b\n3,c\n4,d\n5,e\n');
    usePipeline("items.csv");
    const result = await ws.cli(["run"]);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/E_CSV items\.csv line 3: a quote opened on line 3 is never closed/);
  });

  test("under csv.quote ', a double quote before a quote escapes it (csv-parse's escape): the quote left open is still found", async () => {
    ws.write("items.csv", "id,name\n1,a\n2,'b\"'c\n3,d\n4,e\n");
    usePipeline("items.csv");
    ws.write("pipeline.yaml", readFileSync(ws.path("pipeline.yaml"), "utf8") + `    csv: { quote: "'" }\n`);
    const result = await ws.cli(["run"]);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/E_CSV items\.csv line 3: a quote opened on line 3 is never closed/);
  });

  test.each([
    ["LE with a BOM", "utf16le", [0xff, 0xfe], "LE"],
    ["BE with a BOM", "utf16be", [0xfe, 0xff], "BE"],
    ["LE without a BOM", "utf16le", [], "LE"],
    ["BE without a BOM", "utf16be", [], "BE"],
  ] as const)("a UTF-16 file (%s) is named as UTF-16, with what to do", async (_name, encoding, bom, order) => {
    const text = Buffer.from("id,name\n1,a\n", "utf16le");
    if (encoding === "utf16be") text.swap16();
    writeFileSync(ws.path("items.csv"), Buffer.concat([Buffer.from(bom), text]));
    usePipeline("items.csv");
    const result = await ws.cli(["run"]);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(
      new RegExp(`E_DECODE items\\.csv looks like UTF-16 \\(${order}\\) text, not UTF-8: re-export it as UTF-8`),
    );
  });
});
