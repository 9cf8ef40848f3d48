import type { ErrorObject } from "ajv";
import { ensureTables, isRequired } from "../db/tables.js";
import { withScratch } from "../db/scratch.js";
import type { EngineName } from "../db/engines/engine.js";
import { didYouMean, ConfigError, throwIfAborted, type Diagnostic } from "../errors.js";
import { checkDiagnostics } from "../checks.js";
import { systemTables, systemTableNames } from "../history.js";
import type { StepDefinition } from "../step.js";
import type { LoadedConfig } from "./load.js";
import { outputPathDiagnostics } from "./output-paths.js";
import type { Pipeline, StepSpec, TableSpec } from "./schema.js";
import generatedValidator from "./shape-validator.generated.js";

// why: generated from the schema by ajv (npm run generate); compiling it at start-up cost ~100 ms per command.
const validateShape = generatedValidator as unknown as { (data: unknown): boolean; errors?: ErrorObject[] | null };
const namePattern = "^[A-Za-z_][A-Za-z0-9_]*$";

/**
 * Validates a loaded config: its shape against the JSON Schema, then its meaning (tables, keys,
 * files, SQL compiled against the tables earlier steps write). Throws every problem at once.
 */
export async function validatePipeline(
  config: LoadedConfig,
  typeOf: (step: StepSpec) => StepDefinition,
  signal?: AbortSignal | undefined,
  engineOf: (pipeline: Pipeline) => EngineName | undefined = () => undefined,
): Promise<Pipeline> {
  const checkpoint = checkpoints(signal);
  await checkpoint(true);
  if (!validateShape(config.value)) throw new ConfigError(await shapeDiagnostics(config, validateShape.errors ?? [], checkpoint));
  await checkpoint(true);
  const pipeline = config.value as Pipeline;
  // why: the SQL is compiled on the SQLite the run will use (engine/db/scratch.ts).
  const engine = engineOf(pipeline);
  const diagnostics = misspeltDeclarations(
    config,
    pipeline,
    typeOf,
    tableDiagnostics(config, pipeline)
      .concat(await stepDiagnostics(config, pipeline, typeOf, checkpoint, engine))
      .concat(await checkDiagnostics(config, pipeline, engine))
      .concat(outputPathDiagnostics(config, pipeline, typeOf)),
  );
  if (diagnostics.length > 0) throw new ConfigError(diagnostics);
  return pipeline;
}

/** Called in long loops: every few thousand calls (or when `now`), lets SIGINT/SIGTERM in and stops when they fired. */
type Checkpoint = (now?: boolean) => Promise<void>;

function checkpoints(signal: AbortSignal | undefined): Checkpoint {
  let calls = 0;
  return async (now = false) => {
    if (!now && ++calls % 2000 !== 0) return;
    // why: validation is CPU-bound; without giving the event loop a turn, the signal handler never runs.
    await new Promise((resolve) => setImmediate(resolve));
    throwIfAborted(signal);
  };
}

function pointer(path: string): string[] {
  return path === ""
    ? []
    : path
        .slice(1)
        .split("/")
        .map((p) => p.replaceAll("~1", "/").replaceAll("~0", "~"));
}

