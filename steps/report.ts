import type { ReportFormat, ReportSection, ReportStepSpec } from "../engine/config/schema.js";
import type { Row, SqlValue } from "../engine/db/database.js";
import { didYouMean, PipelineError, type Diagnostic } from "../engine/errors.js";
import {
  compileQuery,
  parametersHint,
  parametersOf,
  readSqlText,
  sqlFileProblem,
  unknownParameters,
  writesDatabase,
} from "../engine/sql-source.js";
import type { StepDefinition } from "../engine/step.js";
import { trendMarkdown, trendSvg, type TrendPoint } from "./report-trend.js";

type Locale = NonNullable<ReportStepSpec["locale"]>;

interface RenderedSection {
  section: ReportSection;
  columns: string[];
  rows: Row[];
}

/** `type: report`: reads results tables with SQL and writes a readable sheet, in Markdown and self-contained HTML. */
export const reportStep: StepDefinition<ReportStepSpec> = {
  type: "report",

  describe(step) {
    return `report "${step.title}" -> ${outputFiles(step).join(", ")}`;
  },

  details(step) {
    const details: [string, string][] = [];
    if (step.markdown) details.push(["markdown", step.markdown]);
    if (step.html) details.push(["html", step.html]);
    details.push(["sections", step.sections.map((s) => s.title).join(", ")]);
    return details;
  },

  writes: () => [],
  files: outputFiles,
  inputs: (step) => step.sections.flatMap((section) => (section.file ? [{ file: section.file, what: "the SQL file" }] : [])),
  derived: true,

  check(step, context) {
    const problems: Diagnostic[] = [];
    const problem = (message: string, subpath: (string | number)[], key?: string, code: Diagnostic["code"] = "E_CONFIG") =>
      problems.push({ code, message, place: context.at(subpath, key) });
    if (!step.markdown && !step.html) problem("a report needs markdown:, html:, or both (the files it writes)", []);
    step.sections.forEach((section, i) => {
      const at = ["sections", i];
      if ((section.file === undefined) === (section.sql === undefined)) {
        problem("a report section needs exactly one of file: or sql:", at);
        return;
      }
      const unreadable = section.file === undefined ? undefined : sqlFileProblem(section.file, context.config.baseDir);
      if (unreadable) {
        problem(unreadable, [...at, "file"]);
        return;
      }
      const where = [...at, section.file ? "file" : "sql"];
      const label = section.file ?? "sql";
      const sql = readSqlText(section, context.config.baseDir);
      for (const name of unknownParameters(sql)) problem(`unknown parameter :${name} in ${label}; ${parametersHint()}`, where);
      const compiled = compileQuery(context, sql, label);
      if ("error" in compiled) {
        if (compiled.error) problem(`${label}: ${compiled.error}`, where, undefined, "E_SQL");
        return;
      }
      if (writesDatabase(context.scratch, sql)) {
        problem(`${label}: ${readOnlyRule}`, where, undefined, "E_SQL");
        return;
      }
      const known = compiled.columns;
      const need = (column: string, subpath: (string | number)[], key?: string) => {
        if (!known.includes(column))
          problem(
            `the query of section "${section.title}" returns no column ${column}${didYouMean(column, known)}; it returns ${known.join(", ")}`,
            subpath,
            key,
          );
      };
      for (const column of Object.keys(section.columns ?? {})) need(column, [...at, "columns"], column);
      if (section.chart) {
        need(section.chart.label, [...at, "chart", "label"]);
        need(section.chart.value, [...at, "chart", "value"]);
      } else if (section.show === "trend") problem(`a trend section needs chart: { label: <column>, value: <column> }`, at, "show");
      for (const [, column] of (section.text ?? "").matchAll(/\{(\w+)(?:\|\w+)?\}/g)) need(column!, [...at, "text"]);
      for (const [, , format] of (section.text ?? "").matchAll(/\{(\w+)\|(\w+)\}/g)) {
        if (!formats.includes(format as ReportFormat))
          problem(`unknown format "${format}" in the text of section "${section.title}"; use one of ${formats.join(", ")}`, [
            ...at,
            "text",
          ]);
      }
    });
    return problems;
  },

  async execute(step, context) {
    const values = { run_id: context.runId, run_started_at: context.startedAt };
    const sections: RenderedSection[] = step.sections.map((section) => {
      const sql = readSqlText(section, context.config.baseDir);
      if (writesDatabase(context.db, sql))
        throw new PipelineError("E_SQL", `${section.file ?? "sql"} of section "${section.title}": ${readOnlyRule}`);
      const statement = context.db.prepare(sql);
      try {
        const rows = statement.all(parametersOf(sql, values));
        return { section, columns: statement.columnNames(), rows };
      } finally {
        statement.free();
      }
    });
    const locale = step.locale ?? "fr-FR";
    const files: { path: string; content: string }[] = [];
    if (step.markdown) files.push({ path: step.markdown, content: renderMarkdown(step, sections, locale) });
    if (step.html) files.push({ path: step.html, content: renderHtml(step, sections, locale) });
    return { status: "success", counts: {}, detail: `${sections.length} sections`, files };
  },
};

