import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { startPostgres, type TestPostgres } from "./helpers/postgres.js";

// The PostgreSQL engine's tests run against a real server: this checks the throwaway cluster itself.
let pg: TestPostgres;
beforeAll(async () => {
  pg = await startPostgres();
}, 60_000);
afterAll(() => pg?.stop());

describe("a throwaway PostgreSQL cluster", () => {
  test("answers on 127.0.0.1 at a random port, and gives each test its own database", () => {
    expect(pg.psql("postgres", "SHOW listen_addresses")).toBe("127.0.0.1");
    expect(pg.psql("postgres", "SELECT current_setting('server_version_num')::int >= 130000")).toBe("t");
    const url = pg.createDatabase("helper_check");
    expect(url).toBe(`postgres://postgres@127.0.0.1:${pg.port}/helper_check`);
    expect(pg.psql("helper_check", "SELECT current_database()")).toBe("helper_check");
  });
});
