import path from "node:path";
import { parseArgs } from "node:util";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { stepType } from "../steps/index.js";
import { loadConfigFile } from "./config/load.js";
import { outputPathDiagnostics } from "./config/output-paths.js";
import { validatePipeline } from "./config/validate.js";
import { ConfigError, describeError, didYouMean, formatDiagnostic, PipelineError, redactCredentials } from "./errors.js";
import type { Check } from "./doctor.js";
import { freshnessChecks } from "./freshness.js";
import {
  colorsFor,
  renderDeepPlan,
  renderDiagnostics,
  renderPlan,
  renderSummary,
  runLogger,
  type OutputStream,
  type SchemaChanges,
} from "./output.js";
import { planPipeline, type Plan } from "./plan.js";
import { executePlan } from "./run.js";
import { runnerFile } from "./runner-file.js";
import { resolveDatabasePath } from "./db/store.js";
import { engineNames, type EngineName } from "./db/engines/index.js";
import { isPostgresUrl } from "./db/database-url.js";
import { readDatabase } from "./db/session.js";
import type { SqlDatabase } from "./db/database.js";
import { databaseSetting, type Pipeline } from "./config/schema.js";
import type { LoadedConfig } from "./config/load.js";
import { parseDuration } from "./duration.js";
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

const commands = [
  "init",
  "run",
  "validate",
  "plan",
  "list",
  "history",
  "doctor",
  "schema",
  "profile",
  "rejections",
  "test",
  "help",
] as const;

const usage = `Usage: pipeline <command> [options]

Commands:
  init FILE_OR_URL...
                   draft a pipeline.yaml (or -c FILE) that loads each CSV source into its own table: types,
                   keys and references inferred from the values; never replaces an existing file
  run              validate, then run every step and save the database (default)
  run --dry-run    validate and print the plan and the checks that will run; nothing is fetched or written
  run --dry-run --deep
                   execute every step and check exactly as a run would (lock, fetches with conditional
                   GETs, the transaction), then roll back: per step the rows it would insert, update,
                   leave unchanged, reject (first reasons) or keep in conflict, the tables that would
                   change, the checks that would fail; writes nothing; exit 1 when the run would fail
  run --full-refresh [STEP...]
                   read every source (or those of the named load steps) in full: no conditional GET,
                   no same-content or grown-file shortcut; the derived steps run again
  run --select STEP[+][,STEP...]
                   run only the named steps (repeatable); STEP+ adds every later step that reads what
                   STEP writes, directly or through other steps; the others are not executed
  plan             same as run --dry-run (plan --deep: same as run --dry-run --deep)
  list             the steps in run order: type, the tables each reads and writes
  history          the last runs recorded in the database: status, counts, duration, error (--last N,
                   default 10); reads the database, writes nothing
  validate         check pipeline.yaml and report every problem with its line:col
  doctor           check the runtime, the configuration, the database directory and every source
  schema           print the database schema the pipeline creates, as Markdown with a Mermaid diagram
                   (--json: the tables, their columns, keys and references as JSON)
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
      --deep          with plan or run --dry-run: run everything, then roll back (see above)
      --force         allow a replace that would empty or shrink a table
      --strict        with run: exit 4 when the run saved with rejected rows (or, unchanged, the run it
                      leaves unchanged did); what is saved is the same as without --strict
      --lock-timeout D  with run and plan --deep: how long to wait while another run holds the database (default 60s)
      --select STEP   with run: only this step (repeatable, or comma-separated; STEP+ with what depends on it)
      --last N        with history: how many runs to show (default 10)
      --every D       with run: run again every D (e.g. 15m) until stopped with Ctrl-C or SIGTERM;
                      a failed run is reported and the next one still happens; with --json, one JSON document
                      per run, one per line
      --max-runs N    with --every: stop after N runs
  -h, --help          this help
  -v, --version       the runner's version

Durations: 500ms, 30s, 15m, 1h (a bare number is seconds).
Exit codes: 0 success, 1 the run failed (nothing was saved), 2 invalid configuration or usage,
3 the database is in use by another run (--lock-timeout passed), 4 with --strict: saved with rejected rows,
130 interrupted (nothing was saved).
`;

