import path from "node:path";
import { parseArgs } from "node:util";
import { stepType } from "../steps/index.js";
import { loadConfigFile } from "./config/load.js";
import { outputPathDiagnostics } from "./config/output-paths.js";
import { validatePipeline } from "./config/validate.js";
import { ConfigError, describeError, didYouMean, formatDiagnostic, PipelineError, redactCredentials } from "./errors.js";
import { readSchema, renderSchemaMarkdown } from "./schema-diagram.js";
import { compileOnServer } from "./compile-on-server.js";
import { profileSources } from "./profile.js";
import { renderProfile, replaceGenerated } from "./profile-report.js";
import { databaseCheck, runtimeChecks, serverCheck, sourceChecks, type Check } from "./doctor.js";
import { freshnessChecks } from "./freshness.js";
import { testStoredDatabase } from "./test-command.js";
import { colorsFor, renderDiagnostics, renderPlan, renderSummary, runLogger, type OutputStream, type SchemaChanges } from "./output.js";
import { planPipeline, type Plan } from "./plan.js";
import { executePlan, previewPlan } from "./run.js";
import { resolveDatabasePath } from "./db/store.js";
import { readDatabase } from "./db/session.js";
import { engineNamed, engineNames, type EngineName } from "./db/engines/index.js";
import { isPostgresUrl } from "./db/engines/postgres.js";
import { databaseSetting, type Pipeline } from "./config/schema.js";
import type { LoadedConfig } from "./config/load.js";
import { parseDuration } from "./duration.js";
import { existingTables } from "./db/tables.js";
import { pendingRejections, type PendingRejection } from "./history.js";
import { renderRejections } from "./rejections-report.js";
import { setTimeout as sleep } from "node:timers/promises";

/** What main() may touch: injected so tests run it in-process. */
export interface Io {
  stdout: OutputStream;
  stderr: OutputStream;
  env: Readonly<Record<string, string | undefined>>;
  cwd: string;
  /** Fires on SIGINT or SIGTERM: a run stops cleanly and saves nothing. */
  signal?: AbortSignal | undefined;
  /** The clock (tests fix it): run times, freshness limits. */
  now?: (() => Date) | undefined;
}

/** Exit codes, documented in the README. */
export const exitCodes = { ok: 0, runFailed: 1, invalid: 2, busy: 3, savedWithRejections: 4, interrupted: 130 } as const;

const commands = ["run", "validate", "plan", "doctor", "schema", "profile", "rejections", "test", "help"] as const;

const usage = `Usage: pipeline <command> [options]

Commands:
  run              validate, then run every step and save the database (default)
  run --dry-run    validate and print the plan; nothing is fetched or written
  run --full-refresh [STEP...]
                   read every source (or those of the named load steps) in full: no conditional GET,
                   no same-content or grown-file shortcut; the derived steps run again
  plan             same as run --dry-run
  validate         check pipeline.yaml and report every problem with its line:col
  doctor           check the runtime, the configuration, the database directory and every source
  schema           print the database schema the pipeline creates, as Markdown with a Mermaid diagram
  profile          fetch every source like a run would and report what it holds (data qualification);
                   --markdown for Markdown, --json for JSON, --update FILE to refresh the
                   <!-- generated:profile --> section of a document; writes nothing else
  rejections       list the rows kept out of the tables and still pending (step, line, column, value,
                   reason); --json for JSON; reads the database, writes nothing
  test             run every check and freshness limit against the stored database; loads nothing,
                   never writes the file; exit 1 when a check with severity error fails

Options:
  -c, --config FILE   the pipeline file (default: pipeline.yaml)
      --db PATH       the database file (overrides database: in the config)
      --engine E      the storage engine: sqljs (default; the file is loaded in memory and replaced on save)
                      or native (node:sqlite, in place on the live file); overrides database: { engine: }
                      and the PIPELINE_ENGINE environment variable
      --json          print a machine-readable summary on stdout instead of the log
      --dry-run       with run: print the plan only
      --force         allow a replace that would empty or shrink a table
      --strict        with run: exit 4 when the run saved with rejected rows (or, unchanged, the run it
                      leaves unchanged did); what is saved is the same as without --strict
      --lock-timeout D  with run: how long to wait while another run holds the database (default 60s)
      --every D       with run: run again every D (e.g. 15m) until stopped with Ctrl-C or SIGTERM;
                      a failed run is reported and the next one still happens
  -h, --help          this help
  -v, --version       the runner's version

Durations: 500ms, 30s, 15m, 1h (a bare number is seconds).
Exit codes: 0 success, 1 the run failed (nothing was saved), 2 invalid configuration or usage,
3 the database is in use by another run (--lock-timeout passed), 4 with --strict: saved with rejected rows,
130 interrupted (nothing was saved).
`;

