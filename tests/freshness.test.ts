import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { startServer, type TestServer } from "./helpers/http-server.js";
import { Workspace } from "./helpers/workspace.js";

let ws: Workspace;
let server: TestServer;
const lastModified = "Mon, 08 Jan 2024 12:00:00 GMT";
beforeEach(async () => {
  ws = new Workspace({ withClientPipeline: false });
  server = await startServer();
  server.route("/sales.csv", (request, response) => {
    const headers = { "content-type": "text/csv", "last-modified": lastModified };
    if (request.headers["if-modified-since"] === lastModified) return void response.writeHead(304, headers).end();
    response.writeHead(200, headers).end(request.method === "HEAD" ? undefined : "day,qty\n2024-01-02,3\n2024-01-05,1\n");
  });
  server.route(
    "/undated.csv",
    (_request, response) => void response.writeHead(200, { "content-type": "text/csv" }).end("day,qty\n2024-01-02,3\n"),
  );
});
afterEach(async () => {
  ws.remove();
  await server.close();
});

const pipeline = (freshness: string, source = server.url("/sales.csv")) => `version: 1
database: db.sqlite
tables:
  sales:
    columns: { day: { type: date, required: true }, qty: { type: integer, required: true } }
steps:
  - name: load_sales
    type: load
    source: ${source}
    table: sales
    mode: replace
    columns: { day: day, qty: qty }
    freshness: ${freshness}
`;

/** A fixed clock, `days` after the source's Last-Modified. */
const daysAfter = (days: number) => () => new Date(Date.parse(lastModified) + days * 86_400_000);

interface RunJson {
  error?: { code: string; message: string };
  checks: { name: string; status: string; detail: string }[];
}

describe("freshness from the source's Last-Modified", () => {
  test("within the limit, it passes and says how old the source is", async () => {
    ws.write("pipeline.yaml", pipeline("{ max_age: 2d }"));
    const run = await ws.cli(["run"], {}, { now: daysAfter(1) });
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toContain(`check ✓ freshness_load_sales: the source (Last-Modified ${lastModified}) is 24 h old (limit 2d)`);
    expect(ws.query("SELECT kind, status, detail FROM pipeline_check_results", "db.sqlite")).toBe(
      `freshness|passed|the source (Last-Modified ${lastModified}) is 24 h old (limit 2d)`,
    );
  });

  test("past the limit with severity warn, the run saves and shows it", async () => {
    ws.write("pipeline.yaml", pipeline("{ max_age: 2d, severity: warn }"));
    const run = await ws.cli(["run"], {}, { now: daysAfter(3) });
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toContain(
      `check ⚠ warn freshness_load_sales: the source (Last-Modified ${lastModified}) is 3 days old (limit 2d, exceeded)`,
    );
    expect(ws.query("SELECT status FROM pipeline_check_results", "db.sqlite")).toBe("warned");
  });

  test("past the limit with severity error, the run fails with E_STALE and saves nothing, after a 304 too", async () => {
    ws.write("pipeline.yaml", pipeline("{ max_age: 2d }"));
    expect((await ws.cli(["run"], {}, { now: daysAfter(1) })).code).toBe(0);
    const before = ws.state("db.sqlite");
    // why: the second run gets a 304; the stored Last-Modified is what ages.
    const run = await ws.cli(["run", "--json"], {}, { now: daysAfter(5) });
    expect(run.code).toBe(1);
    const report = JSON.parse(run.stdout) as RunJson;
    expect(report.error?.code).toBe("E_STALE");
    expect(report.checks).toEqual([expect.objectContaining({ name: "freshness_load_sales", status: "failed" })]);
    expect(server.requests("/sales.csv").at(-1)?.["if-modified-since"]).toBe(lastModified);
    expect(ws.state("db.sqlite")).toEqual(before);
  });

  test("a source that sends no Last-Modified has an unknown age, judged by the severity", async () => {
    ws.write("pipeline.yaml", pipeline("{ max_age: 2d, severity: warn }", server.url("/undated.csv")));
    const run = await ws.cli(["run"], {}, { now: daysAfter(0) });
    expect(run.code).toBe(0);
    expect(run.stdout).toContain(
      "check ⚠ warn freshness_load_sales: the source sent no Last-Modified (declare freshness.column to judge by a date in the data), so its age is unknown (limit 2d)",
    );
  });
});

describe("freshness from the newest date in the data", () => {
  test("run, test and doctor judge the newest sales.day against the clock", async () => {
    ws.write("pipeline.yaml", pipeline("{ max_age: 3d, column: day }"));
    const fresh = await ws.cli(["run"], {}, { now: () => new Date("2024-01-07T12:00:00Z") });
    expect(fresh.code, fresh.stderr).toBe(0);
    expect(fresh.stdout).toContain("check ✓ freshness_load_sales: the newest sales.day, 2024-01-05, is 2 days old (limit 3d)");
    const before = ws.state("db.sqlite");
    const later = () => new Date("2024-01-09T12:00:00Z");
    const tested = await ws.cli(["test"], {}, { now: later });
    expect(tested.code).toBe(1);
    expect(tested.stdout).toContain(
      "check ✗ error freshness_load_sales: the newest sales.day, 2024-01-05, is 4 days old (limit 3d, exceeded)",
    );
    expect(ws.state("db.sqlite")).toEqual(before);
    const doctor = await ws.cli(["doctor"], {}, { now: later });
    expect(doctor.code).toBe(1);
    expect(doctor.stdout).toContain("✗ freshness load_sales: the newest sales.day, 2024-01-05, is 4 days old (limit 3d, exceeded)");
    const doctorFresh = await ws.cli(["doctor"], {}, { now: () => new Date("2024-01-06T00:00:00Z") });
    expect(doctorFresh.stdout).toContain("✓ freshness load_sales: the newest sales.day, 2024-01-05, is 24 h old (limit 3d)");
  });

  test("doctor reads the Last-Modified of the source itself", async () => {
    ws.write("pipeline.yaml", pipeline("{ max_age: 2d, severity: warn }"));
    const doctor = await ws.cli(["doctor"], {}, { now: daysAfter(3) });
    expect(doctor.stdout).toContain(
      `✓ freshness load_sales: warning: the source (Last-Modified ${lastModified}) is 3 days old (limit 2d, exceeded)`,
    );
    // why: no run happened, so the age can only come from the server's answer.
    expect(ws.state("db.sqlite")).toBeUndefined();
  });

  test("validate refuses a freshness column that is not a date column of the table", async () => {
    ws.write("pipeline.yaml", pipeline("{ max_age: 2d, column: qty }"));
    const result = await ws.cli(["validate"]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("pipeline.yaml:13:39 error E_CONFIG freshness.column must be a date column; sales.qty is integer");
    ws.write("pipeline.yaml", pipeline("{ max_age: 2 days }"));
    expect((await ws.cli(["validate"])).stderr).toContain(
      '/steps/0/freshness/max_age is "2 days"; expected a duration such as 90m, 36h or 2d',
    );
  });
});
