import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, test } from "vitest";
import { root, Workspace } from "./helpers/workspace.js";

describe("generated documents match what the tool generates now", () => {
  test("docs/schema.md is the schema the pipeline creates", async () => {
    const ws = new Workspace();
    try {
      const result = await ws.cli(["schema"]);
      expect(result.code).toBe(0);
      expect(result.stdout, "regenerate with: npm run docs").toBe(readFileSync(path.join(root, "docs/schema.md"), "utf8"));
    } finally {
      ws.remove();
    }
  });

  test("the schema diagram follows a change of declaration", async () => {
    const ws = new Workspace();
    try {
      ws.write(
        "pipeline.yaml",
        readFileSync(ws.path("pipeline.yaml"), "utf8").replace(
          "      stock: { type: integer }\n",
          "      stock: { type: integer }\n      ean: { type: text }\n",
        ),
      );
      const result = await ws.cli(["schema"]);
      expect(result.stdout).toContain("    TEXT ean\n");
      expect(result.stdout).toContain('  products ||--o{ sales : "product_id"');
      expect(result.stdout).toContain("| ean | TEXT |  |  |");
    } finally {
      ws.remove();
    }
  });
});
