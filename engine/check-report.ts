import type { ChalkInstance } from "chalk";
import { describeCheckResult, type CheckResult } from "./checks.js";

/** One check as the run's log shows it: `check ✓ not_null_sales_quantity` or `check ✗ … 2 failing row(s), first {...}`. */
export function checkLine(result: CheckResult, c: ChalkInstance): string {
  const mark = result.status === "passed" ? c.green("✓") : result.status === "warned" ? c.yellow("⚠ warn") : c.red("✗ error");
  const text = result.status === "passed" && result.detail === undefined ? result.name : describeCheckResult(result);
  const carried = result.carriedFromRun === undefined ? "" : c.dim(` (carried over from run ${result.carriedFromRun})`);
  return `check ${mark} ${result.status === "passed" ? text : (result.status === "warned" ? c.yellow : c.red)(text)}${carried}`;
}

/** The checks as a table (check, table, severity, status, failing rows), then the first failing rows of each that did not pass. */
export function renderCheckTable(results: readonly CheckResult[], c: ChalkInstance): string[] {
  if (results.length === 0) return [];
  const header = ["check", "table", "severity", "status", "failing"];
  const rows = results.map((r) => [r.name, r.table, r.severity, r.status, String(r.failingRows)]);
  const table = [header, ...rows];
  const widths = header.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
  const lines = table.map((row) =>
    row
      .map((cell, i) => (i === 4 ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd(),
  );
  lines[0] = c.dim(lines[0]!);
  for (const result of results) {
    if (result.status === "passed" && result.detail === undefined) continue;
    const color = result.status === "failed" ? c.red : result.status === "warned" ? c.yellow : (text: string) => text;
    lines.push(color(`  ${describeCheckResult(result)}`));
    for (const sample of result.samples.slice(1, 3)) lines.push(c.dim(`    ${JSON.stringify(sample)}`));
  }
  const carried = new Map<number, string[]>();
  for (const r of results)
    if (r.carriedFromRun !== undefined) carried.set(r.carriedFromRun, [...(carried.get(r.carriedFromRun) ?? []), r.name]);
  for (const [run, names] of carried)
    lines.push(...wrapped(`carried over from run ${run} (nothing they read changed since):`, names).map((line) => c.dim(line)));
  const appended = new Map<number, string[]>();
  for (const r of results)
    if (r.appendedRows !== undefined)
      appended.set(r.appendedRows.earlierFromRun, [
        ...(appended.get(r.appendedRows.earlierFromRun) ?? []),
        `${r.name} (${r.appendedRows.rows} row(s))`,
      ]);
  for (const [run, names] of appended)
    lines.push(
      ...wrapped(`judged only the rows this run added (the others passed in run ${run} and did not change since):`, names).map((line) =>
        c.dim(line),
      ),
    );
  const failed = results.filter((r) => r.status === "failed").length;
  const warned = results.filter((r) => r.status === "warned").length;
  lines.push(
    `${results.length} check(s): ${results.length - failed - warned} passed` +
      (warned > 0 ? c.yellow(`, ${warned} warned`) : "") +
      (failed > 0 ? c.red(`, ${failed} failed`) : ""),
  );
  return lines;
}

/** A heading, then the names after it, as lines of at most about 100 characters, indented. */
function wrapped(heading: string, names: readonly string[]): string[] {
  const lines = [`  ${heading}`];
  for (const name of names) {
    const last = lines.length - 1;
    if (lines[last]!.length + name.length + 2 > 100) lines.push(`    ${name},`);
    else lines[last] += ` ${name},`;
  }
  lines[lines.length - 1] = lines.at(-1)!.replace(/,$/, "");
  return lines;
}
