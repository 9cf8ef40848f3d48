import { readFile, writeFile } from "node:fs/promises";
import { pipelineSchema } from "./schema.js";

/** Where the pipeline.yaml reference lives, from the project's root; its keys section is generated. */
export const referenceFile = "docs/pipeline-reference.md";

const begin = "<!-- generated:keys (npm run generate; from engine/config/schema.ts) -->";
const end = "<!-- /generated:keys -->";

interface Node {
  type?: string | string[];
  const?: unknown;
  enum?: readonly unknown[];
  pattern?: string;
  items?: Node;
  anyOf?: readonly Node[];
  oneOf?: readonly Node[];
  properties?: Record<string, Node>;
  additionalProperties?: Node | boolean;
  required?: readonly string[];
  description?: string;
  default?: unknown;
  examples?: readonly unknown[];
}

const code = (value: unknown) => `\`${typeof value === "string" ? value : JSON.stringify(value)}\``;
const cell = (text: string) => text.replaceAll("|", "\\|").replaceAll("\n", " ");
const singular: Record<string, string> = { tables: "table", columns: "column" };

function typeOf(node: Node): string {
  if (node.const !== undefined) return code(node.const);
  if (node.enum) return node.enum.map(code).join(", ");
  if (node.anyOf) return node.anyOf.map(typeOf).join(" or ");
  if (node.pattern === "^[A-Za-z_][A-Za-z0-9_]*$") return "name";
  if (node.type === "array")
    return node.items?.pattern === "^[A-Za-z_][A-Za-z0-9_]*$" ? "list of names" : `list of ${typeOf(node.items ?? {})}`;
  if (node.type === "object") return "mapping";
  if (Array.isArray(node.type)) return node.type.join(" or ");
  return node.type ?? "mapping";
}

/** One table of keys: key, type, default, meaning (required keys first, marked). */
function keyTable(node: Node): string[] {
  const required = new Set(node.required ?? []);
  const keys = Object.keys(node.properties ?? {}).sort((a, b) => Number(required.has(b)) - Number(required.has(a)));
  const rows = keys.map((key) => {
    const property = node.properties![key]!;
    const examples = property.examples ? `; e.g. ${property.examples.map(code).join(", ")}` : "";
    const defaultText = property.default === undefined ? "" : code(property.default);
    return `| ${code(key)}${required.has(key) ? " (required)" : ""} | ${cell(typeOf(property))} | ${cell(defaultText)} | ${cell((property.description ?? "") + examples)} |`;
  });
  return ["| key | type | default | meaning |", "|---|---|---|---|", ...rows];
}

/** How a branch of a discriminated union is told apart: `type: load`, `check: range`. */
function tagOf(branch: Node): string {
  const tag = ["type", "check"].find((name) => branch.properties?.[name]?.const !== undefined) ?? "type";
  return `${tag}: ${String(branch.properties?.[tag]?.const)}`;
}

/** One mapping of the schema, with the path that reaches it and what it is. */
interface Section {
  title: string;
  node: Node;
  description: string | undefined;
}

/** Every mapping of the schema with named keys, with the path a person writes in pipeline.yaml to reach it. */
function sections(node: Node, where: string, out: Section[], description = node.description): void {
  if (node.properties) out.push({ title: where, node, description });
  for (const [key, property] of Object.entries(node.properties ?? {})) {
    const path = where === "pipeline.yaml" ? key : `${where}.${key}`;
    if (property.oneOf) {
      for (const branch of property.oneOf) sections(branch, `${path}[${tagOf(branch)}]`, out);
      continue;
    }
    if (property.items?.oneOf) {
      for (const branch of property.items.oneOf) sections(branch, `${path}[${tagOf(branch)}]`, out);
      continue;
    }
    for (const branch of property.anyOf ?? []) if (branch.properties) sections(branch, `${path} (long form)`, out, property.description);
    if (property.items) sections(property.items, `${path}[]`, out);
    if (typeof property.additionalProperties === "object")
      sections(property.additionalProperties, `${path}.<${singular[key] ?? "name"}>`, out);
    if (property.properties) sections(property, path, out);
  }
  for (const branch of node.anyOf ?? []) if (branch.properties) sections(branch, `${where} (long form)`, out, node.description);
}

/** The generated part of docs/pipeline-reference.md: one table of keys per mapping of the schema. */
export function referenceKeysMarkdown(): string {
  const found: Section[] = [];
  sections(pipelineSchema as unknown as Node, "pipeline.yaml", found);
  const lines = [begin, ""];
  for (const { title, node, description } of found)
    lines.push(`### \`${title}\``, "", ...(description ? [`${description}.`, ""] : []), ...keyTable(node), "");
  lines.push(end);
  return lines.join("\n");
}

/** The reference document with its generated section replaced by what the schema says now. */
export function updatedReference(document: string): string {
  const from = document.indexOf(begin);
  const to = document.indexOf(end);
  if (from < 0 || to < from) throw new Error(`${referenceFile} has no ${begin} ... ${end} section`);
  return document.slice(0, from) + referenceKeysMarkdown() + document.slice(to + end.length);
}

/** Rewrites the generated section of docs/pipeline-reference.md (`npm run generate`, from the project's root). */
export async function writeReference(): Promise<void> {
  await writeFile(referenceFile, updatedReference(await readFile(referenceFile, "utf8")));
}
