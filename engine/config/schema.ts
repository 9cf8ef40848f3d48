import type { FromSchema } from "json-schema-to-ts";
import { engineNames, type EngineName } from "../db/engines/engine.js";

const identifier = { type: "string", pattern: "^[A-Za-z_][A-Za-z0-9_]*$" } as const;
const identifierList = { type: "array", items: identifier, minItems: 1, uniqueItems: true } as const;
const columnList = (description: string) => ({ ...identifierList, description }) as const;
const tableName = (description: string) => ({ ...identifier, description }) as const;

/** The values a boolean column reads as true when its mapping gives no `true_values` (any case). */
export const defaultTrueValues = ["true", "1", "yes", "y"] as const;
/** The values a boolean column reads as false when its mapping gives no `false_values` (any case). */
export const defaultFalseValues = ["false", "0", "no", "n"] as const;

const columnSchema = {
  type: "object",
  additionalProperties: false,
  required: ["type"],
  properties: {
    type: {
      enum: ["text", "integer", "decimal", "real", "date", "boolean"],
      description:
        "the stored type: text; integer; decimal (exact, stored as an integer count of 10^-scale units: money); real (derived figures, never money you sum); date (stored YYYY-MM-DD); boolean (stored 0/1)",
    },
    scale: {
      type: "integer",
      minimum: 0,
      maximum: 9,
      description: "for decimal columns only: the digits after the point; 49.99 with scale 2 is stored as 4999",
      examples: [2],
    },
    required: {
      type: "boolean",
      default: false,
      description: "true: an empty field rejects the row; false: it is stored as NULL (primary key columns are always required)",
    },
    description: { type: "string", description: "what the column holds, for people (shown by `schema`)" },
  },
} as const;

const checkSeverity = {
  enum: ["error", "warn"],
  default: "error",
  description: "error: a failing check fails the run and nothing is saved; warn: it is recorded and shown, the run goes on",
} as const;

/** What every check may say besides its kind: its name, severity and description. */
const checkCommon = {
  name: { ...identifier, description: "the check's name in the results (default: kind, table and column, e.g. not_null_sales_quantity)" },
  severity: checkSeverity,
  description: { type: "string", description: "what the check guards, for people" },
} as const;

const checkValue = { type: ["string", "number", "boolean"] } as const;
const checkColumn = { ...identifier, description: "the column checked" } as const;

/** A range check's bound written as a value, or as the run's own day or start (`max: { run: date }`), which the engine knows moves only forward. */
const rangeBound = (side: "lowest" | "highest") =>
  ({
    anyOf: [
      { type: ["number", "string"] },
      {
        type: "object",
        additionalProperties: false,
        required: ["run"],
        properties: {
          run: {
            enum: ["date", "time"],
            description:
              "date: the day the run started (UTC, YYYY-MM-DD, as a date column stores it); time: the moment it started (UTC, ISO 8601 text, as run_started_at)",
          },
        },
      },
    ],
    description: `the ${side} value allowed, as stored; or { run: date } (the day of the run, UTC) or { run: time } (its start), for a date or text column`,
    examples: side === "highest" ? [100, "2030-12-31", { run: "date" }] : [0, "2023-01-01"],
  }) as const;

