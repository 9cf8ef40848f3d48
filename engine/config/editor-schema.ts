import { writeFile } from "node:fs/promises";
import { pipelineSchema } from "./schema.js";

/** Where the JSON Schema for editors lives, from the project's root (named by pipeline.yaml's `yaml-language-server` line). */
export const editorSchemaFile = "pipeline.schema.json";

/**
 * The JSON Schema of pipeline.yaml for editors (the YAML language server, VS Code...): the one schema
 * of engine/config/schema.ts, as JSON, with its descriptions, defaults and examples. ajv's
 * `discriminator` keyword is not standard JSON Schema, so the step union is written for editors as
 * one `if type is X then X's schema` per step type: an editor then checks and completes a step
 * against its own type only, instead of reporting every branch of a `oneOf`.
 */
export function editorSchemaSource(): string {
  const { steps } = pipelineSchema.properties;
  const { discriminator: _discriminator, oneOf, ...items } = steps.items;
  const types = oneOf.map((branch) => branch.properties.type.const);
  const stepItems = {
    ...items,
    properties: { type: { enum: types, description: items.properties.type.description } },
    allOf: oneOf.map((branch) => ({
      if: { properties: { type: { const: branch.properties.type.const } }, required: ["type"] },
      then: branch,
    })),
  };
  const schema = {
    $schema: "http://json-schema.org/draft-07/schema#",
    ...pipelineSchema,
    title: "pipeline.yaml",
    properties: { ...pipelineSchema.properties, steps: { ...steps, items: stepItems } },
  };
  return `${JSON.stringify(schema, null, 2)}\n`;
}

/** Writes pipeline.schema.json (`npm run generate`, from the project's root). */
export async function writeEditorSchema(): Promise<void> {
  await writeFile(editorSchemaFile, editorSchemaSource());
}
