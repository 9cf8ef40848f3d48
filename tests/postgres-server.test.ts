import { afterAll, beforeAll, describe, expect, test } from "vitest";
// why: the engines' table first; imported first, postgres.ts reaches it through a cycle before postgresEngine exists.
import "../engine/db/engines/index.js";
import { postgresEngine } from "../engine/db/engines/postgres.js";
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

describe("the columns the engine reads from the catalog", () => {
  // why: the drift check compares them with the declaration; they are read from pg_attribute (faster than the view), and
  // must be exactly what information_schema.columns says, whatever the type: a domain, an array, an enum, a length or a precision.
  test("are those of information_schema.columns, type and nullability, for every kind of column", async () => {
    const url = pg.createDatabase("catalog_columns");
    pg.psql(
      "catalog_columns",
      `CREATE TYPE mood AS ENUM ('ok', 'ko'); CREATE DOMAIN cents AS bigint NOT NULL; CREATE DOMAIN tags AS text[];
       CREATE TABLE odd (a integer, b varchar(10) NOT NULL, c numeric(10, 2), d timestamptz, e int[], f mood, g cents, h tags,
         i double precision, j "char", k bytea, dropped text, l date);
       ALTER TABLE odd DROP COLUMN dropped; CREATE VIEW odd_view AS SELECT a, b FROM odd;
       CREATE SCHEMA elsewhere; CREATE TABLE elsewhere.hidden (x integer)`,
    );
    const expected = pg
      .psql(
        "catalog_columns",
        `SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns
         WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position`,
      )
      .split("\n");
    const transaction = await postgresEngine.begin(url, { busyTimeoutMs: 5000 });
    try {
      const dialect = transaction.db.dialect!;
      const read = ["odd", "odd_view"].flatMap((table) =>
        dialect
          .storedColumns(transaction.db, table)
          .map((column) => `${table}|${column.name}|${column.type}|${column.notNull ? "NO" : "YES"}`),
      );
      expect(read).toEqual(expected);
      expect(read).toContain("odd|g|bigint|NO");
      expect(read).toContain("odd|h|ARRAY|YES");
      expect(read).toContain("odd|f|USER-DEFINED|YES");
      expect(dialect.storedDefinitions(transaction.db).has("hidden")).toBe(false);
    } finally {
      await transaction.rollback();
      transaction.close();
    }
  });
});
