import { createHash } from "node:crypto";
import { open } from "node:fs/promises";
import { constants } from "node:fs";
import path from "node:path";
import type { SqlDatabase } from "./db/database.js";
import { PipelineError } from "./errors.js";
import { isPostgresUrl } from "./db/database-url.js";
import { canonicalPath, sameFile } from "./paths.js";

/** A file a run writes, relative to the pipeline file, with the step that writes it. */
export interface PlannedOutput {
  path: string;
  step: string;
}

/**
 * Refuses a run whose database is not the configured one (`--db`) when it would replace an output
 * that this database did not write: the configured database's sheet, or a file changed since.
 * The configured database replaces its outputs as it always did.
 */
export async function refuseOutputsOfAnotherDatabase(
  db: SqlDatabase,
  run: { database: string; configured: string; configuredAs: string; baseDir: string; outputs: readonly PlannedOutput[] },
): Promise<void> {
  if (sameFile(run.database, run.configured)) return;
  for (const output of run.outputs) {
    const file = path.resolve(run.baseDir, output.path);
    const content = await contentSha256(file);
    if (content === undefined) continue;
    const recorded = db.all("SELECT sha256 FROM pipeline_outputs WHERE path = ?", [recordedPath(run.database, run.baseDir, file)])[0]?.[
      "sha256"
    ];
    if (recorded === content) continue;
    throw new PipelineError(
      "E_CONFIG",
      `${output.path} was written from the database ${run.configuredAs}, not from ${run.database}: this run would replace it, so nothing was run. ` +
        `To run against ${run.database}, give this database its own report paths (in pipeline.yaml, step ${output.step}; a variable such as \${REPORT_DIR} in them lets each run choose), or remove that file.`,
      { exitCode: 2 },
    );
  }
}

/** Records in the database the outputs this run writes, so that its next runs may replace them. */
export function recordOutputs(
  db: SqlDatabase,
  database: string,
  baseDir: string,
  runId: number,
  files: readonly { path: string; content: string }[],
) {
  for (const file of files) {
    const sha256 = createHash("sha256").update(file.content).digest("hex");
    db.run(
      "INSERT INTO pipeline_outputs (path, sha256, run_id) VALUES (?, ?, ?) ON CONFLICT (path) DO UPDATE SET sha256 = excluded.sha256, run_id = excluded.run_id",
      [recordedPath(database, baseDir, path.resolve(baseDir, file.path)), sha256, runId],
    );
  }
}

/**
 * An output's path as recorded: relative to the database's directory, so it holds wherever the
 * volume is mounted; for a database on a server (a URL, no directory), relative to the pipeline's.
 */
function recordedPath(database: string, baseDir: string, file: string): string {
  return path
    .relative(isPostgresUrl(database) ? canonicalPath(baseDir) : path.dirname(canonicalPath(database)), canonicalPath(file))
    .split(path.sep)
    .join("/");
}

/** The SHA-256 of a regular file's content; undefined when there is no such file (or it is not a regular file). */
async function contentSha256(file: string): Promise<string | undefined> {
  // why: O_NONBLOCK, so that a FIFO where a report goes is seen for what it is instead of blocking the open.
  const handle = await open(file, constants.O_RDONLY | constants.O_NONBLOCK).catch(() => undefined);
  if (!handle) return undefined;
  try {
    if (!(await handle.stat()).isFile()) return undefined;
    const hash = createHash("sha256");
    for await (const chunk of handle.createReadStream({ autoClose: false })) hash.update(chunk as Buffer);
    return hash.digest("hex");
  } finally {
    await handle.close();
  }
}