/** What every command gets: the parsed command line, the I/O and the colours of each stream. */
export interface CommandContext {
  args: CommandLine;
  io: Io;
  json: boolean;
  c: ReturnType<typeof colorsFor>;
  errorColors: ReturnType<typeof colorsFor>;
}

/** The pipeline a command works on: loaded, validated, its database and engine chosen, planned. */
export interface Loaded {
  config: LoadedConfig;
  pipeline: Pipeline;
  /** The database's real path. */
  database: string;
  engine: EngineName;
  plan: Plan;
}

/** One command: whether it needs the pipeline loaded first, and what it does; returns the exit code. */
export type Command =
  | { pipeline: false; run(context: CommandContext): Promise<number> }
  | { pipeline: true; run(context: CommandContext, loaded: Loaded): Promise<number> };

/** `plan` and `run --dry-run`: the plan and the schema changes it would make; with --deep, the run rolled back. */
const planCommand = {
  pipeline: true as const,
  async run({ args, io, json, c }, { database, engine, plan }) {
    if (args.fullRefresh && args.steps.length > 0) checkRefreshSteps(args.steps, plan);
    if (args.deep) return deepPlan({ args, io, json, c }, { database, engine, plan });
    const { previewPlan } = await import("./run/preview.js");
    const changes = await previewPlan({ ...plan, database }, engine, args.lockTimeoutMs, stepType);
    if (json) io.stdout.write(JSON.stringify(planJson(plan, changes), null, 2) + "\n");
    else io.stdout.write(renderPlan(plan, changes, c));
    return exitCodes.ok;
  },
} satisfies Command;

/**
 * Every command, by name (citty's subCommands): a new command is one entry here and its lines in the usage.
 * why: each is imported when it is called, so that a run (a cron job's every start) does not load what only
 * the other commands use.
 */
const commandTable: Record<(typeof commands)[number], () => Promise<Command>> = {
  help: async () => ({
    pipeline: false,
    async run({ io, json }) {
      io.stdout.write(json ? JSON.stringify({ ok: true, command: "help", usage }, null, 2) + "\n" : usage);
      return exitCodes.ok;
    },
  }),
  doctor: async () => ({ pipeline: false, run: ({ args, io, json }) => doctor(args, io, json) }),
  list: async () => (await import("./commands/list.js")).listCommand,
  init: async () => (await import("./commands/init.js")).initCommand,
  history: async () => (await import("./commands/history.js")).historyCommand,
  validate: async () => (await import("./commands/validate.js")).validateCommand,
  schema: async () => (await import("./commands/schema.js")).schemaCommand,
  profile: async () => (await import("./commands/profile.js")).profileCommand,
  rejections: async () => (await import("./commands/rejections.js")).rejectionsCommand,
  test: async () => (await import("./commands/test.js")).testCommand,
  plan: async () => planCommand,
  run: async () => ({
    pipeline: true,
    run: (context, loaded) => (context.args.dryRun ? planCommand.run(context, loaded) : runCommand(context, loaded)),
  }),
};