/** The checks a table may declare, discriminated on `check`; each compiles to one query whose rows are the failures. */
const checkSchema = {
  type: "object",
  required: ["check"],
  properties: {
    check: {
      type: "string",
      description: "the kind of check: not_null, unique, relationships, accepted_values, range, expression, row_count or sql",
    },
  },
  discriminator: { propertyName: "check" },
  oneOf: [
    {
      type: "object",
      additionalProperties: false,
      required: ["check", "column"],
      description: "every row has a value in column",
      examples: [{ check: "not_null", column: "quantity" }],
      properties: { check: { const: "not_null", description: "the kind of check" }, column: checkColumn, ...checkCommon },
    },
    {
      type: "object",
      additionalProperties: false,
      required: ["check", "columns"],
      description: "no two rows share the same values in columns (rows with an empty column are not compared)",
      examples: [{ check: "unique", columns: ["date", "product_id", "store_id"] }],
      properties: {
        check: { const: "unique", description: "the kind of check" },
        columns: { ...identifierList, description: "the columns whose values together must not repeat" },
        ...checkCommon,
      },
    },
    {
      type: "object",
      additionalProperties: false,
      required: ["check", "column", "to", "field"],
      description: "every value of column is found in table to, column field (empty values are not checked)",
      examples: [{ check: "relationships", column: "product_id", to: "products", field: "product_id" }],
      properties: {
        check: { const: "relationships", description: "the kind of check" },
        column: checkColumn,
        to: { ...identifier, description: "the table the values must be found in" },
        field: { ...identifier, description: "the column of that table holding them" },
        ...checkCommon,
      },
    },
    {
      type: "object",
      additionalProperties: false,
      required: ["check", "column", "values"],
      description: "every value of column is one of values (empty values are not checked)",
      examples: [{ check: "accepted_values", column: "status", values: ["open", "closed"] }],
      properties: {
        check: { const: "accepted_values", description: "the kind of check" },
        column: checkColumn,
        values: { type: "array", items: checkValue, minItems: 1, description: "the values allowed" },
        ...checkCommon,
      },
    },
    {
      type: "object",
      additionalProperties: false,
      required: ["check", "column"],
      description:
        "every value of column is at least min and at most max, as stored (a decimal column holds integers of its smallest unit; a date, text YYYY-MM-DD); inclusive: false excludes the bounds",
      examples: [{ check: "range", column: "price_cents", min: 0, inclusive: false }],
      properties: {
        check: { const: "range", description: "the kind of check" },
        column: checkColumn,
        min: rangeBound("lowest"),
        max: rangeBound("highest"),
        inclusive: { type: "boolean", default: true, description: "whether min and max themselves are allowed" },
        ...checkCommon,
      },
    },
    {
      type: "object",
      additionalProperties: false,
      required: ["check", "expression"],
      description:
        "a boolean SQL expression over the table's columns that every row satisfies (a row where it is NULL passes, as in a CHECK constraint)",
      examples: [{ check: "expression", expression: "quantity > 0 AND quantity < 1000" }],
      properties: {
        check: { const: "expression", description: "the kind of check" },
        expression: { type: "string", minLength: 1, description: "a boolean SQL expression over the table's columns" },
        column: { ...identifier, description: "the column the expression is about, shown in the results" },
        ...checkCommon,
      },
    },
    {
      type: "object",
      additionalProperties: false,
      required: ["check"],
      description: "the table holds at least min and at most max rows",
      examples: [{ check: "row_count", min: 1 }],
      properties: {
        check: { const: "row_count", description: "the kind of check" },
        min: { type: "integer", minimum: 0, description: "the fewest rows allowed" },
        max: { type: "integer", minimum: 0, description: "the most rows allowed" },
        ...checkCommon,
      },
    },
    {
      type: "object",
      additionalProperties: false,
      required: ["check"],
      description: "a query (file: or sql:) whose returned rows are the failures; it may read any table and only reads",
      examples: [{ check: "sql", file: "sql/check_reconciliation.sql" }],
      properties: {
        check: { const: "sql", description: "the kind of check" },
        file: { type: "string", minLength: 1, description: "a .sql file holding the query, relative to this file (or sql:)" },
        sql: { type: "string", minLength: 1, description: "the query itself (or file:)" },
        ...checkCommon,
      },
    },
  ],
} as const;

