/**
 * The functions the runner takes from `node:fs`, `node:crypto` and `node:util`. why: importing one of these as
 * an ES module builds its facade, which reads every export, so Node loads what each lazy export stands for (fs's
 * streams and the whole stream module, crypto's webcrypto, util's MIMEType and diff) on every start, a run that
 * uses none of them included; process.getBuiltinModule hands over the module itself (docs/performance.md, "An
 * unchanged run without the built-ins' facades"). The other built-ins (`node:path`, `node:fs/promises`, ...) have
 * no lazy export worth it and are imported as usual.
 */
export const {
  closeSync,
  constants,
  existsSync,
  fstatSync,
  ftruncateSync,
  lstatSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readlinkSync,
  readSync,
  realpathSync,
  rmSync,
  statSync,
  writeSync,
} = process.getBuiltinModule("node:fs");

export const { createHash, randomBytes } = process.getBuiltinModule("node:crypto");

export const { parseArgs } = process.getBuiltinModule("node:util");
