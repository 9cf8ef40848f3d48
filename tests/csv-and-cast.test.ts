import { describe, expect, test } from "vitest";
import { makeCaster } from "../engine/cast.js";
import type { ColumnSpec } from "../engine/config/schema.js";
import { writingCastValues } from "../engine/db/constraints.js";
import type { SqlDatabase } from "../engine/db/database.js";
import { openNativeMemory } from "../engine/db/engines/native.js";
import { openSqlJs } from "../engine/db/sqljs.js";
import { createTableSql } from "../engine/db/tables.js";
import { parseCsv, readCsvPieces, type CsvRecord } from "../engine/sources/csv.js";

describe("CSV records keep their line in the file", () => {
  test.each([
    ["CRLF, no final newline", "a,b\r\n1,2\r\n3,4"],
    ["LF with a final newline", "a,b\n1,2\n3,4\n"],
  ])("%s", (_name, text) => {
    expect(parseCsv(text, {}, "t").records).toEqual([
      { line: 2, fields: ["1", "2"], raw: "1,2" },
      { line: 3, fields: ["3", "4"], raw: "3,4" },
    ]);
  });

  test("blank lines are skipped and quoted newlines counted", () => {
    const { records } = parseCsv('a,b\r\n\r\n1,"x\r\ny"\r\n\r\n2,z', {}, "t");
    expect(records.map((r) => [r.line, r.raw])).toEqual([
      [3, '1,"x\r\ny"'],
      [6, "2,z"],
    ]);
  });

  test("header_line skips a preamble", () => {
    expect(parseCsv("Export of 2024\n\nid\n7", { header_line: 3 }, "t")).toMatchObject({
      header: ["id"],
      headerLine: 3,
      records: [{ line: 4, fields: ["7"] }],
    });
  });

  test.each([
    ["an unterminated quote", 'a,b\n1,"open\n2,3', /E_CSV|t line \d+: .*quote/i],
    ["an empty file", "", /t is empty: no header line/],
    ["an HTML page", "<html><body>Sign in</body></html>", /t sent an HTML page, not CSV/],
  ])("%s is a clear error", (_name, text, message) => {
    expect(() => parseCsv(text, {}, "t")).toThrow(message);
  });
});

