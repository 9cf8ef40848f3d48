import type { ChalkInstance } from "chalk";
import type { Finding, SourceProfile } from "./profile.js";

type Cells = string[][];

function markdownTable(rows: Cells): string[] {
  const escape = (cell: string) => cell.replaceAll("|", "\\|").replaceAll("\n", " ");
  const [head, ...body] = rows;
  return [
    `| ${head!.map(escape).join(" | ")} |`,
    `|${head!.map(() => "---").join("|")}|`,
    ...body.map((r) => `| ${r.map(escape).join(" | ")} |`),
  ];
}

function textTable(rows: Cells, c: ChalkInstance): string[] {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r, n) => {
    const line = r
      .map((cell, i) => cell.padEnd(widths[i]!))
      .join("  ")
      .trimEnd();
    return n === 0 ? c.dim(line) : line;
  });
}

const show = (value: string) => (value === "" ? "" : JSON.stringify(value).slice(1, -1));

function findingsTable(findings: Finding[], limit = 20): Cells {
  const rows: Cells = [["line", "column", "value", "problem"]];
  for (const f of findings.slice(0, limit)) rows.push([String(f.line), f.column ?? "", show(f.value), f.reason]);
  if (findings.length > limit) rows.push(["…", "", "", `${findings.length - limit} more`]);
  return rows;
}

/** The profile as Markdown (for docs/) or as aligned text (for a terminal). */
export function renderProfile(profiles: SourceProfile[], format: "markdown" | "text", c: ChalkInstance): string {
  const out: string[] = [];
  const table = (rows: Cells) => out.push(...(format === "markdown" ? markdownTable(rows) : textTable(rows, c)), "");
  const heading = (text: string) => out.push(format === "markdown" ? `### ${text}` : c.bold(text), "");
  const bullet = format === "markdown" ? "- " : "  ";
  for (const p of profiles) {
    heading(`${p.step} → ${p.table}`);
    out.push(`${bullet}source: \`${p.source}\``);
    if (p.error) {
      out.push(`${bullet}${format === "markdown" ? "**could not be read**" : c.red("could not be read")}: ${p.error}`, "");
      continue;
    }
    out.push(
      `${bullet}${p.bytes} bytes, encoding ${p.encoding}, ${p.bom ? "with" : "no"} BOM, ${p.lineEndings} line endings, ${p.finalNewline ? "a" : "no"} newline after the last record`,
      `${bullet}delimiter \`${p.delimiter}\`; header: ${p.header!.map((h) => `\`${h}\``).join(", ")}`,
      `${bullet}${p.rows} data rows; key ${p.key ? `(${p.key.join(", ")})` : "none"}: ${p.duplicates!.length === 0 ? "no duplicates" : `${p.duplicates!.length} duplicated`}; ${p.unresolved!.length === 0 ? "every reference resolves" : `${p.unresolved!.length} unresolved references`}`,
      "",
    );
    table([
      ["column", "→ loaded as", "inferred", "empty", "distinct", "min / shortest", "max / longest", "samples", "invalid"],
      ...p.columns!.map((col) => [
        col.column,
        col.target ? `${col.target} (${col.declared})` : "(not loaded)",
        col.inferred,
        String(col.empty),
        String(col.distinct),
        show(col.min),
        show(col.max),
        col.samples.map(show).join(", "),
        String(col.invalid.length),
      ]),
    ]);
    const invalid = p.columns!.flatMap((col) => col.invalid.map((f) => ({ ...f, column: col.target ?? col.column })));
    if (invalid.length > 0) {
      out.push(`${bullet}values that fail the declared type:`, "");
      table(findingsTable(invalid.sort((a, b) => a.line - b.line)));
    }
    if (p.duplicates!.length > 0) {
      out.push(`${bullet}duplicate keys (${p.key!.join(", ")}):`, "");
      table([["key", "lines"], ...p.duplicates!.slice(0, 20).map((d) => [d.key, d.lines.join(", ")])]);
    }
    if (p.unresolved!.length > 0) {
      out.push(`${bullet}references that do not resolve:`, "");
      table(findingsTable(p.unresolved!));
    }
  }
  return out.join("\n").replace(/\n+$/, "\n");
}

/** Replaces the text between `<!-- generated:NAME -->` and `<!-- /generated:NAME -->` in a document. */
export function replaceGenerated(document: string, name: string, body: string): string {
  const start = `<!-- generated:${name} -->`;
  const end = `<!-- /generated:${name} -->`;
  const from = document.indexOf(start);
  const to = document.indexOf(end);
  if (from < 0 || to < from) throw new Error(`the document has no ${start} … ${end} section`);
  return `${document.slice(0, from + start.length)}\n${body.trimEnd()}\n${document.slice(to)}`;
}
