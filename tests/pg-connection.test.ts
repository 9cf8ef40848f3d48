import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { connectSync, PgServerError } from "../engine/db/pg/sync-connection.js";
import { startPostgres, type TestPostgres } from "./helpers/postgres.js";

let pg: TestPostgres;
beforeAll(async () => {
  pg = await startPostgres();
}, 60_000);
afterAll(() => pg?.stop());

describe("a synchronous PostgreSQL connection (the client in a worker thread)", () => {
  test("runs statements with bound values and answers rows as arrays, bigints as numbers and dates as ISO text", () => {
    const url = pg.createDatabase("sync_basic");
    const c = connectSync(url, { timeoutMs: 5000, shownUrl: url });
    try {
      c.query("CREATE TABLE t (id bigint PRIMARY KEY, day date NOT NULL, label text)");
      expect(c.query("INSERT INTO t VALUES ($1, $2, $3), ($4, $5, $6)", [1, "2023-06-01", "a", 2, "2023-06-02", null]).rowCount).toBe(2);
      const result = c.query("SELECT id, day, label, count(*) OVER () AS n FROM t ORDER BY id");
      expect(result.fields).toEqual(["id", "day", "label", "n"]);
      expect(result.rows).toEqual([
        [1, "2023-06-01", "a", 2],
        [2, "2023-06-02", null, 2],
      ]);
    } finally {
      c.close();
    }
  });

  test("COPY FROM STDIN loads CSV text", () => {
    const url = pg.createDatabase("sync_copy");
    const c = connectSync(url, { timeoutMs: 5000, shownUrl: url });
    try {
      c.query("CREATE TABLE t (id bigint, label text)");
      const rows = Array.from({ length: 10_000 }, (_, i) => `${i},"label ${i}, with a comma"`).join("\n") + "\n";
      expect(c.copyIn("COPY t (id, label) FROM STDIN WITH (FORMAT csv)", rows)).toBe(10_000);
      expect(c.query("SELECT count(*), sum(id), max(label) FROM t").rows[0]).toEqual([10_000, 49_995_000, "label 9999, with a comma"]);
    } finally {
      c.close();
    }
  });

  test("a server error keeps its SQLSTATE and position; the connection goes on", () => {
    const url = pg.createDatabase("sync_errors");
    const c = connectSync(url, { timeoutMs: 5000, shownUrl: url });
    try {
      let error: unknown;
      try {
        c.query("SELECT nope FROM pg_class");
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(PgServerError);
      expect(error).toMatchObject({ code: "42703", position: 8 });
      expect(c.query("SELECT 1").rows).toEqual([[1]]);
    } finally {
      c.close();
    }
  });

  test("a server that is not there is a clear E_DB error naming the URL as shown", () => {
    expect(() =>
      connectSync("postgres://postgres:secret@127.0.0.1:1/x", { timeoutMs: 2000, shownUrl: "postgres://postgres:***@127.0.0.1:1/x" }),
    ).toThrow(/E_DB|cannot connect to postgres:\/\/postgres:\*\*\*@127\.0\.0\.1:1\/x: .*ECONNREFUSED/);
  });
});
