import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, test } from "vitest";
import { pipelineSchema } from "../engine/config/schema.js";
import { referenceFile, updatedReference } from "../engine/config/reference.js";
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

describe("docs/pipeline-reference.md", () => {
  const reference = readFileSync(path.join(root, referenceFile), "utf8");

  test("its tables of keys are what the schema says now (regenerate with: npm run generate)", () => {
    expect(reference).toBe(updatedReference(reference));
  });

  test("it carries every description, default and key of the schema", () => {
    const missing: string[] = [];
    const walk = (node: unknown): void => {
      if (typeof node !== "object" || node === null) return;
      const { properties, description } = node as { properties?: Record<string, unknown>; description?: unknown };
      if (typeof description === "string" && !reference.includes(description.replaceAll("|", "\\|"))) missing.push(description);
      for (const key of Object.keys(properties ?? {})) if (!reference.includes(`| \`${key}\``)) missing.push(`key ${key}`);
      for (const value of Object.values(node)) walk(value);
    };
    walk(pipelineSchema);
    // why: the step and check unions' own discriminators are written per step type and per check kind instead.
    const perBranch = [
      "the step's type: load, sql or report",
      "the kind of check: not_null, unique, relationships, accepted_values, range, expression, row_count or sql",
    ];
    expect(missing.filter((m) => !perBranch.includes(m))).toEqual([]);
  });
});

describe("docs/reliability.md", () => {
  test("every row of the fault table names tests that exist", () => {
    const table = readFileSync(path.join(root, "docs/reliability.md"), "utf8")
      .split("\n")
      .filter((line) => line.startsWith("| ") && !line.startsWith("| fault ") && !line.startsWith("|---"));
    expect(table.length).toBeGreaterThan(40);
    const missing: string[] = [];
    for (const row of table) {
      const cell = row.split(" | ").at(-1)!.replace(/ \|$/, "");
      for (const reference of cell.split("; ")) {
        const match = /^([a-z0-9-]+): (.+)$/.exec(reference);
        if (!match) {
          missing.push(`${reference} (not "file: test title")`);
          continue;
        }
        const source = readFileSync(path.join(root, "tests", `${match[1]}.test.ts`), "utf8");
        // why: a title may be shortened with "…"; each part left must be in the file, as a test or a table entry.
        const parts = match[2]!
          .replace(/ \(CI\)$/, "")
          .split("…")
          .map((part) => part.trim())
          .filter((part) => part !== "");
        for (const part of parts) if (!source.includes(part)) missing.push(`${reference}: "${part}" is not in tests/${match[1]}.test.ts`);
      }
    }
    expect(missing).toEqual([]);
  });
});
