import { Chalk, type ChalkInstance } from "chalk";
import { checkLine, renderCheckTable } from "./check-report.js";
import type { PlannedCheck } from "./checks.js";
import { formatDiagnostic, type Diagnostic } from "./errors.js";
import type { RejectionSample } from "./history.js";
import type { Plan } from "./plan.js";
import type { RunEvent, RunReport, StepResult } from "./run.js";
import type { StepCounts } from "./step.js";

/** A stream the CLI writes to. */
export interface OutputStream {
  write(text: string): unknown;
  isTTY?: boolean | undefined;
}

/** Colours for a stream: on for a terminal unless NO_COLOR is set. */
export function colorsFor(stream: OutputStream, env: Readonly<Record<string, string | undefined>>): ChalkInstance {
  const on = stream.isTTY === true && (env["NO_COLOR"] ?? "") === "" && env["TERM"] !== "dumb";
  return new Chalk({ level: on ? 1 : 0 });
}

const countNames: (keyof StepCounts)[] = [
  "read",
  "inserted",
  "updated",
  "unchanged",
  "rejected",
  "conflicting",
  "deleted",
  "retried",
  "pending",
];

/** Formats a number with thin grouping: 1 234 567. */
export function formatCount(n: number): string {
  return n.toLocaleString("en-US").replaceAll(",", " ");
}

