import { execFileSync, spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { PNG } from "pngjs";

/** The Chromium binary (Debian's `chromium`), or undefined when it is not installed. */
export function findChromium(): string | undefined {
  for (const candidate of ["/usr/bin/chromium", "/usr/bin/chromium-browser"]) if (existsSync(candidate)) return candidate;
  const found = spawnSync("sh", ["-c", "command -v chromium || command -v chromium-browser"], { encoding: "utf8" }).stdout.trim();
  return found || undefined;
}

/** Renders a local HTML file in headless Chromium and returns the screenshot, decoded (and copied to `saveAs`, for a person to look at). */
export function screenshot(chromium: string, file: string, width = 1000, height = 1800, saveAs?: string): PNG {
  const dir = mkdtempSync(path.join(tmpdir(), "chromium-"));
  try {
    const out = path.join(dir, "shot.png");
    execFileSync(
      chromium,
      [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        `--user-data-dir=${path.join(dir, "profile")}`,
        `--window-size=${width},${height}`,
        `--screenshot=${out}`,
        `file://${file}`,
      ],
      { stdio: "ignore", timeout: 60_000 },
    );
    if (saveAs !== undefined) copyFileSync(out, saveAs);
    return PNG.sync.read(readFileSync(out));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Counts the pixels of one colour (within a small tolerance) and the non-white ones. */
export function countPixels(png: PNG, rgb: [number, number, number], tolerance = 6): { matching: number; inked: number } {
  let matching = 0;
  let inked = 0;
  for (let i = 0; i < png.data.length; i += 4) {
    const [r, g, b] = [png.data[i]!, png.data[i + 1]!, png.data[i + 2]!];
    if (r < 245 || g < 245 || b < 245) inked++;
    if (Math.abs(r - rgb[0]) <= tolerance && Math.abs(g - rgb[1]) <= tolerance && Math.abs(b - rgb[2]) <= tolerance) matching++;
  }
  return { matching, inked };
}

/** What a page's layout looks like at one width, measured in Chromium itself. */
export interface LayoutReport {
  viewport: number;
  /** The page's own width: more than the viewport means the page scrolls sideways. */
  pageWidth: number;
  /** Visible texts (cells, headings, chart labels...) that end outside the viewport, or are clipped inside their own box, and no scroll container holds. */
  cut: string[];
  /** Tables wider than their box (they scroll inside it). */
  scrollingTables: number;
  /** Whether table headers are shown as a header row (false: each row is a card with labels). */
  headerRowShown: boolean;
  /** The smallest font size, in CSS px, of the chart labels and values. */
  smallestChartText: number;
}

// why: run in a wrapper page around an iframe of the exact width (headless Chromium's window is at least 500 px wide).
const measureScript = `
const frame = document.getElementById("sheet");
frame.addEventListener("load", () => {
  const doc = frame.contentDocument;
  const view = frame.contentWindow;
  const viewport = doc.documentElement.clientWidth;
  const cut = [];
  // why: a header row hidden for screen readers only (1 px, clipped) keeps its cells' full size; it is not seen, so not cut.
  const visible = (el) => {
    for (let node = el; node && node !== doc.body; node = node.parentElement) {
      const r = node.getBoundingClientRect();
      if (r.width <= 1 || r.height <= 1) return false;
    }
    return true;
  };
  for (const el of doc.querySelectorAll("h1, h2, p, dt, dd, th, td, .bar-label, .bar-value")) {
    if (!visible(el)) continue;
    const r = el.getBoundingClientRect();
    const scroller = el.closest(".table-wrap");
    const held = scroller !== null && scroller.scrollWidth > scroller.clientWidth;
    const outside = r.left < -0.5 || r.right > viewport + 0.5;
    const clipped = el.scrollWidth > el.clientWidth + 1 && view.getComputedStyle(el).overflowX !== "visible";
    if ((outside && !held) || clipped) cut.push((el.textContent || "").trim().slice(0, 40) + " [" + Math.round(r.left) + ".." + Math.round(r.right) + "]");
  }
  const wraps = [...doc.querySelectorAll(".table-wrap")];
  const heads = [...doc.querySelectorAll("thead")];
  const chartTexts = [...doc.querySelectorAll(".bar-label, .bar-value")].map((el) => parseFloat(view.getComputedStyle(el).fontSize));
  const report = {
    viewport,
    pageWidth: doc.documentElement.scrollWidth,
    cut,
    scrollingTables: wraps.filter((w) => w.scrollWidth > w.clientWidth + 1).length,
    headerRowShown: heads.length > 0 && heads.every((h) => h.getBoundingClientRect().height > 5),
    smallestChartText: chartTexts.length ? Math.min(...chartTexts) : 0,
  };
  const out = document.createElement("pre");
  out.id = "layout-report";
  out.textContent = JSON.stringify(report);
  document.body.append(out);
});
`;

/** Loads a local HTML file in headless Chromium, in a frame `width` px wide, and measures its layout from the page around it; the file itself stays script-free. */
export function measureLayout(chromium: string, file: string, width: number, height = 1800): LayoutReport {
  const dir = mkdtempSync(path.join(tmpdir(), "chromium-"));
  try {
    const page = path.join(dir, "page.html");
    const srcdoc = readFileSync(file, "utf8").replaceAll("&", "&amp;").replaceAll('"', "&quot;");
    writeFileSync(
      page,
      `<!doctype html><html><body style="margin:0"><iframe id="sheet" style="border:0;width:${width}px;height:${height}px" srcdoc="${srcdoc}"></iframe><script>${measureScript}</script></body></html>`,
    );
    const dom = execFileSync(
      chromium,
      [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        `--user-data-dir=${path.join(dir, "profile")}`,
        `--window-size=${Math.max(width, 500) + 40},${height}`,
        "--virtual-time-budget=2000",
        "--dump-dom",
        `file://${page}`,
      ],
      { encoding: "utf8", timeout: 60_000, stdio: ["ignore", "pipe", "ignore"] },
    );
    const json = /<pre id="layout-report">(.*?)<\/pre>/s.exec(dom)?.[1];
    if (json === undefined) throw new Error(`Chromium ran no measurement on ${file}`);
    return JSON.parse(
      json.replaceAll("&amp;", "&").replaceAll("&lt;", "<").replaceAll("&gt;", ">").replaceAll("&quot;", '"'),
    ) as LayoutReport;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
