#!/usr/bin/env node
import module from "node:module";

// why: on Node 20 (past its end of life), a run could hang for ever once its work was done, deaf to SIGTERM: at exit the main
// thread waits for the V8 platform's worker threads, while an optimizing compile on one of them waits for the main thread to
// collect garbage (nodejs/node#54918, seen here in gdb). Without the optimizing compiler there is no such compile: such a
// Node runs the JavaScript slower, and ends. V8 reads this flag as it decides (unlike --no-concurrent-recompilation, read
// at start only), so it is set here, before the runner's modules load. Node 24 has not shown the hang.
if (Number(process.versions.node.split(".")[0]) < 24) (await import("node:v8")).setFlagsFromString("--no-opt");

// why: caching compiled code on disk makes every later start about twice as fast (a cron job starts often).
module.enableCompileCache?.();
const { main } = await import("./main.js");

// why: the only file that touches process; everything else gets its I/O injected.
const controller = new AbortController();
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, () => {
    // why: the first signal asks for a clean stop (nothing saved, lock released); a second one insists.
    if (controller.signal.aborted) process.exit(130);
    process.stderr.write(`\n${signal}: stopping; the database file stays as it was\n`);
    controller.abort(signal);
  });
}

// why: a reader that stops early (`| head`) closes the pipe; what is left to print is dropped and the command ends as it
// would have (what it saves, its exit code), instead of crashing on EPIPE with a stack trace and exit code 1.
for (const stream of [process.stdout, process.stderr]) {
  stream.on("error", (error: NodeJS.ErrnoException) => {
    if (error.code !== "EPIPE") throw error;
  });
}

const code = await main(process.argv.slice(2), {
  stdout: process.stdout,
  stderr: process.stderr,
  env: process.env,
  cwd: process.cwd(),
  signal: controller.signal,
});
process.exitCode = code;