/** What every command gets: the parsed command line, the I/O and the colours of each stream. */
interface CommandContext {
  args: CommandLine;
  io: Io;
  json: boolean;
  c: ReturnType<typeof colorsFor>;
  errorColors: ReturnType<typeof colorsFor>;
}

/** The pipeline a command works on: loaded, validated, its database and engine chosen, planned. */
interface Loaded {
  config: LoadedConfig;
  pipeline: Pipeline;
  /** The database's real path. */
  database: string;
  engine: EngineName;
  plan: Plan;
}

/** One command: whether it needs the pipeline loaded first, and what it does; returns the exit code. */
type Command =
  | { pipeline: false; run(context: CommandContext): Promise<number> }
  | { pipeline: true; run(context: CommandContext, loaded: Loaded): Promise<number> };

/** Every command, by name (citty's subCommands): a new command is one entry here and its lines in the usage. */
const commandTable: Record<(typeof commands)[number], Command> = {
  help: { pipeline: false, run: async ({ io }) => (io.stdout.write(usage), exitCodes.ok) },
  doctor: { pipeline: false, run: ({ args, io, json }) => doctor(args, io, json) },
  validate: {
    pipeline: true,
    async run({ args, io, json, c }, { config, pipeline, plan, database, engine }) {
      if (engineNamed(engine).dialect) {
        // why: a server's SQL differs from SQLite's; its own planner says whether each query compiles there.
        const refused = await compileOnServer(pipeline, config.baseDir, database, engine, args.lockTimeoutMs);
        if (refused.length > 0) throw new ConfigError(refused);
      }
      if (json) io.stdout.write(JSON.stringify({ ok: true, command: "validate", config: config.file, steps: plan.steps.length }) + "\n");
      else io.stdout.write(c.green(`${config.file} is valid: ${plan.steps.length} steps, ${Object.keys(pipeline.tables).length} tables\n`));
      return exitCodes.ok;
    },
  },
  schema: {
    pipeline: true,
    async run({ io }, { config, pipeline, engine }) {
      const dialect = engineNamed(engine).dialect;
      io.stdout.write(renderSchemaMarkdown(await readSchema(pipeline, dialect), config.file, dialect));
      return exitCodes.ok;
    },
  },
  profile: {
    pipeline: true,
    async run({ args, io, json, c }, { config, pipeline }) {
      const profiles = await profileSources(pipeline, config.baseDir, stepType);
      if (json) io.stdout.write(JSON.stringify({ ok: profiles.every((p) => !p.error), sources: profiles }, null, 2) + "\n");
      else if (args.update) await updateGenerated(path.resolve(io.cwd, args.update), "profile", renderProfile(profiles, "markdown", c));
      else io.stdout.write(renderProfile(profiles, args.markdown ? "markdown" : "text", c));
      return profiles.every((p) => !p.error) ? exitCodes.ok : exitCodes.runFailed;
    },
  },
  rejections: {
    pipeline: true,
    async run({ args, io, json, c }, { database, engine, plan }) {
      const rejections = await readPendingRejections(database, engine, args.lockTimeoutMs);
      if (json) io.stdout.write(JSON.stringify({ ok: true, command: "rejections", database: plan.database, rejections }, null, 2) + "\n");
      else io.stdout.write(renderRejections(plan.database, rejections, c));
      return exitCodes.ok;
    },
  },
  test: {
    pipeline: true,
    async run({ args, io, json, c }, { database, engine, plan }) {
      const options = { json, stdout: io.stdout, colors: c, typeOf: stepType, now: io.now ?? (() => new Date()), engine };
      return testStoredDatabase(plan, database, { ...options, lockTimeoutMs: args.lockTimeoutMs });
    },
  },
  plan: {
    pipeline: true,
    async run({ args, io, json, c }, { database, engine, plan }) {
      if (args.fullRefresh && args.steps.length > 0) checkRefreshSteps(args.steps, plan);
      const changes = await previewPlan({ ...plan, database }, engine, args.lockTimeoutMs);
      if (json) io.stdout.write(JSON.stringify(planJson(plan, changes), null, 2) + "\n");
      else io.stdout.write(renderPlan(plan, changes, c));
      return exitCodes.ok;
    },
  },
  run: {
    pipeline: true,
    async run(context, loaded) {
      if (context.args.dryRun) return commandTable.plan.pipeline ? commandTable.plan.run(context, loaded) : exitCodes.ok;
      return runCommand(context, loaded);
    },
  },
};

