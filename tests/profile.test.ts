import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { clientFileEnv, clientFixtures, root, Workspace } from "./helpers/workspace.js";

let ws: Workspace;
const env = clientFileEnv;
beforeEach(() => {
  ws = new Workspace();
  ws.copyClientFiles();
});
afterEach(() => ws.remove());

describe("profile", () => {
  test("docs/data-quality.md holds exactly what profile generates from the client's files", async () => {
    const committed = readFileSync(path.join(root, "docs/data-quality.md"), "utf8");
    ws.write("doc.md", committed);
    const result = await ws.cli(["profile", "--update", "doc.md"], env);
    expect(result.code).toBe(0);
    expect(readFileSync(ws.path("doc.md"), "utf8"), "regenerate: see the top of docs/data-quality.md").toBe(committed);
    expect(committed).toContain("| Prix | price_cents (decimal(2)) | decimal(2) | 0 | 5 | 19.99 | 79.99 |");
    expect(committed).toContain("- 30 data rows; key (date, product_id, store_id): no duplicates; every reference resolves");
  });

  test("a bad value, a duplicate key and an unknown product are each reported with their line", async () => {
    const sales = readFileSync(path.join(clientFixtures, "ventes.csv"), "utf8");
    ws.write(
      "bad.csv",
      sales.replace("2023-06-03,REF003,1,5", "2023-06-03,REF003,1.5,5") + "\r\n2023-05-28,REF002,3,2\r\n2023-06-26,REF999,1,1",
    );
    const result = await ws.cli(["profile"], { ...env, SALES_URL: "bad.csv" });
    expect(result.code).toBe(0);
    const out = result.stdout;
    expect(out).toMatch(/^9 +quantity +1\.5 +"1\.5" is not an integer$/m);
    expect(out).toMatch(/^2023-05-28, REF002, 2 +3, 32$/m);
    expect(out).toMatch(/^33 +product_id +REF999 +not in products \(product_id\) as loaded by load_products$/m);
    expect(out).toContain("32 data rows; key (date, product_id, store_id): 1 duplicated; 1 unresolved references");
    expect(ws.bytes()).toBeUndefined();
  });

  test("--json gives the same findings to a program", async () => {
    ws.write("bad.csv", "Date,ID Référence produit,Quantité,ID Magasin\n2023-06-26,REF999,x,1\n");
    const result = await ws.cli(["profile", "--json"], { ...env, SALES_URL: "bad.csv" });
    const sales = (
      JSON.parse(result.stdout) as { sources: { step: string; columns: { target?: string; invalid: unknown[] }[]; lineEndings: string }[] }
    ).sources.find((s) => s.step === "load_sales")!;
    expect(sales.lineEndings).toBe("LF");
    expect(sales.columns.find((c) => c.target === "quantity")?.invalid).toEqual([{ line: 2, value: "x", reason: '"x" is not an integer' }]);
  });

  test("a source that cannot be read is reported, and the exit code says so", async () => {
    ws.write("latin1.csv", "");
    writeFileSync(ws.path("latin1.csv"), Buffer.from("ID Magasin,Ville,Nombre de salariés\n1,Orléans,3\n", "latin1"));
    const result = await ws.cli(["profile"], { ...env, STORES_URL: "latin1.csv" });
    expect(result.code).toBe(1);
    expect(result.stdout).toContain("could not be read: latin1.csv is not valid UTF-8 (line 1, byte 33)");
    expect(result.stdout).toContain("### load_sales → sales".replace("### ", ""));
  });
});
