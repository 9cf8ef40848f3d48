import type { ChalkInstance } from "chalk";

/** Rows as aligned columns under a bold header, two spaces apart, the last column left ragged. */
export function alignedTable(headers: readonly string[], rows: readonly (readonly string[])[], c: ChalkInstance): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd();
  return [c.bold(line(headers)), ...rows.map(line)].join("\n") + "\n";
}