const tableSchema = {
  type: "object",
  additionalProperties: false,
  required: ["columns"],
  properties: {
    description: { type: "string", description: "what the table holds, for people (shown by `schema`)" },
    columns: {
      type: "object",
      propertyNames: identifier,
      additionalProperties: columnSchema,
      minProperties: 1,
      description: "the table's columns, each `name: { type: ... }`; tables are created STRICT",
      examples: [{ product_id: { type: "text" }, price_cents: { type: "decimal", scale: 2, required: true } }],
    },
    primary_key: columnList("the columns that identify a row; a load step matches rows on it by default"),
    unique: {
      type: "array",
      items: identifierList,
      description: "other unique keys, each a list of columns (its columns should be required)",
    },
    foreign_keys: {
      type: "array",
      description: "references to other tables' keys; a row whose reference does not resolve is rejected and retried by later runs",
      items: {
        type: "object",
        additionalProperties: false,
        required: ["columns", "references"],
        properties: {
          columns: columnList("the columns of this table that hold the reference"),
          references: {
            type: "object",
            additionalProperties: false,
            required: ["table", "columns"],
            description: "the referenced table and its key columns (its primary key or a unique key)",
            properties: {
              table: tableName("the referenced table, declared under tables:"),
              columns: columnList("the referenced key's columns, in the same order"),
            },
          },
        },
      },
    },
    checks: {
      type: "array",
      items: checkSchema,
      description: "assertions on the table's data, run after the last step that writes a table they read, inside the run's transaction",
    },
  },
} as const;

const mappingSchema = {
  anyOf: [
    { type: "string", minLength: 1, description: "the source column's header, exactly as in the CSV" },
    { type: "null" },
    {
      type: "object",
      additionalProperties: false,
      properties: {
        from: {
          type: "string",
          minLength: 1,
          description: "the source column's header, exactly as in the CSV; default: the column's own name",
        },
        format: {
          type: "string",
          minLength: 1,
          default: "yyyy-MM-dd",
          description: "for date columns: the date format in the file, with tokens yyyy, MM, dd (M and d accept one digit)",
          examples: ["dd/MM/yyyy"],
        },
        trim: { type: "boolean", default: true, description: "trim spaces around the field before casting it" },
        decimal_separator: {
          enum: [".", ","],
          default: ".",
          description: 'for decimal columns: the separator in the file ("," for 49,99)',
        },
        true_values: {
          type: "array",
          items: { type: "string" },
          minItems: 1,
          default: defaultTrueValues,
          description: "for boolean columns: the values read as true, in any case",
          examples: [["oui", "vrai"]],
        },
        false_values: {
          type: "array",
          items: { type: "string" },
          minItems: 1,
          default: defaultFalseValues,
          description: "for boolean columns: the values read as false, in any case",
          examples: [["non", "faux"]],
        },
      },
    },
  ],
  description: 'the source column\'s header, or a mapping such as { from: "Date", format: "dd/MM/yyyy" }',
} as const;

const csvSchema = {
  type: "object",
  additionalProperties: false,
  description: "how the CSV file is written",
  properties: {
    delimiter: { type: "string", minLength: 1, maxLength: 1, default: ",", description: "the field separator", examples: [";"] },
    quote: { type: "string", minLength: 1, maxLength: 1, default: '"', description: "the quote character" },
    encoding: {
      enum: ["utf-8", "utf8", "latin1", "iso-8859-1", "windows-1252"],
      default: "utf-8",
      description: "the file's character encoding (a BOM is dropped)",
    },
    header_line: {
      type: "integer",
      minimum: 1,
      default: 1,
      description: "the line that holds the header; the lines before it are skipped",
    },
  },
} as const;