/** Runs one CLI invocation; returns the exit code. */
export async function main(argv: readonly string[], io: Io): Promise<number> {
  const json = argv.includes("--json");
  const c = colorsFor(json ? io.stderr : io.stdout, io.env);
  const errorColors = colorsFor(io.stderr, io.env);
  try {
    const args = parseCommandLine(argv);
    if (args.version) {
      const runner = await version();
      io.stdout.write(json ? JSON.stringify({ ok: true, command: "version", version: runner }) + "\n" : `pipeline-runner ${runner}\n`);
      return exitCodes.ok;
    }
    const command = await commandTable[args.help ? "help" : args.command]();
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
  const pipeline = await validatePipeline(config, stepType, io.signal, (value) => engineIfNamed(args, value, io));
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
async function runCommand(
  { args, io, json, c, errorColors }: CommandContext,
  { config, pipeline, database, engine, plan }: Loaded,
): Promise<number> {
  const fullRefresh = args.fullRefresh && (args.steps.length === 0 ? true : checkRefreshSteps(args.steps, plan));
  const select = args.select.length === 0 ? undefined : await selectedSteps(args.select, pipeline, config);
  const runOnce = async (compact: boolean): Promise<number> => {
    const report = await executePlan(
      { ...plan, database },
      {
        force: args.force,
        fullRefresh: fullRefresh || undefined,
        select,
        engine,
        lockTimeoutMs: args.lockTimeoutMs,
        signal: io.signal,
        typeOf: stepType,
        ...(io.now ? { now: io.now } : {}),
        onEvent: json ? () => undefined : runLogger(io.stdout, c, plan.database),
      },
    );
    report.database = plan.database;
    if (select && report.error?.code === "E_CHECK") {
      const withDependents = args.select.map((name) => (name.endsWith("+") ? name : `${name}+`)).join(",");
      report.notes.push(
        `with --select, the steps left out did not derive again from what the selected ones loaded; --select ${withDependents} runs them too`,
      );
    }
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

/** The steps `run --select` names, with what depends on them where asked. */
async function selectedSteps(names: readonly string[], pipeline: Pipeline, config: LoadedConfig) {
  const { selectSteps, stepLinks } = await import("./dependencies.js");
  return selectSteps(names, await stepLinks(pipeline, config, stepType), usageError);
}

/** `plan --deep`: the run executed through its session (lock, fetches, steps, checks), then rolled back; exit 1 when the run would fail. */
async function deepPlan(
  { args, io, json, c }: Omit<CommandContext, "errorColors">,
  { database, engine, plan }: Omit<Loaded, "config" | "pipeline">,
) {
  const fullRefresh = args.fullRefresh && (args.steps.length === 0 ? true : args.steps);
  const report = await executePlan(
    { ...plan, database },
    {
      force: args.force,
      fullRefresh: fullRefresh || undefined,
      engine,
      lockTimeoutMs: args.lockTimeoutMs,
      signal: io.signal,
      typeOf: stepType,
      deep: true,
      ...(io.now ? { now: io.now } : {}),
      onEvent: () => undefined,
    },
  );
  report.database = plan.database;
  if (json) io.stdout.write(JSON.stringify({ command: "plan", ...report }, null, 2) + "\n");
  else io.stdout.write(renderDeepPlan(plan, report, c));
  return report.ok ? exitCodes.ok : report.exitCode;
}

/** `doctor`: one pass/fail line per check; exit 0 only when all pass. */
async function doctor(args: CommandLine, io: Io, json: boolean): Promise<number> {
  const c = colorsFor(io.stdout, io.env);
  const checks: Check[] = [];
  let engine: EngineName | undefined;
  let invalid = false;
  const { databaseCheck, runtimeChecks, serverCheck, sourceChecks } = await import("./doctor.js");
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
    const readServer = <T>(url: string, body: (db: SqlDatabase) => T) => readDatabase(url, "postgres", 10_000, body);
    checks.push(...(await freshnessChecks(pipeline, config.baseDir, database, (io.now ?? (() => new Date()))(), readServer)));
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
  const collect = fullCollection();
  for (let count = 1; maxRuns === undefined || count <= maxRuns; count++) {
    const started = Date.now();
    last = await runOnce(true);
    // why: a run leaves native memory (SQLite's connections and statements, buffers) held by objects V8 does not weigh; left to V8's own pace, RSS climbed 125 -> 169 MB over 300 runs; collected between runs it stays flat.
    collect();
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

/** A full garbage collection, for the idle time between `--every` runs (the same as node --expose-gc's `gc()`). */
function fullCollection(): () => void {
  setFlagsFromString("--expose-gc");
  return runInNewContext("gc") as () => void;
}

/** The parsed command line. */
export interface CommandLine {
  command: (typeof commands)[number];
  config: string;
  db: string | undefined;
  engine: EngineName | undefined;
  dryRun: boolean;
  /** `plan --deep`, `run --dry-run --deep`: execute every step and check, then roll back. */
  deep: boolean;
  force: boolean;
  strict: boolean;
  fullRefresh: boolean;
  /** The load steps named after `run --full-refresh`. */
  steps: string[];
  /** `init`: the CSV sources (files or URLs) to draft a pipeline from. */
  sources: string[];
  lockTimeoutMs: number;
  everyMs: number | undefined;
  maxRuns: number | undefined;
  /** `run --select`: step names, each maybe ending in + (what depends on it too). */
  select: string[];
  /** `history --last N`: how many runs. */
  last: number;
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
    deep: { type: "boolean", default: false },
    force: { type: "boolean", default: false },
    strict: { type: "boolean", default: false },
    "full-refresh": { type: "boolean", default: false },
    "lock-timeout": { type: "string", default: "60s" },
    every: { type: "string" },
    "max-runs": { type: "string" },
    select: { type: "string", multiple: true },
    last: { type: "string" },
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
  if (rest.length > 0 && !(command === "run" && v["full-refresh"]) && command !== "init")
    throw usageError(`unexpected argument "${rest[0]}"`);
  for (const option of ["dry-run", "strict", "full-refresh"] as const) {
    if (v[option] && command !== "run") throw usageError(`--${option} goes with the run command`);
  }
  if (v.deep && command !== "plan" && !(command === "run" && v["dry-run"])) throw usageError("--deep goes with plan or run --dry-run");
  const duration = (option: string, text: string | undefined) => {
    if (text === undefined) return undefined;
    const ms = parseDuration(text);
    if (ms === undefined) throw usageError(`--${option} takes a duration such as 30s, 15m or 500ms, not "${text}"`);
    return ms;
  };
  const everyMs = duration("every", v.every);
  if (everyMs !== undefined && (command !== "run" || v["dry-run"])) throw usageError("--every goes with the run command");
  if (everyMs === 0) throw usageError(`--every takes a duration longer than zero, not "${v.every}"`);
  if (v["max-runs"] !== undefined && everyMs === undefined) throw usageError("--max-runs goes with --every: it stops a repeated run");
  const maxRuns = v["max-runs"] === undefined ? undefined : Number(v["max-runs"]);
  if (maxRuns !== undefined && !(Number.isInteger(maxRuns) && maxRuns > 0))
    throw usageError(`--max-runs takes a positive whole number, not "${v["max-runs"]}"`);
  const select = (v.select ?? []).flatMap((names) => names.split(",")).map((name) => name.trim());
  if (select.length > 0 && (command !== "run" || v["dry-run"])) throw usageError("--select goes with the run command (not --dry-run)");
  if (select.some((name) => name === "" || name === "+"))
    throw usageError(`--select takes step names, such as --select load_sales+, not "${v.select!.join(",")}"`);
  const last = v.last === undefined ? 10 : Number(v.last);
  if (v.last !== undefined && command !== "history") throw usageError("--last goes with the history command");
  if (!(Number.isInteger(last) && last > 0)) throw usageError(`--last takes a positive whole number, not "${v.last}"`);
  if (v.engine !== undefined && !isEngineName(v.engine))
    throw usageError(`--engine takes ${engineNames.join(" or ")}, not "${v.engine}"${didYouMean(v.engine, engineNames)}`);
  return {
    command: command as CommandLine["command"],
    config: v.config,
    db: v.db,
    engine: v.engine as EngineName | undefined,
    dryRun: v["dry-run"],
    deep: v.deep,
    force: v.force,
    strict: v.strict,
    fullRefresh: v["full-refresh"],
    steps: command === "init" ? [] : rest,
    sources: command === "init" ? rest : [],
    lockTimeoutMs: duration("lock-timeout", v["lock-timeout"])!,
    everyMs,
    maxRuns,
    select,
    last,
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

/** The engine a command will use, for validation to compile on its SQLite; a wrong name is reported after validation, by {@link chooseEngine}. */
function engineIfNamed(args: CommandLine, pipeline: Pipeline, io: Io): EngineName | undefined {
  try {
    if (isPostgresUrl(args.db ?? databaseSetting(pipeline).path)) return "postgres";
    return chooseEngine(args, pipeline, io);
  } catch {
    return undefined;
  }
}

/** The engine a command uses: --engine, then database: { engine: } in pipeline.yaml, then PIPELINE_ENGINE, then sqljs. */
function chooseEngine(args: CommandLine, pipeline: Pipeline, io: Io): EngineName {
  return args.engine ?? databaseSetting(pipeline).engine ?? environmentEngine(io) ?? "sqljs";
}

function planJson(plan: Plan, { createdTables, addedColumns, checks }: SchemaChanges) {
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
    checks: checks ?? [],
  };
}

async function version(): Promise<string> {
  const { readFile } = await import("node:fs/promises");
  try {
    return (JSON.parse(await readFile(runnerFile("package.json"), "utf8")) as { version: string }).version;
  } catch {
    return "unknown";
  }
}
