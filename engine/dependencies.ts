import type { LoadedConfig } from "./config/load.js";
import type { Pipeline, StepSpec, TableSpec } from "./config/schema.js";
import { tablesRead } from "./checks.js";
import { openSqlJs } from "./db/sqljs.js";
import { ensureTables } from "./db/tables.js";
import { didYouMean } from "./errors.js";
import { systemTables } from "./history.js";
import type { StepDefinition } from "./step.js";

/** One step with the tables it reads and writes and the files it writes. */
export interface StepLinks {
  index: number;
  name: string;
  type: StepSpec["type"];
  reads: string[];
  writes: string[];
  files: string[];
}

/**
 * What each step reads and writes: its type's `reads` and `writes` hooks, each query compiled against
 * an empty database holding every declared table (nothing runs, no file is opened).
 */
export async function stepLinks(
  pipeline: Pipeline,
  config: LoadedConfig,
  typeOf: (step: StepSpec) => StepDefinition,
): Promise<StepLinks[]> {
  const scratch = await openSqlJs();
  try {
    ensureTables(scratch, systemTables as Record<string, TableSpec>);
    ensureTables(scratch, pipeline.tables as Record<string, TableSpec>);
    const read = (sql: string): string[] => {
      const tables = new Set<string>();
      // why: a script's later statement may read a table an earlier one creates; it does not compile alone and reads nothing stored.
      for (const statement of scratch.statements(sql)) {
        try {
          for (const table of tablesRead(scratch, statement)) tables.add(table);
        } catch {
          continue;
        }
      }
      return [...tables];
    };
    return pipeline.steps.map((step, index) => {
      const definition = typeOf(step);
      const writes = definition.writes(step);
      const reads = definition.reads?.(step, { pipeline, baseDir: config.baseDir, tablesRead: read }) ?? [];
      return {
        index,
        name: step.name,
        type: step.type,
        reads: [...new Set(reads)].filter((table) => !writes.includes(table)).sort(),
        writes,
        files: definition.files?.(step) ?? [],
      };
    });
  } finally {
    scratch.close();
  }
}

/**
 * The steps `run --select` names (each `NAME`, or `NAME+` for that step and every later step that
 * reads, directly or through other steps, a table it writes); throws a usage error naming an unknown step.
 */
export function selectSteps(patterns: readonly string[], links: readonly StepLinks[], usageError: (message: string) => Error): Set<string> {
  const names = links.map((step) => step.name);
  const selected = new Set<string>();
  for (const pattern of patterns) {
    const name = pattern.endsWith("+") ? pattern.slice(0, -1) : pattern;
    const step = links.find((s) => s.name === name);
    if (!step) throw usageError(`--select: unknown step "${name}"${didYouMean(name, names) || `; the steps: ${names.join(", ")}`}`);
    selected.add(name);
    if (!pattern.endsWith("+")) continue;
    const written = new Set(step.writes);
    for (const later of links.slice(step.index + 1)) {
      if (!later.reads.some((table) => written.has(table))) continue;
      selected.add(later.name);
      for (const table of later.writes) written.add(table);
    }
  }
  return selected;
}