/** Runs one CLI invocation; returns the exit code. */
export async function main(argv: readonly string[], io: Io): Promise<number> {
  const json = argv.includes("--json");
  const c = colorsFor(json ? io.stderr : io.stdout, io.env);
  const errorColors = colorsFor(io.stderr, io.env);
  try {
    const args = parseCommandLine(argv);
    if (args.version) return (io.stdout.write(`pipeline-runner ${await version()}\n`), exitCodes.ok);
    const command = commandTable[args.help ? "help" : args.command];
    const context: CommandContext = { args, io, json, c, errorColors };
    if (!command.pipeline) return await command.run(context);
    return await command.run(context, await loadPipeline(args, io));
  } catch (error) {
    if (error instanceof ConfigError) {
      if (json) io.stdout.write(JSON.stringify({ ok: false, diagnostics: error.diagnostics }, null, 2) + "\n");
      else io.stderr.write(renderDiagnostics(error.diagnostics, errorColors));
      return exitCodes.invalid;
    }
    const { code, message } = describeError(error);
    if (json) io.stdout.write(JSON.stringify({ ok: false, error: { code, message } }, null, 2) + "\n");
    else io.stderr.write(errorColors.red(`error ${code} ${message}`) + "\n");
    return error instanceof PipelineError ? error.exitCode : exitCodes.runFailed;
  }
}

/** Loads and validates the pipeline, resolves its database (--db) and engine, and plans it. */
async function loadPipeline(args: CommandLine, io: Io): Promise<Loaded> {
  const config = await loadConfigFile(args.config, io.env, io.cwd);
  const pipeline = await validatePipeline(config, stepType, io.signal);
  const named = args.db ?? databaseSetting(pipeline).path;
  if (isPostgresUrl(named)) {
    if (args.engine !== undefined && args.engine !== "postgres") {
      throw usageError(`--engine ${args.engine} stores a SQLite file, but the database is a PostgreSQL URL (${redactCredentials(named)})`);
    }
    const plan = planPipeline(pipeline, config, redactCredentials(named), stepType);
    return { config, pipeline, database: named, engine: "postgres", plan };
  }
  const database = await resolveDatabasePath(path.resolve(io.cwd, args.db ?? resolveAgainst(config.baseDir, named)));
  const engine = chooseEngine(args, pipeline, io);
  if (engine === "postgres") throw usageError(`the postgres engine needs a postgres:// URL as the database, not ${named}`);
  if (args.db !== undefined) {
    const clashes = outputPathDiagnostics(config, pipeline, stepType, { file: database, label: `${database} (--db)` });
    if (clashes.length > 0) throw new ConfigError(clashes);
  }
  return { config, pipeline, database, engine, plan: planPipeline(pipeline, config, displayPath(io.cwd, database), stepType) };
}

