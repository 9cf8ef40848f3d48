import { existsSync } from "node:fs";
import { rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { stepType } from "../../steps/index.js";
import { loadConfigFile } from "../config/load.js";
import { defaultFalseValues, defaultTrueValues, type Pipeline, type TableSpec } from "../config/schema.js";
import { validatePipeline } from "../config/validate.js";
import { PipelineError } from "../errors.js";
import { systemTableNames } from "../history.js";
import type { Command } from "../main.js";
import { profileSources, type ColumnProfile, type SourceProfile } from "../profile.js";
import { runnerFile } from "../runner-file.js";
import { isUrl } from "../sources/fetch.js";

/** One table `init` drafts from one source. */
interface DraftTable {
  table: string;
  source: string;
  columns: { name: string; header: string; type: string; scale?: number; format?: string }[];
  primaryKey?: string;
  foreignKeys: { column: string; table: string }[];
}

/**
 * `init FILE_OR_URL...`: reads each CSV source like `profile` does and writes a pipeline.yaml that loads
 * each into its own table: column types, a key when a column looks like an identifier and holds no
 * repeat, references between tables where every value resolves; never overwrites a file.
 */
export const initCommand: Command = {
  pipeline: false,
  async run({ args, io, json, c }) {
    const target = path.resolve(io.cwd, args.config);
    const usage = (message: string) => new PipelineError("E_USAGE", message, { exitCode: 2 });
    if (args.sources.length === 0) throw usage("init needs the CSV sources to draft from: pipeline init data/sales.csv https://...");
    if (existsSync(target))
      throw usage(
        `${args.config} already exists; init drafts a new pipeline and never replaces one: move it aside, or name another file with -c`,
      );
    const baseDir = path.dirname(target);
    const sources = args.sources.map((source) => (isUrl(source) ? source : relativeSource(baseDir, path.resolve(io.cwd, source))));
    const names: string[] = [];
    const blanks = sources.map((source, i): DraftTable => {
      names.push(tableName(source, i, names));
      return { table: names[i]!, source, columns: [], foreignKeys: [] };
    });
    const first = await profileSources(draftPipeline(blanks), baseDir, stepType);
    const failed = first.filter((profile) => profile.error);
    if (failed.length > 0) throw usage(failed.map((profile) => `${profile.source}: ${profile.error}`).join("; "));
    const drafts = first.map((profile) => draftTable(profile));
    proposeForeignKeys(drafts);
    // why: a reference is kept only when every value of the column is found in the referenced table, as profile reads them.
    const second = await profileSources(draftPipeline(drafts), baseDir, stepType);
    for (const [i, profile] of second.entries()) {
      const unresolved = new Set((profile.unresolved ?? []).map((finding) => finding.column));
      drafts[i]!.foreignKeys = drafts[i]!.foreignKeys.filter((fk) => !unresolved.has(fk.column) && !profile.error);
    }
    const text = renderPipeline(drafts, schemaReference(baseDir), path.basename(baseDir));
    try {
      await writeFile(target, text, { flag: "wx" });
    } catch (error) {
      throw usage(`cannot write ${args.config}: ${(error as Error).message}`);
    }
    try {
      await validatePipeline(await loadConfigFile(target, io.env, io.cwd), stepType);
    } catch (error) {
      // why: a draft that does not validate is a bug of init; leave nothing half-made behind.
      await rm(target, { force: true });
      throw error;
    }
    if (json) io.stdout.write(JSON.stringify({ ok: true, command: "init", file: args.config, tables: drafts }, null, 2) + "\n");
    else {
      for (const draft of drafts) {
        const key = draft.primaryKey ? `key ${draft.primaryKey}` : "no key (mode replace)";
        const references = draft.foreignKeys.map((fk) => `${fk.column} -> ${fk.table}`).join(", ");
        io.stdout.write(`  ${draft.table}: ${draft.columns.length} columns, ${key}${references ? `, references ${references}` : ""}\n`);
      }
      io.stdout.write(
        c.green(`wrote ${args.config}: ${drafts.length} table(s), one load step each`) +
          `; check the types and keys, then \`pipeline validate\` and \`pipeline run\`\n`,
      );
    }
    return 0;
  },
};

/** A source's path as pipeline.yaml names it: relative to its directory when inside it. */
function relativeSource(baseDir: string, file: string): string {
  const relative = path.relative(baseDir, file);
  return relative.startsWith("..") || path.isAbsolute(relative) ? file : relative.split(path.sep).join("/");
}

/** A table name from the source's file name: `ventes.csv` -> `ventes`; unique among the others. */
function tableName(source: string, index: number, taken: readonly string[]): string {
  const base = isUrl(source) ? (new URL(source).pathname.split("/").filter(Boolean).at(-1) ?? "") : path.basename(source);
  let name = identifier(base.replace(/\.[^.]*$/, ""), `source_${index + 1}`);
  if (systemTableNames.has(name) || name.startsWith("sqlite_")) name = `t_${name}`;
  return unique(name, taken);
}

/** `ID Référence produit` -> `id_reference_produit`: lower-case letters without accents, digits and _, not starting with a digit. */
function identifier(text: string, fallback: string): string {
  if (/^[a-z_][a-z0-9_]*$/.test(text)) return text;
  const ascii = text.normalize("NFD").replace(/[\u0300-\u036f]/g, "");
  const name =
    ascii
      .toLowerCase()
      .replace(/[^a-z0-9]+/g, "_")
      .replace(/^_+|_+$/g, "") || fallback;
  return /^[0-9]/.test(name) ? `_${name}` : name;
}

/** `name`, or `name_2`, `name_3`... when SQLite (which ignores case) would see it among `taken`. */
function unique(name: string, taken: readonly string[]): string {
  const lower = new Set(taken.map((t) => t.toLowerCase()));
  let candidate = name;
  for (let n = 2; lower.has(candidate.toLowerCase()); n++) candidate = `${name}_${n}`;
  return candidate;
}

/** The draft of one source's table from its profile: a column per header field, typed from its values. */
function draftTable(profile: SourceProfile): DraftTable {
  const names: string[] = [];
  const columns = (profile.columns ?? []).map((column, i) => {
    const name = unique(identifier(column.column.trim(), `column_${i + 1}`), names);
    names.push(name);
    return { name, header: column.column.trim(), ...columnType(column) };
  });
  const rows = profile.rows ?? 0;
  const candidates = columns.filter((column, i) => {
    const values = profile.columns![i]!;
    return rows > 0 && values.empty === 0 && values.distinct === rows && (column.type === "integer" || column.type === "text");
  });
  // why: in a small file many columns hold no repeat; only one named like an identifier is a key people expect.
  const key = candidates.find((column) => /(^|_)(id|ref|reference|code|key|cle)(_|$)|^id/i.test(column.name));
  return { table: profile.table, source: profile.source, columns, ...(key ? { primaryKey: key.name } : {}), foreignKeys: [] };
}

/** The column type for what profile inferred from the values. */
function columnType(column: ColumnProfile): { type: string; scale?: number; format?: string } {
  const decimal = /^decimal\((\d+)\)$/.exec(column.inferred);
  if (column.inferred === "integer") return { type: "integer" };
  if (decimal) return Number(decimal[1]) === 0 ? { type: "integer" } : { type: "decimal", scale: Number(decimal[1]) };
  if (column.inferred === "date (yyyy-MM-dd)") return { type: "date" };
  if (column.inferred === "date (dd/MM/yyyy)") return { type: "date", format: "dd/MM/yyyy" };
  const known = [...defaultTrueValues, ...defaultFalseValues] as readonly string[];
  // why: profile also recognises oui/non and vrai/faux; a boolean column reads only the default values unless its mapping lists others.
  if (
    column.inferred === "boolean" &&
    column.distinct <= column.samples.length &&
    column.samples.every((v) => known.includes(v.toLowerCase()))
  )
    return { type: "boolean" };
  return { type: "text" };
}

/** A column named like another table's one-column key, of the same type, may reference it. */
function proposeForeignKeys(drafts: DraftTable[]): void {
  for (const draft of drafts) {
    for (const column of draft.columns) {
      if (column.name === draft.primaryKey) continue;
      const parent = drafts.find(
        (other) =>
          other !== draft && other.primaryKey === column.name && other.columns.find((c) => c.name === column.name)?.type === column.type,
      );
      if (parent) draft.foreignKeys.push({ column: column.name, table: parent.table });
    }
  }
}

/** The drafts as a pipeline `profile` can read (tables, and one load step per source). */
function draftPipeline(drafts: readonly DraftTable[]): Pipeline {
  const tables: Record<string, TableSpec> = {};
  for (const draft of drafts) tables[draft.table] = tableSpec(draft);
  const steps = drafts.map((draft) => ({
    name: `load_${draft.table}`,
    type: "load" as const,
    source: draft.source,
    table: draft.table,
    mode: draft.primaryKey ? ("upsert" as const) : ("append" as const),
    columns: Object.fromEntries(draft.columns.map((c) => [c.name, c.format ? { from: c.header, format: c.format } : c.header])),
  }));
  return { version: 1, database: "output/pipeline.db", tables, steps } as unknown as Pipeline;
}

function tableSpec(draft: DraftTable): TableSpec {
  return {
    columns: Object.fromEntries(draft.columns.map((c) => [c.name, { type: c.type, ...(c.scale === undefined ? {} : { scale: c.scale }) }])),
    ...(draft.primaryKey ? { primary_key: [draft.primaryKey] } : {}),
    ...(draft.foreignKeys.length > 0
      ? { foreign_keys: draft.foreignKeys.map((fk) => ({ columns: [fk.column], references: { table: fk.table, columns: [fk.column] } })) }
      : {}),
  } as TableSpec;
}

/** The path of the runner's pipeline.schema.json from the pipeline's directory, for the editor's YAML language server. */
function schemaReference(baseDir: string): string {
  const file = runnerFile("pipeline.schema.json");
  if (!existsSync(file)) return "https://pipeline-runner.local/pipeline.schema.json";
  // why: relative when the pipeline sits in the runner's directory or below it (the file moves with the repository), else absolute.
  if (path.relative(path.dirname(file), baseDir).startsWith("..")) return file;
  const relative = path.relative(baseDir, file).split(path.sep).join("/");
  return relative.startsWith(".") ? relative : `./${relative}`;
}

/** The pipeline.yaml text: the schema line, the tables, then one load step per source (a column named as its header has no mapping). */
function renderPipeline(drafts: readonly DraftTable[], schema: string, name: string): string {
  const q = (text: string) => JSON.stringify(text);
  const lines = [
    `# yaml-language-server: $schema=${schema}`,
    `# Drafted by \`pipeline init\` from ${drafts.map((d) => d.source).join(", ")}.`,
    "# Check each column's type, each table's key and each step's mode, then run `pipeline validate` and `pipeline run`.",
    "version: 1",
    `name: ${q(name)}`,
    "database: output/pipeline.db",
    "",
    "tables:",
  ];
  for (const draft of drafts) {
    lines.push(`  ${draft.table}:`, "    columns:");
    for (const c of draft.columns) lines.push(`      ${c.name}: { type: ${c.type}${c.scale === undefined ? "" : `, scale: ${c.scale}`} }`);
    if (draft.primaryKey) lines.push(`    primary_key: [${draft.primaryKey}]`);
    if (draft.foreignKeys.length > 0) {
      lines.push("    foreign_keys:");
      for (const fk of draft.foreignKeys)
        lines.push(`      - { columns: [${fk.column}], references: { table: ${fk.table}, columns: [${fk.column}] } }`);
    }
  }
  lines.push("", "steps:");
  for (const draft of drafts) {
    lines.push(
      `  - name: load_${draft.table}`,
      "    type: load",
      `    source: ${q(draft.source)}`,
      `    table: ${draft.table}`,
      // why: with a key, a row that changes is updated and a row that leaves the file stays; without one, the table is the file.
      `    mode: ${draft.primaryKey ? "upsert" : "replace"}`,
      "    columns:",
    );
    for (const c of draft.columns) {
      if (c.format) lines.push(`      ${c.name}: { ${c.header === c.name ? "" : `from: ${q(c.header)}, `}format: ${q(c.format)} }`);
      else lines.push(`      ${c.name}:${c.header === c.name ? "" : ` ${q(c.header)}`}`);
    }
  }
  return lines.join("\n") + "\n";
}
