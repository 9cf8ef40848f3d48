import path from "node:path";
import { failedRunsJournal } from "../failed-runs.js";
import { temporaryPrefix } from "../db/store.js";
import type { Diagnostic } from "../errors.js";
import { fileKeys, isNamedLike } from "../paths.js";
import type { StepDefinition } from "../step.js";
import type { LoadedConfig } from "./load.js";
import { databaseSetting, type Pipeline, type StepSpec } from "./schema.js";

/** A file no output of the run may replace, or (with `prefix`) a family of files named `<prefix>*` in a directory. */
interface Guarded {
  file: string;
  what: string;
  prefix?: string;
}

/** The database a run uses and how to name it in a message: `out.db (database: in p.yaml)`, `/tmp/x.db (--db)`. */
export interface DatabaseChoice {
  file: string;
  label: string;
}

/**
 * Refuses every output file (a report's `markdown:`/`html:`) that would replace the database or one
 * of its lock, journal or temporary files, and, without `database`, also the configuration, a step's
 * input, or another output. With `database` (from `--db`), only the files of that database are checked.
 */
export function outputPathDiagnostics(
  config: LoadedConfig,
  pipeline: Pipeline,
  typeOf: (step: StepSpec) => StepDefinition,
  database?: DatabaseChoice,
): Diagnostic[] {
  const resolve = (file: string) => path.resolve(config.baseDir, file);
  const configured = databaseSetting(pipeline).path;
  const chosen = database ?? { file: resolve(configured), label: `${configured} (database: in ${config.file})` };
  const guarded = databaseFiles(chosen);
  if (!database) {
    guarded.push({ file: path.join(config.baseDir, path.basename(config.file)), what: `the configuration ${config.file}` });
    pipeline.steps.forEach((step) => {
      for (const input of typeOf(step).inputs?.(step) ?? [])
        guarded.push({ file: resolve(input.file), what: `${input.what} of step ${step.name}` });
    });
  }
  const diagnostics: Diagnostic[] = [];
  // why: each path is resolved once and found through a Map, so many steps cost linear time, not steps × steps.
  const known = new Map<string, Guarded>();
  for (const g of guarded) if (g.prefix === undefined) for (const key of fileKeys(g.file)) if (!known.has(key)) known.set(key, g);
  const families = guarded.filter((g) => g.prefix !== undefined);
  const written = new Map<string, { step: string; key: string }>();
  pipeline.steps.forEach((step, index) => {
    const keys = new Set<string>();
    for (const output of typeOf(step).files?.(step) ?? []) {
      // why: the key that names this output, for the place and the message; a step may name one file under two keys.
      const key = Object.entries(step).find(([name, value]) => value === output && !keys.has(name))?.[0] ?? "file";
      keys.add(key);
      const file = resolve(output);
      // why: a place is found only for a diagnostic; finding one parses the file when its parse was kept (./load.ts).
      const place = () => config.locate(["steps", index, key]);
      const keysOfFile = fileKeys(file);
      const clash =
        keysOfFile.map((k) => known.get(k)).find((g) => g !== undefined) ??
        families.find((g) => isNamedLike(file, path.dirname(g.file), g.prefix!));
      if (clash) {
        diagnostics.push({
          code: "E_CONFIG",
          message: `${key}: ${output} is ${clash.what}: writing the report there would destroy it; choose another path`,
          place: place(),
        });
        continue;
      }
      const twice = database ? undefined : keysOfFile.map((k) => written.get(k)).find((w) => w !== undefined);
      if (twice) {
        diagnostics.push({
          code: "E_CONFIG",
          message: `${key}: ${output} is also written by step ${twice.step} (${twice.key}:); give each output its own file`,
          place: place(),
        });
        continue;
      }
      for (const k of keysOfFile) written.set(k, { step: step.name, key });
    }
  });
  return diagnostics;
}

/** The database file and the files the runner and SQLite keep beside it. */
function databaseFiles({ file, label }: DatabaseChoice): Guarded[] {
  const directory = path.dirname(file);
  return [
    { file, what: `the database ${label}` },
    { file: `${file}.lock`, what: `the lock of the database ${label}` },
    { file: `${file}.lock.stale-`, prefix: `${path.basename(file)}.lock.stale-`, what: `a lock moved aside of the database ${label}` },
    { file: failedRunsJournal(file), what: `the journal of failed runs of the database ${label}` },
    ...["-journal", "-wal", "-shm"].map((suffix) => ({ file: file + suffix, what: `a SQLite journal of the database ${label}` })),
    {
      file: path.join(directory, temporaryPrefix(file)),
      prefix: temporaryPrefix(file),
      what: `a temporary file of the database ${label}`,
    },
  ];
}
