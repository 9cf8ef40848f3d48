import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { root } from "./workspace.js";

/** The built CLI, as a separate process (for locks, signals and kills, which need real processes). */
export const builtCli = path.join(root, "dist/engine/cli.js");

/** A running CLI process and what it will have printed when it exits. */
export interface Spawned {
  child: ChildProcess;
  output(): string;
  done: Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>;
}

/** Debian's own node, a Node 20 on this image (the runner supports it for doctor and the sqljs engine), or undefined. */
export const systemNode20 = ["/usr/bin/node", "/bin/node"].find(
  (file) => existsSync(file) && execFileSync(file, ["-p", "process.versions.node.split('.')[0]"], { encoding: "utf8" }).trim() === "20",
);

/**
 * Starts the built CLI in `cwd` with extra environment variables: on this Node, or on `node`; `detached`, in a process
 * group of its own (as a shell job, a systemd unit or `timeout` starts it).
 */
export function spawnCli(
  args: string[],
  cwd: string,
  env: Record<string, string> = {},
  { node = process.execPath, detached = false }: { node?: string; detached?: boolean } = {},
): Spawned {
  const child = spawn(node, [builtCli, ...args], { cwd, detached, env: { ...process.env, NO_COLOR: "1", ...env } });
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((resolve) =>
    child.on("close", (code, signal) => resolve({ code, signal, stdout, stderr })),
  );
  return { child, output: () => stdout + stderr, done };
}

/** Waits until `predicate` holds, checking every 10 ms, for at most `ms`. */
export async function waitFor(predicate: () => boolean, ms = 10_000): Promise<void> {
  const until = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > until) throw new Error("timed out waiting");
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