function formatMs(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

/** What a run would change in the database's schema before its steps. */
export interface SchemaChanges {
  createdTables: string[];
  /** `table.column`, for the engine's own tables written by an older version. */
  addedColumns: string[];
  /** The checks the run will make, in order, each after the step it follows. */
  checks?: PlannedCheck[] | undefined;
}

/** The plan as `run --dry-run` prints it. */
export function renderPlan(plan: Plan, changes: SchemaChanges, c: ChalkInstance): string {
  const lines = [c.bold(`Plan for ${plan.config.file} -> ${plan.database}`), ""];
  if (changes.createdTables.length > 0) lines.push(`would create tables: ${changes.createdTables.join(", ")}`, "");
  if (changes.addedColumns.length > 0) lines.push(`would add columns: ${changes.addedColumns.join(", ")}`, "");
  for (const step of plan.steps) {
    lines.push(`${c.cyan(`${step.index + 1}.`)} ${c.bold(step.name)}  ${step.description}`);
    const width = Math.max(...step.details.map(([label]) => label.length));
    for (const [label, value] of step.details) lines.push(`     ${c.dim(label.padEnd(width))}  ${value}`);
  }
  const checks = changes.checks ?? [];
  if (checks.length > 0) lines.push("", "checks that will run:");
  for (const check of checks) lines.push(`  ${c.bold(check.name)} (${check.severity}) on ${check.table}, after ${check.after}`);
  lines.push("", c.dim("dry run: nothing was fetched or written"));
  return lines.join("\n") + "\n";
}

/** Diagnostics, one per line, then a count. */
export function renderDiagnostics(diagnostics: readonly Diagnostic[], c: ChalkInstance): string {
  const lines = diagnostics.slice(0, shownDiagnostics).map((d) => c.red(formatDiagnostic(d)));
  const more = diagnostics.length - shownDiagnostics;
  if (more > 0) lines.push(c.red(`… and ${more} more (the first ${shownDiagnostics} are shown; --json lists them all)`));
  lines.push(`${diagnostics.length} problem${diagnostics.length === 1 ? "" : "s"} found; nothing was run`);
  return lines.join("\n") + "\n";
}

/** How many problems `validate` prints; a configuration with thousands shows the first ones and a count of the rest. */
export const shownDiagnostics = 100;

/** Prints run events as they come: one line per step, and live progress on a terminal. */
export function runLogger(out: OutputStream, c: ChalkInstance, database: string): (event: RunEvent) => void {
  let progressShown = false;
  return (event) => {
    switch (event.kind) {
      case "start":
        out.write(c.bold(`Running -> ${database}`) + "\n");
        if (event.createdTables.length > 0) out.write(`created tables: ${event.createdTables.join(", ")}\n`);
        break;
      case "step-start":
        out.write(`${c.cyan(`[${event.step.index + 1}/${event.total}]`)} ${c.bold(event.step.name)}  ${event.step.description}\n`);
        break;
      case "progress":
        if (out.isTTY && event.elapsedMs > 500) {
          const rate = event.rows / (event.elapsedMs / 1000);
          out.write(`\r      ${formatCount(event.rows)} rows (${formatCount(Math.round(rate))} rows/s)`);
          progressShown = true;
        }
        break;
      case "step-end":
        if (progressShown) out.write("\r\x1b[2K");
        progressShown = false;
        out.write(`      ${stepLine(event.result, c)}\n`);
        break;
      case "check":
        // why: a passing check is a row of the end-of-run table; the log names only what needs reading.
        if (event.result.status !== "passed" || event.result.detail !== undefined) out.write(`      ${checkLine(event.result, c)}\n`);
        break;
    }
  };
}

function countsText(counts: StepCounts): string {
  return countNames
    .filter((name) => counts[name] !== undefined && (counts[name] !== 0 || name === "read"))
    .map((name) => `${formatCount(counts[name]!)} ${name}`)
    .join(", ");
}

function stepLine(result: StepResult, c: ChalkInstance): string {
  const time = c.dim(`(${formatMs(result.durationMs)})`);
  if (result.status === "error") return `${c.red("✗ failed")} ${time}: ${result.error?.message ?? ""}`;
  if (result.status === "skipped") return `${c.dim("- skipped")}: ${result.detail ?? ""}`;
  const kept = (result.counts.rejected ?? 0) + (result.counts.conflicting ?? 0) + (result.counts.pending ?? 0);
  const mark = result.status === "unchanged" ? c.yellow("= unchanged") : kept > 0 ? c.yellow("⚠") : c.green("✓");
  const text = [countsText(result.counts), result.detail].filter(Boolean).join("; ");
  const line = `${mark} ${kept > 0 ? c.yellow(text) : text} ${time}`.replace(/ +/g, " ");
  const samples = result.rejections ?? [];
  const more = kept > samples.length ? [c.dim(`… and ${formatCount(kept - samples.length)} more in pipeline_rejected_rows`)] : [];
  return [line, ...samples.map(describeRejection), ...more].join("\n        ");
}

/** A rejected row in one line: `line 4, qty: "12.5" is not an integer — 2024-01-02,1,12.5`, control characters escaped, long text clipped. */
export function describeRejection(sample: RejectionSample): string {
  const where = sample.column ? `line ${sample.line}, ${sample.column}` : `line ${sample.line}`;
  return `${where}: ${clipForDisplay(sample.reason, 100)} — ${clipForDisplay(sample.raw, 60)}`;
}

function clipForDisplay(text: string, max: number): string {
  // why: raw lines come from the source: an escape sequence or a line break must not reach the terminal as such.
  const shown = text.replace(/[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g, (ch) => {
    const code = ch.charCodeAt(0);
    return code > 0xff ? `\\u${code.toString(16).padStart(4, "0")}` : `\\x${code.toString(16).padStart(2, "0")}`;
  });
  return shown.length <= max ? shown : `${shown.slice(0, max - 21)}…${shown.slice(-20)}`;
}

/** The end-of-run table and verdict. */
export function renderSummary(report: RunReport, c: ChalkInstance): string {
  const header = ["step", "status", ...countNames, "time"];
  const rows = report.steps.map((s) => [
    s.name,
    s.status.replace("_", " "),
    ...countNames.map((name) => (s.counts[name] === undefined ? "" : formatCount(s.counts[name]!))),
    s.status === "not_executed" || s.status === "skipped" ? "" : formatMs(s.durationMs),
  ]);
  const used = header.map((_, i) => i < 2 || i === header.length - 1 || rows.some((r) => r[i] !== ""));
  const pick = (row: string[]) => row.filter((_, i) => used[i]);
  const table = [pick(header), ...rows.map(pick)];
  const widths = table[0]!.map((_, i) => Math.max(...table.map((r) => r[i]!.length)));
  const lines = table.map((row) =>
    row
      .map((cell, i) => (i < 2 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!)))
      .join("  ")
      .trimEnd(),
  );
  lines[0] = c.dim(lines[0]!);
  const verdict = !report.ok
    ? c.red(`Run failed in ${formatMs(report.durationMs)}; ${report.database} was not changed`)
    : report.runId === undefined
      ? (report.rejectedRows > 0 ? c.yellow : c.green)(`Done in ${formatMs(report.durationMs)}: ${report.detail ?? "nothing to do"}`)
      : (report.status === "succeeded" ? c.green : c.yellow)(
          `Run ${report.runId} ${report.status.replaceAll("_", " ")} in ${formatMs(report.durationMs)}; saved ${report.database}`,
        );

  const written = report.files.length > 0 ? [`wrote ${report.files.join(", ")}`] : [];
  const notes = report.notes.map((note) => c.dim(note));
  const checks = renderCheckTable(report.checks ?? [], c);
  return ["", ...lines, ...(checks.length > 0 ? ["", ...checks] : []), "", verdict, ...written, ...notes].join("\n") + "\n";
}

/** What each count reads as in a deep plan: the run would insert 12 rows, reject 3... */
const wouldDo: Partial<Record<keyof StepCounts, string>> = {
  read: "read",
  inserted: "insert",
  updated: "update",
  unchanged: "leave unchanged",
  rejected: "reject",
  conflicting: "keep in conflict",
  deleted: "delete",
  retried: "retry",
  pending: "leave pending",
};

/** The deep plan (`plan --deep`): what each step would do to the rows, the first rejected rows, the checks, the tables that would change. */
export function renderDeepPlan(plan: Plan, report: RunReport, c: ChalkInstance): string {
  const lines = [c.bold(`Deep plan for ${plan.config.file} -> ${plan.database}`), ""];
  if (report.createdTables.length > 0) lines.push(`would create tables: ${report.createdTables.join(", ")}`, "");
  for (const step of report.steps) {
    const counts = countNames
      .filter((name) => step.counts[name] !== undefined && (step.counts[name] !== 0 || name === "read"))
      .map((name) => `${wouldDo[name]} ${formatCount(step.counts[name]!)}`)
      .join(", ");
    const what =
      step.status === "error"
        ? c.red(`✗ would fail: ${step.error?.message ?? ""}`)
        : step.status === "not_executed"
          ? c.dim("not reached")
          : step.status === "skipped"
            ? c.dim(`would be skipped: ${step.detail ?? ""}`)
            : [step.status === "unchanged" ? "unchanged" : `would ${counts || "run"}`, step.detail].filter(Boolean).join("; ");
    lines.push(`${c.cyan(`${step.index + 1}.`)} ${c.bold(step.name)}  ${what}`);
    const kept = (step.counts.rejected ?? 0) + (step.counts.conflicting ?? 0) + (step.counts.pending ?? 0);
    for (const sample of step.rejections ?? []) lines.push(`     ${c.yellow("⚠")} ${describeRejection(sample)}`);
    const shown = step.rejections?.length ?? 0;
    if (kept > shown && shown > 0) lines.push(c.dim(`     … and ${formatCount(kept - shown)} more`));
  }
  const changed = report.changedTables ?? [];
  const stopped = report.ok ? "" : " before the run stopped";
  lines.push("", changed.length > 0 ? `tables that would change${stopped}: ${changed.join(", ")}` : `no table would change${stopped}`);
  if ((report.plannedFiles ?? []).length > 0) lines.push(`files that would be written: ${report.plannedFiles!.join(", ")}`);
  const checks = renderCheckTable(report.checks ?? [], c);
  if (checks.length > 0) lines.push("", ...checks);
  const verdict = report.ok
    ? c.green(
        report.runId === undefined
          ? `the run would change nothing: ${report.detail ?? ""}`
          : `the run would save: ${report.status.replaceAll("_", " ")}`,
      )
    : c.red(`the run would fail: ${report.error?.code ?? ""} ${report.error?.message ?? ""}`);
  lines.push("", verdict, ...report.notes.map((note) => c.dim(note)));
  lines.push(c.dim("deep plan: every step and check ran inside the run's transaction, then it was rolled back; nothing was written"));
  return lines.join("\n") + "\n";
}
