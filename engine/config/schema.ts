import type { FromSchema } from "json-schema-to-ts";
import { engineNames, type EngineName } from "../db/engines/engine.js";

const identifier = { type: "string", pattern: "^[A-Za-z_][A-Za-z0-9_]*$" } as const;
const identifierList = { type: "array", items: identifier, minItems: 1, uniqueItems: true } as const;

const columnSchema = {
  type: "object",
  additionalProperties: false,
  required: ["type"],
  properties: {
    type: { enum: ["text", "integer", "decimal", "real", "date", "boolean"] },
    scale: { type: "integer", minimum: 0, maximum: 9 },
    required: { type: "boolean" },
    description: { type: "string" },
  },
} as const;

const tableSchema = {
  type: "object",
  additionalProperties: false,
  required: ["columns"],
  properties: {
    description: { type: "string" },
    columns: { type: "object", propertyNames: identifier, additionalProperties: columnSchema, minProperties: 1 },
    primary_key: identifierList,
    unique: { type: "array", items: identifierList },
    foreign_keys: {
      type: "array",
      items: {
        type: "object",
        additionalProperties: false,
        required: ["columns", "references"],
        properties: {
          columns: identifierList,
          references: {
            type: "object",
            additionalProperties: false,
            required: ["table", "columns"],
            properties: { table: identifier, columns: identifierList },
          },
        },
      },
    },
  },
} as const;

const mappingSchema = {
  anyOf: [
    { type: "string", minLength: 1 },
    {
      type: "object",
      additionalProperties: false,
      required: ["from"],
      properties: {
        from: { type: "string", minLength: 1 },
        format: { type: "string", minLength: 1 },
        trim: { type: "boolean" },
        decimal_separator: { enum: [".", ","] },
        true_values: { type: "array", items: { type: "string" }, minItems: 1 },
        false_values: { type: "array", items: { type: "string" }, minItems: 1 },
      },
    },
  ],
} as const;

const csvSchema = {
  type: "object",
  additionalProperties: false,
  properties: {
    delimiter: { type: "string", minLength: 1, maxLength: 1 },
    quote: { type: "string", minLength: 1, maxLength: 1 },
    encoding: { enum: ["utf-8", "utf8", "latin1", "iso-8859-1", "windows-1252"] },
    header_line: { type: "integer", minimum: 1 },
  },
} as const;

/** The `http:` options of a load step; every option has its default here. */
export const httpSchema = {
  type: "object",
  additionalProperties: false,
  properties: {
    timeout_ms: {
      type: "integer",
      minimum: 1,
      default: 30_000,
      description: "longest wait for the server's answer, and for each next chunk of the body",
    },
    total_timeout_ms: {
      type: "integer",
      minimum: 1,
      default: 300_000,
      description: "longest time for the whole fetch of the source, retries and their waits included; past it the run fails",
    },
    retries: {
      type: "integer",
      minimum: 0,
      maximum: 20,
      default: 3,
      description: "how many times an attempt that failed (no answer, connection error, 429, 5xx) is made again",
    },
    backoff_ms: { type: "integer", minimum: 0, default: 500, description: "wait before the first retry, doubled for each next one" },
    max_backoff_ms: {
      type: "integer",
      minimum: 0,
      default: 10_000,
      description: "longest wait between two attempts, and the longest Retry-After honoured",
    },
    max_bytes: {
      type: "integer",
      minimum: 1,
      default: 512 * 1024 * 1024,
      description: "largest source accepted, in bytes (a body after gzip decoding, or a local file); checked while reading",
    },
    allow_redirect_hosts: {
      type: "array",
      items: { type: "string", minLength: 1 },
      default: [],
      description:
        "other hosts a redirect may lead to (host names such as cdn.example.com); by default only redirects on the source's own host are followed",
    },
  },
} as const;

const stepName = { ...identifier, description: "unique step name, used in logs and run history" } as const;

const loadStepSchema = {
  type: "object",
  additionalProperties: false,
  required: ["type", "name", "source", "table", "mode", "columns"],
  properties: {
    type: { const: "load" },
    name: stepName,
    description: { type: "string" },
    source: { type: "string", minLength: 1 },
    csv: csvSchema,
    http: httpSchema,
    table: identifier,
    mode: { enum: ["replace", "upsert", "insert_new", "append"] },
    key: identifierList,
    on_conflict: { enum: ["update", "reject", "fail"] },
    columns: { type: "object", propertyNames: identifier, additionalProperties: mappingSchema, minProperties: 1 },
    max_rejected: {
      type: ["integer", "string"],
      minimum: 0,
      pattern: "^(100(\\.0+)?|[0-9]{1,2}(\\.[0-9]+)?)%$",
      description:
        'a count (e.g. 100) or a percentage of the rows read (e.g. "5%"): more rejected rows than this fail the run, nothing saved; default 10000',
    },
    min_replace_ratio: { type: "number", minimum: 0, maximum: 1 },
    force: { type: "boolean" },
  },
} as const;