/** `run`: one run, or one per interval with --every. */
async function runCommand({ args, io, json, c, errorColors }: CommandContext, { database, engine, plan }: Loaded): Promise<number> {
  const fullRefresh = args.fullRefresh && (args.steps.length === 0 ? true : checkRefreshSteps(args.steps, plan));
  const runOnce = async (compact: boolean): Promise<number> => {
    const report = await executePlan(
      { ...plan, database },
      {
        force: args.force,
        fullRefresh: fullRefresh || undefined,
        engine,
        lockTimeoutMs: args.lockTimeoutMs,
        signal: io.signal,
        typeOf: stepType,
        ...(io.now ? { now: io.now } : {}),
        onEvent: json ? () => undefined : runLogger(io.stdout, c, plan.database),
      },
    );
    report.database = plan.database;
    if (json) {
      const document = { command: "run", ...report, rssBytes: process.memoryUsage().rss };
      io.stdout.write((compact ? JSON.stringify(document) : JSON.stringify(document, null, 2)) + "\n");
    } else {
      io.stdout.write(renderSummary(report, c));
      if (report.error) io.stderr.write(errorColors.red(`error ${report.error.code} ${report.error.message}`) + "\n");
    }
    if (!report.ok) return report.exitCode;
    return args.strict && report.rejectedRows > 0 ? exitCodes.savedWithRejections : exitCodes.ok;
  };
  if (args.everyMs === undefined) return await runOnce(false);
  return await runEvery(runOnce, args.everyMs, args.maxRuns, io, c);
}

/** `doctor`: one pass/fail line per check; exit 0 only when all pass. */
async function doctor(args: CommandLine, io: Io, json: boolean): Promise<number> {
  const c = colorsFor(io.stdout, io.env);
  const checks: Check[] = [];
  let engine: EngineName | undefined;
  let invalid = false;
  try {
    const config = await loadConfigFile(args.config, io.env, io.cwd);
    const pipeline = await validatePipeline(config, stepType);
    engine = chooseEngine(args, pipeline, io);
    checks.push({
      name: "config",
      ok: true,
      detail: `${config.file}: ${pipeline.steps.length} steps, ${Object.keys(pipeline.tables).length} tables`,
    });
    const named = args.db ?? databaseSetting(pipeline).path;
    const database = isPostgresUrl(named) ? named : path.resolve(io.cwd, args.db ?? resolveAgainst(config.baseDir, named));
    if (isPostgresUrl(named)) engine = "postgres";
    checks.push(isPostgresUrl(named) ? await serverCheck(named, "postgres") : await databaseCheck(database));
    checks.push(...(await sourceChecks(pipeline, config.baseDir, stepType)));
    checks.push(...(await freshnessChecks(pipeline, config.baseDir, database, (io.now ?? (() => new Date()))())));
  } catch (error) {
    invalid = error instanceof ConfigError || (error instanceof PipelineError && error.exitCode === exitCodes.invalid);
    const detail = error instanceof ConfigError ? error.diagnostics.map(formatDiagnostic).join("\n    ") : describeError(error).message;
    checks.push({ name: "config", ok: false, detail });
  }
  checks.unshift(...(await runtimeChecks(await version(), engine ?? args.engine ?? "sqljs")));
  if (json) io.stdout.write(JSON.stringify({ ok: checks.every((x) => x.ok), checks }, null, 2) + "\n");
  else for (const check of checks) io.stdout.write(`${check.ok ? c.green("✓") : c.red("✗")} ${check.name}: ${check.detail}\n`);
  if (invalid) return exitCodes.invalid;
  return checks.every((x) => x.ok) ? exitCodes.ok : exitCodes.runFailed;
}

/** `run --every`: one full run per interval until the signal fires (or --max-runs); failures do not stop the loop. */
async function runEvery(
  runOnce: (compact: boolean) => Promise<number>,
  everyMs: number,
  maxRuns: number | undefined,
  io: Io,
  c: ReturnType<typeof colorsFor>,
): Promise<number> {
  let last: number = exitCodes.ok;
  for (let count = 1; maxRuns === undefined || count <= maxRuns; count++) {
    const started = Date.now();
    last = await runOnce(true);
    if (io.signal?.aborted || (maxRuns !== undefined && count >= maxRuns)) break;
    const wait = Math.max(0, everyMs - (Date.now() - started));
    if (wait > 0)
      io.stderr.write(c.dim(`next run in ${Math.round(wait / 1000)} s (${new Date(Date.now() + wait).toISOString()}); Ctrl-C to stop\n`));
    try {
      await sleep(wait, undefined, { signal: io.signal });
    } catch {
      break;
    }
  }
  return io.signal?.aborted ? exitCodes.ok : last;
}

