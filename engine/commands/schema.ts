import { engineNamed } from "../db/engines/index.js";
import type { Command } from "../main.js";
import { readSchema, renderSchemaMarkdown } from "../schema-diagram.js";

/** `schema`: the database schema the pipeline creates (with the engine's own types), as Markdown with a Mermaid diagram, or (`--json`) its tables as JSON. */
export const schemaCommand: Command = {
  pipeline: true,
  async run({ io, json }, { config, pipeline, engine }) {
    const dialect = (await engineNamed(engine)).dialect;
    const tables = await readSchema(pipeline, dialect);
    if (json) io.stdout.write(JSON.stringify({ ok: true, command: "schema", config: config.file, tables }, null, 2) + "\n");
    else io.stdout.write(renderSchemaMarkdown(tables, config.file, dialect));
    return 0;
  },
};
