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
import type { RunContext, StepDefinition } from "../engine/step.js";
import { trendMarkdown, trendSvg, type TrendPoint } from "./report-trend.js";

/** How values are written: a BCP 47 locale and, for amounts, an optional ISO 4217 currency. */
interface Style {
  locale: string;
  currency?: string | undefined;
}

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
  reads: (step, context) => [
    ...step.sections.flatMap((section) => context.tablesRead(readSqlText(section, context.baseDir))),
    ...(step.byline?.sql === undefined ? [] : context.tablesRead(step.byline.sql)),
  ],
  inputs: (step) => step.sections.flatMap((section) => (section.file ? [{ file: section.file, what: "the SQL file" }] : [])),
  queries: (step) => [
    ...(step.byline?.sql === undefined ? [] : [{ label: `byline of ${step.name}`, sql: step.byline.sql }]),
    ...step.sections.map((section) => ({ label: `section "${section.title}" of ${step.name}`, file: section.file, sql: section.sql })),
  ],
  derived: true,

  check(step, context) {
    const problems: Diagnostic[] = [];
    const problem = (message: string, subpath: (string | number)[], key?: string, code: Diagnostic["code"] = "E_CONFIG") =>
      problems.push({ code, message, place: context.at(subpath, key) });
    if (!step.markdown && !step.html) problem("a report needs markdown:, html:, or both (the files it writes)", []);
    const localeProblem = checkLocale(step.locale);
    if (localeProblem) problem(localeProblem, ["locale"]);
    if (step.currency !== undefined && !Intl.supportedValuesOf("currency").includes(step.currency))
      problem(
        `currency "${step.currency}" is not an ISO 4217 code this Node knows${didYouMean(step.currency, Intl.supportedValuesOf("currency"))}`,
        ["currency"],
      );
    if (step.byline) {
      const known = ["generated_at"];
      if (step.byline.sql !== undefined) {
        const compiled = compileQuery(context, step.byline.sql, "byline sql");
        if ("error" in compiled) {
          if (compiled.error) problem(`byline sql: ${compiled.error}`, ["byline", "sql"], undefined, "E_SQL");
        } else if (writesDatabase(context.scratch, step.byline.sql))
          problem(`byline sql: ${readOnlyRule}`, ["byline", "sql"], undefined, "E_SQL");
        else known.push(...compiled.columns);
      }
      for (const [, column] of step.byline.text.matchAll(/\{(\w+)(?:\|\w+)?\}/g))
        if (!known.includes(column!))
          problem(`the byline names {${column}}, which is neither generated_at nor a column of its sql${didYouMean(column!, known)}`, [
            "byline",
            "text",
          ]);
    }
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
    const style: Style = { locale: step.locale ?? defaultLocale, currency: step.currency };
    const byline = step.byline ? bylineText(step.byline, context.db, context.startedAt, style) : undefined;
    const files: { path: string; content: string }[] = [];
    if (step.markdown) files.push({ path: step.markdown, content: renderMarkdown(step, sections, style, byline) });
    if (step.html) files.push({ path: step.html, content: renderHtml(step, sections, style, byline) });
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

/** The locale of a report that names none: the engine speaks no client's language by default. */
const defaultLocale = "en";

/** Why a locale cannot be used (not a BCP 47 tag, or unknown to this Node's ICU), or undefined. */
function checkLocale(locale: string | undefined): string | undefined {
  if (locale === undefined) return undefined;
  try {
    Intl.getCanonicalLocales(locale);
  } catch {
    return `locale "${locale}" is not a BCP 47 language tag (e.g. fr-FR, en-GB, de-CH)`;
  }
  return Intl.NumberFormat.supportedLocalesOf(locale).length === 0
    ? `locale "${locale}" is not one this Node knows (e.g. fr-FR, en-GB, de-CH)`
    : undefined;
}

const numberFormats = new Map<string, Intl.NumberFormat>();
function numberFormat(locale: string, options: Intl.NumberFormatOptions): Intl.NumberFormat {
  const key = `${locale}\0${JSON.stringify(options)}`;
  let format = numberFormats.get(key);
  if (!format) numberFormats.set(key, (format = new Intl.NumberFormat(locale, options)));
  return format;
}
const twoDecimals = { minimumFractionDigits: 2, maximumFractionDigits: 2 } as const;

/** An integer count of hundredths as an exact decimal string ("-5268.78"): no float ever rounds it. */
function hundredths(value: number): string {
  const cents = BigInt(Math.round(value));
  const abs = cents < 0n ? -cents : cents;
  return `${cents < 0n ? "-" : ""}${abs / 100n}.${String(abs % 100n).padStart(2, "0")}`;
}

/**
 * Formats a value for people with `Intl`, in the locale's own separators (non-breaking where the
 * locale says so): grouped integers, amounts exact from integer cents (in `currency` when given),
 * percentages, dates (YYYY-MM-DD or a timestamp, read in UTC).
 */
export function formatValue(value: SqlValue, format: ReportFormat | undefined, locale: string, currency?: string): string {
  if (value === null) return "–";
  switch (format) {
    case "integer":
      return numberFormat(locale, { maximumFractionDigits: 0 }).format(BigInt(Math.round(Number(value))));
    case "cents": {
      const options: Intl.NumberFormatOptions = currency ? { style: "currency", currency, ...twoDecimals } : twoDecimals;
      // why: a decimal string is formatted exactly (Intl.NumberFormat v3); a float of euros could round.
      return numberFormat(locale, options).format(hundredths(Number(value)) as Intl.StringNumericLiteral);
    }
    case "number":
      return numberFormat(locale, twoDecimals).format(Number(value));
    case "percent": {
      const text = String(Number(value));
      // why: "31.875e-2" is the exact hundredth; dividing the float by 100 could land just under a rounding boundary.
      const exact = /e/i.test(text) ? Number(value) / 100 : (`${text}e-2` as Intl.StringNumericLiteral);
      return numberFormat(locale, { style: "percent", ...twoDecimals }).format(exact);
    }
    case "date": {
      const text = String(value);
      const date = /^\d{4}-\d{2}-\d{2}$/.test(text) ? new Date(`${text}T00:00:00Z`) : new Date(text);
      if (Number.isNaN(date.getTime())) return text;
      return new Intl.DateTimeFormat(locale, { year: "numeric", month: "2-digit", day: "2-digit", timeZone: "UTC" }).format(date);
    }
    default:
      return String(value);
  }
}

/** Fills a `{column|format}` template from one row. */
function fillTemplate(text: string, row: Row, style: Style): string {
  return text.replace(/\{(\w+)(?:\|(\w+))?\}/g, (_, column: string, format?: string) =>
    formatValue(row[column] ?? null, format as ReportFormat | undefined, style.locale, style.currency),
  );
}

/** The byline: its template filled from its query's first row and the run's start (`generated_at`). */
function bylineText(byline: NonNullable<ReportStepSpec["byline"]>, db: RunContext["db"], startedAt: string, style: Style): string {
  let row: Row = {};
  if (byline.sql !== undefined) {
    if (writesDatabase(db, byline.sql)) throw new PipelineError("E_SQL", `byline sql: ${readOnlyRule}`);
    const statement = db.prepare(byline.sql);
    try {
      row = statement.all({})[0] ?? {};
    } finally {
      statement.free();
    }
  }
  return fillTemplate(byline.text.trim().replace(/\s*\n\s*/g, " "), { ...row, generated_at: startedAt }, style);
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

function cell(rendered: RenderedSection, row: Row, column: string, style: Style): string {
  return formatValue(row[column] ?? null, rendered.section.columns?.[column]?.format, style.locale, style.currency);
}

/** Each row fills the `text` template (paragraphs split on blank lines, `{column|format}` placeholders), or gives its first column as a paragraph. */
function paragraphs(rendered: RenderedSection, style: Style): string[] {
  const template = rendered.section.text;
  if (!template) return rendered.rows.map((row) => String(row[rendered.columns[0]!] ?? ""));
  const fill = (text: string, row: Row) => fillTemplate(text, row, style);
  const blocks = template
    .trim()
    .split(/\n\s*\n/)
    .map((block) => block.replace(/\s*\n\s*/g, " "));
  return rendered.rows.flatMap((row) => blocks.map((block) => fill(block, row)));
}

/** The rows of a trend section as points: the chart's label and value, formatted, with the change from the row before. */
function trendPoints(rendered: RenderedSection, style: Style): TrendPoint[] {
  const chart = rendered.section.chart!;
  const format = (column: string) => rendered.section.columns?.[column]?.format;
  return rendered.rows.map((row, i) => {
    const value = Number(row[chart.value] ?? 0);
    const before = i === 0 ? undefined : Number(rendered.rows[i - 1]![chart.value] ?? 0);
    const change =
      before === undefined
        ? ""
        : `${value > before ? "+" : ""}${formatValue(value - before, format(chart.value), style.locale, style.currency)}`;
    return {
      label: formatValue(row[chart.label] ?? null, format(chart.label), style.locale, style.currency),
      value,
      shown: formatValue(value, format(chart.value), style.locale, style.currency),
      change,
    };
  });
}

function barLength(value: number, max: number, width: number): number {
  return max <= 0 ? 0 : (Math.max(0, value) / max) * width;
}

function renderMarkdown(step: ReportStepSpec, sections: RenderedSection[], style: Style, byline: string | undefined): string {
  const md = escapeMarkdown;
  const out = [`# ${md(step.title)}`, ""];
  if (step.subtitle) out.push(md(step.subtitle), "");
  if (byline) out.push(`_${md(byline)}_`, "");
  for (const rendered of sections) {
    const { section } = rendered;
    if (section.show === "trend" && rendered.rows.length < 2) continue; // why: one point is no trend.
    out.push(`## ${md(section.title)}`, "");
    if (section.show === "figures") {
      const row = rendered.rows[0] ?? {};
      for (const column of shownColumns(rendered))
        out.push(`- **${md(label(section, column))}** : ${md(cell(rendered, row, column, style))}`);
      out.push("");
    } else if (section.show === "table") {
      const columns = shownColumns(rendered);
      const chart = section.chart;
      const max = chart ? Math.max(0, ...rendered.rows.map((r) => Number(r[chart.value] ?? 0))) : 0;
      const head = [...columns.map((c) => md(label(section, c))), ...(chart ? [""] : [])];
      const align = [...columns.map((c) => (isNumeric(section, c) ? "--:" : "---")), ...(chart ? ["---"] : [])];
      out.push(`| ${head.join(" | ")} |`, `|${align.join("|")}|`);
      for (const row of rendered.rows) {
        const cells = columns.map((c) => md(cell(rendered, row, c, style)));
        if (chart) cells.push("█".repeat(Math.round(barLength(Number(row[chart.value] ?? 0), max, 20))));
        out.push(`| ${cells.join(" | ")} |`);
      }
      out.push("");
    } else if (section.show === "trend") {
      out.push(
        ...trendMarkdown(trendPoints(rendered, style), [label(section, section.chart!.label), label(section, section.chart!.value)], md),
      );
    } else {
      for (const paragraph of paragraphs(rendered, style)) out.push(md(paragraph), "");
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

/** A horizontal bar chart in HTML and CSS: its text keeps the page's font size at any width (an SVG scaled to a phone shrinks it). */
function barChart(rendered: RenderedSection, style: Style): string {
  const chart = rendered.section.chart!;
  const rows = rendered.rows;
  const max = Math.max(0, ...rows.map((r) => Number(r[chart.value] ?? 0)));
  const format = (column: string, row: Row) =>
    escapeHtml(formatValue(row[column] ?? null, rendered.section.columns?.[column]?.format, style.locale, style.currency));
  const bars = rows.map(
    (row) =>
      `<div class="bar"><span class="bar-label">${format(chart.label, row)}</span><span class="bar-track"><span class="bar-fill" style="width: ${barLength(Number(row[chart.value] ?? 0), max, 100).toFixed(1)}%"></span></span><span class="bar-value">${format(chart.value, row)}</span></div>`,
  );
  return `<figure class="chart" aria-label="${escapeHtml(chart.title ?? rendered.section.title)}">${bars.join("")}</figure>`;
}

function renderHtml(step: ReportStepSpec, sections: RenderedSection[], style: Style, byline: string | undefined): string {
  const body: string[] = [`<h1>${escapeHtml(step.title)}</h1>`];
  if (step.subtitle) body.push(`<p class="subtitle">${escapeHtml(step.subtitle)}</p>`);
  if (byline) body.push(`<p class="byline">${escapeHtml(byline)}</p>`);
  for (const rendered of sections) {
    const { section } = rendered;
    if (section.show === "trend" && rendered.rows.length < 2) continue;
    body.push(`<section>`, `<h2>${escapeHtml(section.title)}</h2>`);
    if (section.show === "figures") {
      const row = rendered.rows[0] ?? {};
      body.push(`<dl class="figures">`);
      for (const column of shownColumns(rendered)) {
        body.push(`<div><dt>${escapeHtml(label(section, column))}</dt><dd>${escapeHtml(cell(rendered, row, column, style))}</dd></div>`);
      }
      body.push(`</dl>`);
    } else if (section.show === "table") {
      const columns = shownColumns(rendered);
      const numeric = (c: string) => isNumeric(section, c);
      // why: on a narrow screen each row becomes a card (CSS below), each value beside its label; the wrapper scrolls whatever still does not fit.
      body.push(
        `<div class="table-wrap"><table class="cards"><thead><tr>${columns.map((c) => `<th${numeric(c) ? ' class="num"' : ""}>${escapeHtml(label(section, c))}</th>`).join("")}</tr></thead><tbody>`,
      );
      for (const row of rendered.rows) {
        body.push(
          `<tr>${columns.map((c) => `<td data-label="${escapeHtml(label(section, c))}"${numeric(c) ? ' class="num"' : ""}>${escapeHtml(cell(rendered, row, c, style))}</td>`).join("")}</tr>`,
        );
      }
      body.push(`</tbody></table></div>`);
      if (section.chart) body.push(barChart(rendered, style));
    } else if (section.show === "trend") {
      const points = trendPoints(rendered, style);
      body.push(trendSvg(points, section.title, escapeHtml));
      body.push(
        `<table><tbody>${points.map((p) => `<tr><td>${escapeHtml(p.label)}</td><td class="num">${escapeHtml(p.shown)}</td><td class="num">${escapeHtml(p.change)}</td></tr>`).join("")}</tbody></table>`,
      );
    } else {
      for (const paragraph of paragraphs(rendered, style)) body.push(`<p>${escapeHtml(paragraph)}</p>`);
    }
    if (section.note) body.push(`<p class="note">${escapeHtml(section.note)}</p>`);
    body.push(`</section>`);
  }
  return `<!doctype html>
<html lang="${escapeHtml(style.locale)}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(step.title)}</title>
<style>
  body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2733; max-width: 820px; margin: 2rem auto; padding: 0 1rem; line-height: 1.45; }
  h1 { font-size: 1.7rem; margin-bottom: 0.2rem; }
  .subtitle, .note, .byline { color: #5b6876; }
  .byline { font-size: 0.9rem; }
  h2 { font-size: 1.2rem; border-bottom: 2px solid #2f6db5; padding-bottom: 0.2rem; margin-top: 2rem; }
  .figures { display: grid; grid-template-columns: repeat(auto-fit, minmax(170px, 1fr)); gap: 0.8rem; margin: 0; }
  .figures div { border: 1px solid #d5dde6; border-radius: 6px; padding: 0.6rem 0.8rem; }
  .figures dt { font-size: 0.85rem; color: #5b6876; }
  .figures dd { margin: 0.2rem 0 0; font-size: 1.35rem; font-weight: 600; white-space: nowrap; }
  .table-wrap { overflow-x: auto; margin: 0.5rem 0 1rem; }
  table { border-collapse: collapse; width: 100%; }
  th, td { border-bottom: 1px solid #e3e8ee; padding: 0.35rem 0.5rem; text-align: left; }
  th { font-size: 0.85rem; color: #5b6876; }
  .num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
  .chart { margin: 0 0 1rem; display: grid; gap: 0.35rem; font-size: 0.9rem; }
  .bar { display: grid; grid-template-columns: minmax(4.5rem, 28%) 1fr auto; gap: 0.5rem; align-items: center; }
  .bar-label { text-align: right; overflow-wrap: anywhere; }
  .bar-track { display: block; min-width: 2rem; }
  .bar-fill { display: block; height: 1.2rem; background: #2f6db5; border-radius: 3px; }
  .bar-value { white-space: nowrap; font-variant-numeric: tabular-nums; }
  @media (max-width: 600px) {
    body { margin: 1rem auto; }
    table.cards thead { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); }
    table.cards, table.cards tbody, table.cards tr, table.cards td { display: block; }
    table.cards tr { border: 1px solid #d5dde6; border-radius: 6px; margin-bottom: 0.6rem; padding: 0.3rem 0.7rem; }
    table.cards td { display: flex; justify-content: space-between; gap: 1rem; border: 0; padding: 0.15rem 0; text-align: right; }
    table.cards td::before { content: attr(data-label); color: #5b6876; text-align: left; font-size: 0.85rem; }
    table.cards td:first-child { justify-content: flex-start; text-align: left; font-weight: 600; font-size: 1.05rem; padding-bottom: 0.3rem; }
    table.cards td:first-child::before { content: none; }
  }
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