const readOnlyRule =
  "a report section must only read: this statement writes to the database (INSERT, UPDATE, DELETE, DDL or a PRAGMA that sets something, RETURNING or not); change data in a sql step and read it here with SELECT";

/** The files a report writes: its markdown and html, when set. */
function outputFiles(step: ReportStepSpec): string[] {
  return [step.markdown, step.html].filter((file): file is string => file !== undefined && file !== "");
}

const formats: ReportFormat[] = ["text", "integer", "number", "cents", "percent", "date"];

const separators: Record<Locale, { group: string; decimal: string; money: (n: string) => string; percent: (n: string) => string }> = {
  "fr-FR": { group: " ", decimal: ",", money: (n) => `${n} €`, percent: (n) => `${n} %` },
  "en-GB": { group: ",", decimal: ".", money: (n) => `€${n}`, percent: (n) => `${n}%` },
};

function group(digits: string, separator: string): string {
  return digits.replace(/\B(?=(\d{3})+(?!\d))/g, separator);
}

/** Formats a value for people: grouped digits, exact money from integer cents, percentages, dates. */
export function formatValue(value: SqlValue, format: ReportFormat | undefined, locale: Locale): string {
  if (value === null) return "–";
  const s = separators[locale];
  switch (format) {
    case "integer":
      return (Number(value) < 0 ? "-" : "") + group(String(Math.abs(Math.round(Number(value)))), s.group);
    case "cents": {
      // why: integer arithmetic on the cents, so no float ever rounds a displayed amount.
      const cents = BigInt(Math.round(Number(value)));
      const negative = cents < 0n;
      const abs = negative ? -cents : cents;
      const text = `${group(String(abs / 100n), s.group)}${s.decimal}${String(abs % 100n).padStart(2, "0")}`;
      return (negative ? "-" : "") + s.money(text);
    }
    case "number":
    case "percent": {
      const [whole, fraction] = Math.abs(Number(value)).toFixed(2).split(".");
      const text = `${Number(value) < 0 ? "-" : ""}${group(whole!, s.group)}${s.decimal}${fraction}`;
      return format === "percent" ? s.percent(text) : text;
    }
    case "date": {
      const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(String(value));
      return m ? `${m[3]}/${m[2]}/${m[1]}` : String(value);
    }
    default:
      return String(value);
  }
}

function isNumeric(section: ReportSection, column: string): boolean {
  return ["integer", "number", "cents", "percent"].includes(section.columns?.[column]?.format ?? "");
}

function label(section: ReportSection, column: string): string {
  return section.columns?.[column]?.label ?? column;
}

function shownColumns(rendered: RenderedSection): string[] {
  return rendered.section.columns ? Object.keys(rendered.section.columns) : rendered.columns;
}

function cell(rendered: RenderedSection, row: Row, column: string, locale: Locale): string {
  return formatValue(row[column] ?? null, rendered.section.columns?.[column]?.format, locale);
}

/** Each row fills the `text` template (paragraphs split on blank lines, `{column|format}` placeholders), or gives its first column as a paragraph. */
function paragraphs(rendered: RenderedSection, locale: Locale): string[] {
  const template = rendered.section.text;
  if (!template) return rendered.rows.map((row) => String(row[rendered.columns[0]!] ?? ""));
  const fill = (text: string, row: Row) =>
    text.replace(/\{(\w+)(?:\|(\w+))?\}/g, (_, column: string, format?: string) =>
      formatValue(row[column] ?? null, format as ReportFormat | undefined, locale),
    );
  const blocks = template
    .trim()
    .split(/\n\s*\n/)
    .map((block) => block.replace(/\s*\n\s*/g, " "));
  return rendered.rows.flatMap((row) => blocks.map((block) => fill(block, row)));
}

