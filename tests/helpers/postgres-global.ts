import type { TestProject } from "vitest/node";
import { startPostgres } from "./postgres.js";

declare module "vitest" {
  export interface ProvidedContext {
    /** The URL of the vitest project's throwaway cluster (postgres://postgres@127.0.0.1:PORT/postgres). */
    postgresUrl: string;
  }
}

/** The postgres project's global setup: one throwaway cluster for every test file of the project, stopped at the end. */
export default async function setup(project: TestProject): Promise<() => void> {
  const pg = await startPostgres({ maxConnections: 100 });
  project.provide("postgresUrl", pg.url);
  return () => pg.stop();
}
