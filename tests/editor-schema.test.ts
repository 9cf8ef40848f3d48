import { copyFileSync, readFileSync } from "node:fs";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { editorSchemaFile, editorSchemaSource } from "../engine/config/editor-schema.js";
import { clientFileEnv, clientPipeline, root, Workspace } from "./helpers/workspace.js";
import { yamlDiagnostics } from "./helpers/yaml-language-server.js";

const modeline = "# yaml-language-server: $schema=./pipeline.schema.json";

describe("pipeline.schema.json, for editors", () => {
  test("is generated from engine/config/schema.ts: after a change there, `npm run generate` rewrites it", () => {
    expect(readFileSync(path.join(root, editorSchemaFile), "utf8"), "regenerate with: npm run generate").toBe(editorSchemaSource());
  });

  test("describes every key, so completion explains each one", () => {
    const schema = JSON.parse(editorSchemaSource()) as object;
    const undescribed: string[] = [];
    const walk = (node: unknown, where: string): void => {
      if (Array.isArray(node)) return node.forEach((item, i) => walk(item, `${where}/${i}`));
      if (typeof node !== "object" || node === null) return;
      const properties = (node as { properties?: Record<string, { description?: string; anyOf?: unknown }> }).properties;
      // why: an `if` only tests a step's type; its `then` carries the described schema.
      if (properties && !where.endsWith("/if"))
        for (const [key, value] of Object.entries(properties)) if (!value.description) undescribed.push(`${where}/${key}`);
      for (const [key, value] of Object.entries(node)) walk(value, `${where}/${key}`);
    };
    walk(schema, "");
    expect(undescribed).toEqual([]);
    expect(JSON.stringify(schema)).toContain('"default":"reject"');
    expect(JSON.stringify(schema)).toContain('"examples":["fr-FR","en-GB","de-CH"]');
  });

  test("the client's pipeline names it on its first line, for the YAML language server", () => {
    for (const file of [path.join(clientPipeline, "pipeline.yaml"), path.join(root, "pipeline.yaml")])
      expect(readFileSync(file, "utf8").split("\n")[0], file).toBe(modeline);
  });
});

describe("the real YAML language server, driven over LSP", () => {
  let ws: Workspace;
  beforeEach(() => {
    ws = new Workspace();
    copyFileSync(path.join(root, editorSchemaFile), ws.path(editorSchemaFile));
  });
  afterEach(() => ws.remove());

  test("finds nothing to say about the client's pipeline", async () => {
    expect(await yamlDiagnostics(ws.path("pipeline.yaml"))).toEqual([]);
  }, 60_000);

  test.each([
    [
      "a misspelt value",
      "    mode: upsert\n",
      "    mode: upsrt\n",
      "    mode: upsrt",
      /Value is not accepted\. Valid values: "replace", "upsert", "insert_new", "append"/,
    ],
    [
      "a misspelt key",
      "    on_conflict: reject\n",
      "    on_conflit: reject\n",
      "    on_conflit: reject",
      /Property on_conflit is not allowed/,
    ],
    ["a value of the wrong type", "    locale: fr-FR\n", "    locale: 33\n", "    locale: 33", /Incorrect type\. Expected "string"/],
  ])(
    "%s: one diagnostic, at its line, where validate puts it too",
    async (_name, from, to, line, message) => {
      const yaml = readFileSync(ws.path("pipeline.yaml"), "utf8");
      expect(yaml).toContain(from);
      ws.write("pipeline.yaml", yaml.replace(from, to));
      const expectedLine = yaml.replace(from, to).split("\n").indexOf(line);
      const diagnostics = await yamlDiagnostics(ws.path("pipeline.yaml"));
      expect(diagnostics).toHaveLength(1);
      expect(diagnostics[0]!.message).toMatch(message);
      expect(diagnostics[0]!.range.start.line).toBe(expectedLine);
      const validate = await ws.cli(["validate"], clientFileEnv);
      expect(validate.stderr).toMatch(new RegExp(`^pipeline\\.yaml:${expectedLine + 1}:\\d+ error E_SCHEMA`));
    },
    60_000,
  );
});