describe("casting", () => {
  const cast = (column: ColumnSpec, field: string, options: Record<string, unknown> = {}, required = false) =>
    makeCaster(column, { from: "x", ...options }, required)(field);

  test.each([
    [{ type: "decimal", scale: 2 }, "49.99", 4999],
    [{ type: "decimal", scale: 2 }, "0.1", 10],
    [{ type: "decimal", scale: 2 }, "-0.05", -5],
    [{ type: "decimal", scale: 2 }, "449.85", 44985],
    [{ type: "decimal", scale: 0 }, "12", 12],
    [{ type: "integer" }, "-7", -7],
    [{ type: "real" }, "1e3", 1000],
    [{ type: "text" }, "  padded ", "padded"],
    [{ type: "date" }, "2023-06-25", "2023-06-25"],
    [{ type: "date" }, "2024-02-29", "2024-02-29"],
    [{ type: "date" }, "2000-02-29", "2000-02-29"],
    [{ type: "boolean" }, "Yes", 1],
  ] as [ColumnSpec, string, unknown][])("%j %s -> %s", (column, field, value) => {
    expect(cast(column, field)).toEqual({ ok: true, value });
  });

  test("the default booleans speak no client's language: oui/vrai are the pipeline's to declare (true_values)", () => {
    expect(cast({ type: "boolean" }, "oui")).toEqual({
      ok: false,
      reason: '"oui" is not a boolean (true: true/1/yes/y; false: false/0/no/n)',
    });
    expect(cast({ type: "boolean" }, "Oui", { true_values: ["oui", "vrai"], false_values: ["non"] })).toEqual({ ok: true, value: 1 });
    expect(cast({ type: "boolean" }, "NON", { true_values: ["oui", "vrai"], false_values: ["non"] })).toEqual({ ok: true, value: 0 });
  });

  test.each([
    [{ type: "decimal", scale: 2 }, "1.999", '"1.999" has more than 2 decimal places'],
    [{ type: "decimal", scale: 2 }, "12,5", '"12,5" is not a decimal number (separator ".")'],
    [{ type: "decimal", scale: 2 }, "1e3", '"1e3" is not a decimal number (separator ".")'],
    [{ type: "integer" }, "12,5", '"12,5" is not an integer'],
    [{ type: "integer" }, "99999999999999999999", "99999999999999999999 is outside the exact integer range (±9007199254740991)"],
    [{ type: "date" }, "2023-02-29", '"2023-02-29" is not a real date (format yyyy-MM-dd)'],
    [{ type: "date" }, "1900-02-29", '"1900-02-29" is not a real date (format yyyy-MM-dd)'],
    [{ type: "date" }, "2023-04-31", '"2023-04-31" is not a real date (format yyyy-MM-dd)'],
    [{ type: "date" }, "2023-6-25", '"2023-6-25" does not match the date format yyyy-MM-dd'],
    [{ type: "date" }, "25/06/2023", '"25/06/2023" does not match the date format yyyy-MM-dd'],
  ] as [ColumnSpec, string, string][])("%j %s is rejected", (column, field, reason) => {
    expect(cast(column, field)).toEqual({ ok: false, reason });
  });

  test("date formats and decimal separators are configurable", () => {
    expect(cast({ type: "date" }, "5/6/2023", { format: "d/M/yyyy" })).toEqual({ ok: true, value: "2023-06-05" });
    expect(cast({ type: "date" }, "06/25/2023", { format: "MM/dd/yyyy" })).toEqual({ ok: true, value: "2023-06-25" });
    expect(cast({ type: "decimal", scale: 2 }, "12,5", { decimal_separator: "," })).toEqual({ ok: true, value: 1250 });
  });

  test("an empty field is null when optional and rejected when required", () => {
    expect(cast({ type: "integer" }, " ")).toEqual({ ok: true, value: null });
    expect(cast({ type: "integer" }, "", {}, true)).toEqual({ ok: false, reason: "a value is required, the field is empty" });
  });

  test("decimal sums of cast cents are exact where floats drift", () => {
    const cents = ["49.99", "19.99", "29.99", "79.99", "39.99"].map((p) => cast({ type: "decimal", scale: 2 }, p));
    const total = cents.reduce((sum, c) => sum + (c.ok ? (c.value as number) : 0), 0) * 3;
    expect(total).toBe(65985);
    expect(0.1 + 0.2).not.toBe(0.3);
  });
});

describe("every value a cast accepts meets the CHECK its column has in SQLite (a load writes without evaluating them)", () => {
  // why: the years where leap rules and SQLite's date() could part: 0, centuries, 1582, 1900, 2000, the last ones.
  const years = [0, 1, 4, 99, 100, 101, 200, 399, 400, 1582, 1600, 1700, 1899, 1900, 1904, 1999, 2000, 2023, 2024, 2100, 2400, 9996, 9999];
  const fields: { field: string; format: string }[] = [];
  for (const year of years) {
    const y = String(year).padStart(4, "0");
    for (let month = 0; month <= 13; month++) {
      for (let day = 0; day <= 32; day++) {
        const [m, d] = [String(month).padStart(2, "0"), String(day).padStart(2, "0")];
        fields.push({ field: `${y}-${m}-${d}`, format: "yyyy-MM-dd" }, { field: `${day}/${month}/${y}`, format: "d/M/yyyy" });
      }
    }
  }
  const engines: [string, () => Promise<SqlDatabase>][] = [
    ["node:sqlite (native)", async () => openNativeMemory()],
    ["sql.js", () => openSqlJs()],
  ];
  test.each(engines)("%s", async (_name, open) => {
    const db = await open();
    try {
      db.exec(createTableSql("t", { columns: { d: { type: "date" }, b: { type: "boolean" } } }));
      const insert = db.prepare("INSERT INTO t (d, b) VALUES (?, ?)");
      let accepted = 0;
      // Written as a load writes them: a value that broke a CHECK would be stored, and counted below.
      writingCastValues(db, () => {
        for (const { field, format } of fields) {
          const result = makeCaster({ type: "date" }, { from: "x", format }, false)(field);
          if (!result.ok) continue;
          accepted++;
          insert.run([result.value as string, null]);
        }
        for (const field of ["1", "0", "true", "FALSE", "yes", "No", "y", "N", "oui", "2", "-1", ""]) {
          const result = makeCaster({ type: "boolean" }, { from: "x" }, false)(field);
          if (result.ok) insert.run([null, result.value as number]);
        }
      });
      // Every real day of each year, in both formats, and nothing else.
      const leap = (y: number) => y % 4 === 0 && (y % 100 !== 0 || y % 400 === 0);
      expect(accepted).toBe(2 * years.reduce((sum, y) => sum + (leap(y) ? 366 : 365), 0));
      expect(db.all("SELECT count(*) AS n FROM t WHERE NOT (d IS date(d)) OR NOT (b IS NULL OR b IN (0, 1))")).toEqual([{ n: 0 }]);
      // Past the load, the CHECKs hold again for whatever writes next.
      expect(() => insert.run(["2023-02-30", null])).toThrow(/CHECK constraint failed/);
      expect(() => insert.run([null, 2])).toThrow(/CHECK constraint failed/);
      insert.free();
    } finally {
      db.close();
    }
  });
});

