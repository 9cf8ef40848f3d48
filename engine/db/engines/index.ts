import type { Engine, EngineName } from "./engine.js";
import { nativeEngine } from "./native.js";
import { postgresEngine } from "./postgres.js";
import { sqlJsEngine } from "./sqljs.js";

export { engineNames, type Engine, type EngineName } from "./engine.js";

/** Every engine, by name: a new engine is one module and one line here. */
const engines: Record<EngineName, Engine> = { sqljs: sqlJsEngine, native: nativeEngine, postgres: postgresEngine };

/** The engine of that name. */
export function engineNamed(name: EngineName): Engine {
  return engines[name];
}
