import { randomBytes } from "node:crypto";
import { access, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import type { Pipeline, StepSpec } from "./config/schema.js";
import type { StepDefinition } from "./step.js";
import { engineNamed, engineNames, type EngineName } from "./db/engines/index.js";
import { readDatabase } from "./db/session.js";
import { redactCredentials } from "./errors.js";
import { fileKind } from "./paths.js";
import { isUrl, loadHttpClient, networkReason, requestTarget } from "./sources/fetch.js";

/** One line of `doctor`: what was checked, whether it passed, and what was seen. */
export interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

/** The Node major the project pins (package.json `engines`) and tests on. */
const pinnedNodeMajor = 24;
/** The oldest Node major on which every feature the sqljs engine uses is there (ES2023 output, util.parseArgs, AbortSignal.timeout); native needs node:sqlite (Node 22.5). */
const oldestWorkingNodeMajor = 20;

/** The runtime: Node, the runner and the SQLite of each engine (the one in use marked); a Node older than the pinned one passes with a note while it works. */
export async function runtimeChecks(runnerVersion: string, engine: EngineName, nodeVersion = process.versions.node): Promise<Check[]> {
  const major = Number(nodeVersion.split(".")[0]);
  const node: Check =
    major >= pinnedNodeMajor
      ? { name: "node", ok: true, detail: nodeVersion }
      : major >= oldestWorkingNodeMajor
        ? {
            name: "node",
            ok: true,
            detail: `${nodeVersion} (works with the sqljs engine, though without node:sqlite (Node 22.5+) its save cannot hold SQLite's write lock, so a sqlite3 write in its last milliseconds can be lost, and the native engine is unavailable; the project pins and tests Node ${pinnedNodeMajor}, see package.json engines)`,
          }
        : {
            name: "node",
            ok: false,
            detail: `${nodeVersion} (the runner needs Node ${oldestWorkingNodeMajor} or later; Node ${pinnedNodeMajor} is the pinned version)`,
          };
  const checks: Check[] = [node, { name: "pipeline-runner", ok: true, detail: runnerVersion }];
  for (const name of engineNames) {
    // why: the server engine is checked by connecting, which only a pipeline naming a server asks for.
    if (name === "postgres" && engine !== "postgres") continue;
    const label = name === "sqljs" ? "sqlite (sql.js)" : name === "native" ? "sqlite (native)" : "postgres";
    try {
      checks.push({ name: label, ok: true, detail: `${await (await engineNamed(name)).version()}${name === engine ? ", in use" : ""}` });
    } catch (error) {
      checks.push({ name: label, ok: name !== engine, detail: `unavailable: ${(error as Error).message}` });
    }
  }
  return checks;
}

/** Whether a file can be written in the database's directory (or, before it exists, in its nearest existing parent). */
export async function databaseCheck(database: string): Promise<Check> {
  let directory = path.dirname(database);
  while (!(await stat(directory).catch(() => undefined)) && path.dirname(directory) !== directory) directory = path.dirname(directory);
  const probe = path.join(directory, `.doctor-${randomBytes(4).toString("hex")}`);
  try {
    await writeFile(probe, "", { flag: "wx" });
    await rm(probe);
    const existing = await stat(database).catch(() => undefined);
    if (existing && !existing.isFile())
      return { name: "database", ok: false, detail: `${database} is ${fileKind(existing)}, not a regular SQLite file` };
    const what = existing ? `${existing.size} bytes` : "not created yet";
    return { name: "database", ok: true, detail: `${database} (${what}); ${directory} is writable` };
  } catch (error) {
    return { name: "database", ok: false, detail: `${directory} is not writable: ${(error as Error).message}` };
  }
}

/** Whether the database server answers: connects, reads its version in a read-only transaction, and names the URL without its password. */
export async function serverCheck(url: string, engine: EngineName): Promise<Check> {
  try {
    const version = await readDatabase(url, engine, 10_000, (db) => String(db.all("SELECT version() AS v")[0]?.["v"] ?? "?"));
    return { name: "database", ok: true, detail: `${redactCredentials(url)} answers: ${version.split(",")[0]}` };
  } catch (error) {
    return { name: "database", ok: false, detail: redactCredentials((error as Error).message) };
  }
}

/** Whether each load step's source answers: a HEAD (then a GET) with a short timeout, or the file exists. */
export async function sourceChecks(
  pipeline: Pipeline,
  baseDir: string,
  typeOf: (step: StepSpec) => StepDefinition,
  timeoutMs = 5000,
): Promise<Check[]> {
  const sources = pipeline.steps.flatMap((step) => {
    const source = typeOf(step).source?.(step);
    return source === undefined ? [] : [{ name: step.name, source }];
  });
  return Promise.all(
    sources.map(async (step): Promise<Check> => {
      const name = `source ${step.name}`;
      if (!isUrl(step.source)) {
        const file = path.resolve(baseDir, step.source);
        return access(file)
          .then(() => ({ name, ok: true, detail: `${file} exists` }))
          .catch(() => ({ name, ok: false, detail: `${file} does not exist` }));
      }
      const shown = redactCredentials(step.source);
      try {
        const { url, authorization } = requestTarget(step.source);
        const headers = authorization ? { authorization } : {};
        const { default: fetch } = await loadHttpClient();
        let response = await fetch(url, { method: "HEAD", headers, signal: AbortSignal.timeout(timeoutMs), follow: 5 });
        if (response.status === 405 || response.status === 501) {
          response = await fetch(url, { headers, signal: AbortSignal.timeout(timeoutMs), follow: 5 });
          response.body?.resume();
        }
        const line = `${shown} -> ${response.status} ${response.statusText}`;
        return { name, ok: response.ok, detail: line };
      } catch (error) {
        const reason = (error as Error).name === "AbortError" ? `no answer within ${timeoutMs} ms` : networkReason(error);
        return { name, ok: false, detail: `${shown}: ${reason}` };
      }
    }),
  );
}
