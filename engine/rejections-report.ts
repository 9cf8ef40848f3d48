import type { ChalkInstance } from "chalk";
import type { PendingRejection } from "./history.js";

/** The pending rejections as the `rejections` command prints them: one aligned line each, then a count. */
export function renderRejections(database: string, rejections: readonly PendingRejection[], c: ChalkInstance): string {
  if (rejections.length === 0) return `${database}: no pending rejections\n`;
  const rows = rejections.map((r) => [r.step, String(r.line), r.column ?? "-", clip(r.value ?? "-", 40), r.kind ?? "-", r.reason]);
  const headers = ["step", "line", "column", "value", "kind", "reason"];
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]) =>
    cells
      .map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd();
  const retried = rejections.filter((r) => r.kind === "reference" || r.kind === "cast").length;
  return [
    c.bold(line(headers)),
    ...rows.map(line),
    "",
    `${rejections.length} pending row(s) in ${database}; ${retried} are retried by every run (a reference or a value that may pass later), the others wait for their source to change.`,
    "",
  ].join("\n");
}

function clip(text: string, n: number): string {
  const flat = text.replace(/[\r\n\t]/g, " ");
  return flat.length <= n ? flat : `${flat.slice(0, n - 1)}…`;
}