async function shapeDiagnostics(config: LoadedConfig, errors: ErrorObject[], checkpoint: Checkpoint): Promise<Diagnostic[]> {
  // why: an anyOf reports one error per branch; keep the branch whose type matches the value.
  const anyOfPaths = new Map(errors.filter((e) => e.keyword === "anyOf").map((e) => [e.instancePath, e]));
  // why: looked up by walking up the error's own path, so the work grows with the errors, not errors × unions.
  const unionOf = (instancePath: string): ErrorObject | undefined => {
    for (let p = instancePath; ; p = p.slice(0, p.lastIndexOf("/"))) {
      const union = anyOfPaths.get(p);
      if (union || p === "") return union;
    }
  };
  const explained = new Set<string>();
  let kept = errors.filter((e) => {
    // why: a bad key also fails `pattern` (with its propertyName), which says which key; this one would only repeat it.
    if (e.keyword === "anyOf" || e.keyword === "propertyNames") return false;
    const union = unionOf(e.instancePath);
    if (!union || !e.schemaPath.startsWith(union.schemaPath)) return true;
    const actual = Array.isArray(union.data)
      ? "array"
      : typeof union.data === "object" && union.data !== null
        ? "object"
        : typeof union.data;
    const branch = Number(e.schemaPath.slice(union.schemaPath.length + 1).split("/")[0]);
    return (union.schema as { type?: string }[])[branch]?.type === actual;
  });
  for (const e of kept) {
    for (let p = e.instancePath; ; p = p.slice(0, p.lastIndexOf("/"))) {
      explained.add(p);
      if (p === "") break;
    }
  }
  // why: a misspelt required key is also a missing one; its "unknown key ... (did you mean ...)" already says both.
  const misspelt = new Set(
    kept
      .filter((e) => e.keyword === "additionalProperties")
      .map((e) => {
        const key = String((e.params as Record<string, unknown>)["additionalProperty"]);
        const allowed = Object.keys((e.parentSchema as { properties?: object }).properties ?? {});
        return `${e.instancePath}\0${/"(.*)"/.exec(didYouMean(key, allowed))?.[1] ?? ""}`;
      }),
  );
  kept = kept.filter(
    (e) =>
      e.keyword !== "required" || !misspelt.has(`${e.instancePath}\0${String((e.params as Record<string, unknown>)["missingProperty"])}`),
  );
  const unionOnly = [...anyOfPaths.values()].filter((u) => !explained.has(u.instancePath));
  const diagnostics: Diagnostic[] = [];
  for (const e of kept) {
    diagnostics.push(shapeDiagnostic(config, e));
    await checkpoint();
  }
  for (const union of unionOnly) {
    diagnostics.push({
      code: "E_SCHEMA",
      message: `${union.instancePath} must be a source column name, or a mapping such as {from: "Column", format: "dd/MM/yyyy"}`,
      place: config.locate(pointer(union.instancePath)),
    });
  }
  const seen = new Set<string>();
  return diagnostics.filter((d) => {
    const key = `${d.place?.line}:${d.place?.col}:${d.message}`;
    return seen.has(key) ? false : (seen.add(key), true);
  });
}

function shapeDiagnostic(config: LoadedConfig, error: ErrorObject): Diagnostic {
  const path = pointer(error.instancePath);
  const where = error.instancePath || "the top level";
  const params = error.params as Record<string, unknown>;
  const place = config.locate(path);
  switch (error.keyword) {
    case "additionalProperties": {
      const key = String(params["additionalProperty"]);
      const allowed = Object.keys((error.parentSchema as { properties?: object }).properties ?? {});
      return {
        code: "E_SCHEMA",
        message: `unknown key "${key}" in ${where}${didYouMean(key, allowed) || `; allowed: ${allowed.join(", ")}`}`,
        place: config.locate(path, key),
      };
    }
    case "required":
      return { code: "E_SCHEMA", message: `${where} is missing the required key "${String(params["missingProperty"])}"`, place };
    case "enum": {
      const allowed = (params["allowedValues"] as unknown[]).map(String);
      const value = shown(error.data);
      return {
        code: "E_SCHEMA",
        message: `${error.instancePath} is "${value}", expected one of: ${allowed.join(", ")}${didYouMean(value, allowed)}`,
        place,
      };
    }
    case "const":
      return { code: "E_SCHEMA", message: `${error.instancePath} must be ${JSON.stringify(params["allowedValue"])}`, place };
    case "discriminator": {
      // why: steps are discriminated on `type`, checks on `check`; the branches name the values allowed.
      const tag = String(params["tag"] ?? "type");
      const branches = (error.parentSchema as { oneOf?: { properties?: Record<string, { const?: unknown }> }[] }).oneOf ?? [];
      const types = branches.map((branch) => String(branch.properties?.[tag]?.const));
      const value = (error.data as Record<string, unknown> | null)?.[tag];
      const message =
        typeof value === "string"
          ? `${where}/${tag} is "${value}", expected one of: ${types.join(", ")}${didYouMean(value, types)}`
          : `${where}/${tag} must be a string: one of ${types.join(", ")}`;
      return { code: "E_SCHEMA", message, place: config.locate([...path, tag]) };
    }
    case "pattern": {
      if (error.propertyName !== undefined) return invalidKey(config, path, where, error.propertyName);
      // why: a value with its own pattern (max_rejected's percentage) says what it expects in its description.
      const expected = (error.parentSchema as { description?: string }).description;
      if (params["pattern"] !== namePattern && expected !== undefined) {
        return { code: "E_SCHEMA", message: `${error.instancePath} is "${shown(error.data)}"; expected ${expected}`, place };
      }
      return {
        code: "E_SCHEMA",
        message: `${error.instancePath} "${shown(error.data)}" is not a valid name (letters, digits and _, not starting with a digit)`,
        place,
      };
    }
    default:
      return { code: "E_SCHEMA", message: `${where} ${error.message ?? "is invalid"}`, place };
  }
}

