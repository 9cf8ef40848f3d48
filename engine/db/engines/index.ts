import type { Engine, EngineName } from "./engine.js";

export { engineNames, type Engine, type EngineName } from "./engine.js";

/**
 * Every engine, by name: a new engine is one module and one line here.
 * why: each is imported when it is used; a command uses one, and the others' modules (the server engine's eight)
 * were loaded on every start.
 */
const engines: Record<EngineName, () => Promise<Engine>> = {
  sqljs: async () => (await import("./sqljs.js")).sqlJsEngine,
  native: async () => (await import("./native.js")).nativeEngine,
  postgres: async () => (await import("./postgres.js")).postgresEngine,
};

/** The engine of that name. */
export function engineNamed(name: EngineName): Promise<Engine> {
  return engines[name]();
}
