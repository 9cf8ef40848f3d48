import { readFileSync } from "node:fs";
import { afterEach, beforeEach, expect, test } from "vitest";
import { serveClientData } from "./helpers/client-server.js";
import type { TestServer } from "./helpers/http-server.js";
import type { Workspace } from "./helpers/workspace.js";

let server: TestServer;
let ws: Workspace;
let env: Record<string, string>;
let close: () => Promise<void>;

beforeEach(async () => {
  ({ server, ws, env, close } = await serveClientData());
});
afterEach(() => close());

test("doctor passes when every check passes, and writes nothing", async () => {
  const result = await ws.cli(["doctor"], env);
  expect(result.code).toBe(0);
  const lines = result.stdout.trimEnd().split("\n");
  expect(lines.map((l) => l.split(":")[0])).toEqual([
    "✓ node",
    "✓ pipeline-runner",
    "✓ sqlite (sql.js)",
    "✓ sqlite (native)",
    "✓ config",
    "✓ database",
    "✓ source load_products",
    "✓ source load_stores",
    "✓ source load_city_regions",
    "✓ source load_sales",
  ]);
  expect(result.stdout).toContain(`✓ source load_sales: ${server.url("/ventes.csv")} -> 200 OK`);
  expect(ws.bytes()).toBeUndefined();
  expect(server.requests("/ventes.csv")[0]).toBeDefined();
});

test("doctor exits 1 and says which source fails", async () => {
  const result = await ws.cli(["doctor"], { ...env, SALES_URL: server.url("/gone.csv") });
  expect(result.code).toBe(1);
  expect(result.stdout).toContain(`✗ source load_sales: ${server.url("/gone.csv")} -> 404 Not Found`);
});

test("doctor reports a database directory that cannot be written", async () => {
  ws.write("not-a-dir", "a file where the database directory should be");
  const result = await ws.cli(["doctor", "--db", "not-a-dir/sales.db"], env);
  expect(result.code).toBe(1);
  expect(result.stdout).toMatch(/✗ database: \S*not-a-dir is not writable: ENOTDIR/);
});

test("doctor exits 2 on an invalid configuration and shows its problems", async () => {
  ws.write("pipeline.yaml", readFileSync(ws.path("pipeline.yaml"), "utf8").replace("mode: upsert", "mode: upsrt"));
  const result = await ws.cli(["doctor"], env);
  expect(result.code).toBe(2);
  expect(result.stdout).toMatch(/✗ config: pipeline\.yaml:\d+:\d+ error E_SCHEMA \/steps\/0\/mode is "upsrt"/);
});
