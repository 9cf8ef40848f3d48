#!/usr/bin/env node
import { main } from "./main.js";

// why: the only file that touches process; everything else gets its I/O injected.
const code = await main(process.argv.slice(2), {
  stdout: process.stdout,
  stderr: process.stderr,
  env: process.env,
  cwd: process.cwd(),
});
process.exitCode = code;
