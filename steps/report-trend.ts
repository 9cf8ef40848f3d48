/** One point of a trend: its label (a run's time), its value, and both as the report shows them. */
export interface TrendPoint {
  label: string;
  value: number;
  /** The value formatted for people. */
  shown: string;
  /** The change from the previous point, formatted with its sign; empty for the first. */
  change: string;
}

/** A trend as a Markdown table: label, value, change from the previous point; `escape` makes text literal. */
export function trendMarkdown(points: readonly TrendPoint[], headings: [string, string], escape: (text: string) => string): string[] {
  const lines = [`| ${escape(headings[0])} | ${escape(headings[1])} | ${escape("Évolution")} |`, "|---|--:|--:|"];
  for (const point of points) lines.push(`| ${escape(point.label)} | ${escape(point.shown)} | ${escape(point.change)} |`);
  return [...lines, ""];
}

/** A trend as an inline SVG line chart (no script, no network): one dot per point, the first and last values written. */
export function trendSvg(points: readonly TrendPoint[], title: string, escape: (text: string) => string): string {
  const [width, height, left, right, top, bottom] = [640, 220, 16, 16, 28, 44];
  const values = points.map((p) => p.value);
  const [min, max] = [Math.min(...values), Math.max(...values)];
  const span = max - min || Math.abs(max) || 1;
  const x = (i: number) => left + (points.length === 1 ? 0 : (i / (points.length - 1)) * (width - left - right));
  const y = (v: number) => top + (1 - (v - min) / span) * (height - top - bottom);
  const line = points.map((p, i) => `${x(i).toFixed(1)},${y(p.value).toFixed(1)}`).join(" ");
  const dots = points.map(
    (p, i) =>
      `<circle cx="${x(i).toFixed(1)}" cy="${y(p.value).toFixed(1)}" r="4" fill="#2f6db5"><title>${escape(`${p.label} : ${p.shown}`)}</title></circle>`,
  );
  const first = points[0]!;
  const last = points[points.length - 1]!;
  const labels = [
    `<text x="${x(0).toFixed(1)}" y="${height - 22}" text-anchor="start">${escape(first.label)}</text>`,
    `<text x="${x(points.length - 1).toFixed(1)}" y="${height - 22}" text-anchor="end">${escape(last.label)}</text>`,
    `<text x="${x(0).toFixed(1)}" y="${(y(first.value) - 10).toFixed(1)}" text-anchor="start">${escape(first.shown)}</text>`,
    `<text x="${x(points.length - 1).toFixed(1)}" y="${(y(last.value) - 10).toFixed(1)}" text-anchor="end" font-weight="600">${escape(last.shown)}</text>`,
  ];
  return `<svg class="chart trend" role="img" aria-label="${escape(title)}" viewBox="0 0 ${width} ${height}" width="${width}" height="${height}" xmlns="http://www.w3.org/2000/svg" font-family="system-ui, sans-serif" font-size="13" fill="#1d2733"><polyline points="${line}" fill="none" stroke="#2f6db5" stroke-width="2"/>${dots.join("")}${labels.join("")}</svg>`;
}