describe("the quote-free fast path reads exactly what csv-parse reads", () => {
  test("random quote-free files with every kind of line ending, blank lines and ragged rows", () => {
    let seed = 7;
    const random = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2147483648), seed % n);
    const pieces = ["a", "b1", "", " ", "é", "x y", "12.5", "-", ";"];
    const endings = ["\n", "\r\n", "\r\n", "\n\n", "\r\n\r\n"];
    for (let file = 0; file < 200; file++) {
      let text = "h1,h2,h3";
      for (let row = random(12); row > 0; row--) {
        text += endings[random(endings.length)];
        text += Array.from({ length: 1 + random(4) }, () => pieces[random(pieces.length)]).join(",");
      }
      if (random(2)) text += endings[random(endings.length)];
      const fast = parseCsv(text, {}, "t");
      // why: one quoted record at the end sends the same text through csv-parse.
      const slow = parseCsv(text + '\n"q","q","q"', {}, "t");
      expect(fast.header).toEqual(slow.header);
      expect(fast.records).toEqual(slow.records.slice(0, -1));
    }
  });

  test("read in random pieces, with a lone CR, a trailing delimiter and one-column rows, as csv-parse reads the whole text", () => {
    let seed = 11;
    const random = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2147483648), seed % n);
    const fields = ["a", "b1", "", " ", "é😀", "x y", "12,5", "-"];
    const endings = ["\n", "\r", "\r\n", "\n\n", "\r\r\n", "\r\n\r\n"];
    for (let file = 0; file < 300; file++) {
      let text = random(2) ? "h1;h2;h3" : "h1";
      for (let row = random(12); row > 0; row--) {
        text += endings[random(endings.length)];
        text += Array.from({ length: 1 + random(4) }, () => fields[random(fields.length)]).join(";") + (random(4) ? "" : ";");
      }
      if (random(2)) text += endings[random(endings.length)];
      const cuts = [random(text.length + 1), random(text.length + 1), random(text.length + 1)].sort((a, b) => a - b);
      const pieces = [text.slice(0, cuts[0]), text.slice(cuts[0], cuts[1]), text.slice(cuts[1], cuts[2]), text.slice(cuts[2])];
      const streamed: CsvRecord[] = [];
      const { header } = readCsvPieces(pieces, { delimiter: ";" }, "t", {
        record: (fields, line, raw) => streamed.push({ line, fields, raw: raw() }),
      });
      const slow = parseCsv(text + '\n"q"', { delimiter: ";" }, "t");
      expect(header).toEqual(slow.header);
      expect(streamed).toEqual(slow.records.slice(0, -1));
    }
  });
});
