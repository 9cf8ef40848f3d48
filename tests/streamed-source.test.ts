import { writeFileSync } from "node:fs";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { readCsv, readCsvPieces } from "../engine/sources/csv.js";
import { spawnCli } from "./helpers/spawn-cli.js";
import { sqlite, Workspace } from "./helpers/workspace.js";

/** Every record (line, fields, raw) and the header that a reader reports. */
function records(read: (handlers: Parameters<typeof readCsv>[3]) => { header: string[]; headerLine: number }) {
  const seen: [number, string[], string][] = [];
  const header = read({ record: (fields, line, raw) => seen.push([line, fields, raw()]) });
  return { header, seen };
}

describe("a source read in pieces", () => {
  // why: the first 4096 characters are gathered before any is split (the check for an HTML page); a long header name fills them.
  const long = "x".repeat(4100);
  const texts = [
    `a${long},b\r\n1,2\r\n\r\n3,4\r5,6\n\n7,8`,
    `a${long},b\r\n1,2\r\n`,
    `\n\na${long},b\r1,2\r\r3,4\r`,
    `Date${long},Référence\r\n2024-01-01,é😀\r\n2024-01-02,x\n`,
  ];
  test("gives the same header, records, lines and raw text as the whole text, wherever the pieces are cut", () => {
    for (const text of texts) {
      const whole = records((handlers) => readCsv(text, {}, "t", handlers, 3));
      for (let i = 4096; i <= text.length; i++) {
        for (let j = i; j <= text.length; j++) {
          const pieces = [text.slice(0, i), text.slice(i, j), text.slice(j)];
          expect(records((handlers) => readCsvPieces(pieces, {}, "t", handlers, 3))).toEqual(whole);
        }
      }
    }
  });

  test("refuses an HTML page and an empty source as the whole text does", () => {
    expect(() => readCsvPieces(["<!doctype ", "html><p>hi"], {}, "t", { record: () => undefined })).toThrow(
      't sent an HTML page, not CSV; first line: "<!doctype html><p>hi"',
    );
    expect(() => readCsvPieces(["", "\r\n", "\n"], {}, "t", { record: () => undefined })).toThrow("t is empty: no header line");
  });
});

describe("a source of many pieces (64 KiB each)", () => {
  let ws: Workspace;
  beforeEach(() => {
    ws = new Workspace({ withClientPipeline: false });
    ws.write(
      "pipeline.yaml",
      `version: 1
database: db.sqlite
tables:
  events:
    columns:
      id: { type: integer, required: true }
      label: { type: text, required: true }
      qty: { type: integer, required: true }
    primary_key: [id]
steps:
  - name: load_events
    type: load
    source: events.csv
    table: events
    mode: insert_new
    columns: { id: Id, label: Libellé, qty: Qty }
`,
    );
  });
  afterEach(() => ws.remove());

  /**
   * Rows of one width, and a header padded, so that the piece ending at 1 MiB ends between a CR and its LF
   * and the one ending at 2 MiB inside an "é" (two bytes in UTF-8).
   */
  const layout = (() => {
    for (let pad = 0; pad < 100; pad++) {
      const width = 12 + pad;
      for (let extra = 0; extra < width + 2; extra++) {
        const header = `Id,Libellé,Qty,Note${"N".repeat(extra)}`;
        const start = Buffer.byteLength(header) + 2;
        const at = (offset: number) => (offset - start) % (width + 2);
        if (at(2 ** 20 - 1) === width && at(2 ** 21) === 8) return { pad, header };
      }
    }
    throw new Error("no layout");
  })();
  function rows(from: number, count: number): string[] {
    const lines: string[] = [];
    for (let id = from; id < from + count; id++) lines.push(`${String(id).padStart(6, "0")},é${"x".repeat(layout.pad)},${id % 7},`);
    return lines;
  }
  const header = layout.header;

  test("keeps every row and every line number across the pieces, in a full read and in a tail read", async () => {
    const first = rows(1, 40_000);
    // why: a row whose quantity is not an integer, far past the first piece; its line must be the file's.
    first[30_000] = first[30_000]!.replace(/,\d+,$/, ",x,");
    const text = [header, ...first].join("\r\n") + "\r\n";
    expect(Buffer.byteLength(text)).toBeGreaterThan(2 * 1024 * 1024);
    ws.write("events.csv", text);
    const run = async () => JSON.parse((await ws.cli(["run", "--json"])).stdout) as { steps: { counts: Record<string, number> }[] };
    expect((await run()).steps[0]!.counts).toMatchObject({ read: 40_000, inserted: 39_999, rejected: 1 });
    expect(sqlite(ws.path("db.sqlite"), "SELECT line, raw FROM pipeline_rejected_rows")).toBe(`30002|${first[30_000]}`);
    expect(sqlite(ws.path("db.sqlite"), "SELECT count(*), sum(qty), sum(id), min(label) = max(label), max(label) FROM events")).toBe(
      `39999|${first.reduce((sum, line, i) => sum + (i === 30_000 ? 0 : Number(line.split(",")[2])), 0)}|${(40_000 * 40_001) / 2 - 30_001}|1|é${"x".repeat(layout.pad)}`,
    );
    const more = rows(40_001, 20_000);
    more[15_000] = more[15_000]!.replace(/,\d+,$/, ",y,");
    ws.write("events.csv", text + more.join("\r\n"));
    const grown = await run();
    expect(grown.steps[0]!.counts).toMatchObject({ read: 20_000, inserted: 19_999, rejected: 1 });
    expect(sqlite(ws.path("db.sqlite"), "SELECT line FROM pipeline_rejected_rows ORDER BY line")).toBe(`30002\n${40_000 + 15_000 + 2}`);
    expect(sqlite(ws.path("db.sqlite"), "SELECT count(*) FROM events")).toBe("59998");
  });

  test("a byte that is not UTF-8 far past the first piece is reported at its line and byte in the file, and nothing is saved", async () => {
    const lines = [header, ...rows(1, 40_000)];
    const before = Buffer.from(lines.slice(0, 30_001).join("\n") + "\n");
    const bad = Buffer.concat([
      before,
      Buffer.from([0x31, 0x2c, 0xff, 0x2c, 0x31, 0x2c, 0x0a]),
      Buffer.from(lines.slice(30_001).join("\n")),
    ]);
    writeFileSync(ws.path("events.csv"), bad);
    const result = await ws.cli(["run", "--json"]);
    expect(result.code).not.toBe(0);
    expect(JSON.parse(result.stdout).error.message).toContain(`is not valid UTF-8 (line 30002, byte ${before.length + 2})`);
    expect(ws.bytes("db.sqlite")).toBeUndefined();
  });

  test("a temporary directory the source cannot be spooled to is a clear error naming it and TMPDIR, and nothing is saved", async () => {
    ws.write("events.csv", [header, ...rows(1, 10)].join("\n"));
    // why: a file, not a missing directory: Node's compile cache would create a missing one.
    const missing = ws.write("not-a-dir", "");
    const { code, stderr } = await spawnCli(["run"], ws.dir, { TMPDIR: missing }).done;
    expect(code).toBe(1);
    expect(stderr).toContain(`E_FETCH cannot spool events.csv to a temporary file in ${missing}`);
    expect(stderr).toContain("set TMPDIR to a directory with room for the source");
    expect(stderr).not.toContain("    at ");
    expect(ws.bytes("db.sqlite")).toBeUndefined();
  });
});