interface CommandLine {
  command: (typeof commands)[number];
  config: string;
  db: string | undefined;
  engine: EngineName | undefined;
  dryRun: boolean;
  force: boolean;
  strict: boolean;
  fullRefresh: boolean;
  /** The load steps named after `run --full-refresh`. */
  steps: string[];
  lockTimeoutMs: number;
  everyMs: number | undefined;
  maxRuns: number | undefined;
  markdown: boolean;
  update: string | undefined;
  help: boolean;
  version: boolean;
}

function parseCommandLine(argv: readonly string[]): CommandLine {
  const options = {
    config: { type: "string", short: "c", default: "pipeline.yaml" },
    db: { type: "string" },
    engine: { type: "string" },
    json: { type: "boolean", default: false },
    "dry-run": { type: "boolean", default: false },
    force: { type: "boolean", default: false },
    strict: { type: "boolean", default: false },
    "full-refresh": { type: "boolean", default: false },
    "lock-timeout": { type: "string", default: "60s" },
    every: { type: "string" },
    "max-runs": { type: "string" },
    markdown: { type: "boolean", default: false },
    update: { type: "string" },
    help: { type: "boolean", short: "h", default: false },
    version: { type: "boolean", short: "v", default: false },
  } as const;
  let parsed;
  try {
    parsed = parseArgs({ args: [...argv], options, allowPositionals: true, strict: true });
  } catch (error) {
    const unknown = /Unknown option '(-{1,2}[^']+)'/.exec((error as Error).message)?.[1];
    const hint = unknown ? didYouMean(unknown.replace(/^-+/, ""), Object.keys(options)) : "";
    throw usageError(`${(error as Error).message.split(". ")[0]}${hint}`);
  }
  const [command = "run", ...rest] = parsed.positionals;
  if (!(commands as readonly string[]).includes(command)) throw usageError(`unknown command "${command}"${didYouMean(command, commands)}`);
  const v = parsed.values;
  if (rest.length > 0 && !(command === "run" && v["full-refresh"])) throw usageError(`unexpected argument "${rest[0]}"`);
  for (const option of ["dry-run", "strict", "full-refresh"] as const) {
    if (v[option] && command !== "run") throw usageError(`--${option} goes with the run command`);
  }
  const duration = (option: string, text: string | undefined) => {
    if (text === undefined) return undefined;
    const ms = parseDuration(text);
    if (ms === undefined) throw usageError(`--${option} takes a duration such as 30s, 15m or 500ms, not "${text}"`);
    return ms;
  };
  const everyMs = duration("every", v.every);
  if (everyMs !== undefined && (command !== "run" || v["dry-run"])) throw usageError("--every goes with the run command");
  const maxRuns = v["max-runs"] === undefined ? undefined : Number(v["max-runs"]);
  if (maxRuns !== undefined && !(Number.isInteger(maxRuns) && maxRuns > 0))
    throw usageError(`--max-runs takes a positive whole number, not "${v["max-runs"]}"`);
  if (v.engine !== undefined && !isEngineName(v.engine))
    throw usageError(`--engine takes ${engineNames.join(" or ")}, not "${v.engine}"${didYouMean(v.engine, engineNames)}`);
  return {
    command: command as CommandLine["command"],
    config: v.config,
    db: v.db,
    engine: v.engine as EngineName | undefined,
    dryRun: v["dry-run"],
    force: v.force,
    strict: v.strict,
    fullRefresh: v["full-refresh"],
    steps: rest,
    lockTimeoutMs: duration("lock-timeout", v["lock-timeout"])!,
    everyMs,
    maxRuns,
    markdown: v.markdown,
    update: v.update,
    help: v.help || command === "help",
    version: v.version,
  };
}

