import { defineConfig } from "vitest/config";

/** The pipeline-level tests, run once per storage engine (PIPELINE_ENGINE, read by tests/helpers/workspace.ts). */
const pipelineLevel = [
  "tests/client-pipeline.test.ts",
  "tests/load-modes.test.ts",
  "tests/late-data.test.ts",
  "tests/late-data-property.test.ts",
  "tests/run-failures.test.ts",
  "tests/reliability.test.ts",
  "tests/fault-injection.test.ts",
  "tests/stored-database.test.ts",
  "tests/rejections.test.ts",
  "tests/sql-steps.test.ts",
  "tests/deep-plan.test.ts",
  "tests/incremental-sql-property.test.ts",
  "tests/run-bound-checks.test.ts",
];

/**
 * The pipeline-level tests that run against a PostgreSQL server too: one throwaway cluster for the
 * project (tests/helpers/postgres-global.ts), one database per workspace. A test that is about
 * SQLite files (bytes, journals, the sqlite3 CLI as a writer) is skipped there by name.
 */
const onServer = [
  "tests/client-pipeline.test.ts",
  "tests/load-modes.test.ts",
  "tests/late-data.test.ts",
  "tests/late-data-property.test.ts",
  "tests/run-failures.test.ts",
  "tests/freshness.test.ts",
  "tests/postgres-faults.test.ts",
  "tests/incremental-sql-property.test.ts",
  "tests/run-bound-checks.test.ts",
];

export default defineConfig({
  test: {
    testTimeout: 30_000,
    hookTimeout: 30_000,
    projects: [
      {
        extends: true,
        test: {
          name: "sqljs",
          include: ["tests/**/*.test.ts"],
          exclude: ["tests/postgres-faults.test.ts"],
          env: { PIPELINE_ENGINE: "sqljs" },
        },
      },
      { extends: true, test: { name: "native", include: pipelineLevel, env: { PIPELINE_ENGINE: "native" } } },
      {
        extends: true,
        test: {
          name: "postgres",
          include: onServer,
          env: { PIPELINE_ENGINE: "postgres" },
          globalSetup: ["tests/helpers/postgres-global.ts"],
        },
      },
    ],
  },
});
