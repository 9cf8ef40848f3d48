import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { PNG } from "pngjs";

/** The Chromium binary (Debian's `chromium`), or undefined when it is not installed. */
export function findChromium(): string | undefined {
  for (const candidate of ["/usr/bin/chromium", "/usr/bin/chromium-browser"]) if (existsSync(candidate)) return candidate;
  const found = spawnSync("sh", ["-c", "command -v chromium || command -v chromium-browser"], { encoding: "utf8" }).stdout.trim();
  return found || undefined;
}

/** Renders a local HTML file in headless Chromium and returns the screenshot, decoded. */
export function screenshot(chromium: string, file: string, width = 1000, height = 1800): PNG {
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