/** The rows of a trend section as points: the chart's label and value, formatted, with the change from the row before. */
function trendPoints(rendered: RenderedSection, locale: Locale): TrendPoint[] {
  const chart = rendered.section.chart!;
  const format = (column: string) => rendered.section.columns?.[column]?.format;
  return rendered.rows.map((row, i) => {
    const value = Number(row[chart.value] ?? 0);
    const before = i === 0 ? undefined : Number(rendered.rows[i - 1]![chart.value] ?? 0);
    const change = before === undefined ? "" : `${value > before ? "+" : ""}${formatValue(value - before, format(chart.value), locale)}`;
    return {
      label: formatValue(row[chart.label] ?? null, format(chart.label), locale),
      value,
      shown: formatValue(value, format(chart.value), locale),
      change,
    };
  });
}

function barLength(value: number, max: number, width: number): number {
  return max <= 0 ? 0 : (Math.max(0, value) / max) * width;
}

function renderMarkdown(step: ReportStepSpec, sections: RenderedSection[], locale: Locale): string {
  const md = escapeMarkdown;
  const out = [`# ${md(step.title)}`, ""];
  if (step.subtitle) out.push(md(step.subtitle), "");
  for (const rendered of sections) {
    const { section } = rendered;
    if (section.show === "trend" && rendered.rows.length < 2) continue; // why: one point is no trend.
    out.push(`## ${md(section.title)}`, "");
    if (section.show === "figures") {
      const row = rendered.rows[0] ?? {};
      for (const column of shownColumns(rendered))
        out.push(`- **${md(label(section, column))}** : ${md(cell(rendered, row, column, locale))}`);
      out.push("");
    } else if (section.show === "table") {
      const columns = shownColumns(rendered);
      const chart = section.chart;
      const max = chart ? Math.max(0, ...rendered.rows.map((r) => Number(r[chart.value] ?? 0))) : 0;
      const head = [...columns.map((c) => md(label(section, c))), ...(chart ? [""] : [])];
      const align = [...columns.map((c) => (isNumeric(section, c) ? "--:" : "---")), ...(chart ? ["---"] : [])];
      out.push(`| ${head.join(" | ")} |`, `|${align.join("|")}|`);
      for (const row of rendered.rows) {
        const cells = columns.map((c) => md(cell(rendered, row, c, locale)));
        if (chart) cells.push("█".repeat(Math.round(barLength(Number(row[chart.value] ?? 0), max, 20))));
        out.push(`| ${cells.join(" | ")} |`);
      }
      out.push("");
    } else if (section.show === "trend") {
      out.push(
        ...trendMarkdown(trendPoints(rendered, locale), [label(section, section.chart!.label), label(section, section.chart!.value)], md),
      );
    } else {
      for (const paragraph of paragraphs(rendered, locale)) out.push(md(paragraph), "");
    }
    if (section.note) out.push(`_${md(section.note)}_`, "");
  }
  return out.join("\n").replace(/\n+$/, "\n");
}

/**
 * Text as Markdown shows it, literally, on one line: line breaks become spaces (so a value cannot
 * end a table row or start a heading, quote, list or code block), and every character that can
 * open markup (HTML and comments, links and images, emphasis, code, tables, entities) is
 * backslash-escaped, as are the list, quote and heading-underline markers a line can start with.
 */