/** The step names given to `run --full-refresh`: each must be a step that reads a source (derived steps run again anyway). */
function checkRefreshSteps(names: readonly string[], plan: Plan): readonly string[] {
  const steps = new Map(plan.steps.map((step) => [step.name, step]));
  const sources = plan.steps.filter((step) => !stepType(step.spec).derived).map((step) => step.name);
  for (const name of names) {
    const step = steps.get(name);
    if (!step)
      throw usageError(
        `--full-refresh: unknown step "${name}"${didYouMean(name, steps.keys()) || `; the steps that read a source: ${sources.join(", ")}`}`,
      );
    if (stepType(step.spec).derived) {
      throw usageError(
        `--full-refresh: ${name} derives from earlier steps and runs again with any --full-refresh; name the steps that read a source: ${sources.join(", ")}`,
      );
    }
  }
  return names;
}

function usageError(message: string): PipelineError {
  return new PipelineError("E_USAGE", `${message}\n\n${usage}`, { exitCode: exitCodes.invalid });
}

function displayPath(cwd: string, file: string): string {
  const relative = path.relative(cwd, file);
  return relative === "" || relative.startsWith("..") ? file : relative;
}

function resolveAgainst(baseDir: string, file: string): string {
  return path.isAbsolute(file) ? file : path.resolve(baseDir, file);
}

/** The pending rejections stored in the database file; none when it does not exist yet. Never writes. */
async function readPendingRejections(database: string, engine: EngineName, lockTimeoutMs: number): Promise<PendingRejection[]> {
  return readDatabase(database, engine, lockTimeoutMs, (db) =>
    existingTables(db).has("pipeline_rejected_rows") ? pendingRejections(db) : [],
  );
}

function isEngineName(name: string): name is EngineName {
  return (engineNames as readonly string[]).includes(name);
}

/** The engine named by the environment (PIPELINE_ENGINE), if any; a wrong name is a usage error that names it. */
function environmentEngine(io: Io): EngineName | undefined {
  const name = io.env["PIPELINE_ENGINE"];
  if (name === undefined || name === "") return undefined;
  if (!isEngineName(name)) throw usageError(`PIPELINE_ENGINE takes ${engineNames.join(" or ")}, not "${name}"`);
  return name;
}

/** The engine a command uses: --engine, then database: { engine: } in pipeline.yaml, then PIPELINE_ENGINE, then sqljs. */
function chooseEngine(args: CommandLine, pipeline: Pipeline, io: Io): EngineName {
  return args.engine ?? databaseSetting(pipeline).engine ?? environmentEngine(io) ?? "sqljs";
}

function planJson(plan: Plan, { createdTables, addedColumns }: SchemaChanges) {
  return {
    ok: true,
    command: "plan",
    config: plan.config.file,
    database: plan.database,
    createdTables,
    addedColumns,
    steps: plan.steps.map((s) => ({
      index: s.index,
      name: s.name,
      type: s.type,
      description: s.description,
      details: Object.fromEntries(s.details),
      writes: s.writes,
    })),
  };
}

async function updateGenerated(file: string, name: string, body: string): Promise<void> {
  const { readFile, writeFile } = await import("node:fs/promises");
  let document: string;
  try {
    document = await readFile(file, "utf8");
  } catch (error) {
    throw new PipelineError("E_USAGE", `cannot read ${file}: ${(error as Error).message}`, { exitCode: exitCodes.invalid });
  }
  try {
    await writeFile(file, replaceGenerated(document, name, body));
  } catch (error) {
    throw new PipelineError("E_USAGE", `${file}: ${(error as Error).message}`, { exitCode: exitCodes.invalid });
  }
}

async function version(): Promise<string> {
  const { readFile } = await import("node:fs/promises");
  // why: compiled, this file sits in dist/engine/; under the test runner, in engine/.
  for (const candidate of ["../../package.json", "../package.json"]) {
    try {
      return (JSON.parse(await readFile(new URL(candidate, import.meta.url), "utf8")) as { name?: string; version: string }).version;
    } catch {
      continue;
    }
  }
  return "unknown";
}