/** The `http:` options of a load step; every option has its default here. */
export const httpSchema = {
  type: "object",
  additionalProperties: false,
  description: "how an http(s) source is fetched: timeouts, retries, size limit, redirects",
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

/** How old a load step's source may be: from its Last-Modified (a local file: its modification time), or from the newest value of a date column once loaded. */
const freshnessSchema = {
  type: "object",
  additionalProperties: false,
  required: ["max_age"],
  description: "how old the source may be before a run, test or doctor says so",
  examples: [{ max_age: "2d", column: "date", severity: "warn" }],
  properties: {
    max_age: {
      type: "string",
      pattern: "^[0-9]+(\\.[0-9]+)?(m|h|d)$",
      description: "a duration such as 90m, 36h or 2d",
    },
    column: {
      ...identifier,
      description: "a date column of the step's table: its newest value is the data's age; without it, the source's Last-Modified",
    },
    severity: checkSeverity,
  },
} as const;

const stepName = { ...identifier, description: "unique step name, used in logs and run history" } as const;
const stepDescription = { type: "string", description: "what the step is for, for people reading the pipeline" } as const;

const loadStepSchema = {
  type: "object",
  additionalProperties: false,
  required: ["type", "name", "source", "table", "mode", "columns"],
  properties: {
    type: { const: "load", description: "load: read a CSV source into a table" },
    name: stepName,
    description: stepDescription,
    source: {
      type: "string",
      minLength: 1,
      description:
        "an http(s):// URL (user:password@ sends Basic credentials) or a path to a regular file, relative to this file; ${VAR:-default} lets an environment variable replace it",
      examples: ["data/sales.csv", "${SALES_URL:-https://example.com/sales.csv}"],
    },
    csv: csvSchema,
    http: httpSchema,
    table: tableName("the declared table the rows go into"),
    mode: {
      enum: ["replace", "upsert", "insert_new", "append"],
      description:
        "replace: empty the table and load the file; upsert: insert new keys, update changed rows; insert_new: insert only keys not stored yet (on_conflict says what to do with a changed row); append: insert every row",
    },
    key: columnList("the columns rows are matched on; default: the table's primary key, else its only unique key"),
    on_conflict: {
      enum: ["update", "reject", "fail"],
      default: "reject",
      description:
        "insert_new only: a row whose key is stored with other values is kept aside (reject), overwrites it (update) or fails the run (fail)",
    },
    columns: {
      type: "object",
      propertyNames: identifier,
      additionalProperties: mappingSchema,
      minProperties: 1,
      description:
        "each target column and the source header it is read from: `column: Header`, `column: { from: Header, format: ... }`, or `column:` alone when the header is the column's name",
      examples: [{ product_id: "ID Référence produit", date: { from: "Date", format: "dd/MM/yyyy" } }],
    },
    max_rejected: {
      type: ["integer", "string"],
      minimum: 0,
      pattern: "^(100(\\.0+)?|[0-9]{1,2}(\\.[0-9]+)?)%$",
      description:
        'a count (e.g. 100) or a percentage of the rows read (e.g. "5%"): more rejected rows than this fail the run, nothing saved; default 10000',
    },
    min_replace_ratio: {
      type: "number",
      minimum: 0,
      maximum: 1,
      default: 0.5,
      description: "replace only: refuse a download with fewer rows than this share of the stored ones (a truncated export)",
    },
    force: { type: "boolean", default: false, description: "replace only: allow emptying or shrinking the table (like --force)" },
    freshness: freshnessSchema,
  },
} as const;

const sqlStepSchema = {
  type: "object",
  additionalProperties: false,
  required: ["type", "name"],
  properties: {
    type: { const: "sql", description: "sql: run a query and store its result in a table" },
    name: stepName,
    description: stepDescription,
    file: {
      type: "string",
      minLength: 1,
      description: "a .sql file holding the query, relative to this file (or sql:)",
      examples: ["sql/revenue.sql"],
    },
    sql: { type: "string", minLength: 1, description: "the query itself (or file:)" },
    into: tableName("the declared table the query's rows go into"),
    mode: {
      enum: ["replace", "append", "history"],
      default: "replace",
      description:
        "replace: the table holds this run's result only; append: rows are added; history: the rows are added, stamped with run_id and run_started_at, only when they differ from the last ones stored",
    },
    incremental: {
      type: "object",
      additionalProperties: false,
      required: ["appended", "key", "add"],
      description:
        "a declared policy (mode: replace only): when this run only appended rows to the table `appended` and nothing else the query reads or the table into changed since the runner's last commit, the query runs on the appended rows only and its rows are merged into the stored ones (the add columns summed on key, new keys inserted); otherwise the whole query runs. Declare it only for a query whose add columns are sums or counts over the rows of appended",
      examples: [{ appended: "sales", key: ["store_id", "product_id"], add: ["sales_lines", "quantity", "revenue_cents"] }],
      properties: {
        appended: tableName("the table the query reads in full that grows by appended rows (a load step with insert_new or append)"),
        key: columnList("the columns of into the query groups by: its primary key or one of its unique keys"),
        add: columnList(
          "the integer columns of into that are sums or counts over the rows of appended: a stored row's value and the appended rows' are added",
        ),
      },
    },
  },
} as const;

const reportFormat = {
  enum: ["text", "integer", "number", "cents", "percent", "date"],
  description:
    "how values are shown, in the report's locale: text as is; integer; number (2 decimals); cents (an integer of cents, shown as an amount in the report's currency, exactly); percent (31.88 is 31.88 %); date (YYYY-MM-DD or a timestamp)",
} as const;

const reportSectionSchema = {
  type: "object",
  additionalProperties: false,
  required: ["title", "show"],
  properties: {
    title: { type: "string", minLength: 1, description: "the section's heading" },
    show: {
      enum: ["figures", "table", "text", "trend"],
      description:
        "figures: the first row as labelled key figures; table: every row; text: the text template filled from each row; trend: a line chart and the changes, from two points on",
    },
    file: {
      type: "string",
      minLength: 1,
      description: "a .sql file holding the section's query (read only), relative to this file (or sql:)",
    },
    sql: { type: "string", minLength: 1, description: "the section's query (read only; or file:)" },
    columns: {
      type: "object",
      description: "the columns shown, in order, each with its label and format; default: every column of the query, as is",
      additionalProperties: {
        type: "object",
        additionalProperties: false,
        properties: { label: { type: "string", description: "the column's heading, for the reader" }, format: reportFormat },
      },
    },
    chart: {
      type: "object",
      additionalProperties: false,
      required: ["label", "value"],
      description: "a horizontal bar chart under a table: one bar per row",
      properties: {
        label: { type: "string", description: "the column that names each bar" },
        value: { type: "string", description: "the column that gives each bar's length (shown in its column's format)" },
        title: { type: "string", description: "what the chart shows, for screen readers; default: the section's title" },
      },
    },
    text: {
      type: "string",
      minLength: 1,
      description: "for show: text, a template: paragraphs separated by blank lines, {column} or {column|format} placeholders",
      examples: ["Revenue reached {revenue_cents|cents}."],
    },
    note: { type: "string", description: "a line in small print under the section" },
  },
} as const;

const reportStepSchema = {
  type: "object",
  additionalProperties: false,
  required: ["type", "name", "title", "sections"],
  properties: {
    type: { const: "report", description: "report: a summary sheet (Markdown and/or HTML) written once the database is saved" },
    name: stepName,
    description: stepDescription,
    title: { type: "string", minLength: 1, description: "the sheet's title" },
    subtitle: { type: "string", description: "a line under the title, for the reader" },
    byline: {
      type: "object",
      additionalProperties: false,
      required: ["text"],
      description:
        "a line under the title with dates: when the sheet was made ({generated_at|date}) and what the data covers (columns of sql:)",
      properties: {
        text: {
          type: "string",
          minLength: 1,
          description: "a template with {column|format} placeholders; {generated_at} is the run's start (a timestamp)",
          examples: ["Data up to {data_date|date}; generated on {generated_at|date}"],
        },
        sql: {
          type: "string",
          minLength: 1,
          description: "a read-only query whose first row fills the text's other placeholders",
          examples: ["SELECT max(date) AS data_date FROM sales"],
        },
      },
    },
    locale: {
      type: "string",
      minLength: 2,
      default: "en",
      description: "the BCP 47 language tag numbers, amounts and dates are written in (with its non-breaking separators)",
      examples: ["fr-FR", "en-GB", "de-CH"],
    },
    currency: {
      type: "string",
      pattern: "^[A-Z]{3}$",
      description: "the ISO 4217 currency of cents columns (EUR, USD...); without it, amounts are shown as plain numbers with 2 decimals",
      examples: ["EUR"],
    },
    markdown: {
      type: "string",
      minLength: 1,
      description: "the Markdown file to write, relative to this file",
      examples: ["output/report.md"],
    },
    html: {
      type: "string",
      minLength: 1,
      description: "the self-contained HTML file to write, relative to this file",
      examples: ["output/report.html"],
    },
    sections: { type: "array", minItems: 1, items: reportSectionSchema, description: "the sheet's sections, in order" },
  },
} as const;

/** The JSON Schema of pipeline.yaml: written once, the config types below derive from it. */
export const pipelineSchema = {
  $id: "https://pipeline-runner.local/pipeline.schema.json",
  type: "object",
  additionalProperties: false,
  required: ["version", "database", "tables", "steps"],
  properties: {
    version: { const: 1, description: "the format of this file: always 1" },
    name: { type: "string", description: "the pipeline's name, for people" },
    description: { type: "string", description: "what the pipeline is for, for people" },
    database: {
      description:
        "the SQLite database file, relative to this file, or a postgres:// URL (the password from ${PGPASSWORD} or ${DATABASE_URL}; --db replaces it), or { path, engine } to choose the storage engine (--engine replaces it)",
      examples: ["${DB_PATH:-output/sales.db}", { path: "output/sales.db", engine: "native" }],
      anyOf: [
        { type: "string", minLength: 1 },
        {
          type: "object",
          additionalProperties: false,
          required: ["path"],
          properties: {
            path: { type: "string", minLength: 1, description: "the SQLite database file, relative to this file, or a postgres:// URL" },
            engine: {
              enum: engineNames,
              default: "sqljs",
              description:
                "sqljs (default): the file is loaded in memory and replaced on save; native: node:sqlite, in place on the live file; postgres: a PostgreSQL server (path is its URL)",
            },
          },
        },
      ],
    },
    tables: {
      type: "object",
      propertyNames: identifier,
      additionalProperties: tableSchema,
      minProperties: 1,
      description: "every table the steps write, declared once: `name: { columns: ..., primary_key: ... }`",
    },
    steps: {
      type: "array",
      minItems: 1,
      description: "what a run does, in this order: load (a CSV source into a table), sql (a query into a table), report (a summary sheet)",
      items: {
        type: "object",
        required: ["type"],
        properties: { type: { type: "string", description: "the step's type: load, sql or report" } },
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
export type TableSpec = FromSchema<typeof tableSchema, { keepDefaultedPropertiesOptional: true }>;
/** One declared column. */
export type ColumnSpec = FromSchema<typeof columnSchema, { keepDefaultedPropertiesOptional: true }>;
/** The storage types a column can have. */
export type ColumnType = ColumnSpec["type"];
/** How one target column is read from the source. */
export type ColumnMapping = FromSchema<typeof mappingSchema, { keepDefaultedPropertiesOptional: true }>;
/** Any step. */
export type StepSpec = Pipeline["steps"][number];
/** A `type: load` step. */
export type LoadStepSpec = FromSchema<typeof loadStepSchema, { keepDefaultedPropertiesOptional: true }>;
/** A `type: sql` step. */
export type SqlStepSpec = FromSchema<typeof sqlStepSchema, { keepDefaultedPropertiesOptional: true }>;
/** A `type: report` step. */
export type ReportStepSpec = FromSchema<typeof reportStepSchema, { keepDefaultedPropertiesOptional: true }>;
/** One section of a report. */
export type ReportSection = FromSchema<typeof reportSectionSchema, { keepDefaultedPropertiesOptional: true }>;
/** How a report shows a value. */
export type ReportFormat = FromSchema<typeof reportFormat, { keepDefaultedPropertiesOptional: true }>;
/** One check declared on a table. */
export type CheckSpec = FromSchema<typeof checkSchema, { keepDefaultedPropertiesOptional: true }>;
/** A load step's freshness limit. */
export type FreshnessSpec = FromSchema<typeof freshnessSchema, { keepDefaultedPropertiesOptional: true }>;
/** CSV reading options. */
export type CsvOptions = FromSchema<typeof csvSchema, { keepDefaultedPropertiesOptional: true }>;
/** HTTP fetching options. */
export type HttpOptions = FromSchema<typeof httpSchema, { keepDefaultedPropertiesOptional: true }>;