export function escapeMarkdown(text: string): string {
  const line = text
    .replace(/\r\n?|[\n\u2028\u2029]/g, " ")
    .trim()
    .replace(/[\\`*_[\]<>|~&#]/g, "\\$&");
  return line.replace(/^[-+=]/, "\\$&").replace(/^(\d+)([.)])/, "$1\\$2");
}

const escapeHtml = (text: string) =>
  text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;").replaceAll('"', "&quot;");

function svgChart(rendered: RenderedSection, locale: Locale): string {
  const chart = rendered.section.chart!;
  const format = rendered.section.columns?.[chart.value]?.format;
  const rows = rendered.rows;
  const max = Math.max(0, ...rows.map((r) => Number(r[chart.value] ?? 0)));
  const [labelWidth, barWidth, valueWidth, barHeight, gap] = [190, 330, 110, 22, 8];
  const height = rows.length * (barHeight + gap) + gap;
  const bars = rows.map((row, i) => {
    const y = gap + i * (barHeight + gap);
    const length = barLength(Number(row[chart.value] ?? 0), max, barWidth);
    const name = escapeHtml(formatValue(row[chart.label] ?? null, rendered.section.columns?.[chart.label]?.format, locale));
    const value = escapeHtml(formatValue(row[chart.value] ?? null, format, locale));
    return [
      `<text x="${labelWidth - 8}" y="${y + barHeight / 2}" text-anchor="end" dominant-baseline="central">${name}</text>`,
      `<rect x="${labelWidth}" y="${y}" width="${length.toFixed(1)}" height="${barHeight}" rx="3" fill="#2f6db5"/>`,
      `<text x="${(labelWidth + length + 6).toFixed(1)}" y="${y + barHeight / 2}" dominant-baseline="central">${value}</text>`,
    ].join("");
  });
  const width = labelWidth + barWidth + valueWidth;
  const title = `${escapeHtml(label(rendered.section, chart.value))} par ${escapeHtml(label(rendered.section, chart.label)).toLowerCase()}`;
  return `<svg class="chart" role="img" aria-label="${title}" viewBox="0 0 ${width} ${height}" width="${width}" height="${height}" xmlns="http://www.w3.org/2000/svg" font-family="system-ui, sans-serif" font-size="13" fill="#1d2733">${bars.join("")}</svg>`;
}

function renderHtml(step: ReportStepSpec, sections: RenderedSection[], locale: Locale): string {
  const body: string[] = [`<h1>${escapeHtml(step.title)}</h1>`];
  if (step.subtitle) body.push(`<p class="subtitle">${escapeHtml(step.subtitle)}</p>`);
  for (const rendered of sections) {
    const { section } = rendered;
    if (section.show === "trend" && rendered.rows.length < 2) continue;
    body.push(`<section>`, `<h2>${escapeHtml(section.title)}</h2>`);
    if (section.show === "figures") {
      const row = rendered.rows[0] ?? {};
      body.push(`<dl class="figures">`);
      for (const column of shownColumns(rendered)) {
        body.push(`<div><dt>${escapeHtml(label(section, column))}</dt><dd>${escapeHtml(cell(rendered, row, column, locale))}</dd></div>`);
      }
      body.push(`</dl>`);
    } else if (section.show === "table") {
      const columns = shownColumns(rendered);
      const numeric = (c: string) => isNumeric(section, c);
      body.push(
        `<table><thead><tr>${columns.map((c) => `<th${numeric(c) ? ' class="num"' : ""}>${escapeHtml(label(section, c))}</th>`).join("")}</tr></thead><tbody>`,
      );
      for (const row of rendered.rows) {
        body.push(
          `<tr>${columns.map((c) => `<td${numeric(c) ? ' class="num"' : ""}>${escapeHtml(cell(rendered, row, c, locale))}</td>`).join("")}</tr>`,
        );
      }
      body.push(`</tbody></table>`);
      if (section.chart) body.push(svgChart(rendered, locale));
    } else if (section.show === "trend") {
      const points = trendPoints(rendered, locale);
      body.push(trendSvg(points, section.title, escapeHtml));
      body.push(
        `<table><tbody>${points.map((p) => `<tr><td>${escapeHtml(p.label)}</td><td class="num">${escapeHtml(p.shown)}</td><td class="num">${escapeHtml(p.change)}</td></tr>`).join("")}</tbody></table>`,
      );
    } else {
      for (const paragraph of paragraphs(rendered, locale)) body.push(`<p>${escapeHtml(paragraph)}</p>`);
    }
    if (section.note) body.push(`<p class="note">${escapeHtml(section.note)}</p>`);
    body.push(`</section>`);
  }
  return `<!doctype html>
<html lang="${locale.slice(0, 2)}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(step.title)}</title>
<style>
  body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2733; max-width: 820px; margin: 2rem auto; padding: 0 1rem; line-height: 1.45; }
  h1 { font-size: 1.7rem; margin-bottom: 0.2rem; }
  .subtitle, .note { color: #5b6876; }
  h2 { font-size: 1.2rem; border-bottom: 2px solid #2f6db5; padding-bottom: 0.2rem; margin-top: 2rem; }
  .figures { display: grid; grid-template-columns: repeat(auto-fit, minmax(170px, 1fr)); gap: 0.8rem; margin: 0; }
  .figures div { border: 1px solid #d5dde6; border-radius: 6px; padding: 0.6rem 0.8rem; }
  .figures dt { font-size: 0.85rem; color: #5b6876; }
  .figures dd { margin: 0.2rem 0 0; font-size: 1.35rem; font-weight: 600; white-space: nowrap; }
  table { border-collapse: collapse; width: 100%; margin: 0.5rem 0 1rem; }
  th, td { border-bottom: 1px solid #e3e8ee; padding: 0.35rem 0.5rem; text-align: left; }
  th { font-size: 0.85rem; color: #5b6876; }
  .num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
  .chart { max-width: 100%; height: auto; }
  section { break-inside: avoid; }
  @media print { body { margin: 0; max-width: none; } @page { size: A4; margin: 15mm; } }
</style>
</head>
<body>
${body.join("\n")}
</body>
</html>
`;
}
