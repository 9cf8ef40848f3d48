import type { ChalkInstance } from "chalk";
import { CheckRun, type CheckResult } from "./checks.js";
import { existsSync } from "node:fs";
import { engineNamed, type EngineName } from "./db/engines/index.js";
import { ensureTables, existingTables } from "./db/tables.js";
import { describeError, PipelineError } from "./errors.js";
import { systemTables } from "./history.js";
import { checkLine, renderCheckTable } from "./check-report.js";
import type { OutputStream } from "./output.js";
import type { Plan } from "./plan.js";
import type { StepSpec, TableSpec } from "./config/schema.js";
import type { StepDefinition } from "./step.js";

/** What `test` reports: every check and freshness limit against the stored database. */
export interface TestReport {
  ok: boolean;
  command: "test";
  database: string;
  /** The last saved run, whose data the checks read. */
  runId: number | null;
  checks: CheckResult[];
  error?: { code: string; message: string } | undefined;
}

/**
 * `test`: runs every check and freshness limit of the pipeline against the stored database, in
 * memory; nothing is fetched or loaded, and the file is never written. Exit 1 when a check with
 * severity error fails (or the database cannot be read), 0 otherwise.
 */
export async function testStoredDatabase(
  plan: Plan,
  database: string,
  options: {
    json: boolean;
    stdout: OutputStream;
    colors: ChalkInstance;
    typeOf: (step: StepSpec) => StepDefinition;
    now: () => Date;
    engine: EngineName;
    lockTimeoutMs: number;
  },
): Promise<number> {
  const { stdout, colors: c } = options;
  const report: TestReport = { ok: false, command: "test", database: plan.database, runId: null, checks: [] };
  // why: a server has no file; its missing tables say the same below.
  const engine = await engineNamed(options.engine);
  if (!engine.dialect && !existsSync(database))
    throw new PipelineError("E_DB", `${plan.database} does not exist yet; run the pipeline first, then test it`);
  // why: a preview transaction, always rolled back: results can be written where a run writes them; the file is never changed.
  const transaction = await engine.begin(database, { busyTimeoutMs: options.lockTimeoutMs, preview: true });
  const db = transaction.db;
  try {
    const stored = existingTables(db);
    const missing = Object.keys(plan.pipeline.tables).filter((table) => !stored.has(table));
    if (missing.length > 0)
      throw new PipelineError("E_DB", `${plan.database} has no table ${missing.join(", ")} yet; run the pipeline first, then test it`);
    ensureTables(db, systemTables as Record<string, TableSpec>, { addColumns: true });
    const last = db.all("SELECT max(run_id) AS id, max(started_at) AS at FROM pipeline_runs WHERE status LIKE 'succeeded%'")[0];
    report.runId = last?.["id"] === null || last?.["id"] === undefined ? null : Number(last["id"]);
    if (!options.json) stdout.write(c.bold(`Testing ${plan.database}${report.runId === null ? "" : ` (run ${report.runId})`}`) + "\n");
    const checks = new CheckRun(
      plan,
      options.typeOf,
      options.now,
      (result) => {
        if (!options.json) stdout.write(`  ${checkLine(result, c)}\n`);
      },
      { record: false },
    );
    try {
      checks.runDue(db, report.runId ?? 0, options.now().toISOString(), plan.steps.length);
    } catch (error) {
      if (!(error instanceof PipelineError && (error.code === "E_CHECK" || error.code === "E_STALE"))) throw error;
      report.error = describeError(error);
    }
    report.checks = checks.results;
    report.ok = report.error === undefined;
  } finally {
    await transaction.rollback();
    transaction.close();
  }
  if (options.json) stdout.write(JSON.stringify(report, null, 2) + "\n");
  else {
    const lines = renderCheckTable(report.checks, c);
    stdout.write(["", ...(lines.length > 0 ? lines : ["no checks or freshness limits are declared"]), ""].join("\n"));
    stdout.write(
      report.ok
        ? c.green(`${plan.database} passes its checks\n`)
        : c.red(`${plan.database} fails ${report.checks.filter((r) => r.status === "failed").length} check(s) with severity error\n`),
    );
  }
  return report.ok ? 0 : 1;
}