/** A value from the configuration, for a message: mappings come without prototype (see load.ts), so String() cannot print them. */
function shown(value: unknown): string {
  if (typeof value !== "object" || value === null) return String(value);
  if (Array.isArray(value) && value.every((item) => typeof item !== "object" || item === null)) return String(value);
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

/** A key of a mapping that is not a valid name, placed on that key (not on the mapping's first one). */
function invalidKey(config: LoadedConfig, path: string[], where: string, name: string): Diagnostic {
  return {
    code: "E_SCHEMA",
    message: `"${name}" in ${where} is not a valid name (letters, digits and _, not starting with a digit)`,
    place: config.locate(path, name),
  };
}

function tableDiagnostics(config: LoadedConfig, pipeline: Pipeline): Diagnostic[] {
  const diagnostics: Diagnostic[] = [];
  const problem = (message: string, path: (string | number)[], key?: string) =>
    diagnostics.push({ code: "E_CONFIG", message, place: config.locate(path, key) });
  const tables = pipeline.tables as Record<string, TableSpec>;
  // why: SQLite compares names without case, so `sales` and `Sales` are one table, `qty` and `QTY` one column.
  const sameToSqlite = (names: string[], path: (string | number)[], describe: (name: string) => string) => {
    const seen = new Map<string, string>();
    for (const name of names) {
      const first = seen.get(name.toLowerCase());
      if (first === undefined) seen.set(name.toLowerCase(), name);
      else problem(`${describe(name)} is the same as ${describe(first)} to SQLite, which ignores case in names; rename one`, path, name);
    }
  };
  sameToSqlite(Object.keys(tables), ["tables"], (name) => `table ${name}`);
  const reserved = new Set([...systemTableNames].map((name) => name.toLowerCase()));
  for (const [name, table] of Object.entries(tables)) {
    const base = ["tables", name];
    if (reserved.has(name.toLowerCase())) problem(`table name ${name} is reserved for the runner's own tables`, ["tables"], name);
    else if (name.toLowerCase().startsWith("sqlite_"))
      problem(`table name ${name} is reserved: names starting with sqlite_ belong to SQLite`, ["tables"], name);
    const columns = Object.keys(table.columns);
    sameToSqlite(columns, [...base, "columns"], (column) => `column ${name}.${column}`);
    const checkColumns = (list: readonly string[], path: (string | number)[], owner: string, ownerColumns: string[]) =>
      list.forEach((column, i) => {
        if (!ownerColumns.includes(column))
          problem(`"${column}" is not a column of table ${owner}${didYouMean(column, ownerColumns)}`, [...path, i]);
      });
    for (const [column, spec] of Object.entries(table.columns)) {
      if (spec.type === "decimal" && spec.scale === undefined)
        problem(`decimal column ${name}.${column} needs a scale (digits after the point), e.g. scale: 2`, [...base, "columns", column]);
      if (spec.type !== "decimal" && spec.scale !== undefined)
        problem(`scale applies to decimal columns; ${name}.${column} is ${spec.type}`, [...base, "columns", column], "scale");
    }
    if (table.primary_key) checkColumns(table.primary_key, [...base, "primary_key"], name, columns);
    (table.unique ?? []).forEach((unique, i) => {
      checkColumns(unique, [...base, "unique", i], name, columns);
      unique.forEach((column, j) => {
        if (column in table.columns && !isRequired(table, column))
          problem(
            `unique key (${unique.join(", ")}) of table ${name} includes ${name}.${column}, which may be empty: SQLite counts empty keys as distinct, so such a row would be stored again on every re-read. Declare ${column} with required: true (a row with it empty is then rejected), or take it out of the key`,
            [...base, "unique", i, j],
          );
      });
    });
    (table.foreign_keys ?? []).forEach((fk, i) => {
      const path = [...base, "foreign_keys", i];
      checkColumns(fk.columns, [...path, "columns"], name, columns);
      const parent = tables[fk.references.table];
      if (!parent) {
        problem(
          `foreign key references table "${fk.references.table}", which is not declared${didYouMean(fk.references.table, Object.keys(tables))}`,
          [...path, "references", "table"],
        );
        return;
      }
      checkColumns(fk.references.columns, [...path, "references", "columns"], fk.references.table, Object.keys(parent.columns));
      if (fk.columns.length !== fk.references.columns.length)
        problem("a foreign key needs as many columns as it references", [...path, "references", "columns"]);
      const keys = [parent.primary_key, ...(parent.unique ?? [])].filter((k) => k !== undefined);
      if (!keys.some((k) => k.length === fk.references.columns.length && k.every((c) => fk.references.columns.includes(c)))) {
        problem(`foreign key must reference the primary key or a unique key of ${fk.references.table}`, [...path, "references", "columns"]);
      }
    });
  }
  return diagnostics;
}

async function stepDiagnostics(
  config: LoadedConfig,
  pipeline: Pipeline,
  typeOf: (step: StepSpec) => StepDefinition,
  checkpoint: Checkpoint,
  engine: EngineName | undefined,
): Promise<Diagnostic[]> {
  return withScratch(engine, async (scratch) => {
    const diagnostics: Diagnostic[] = [];
    const names = new Map<string, number>();
    ensureTables(scratch, systemTables as Record<string, TableSpec>);
    const written = new Set<string>();
    for (const [index, step] of pipeline.steps.entries()) {
      await checkpoint();
      const path = ["steps", index];
      const earlier = names.get(step.name);
      if (earlier !== undefined)
        diagnostics.push({
          code: "E_CONFIG",
          message: `step name "${step.name}" is already used by step ${earlier + 1}`,
          place: config.locate([...path, "name"]),
        });
      names.set(step.name, index);
      const definition = typeOf(step);
      const at = (subpath: readonly (string | number)[], key?: string) => config.locate([...path, ...subpath], key);
      for (const problem of definition.check(step, { pipeline, config, path, scratch, written, at })) diagnostics.push(problem);
      for (const table of definition.writes(step)) {
        const spec = pipeline.tables[table];
        // why: a table whose declaration is broken is already reported by tableDiagnostics.
        if (spec && !written.has(table)) tryQuietly(() => ensureTables(scratch, { [table]: spec }));
        written.add(table);
      }
    }
    return diagnostics;
  });
}

/**
 * When several references name one undeclared table and a declared table with a close name is used
 * nowhere, the typo is in the declaration: one problem there replaces one per correct reference.
 */
function misspeltDeclarations(
  config: LoadedConfig,
  pipeline: Pipeline,
  typeOf: (step: StepSpec) => StepDefinition,
  diagnostics: Diagnostic[],
): Diagnostic[] {
  const declared = Object.keys(pipeline.tables);
  const used = new Set(pipeline.steps.flatMap((step) => typeOf(step).writes(step)));
  for (const table of Object.values(pipeline.tables as Record<string, TableSpec>))
    for (const fk of table.foreign_keys ?? []) used.add(fk.references.table);
  const unused = declared.filter((name) => !used.has(name));
  if (unused.length === 0) return diagnostics;
  // why: the step types word their own message; each one names the table as `table "x" ... not declared`.
  const undeclaredName = (d: Diagnostic) => /\btable "([^"]+)"(?: is not declared|, which is not declared)/.exec(d.message)?.[1];
  const replaced = new Map<string, Diagnostic[]>();
  for (const d of diagnostics) {
    const name = undeclaredName(d);
    if (name === undefined || declared.includes(name)) continue;
    const typo = /"(.*)"/.exec(didYouMean(name, unused))?.[1];
    if (typo === undefined) continue;
    replaced.set(typo, [...(replaced.get(typo) ?? []), d]);
  }
  const result = diagnostics.filter((d) => ![...replaced.values()].some((group) => group.includes(d)));
  for (const [typo, group] of replaced) {
    const name = undeclaredName(group[0]!)!;
    const lines = group.map((d) => d.place?.line).filter((line) => line !== undefined);
    const where = lines.length > 0 ? ` (line${lines.length > 1 ? "s" : ""} ${[...new Set(lines)].sort((a, b) => a - b).join(", ")})` : "";
    const places = group.length === 1 ? "1 place names" : `${group.length} places name`;
    result.push({
      code: "E_CONFIG",
      message: `table "${typo}" is declared but nothing uses it, while ${places} table "${name}", which is not declared${where}: rename "${typo}" to "${name}"`,
      place: config.locate(["tables"], typo),
    });
  }
  return result;
}

function tryQuietly(action: () => unknown): void {
  try {
    action();
  } catch {
    return;
  }
}