const sqlStepSchema = {
  type: "object",
  additionalProperties: false,
  required: ["type", "name"],
  properties: {
    type: { const: "sql" },
    name: stepName,
    description: { type: "string" },
    file: { type: "string", minLength: 1 },
    sql: { type: "string", minLength: 1 },
    into: identifier,
    mode: { enum: ["replace", "append"] },
  },
} as const;

const reportFormat = { enum: ["text", "integer", "number", "cents", "percent", "date"] } as const;

const reportSectionSchema = {
  type: "object",
  additionalProperties: false,
  required: ["title", "show"],
  properties: {
    title: { type: "string", minLength: 1 },
    show: { enum: ["figures", "table", "text"] },
    file: { type: "string", minLength: 1 },
    sql: { type: "string", minLength: 1 },
    columns: {
      type: "object",
      additionalProperties: {
        type: "object",
        additionalProperties: false,
        properties: { label: { type: "string" }, format: reportFormat },
      },
    },
    chart: {
      type: "object",
      additionalProperties: false,
      required: ["label", "value"],
      properties: { label: { type: "string" }, value: { type: "string" } },
    },
    text: { type: "string", minLength: 1 },
    note: { type: "string" },
  },
} as const;

const reportStepSchema = {
  type: "object",
  additionalProperties: false,
  required: ["type", "name", "title", "sections"],
  properties: {
    type: { const: "report" },
    name: stepName,
    description: { type: "string" },
    title: { type: "string", minLength: 1 },
    subtitle: { type: "string" },
    locale: { enum: ["fr-FR", "en-GB"] },
    markdown: { type: "string", minLength: 1 },
    html: { type: "string", minLength: 1 },
    sections: { type: "array", minItems: 1, items: reportSectionSchema },
  },
} as const;

/** The JSON Schema of pipeline.yaml: written once, the config types below derive from it. */
export const pipelineSchema = {
  $id: "https://pipeline-runner.local/pipeline.schema.json",
  type: "object",
  additionalProperties: false,
  required: ["version", "database", "tables", "steps"],
  properties: {
    version: { const: 1 },
    name: { type: "string" },
    description: { type: "string" },
    database: {
      description: "the SQLite file (relative to this file), or { path, engine }",
      anyOf: [
        { type: "string", minLength: 1 },
        {
          type: "object",
          additionalProperties: false,
          required: ["path"],
          properties: {
            path: { type: "string", minLength: 1 },
            engine: {
              enum: engineNames,
              description:
                "sqljs (default): the file is loaded in memory and replaced on save; native: node:sqlite, in place on the live file",
            },
          },
        },
      ],
    },
    tables: { type: "object", propertyNames: identifier, additionalProperties: tableSchema, minProperties: 1 },
    steps: {
      type: "array",
      minItems: 1,
      items: {
        type: "object",
        required: ["type"],
        properties: { type: { type: "string" } },
        discriminator: { propertyName: "type" },
        oneOf: [loadStepSchema, sqlStepSchema, reportStepSchema],
      },
    },
  },
} as const;

/** The `database:` setting, string or object, as a path and the engine it names (if any). */
export function databaseSetting(pipeline: Pick<Pipeline, "database">): { path: string; engine?: EngineName | undefined } {
  return typeof pipeline.database === "string" ? { path: pipeline.database } : pipeline.database;
}

/** A validated pipeline.yaml (ajv does not fill in defaults: a defaulted option may be absent). */
export type Pipeline = FromSchema<typeof pipelineSchema, { keepDefaultedPropertiesOptional: true }>;
/** One declared table. */
export type TableSpec = FromSchema<typeof tableSchema>;
/** One declared column. */
export type ColumnSpec = FromSchema<typeof columnSchema>;
/** The storage types a column can have. */
export type ColumnType = ColumnSpec["type"];
/** How one target column is read from the source. */
export type ColumnMapping = FromSchema<typeof mappingSchema>;
/** Any step. */
export type StepSpec = Pipeline["steps"][number];
/** A `type: load` step. */
export type LoadStepSpec = FromSchema<typeof loadStepSchema, { keepDefaultedPropertiesOptional: true }>;
/** A `type: sql` step. */
export type SqlStepSpec = FromSchema<typeof sqlStepSchema>;
/** A `type: report` step. */
export type ReportStepSpec = FromSchema<typeof reportStepSchema>;
/** One section of a report. */
export type ReportSection = FromSchema<typeof reportSectionSchema>;
/** How a report shows a value. */
export type ReportFormat = FromSchema<typeof reportFormat>;
/** CSV reading options. */
export type CsvOptions = FromSchema<typeof csvSchema>;
/** HTTP fetching options. */
export type HttpOptions = FromSchema<typeof httpSchema, { keepDefaultedPropertiesOptional: true }>;
