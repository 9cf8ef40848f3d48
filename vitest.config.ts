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
];

export default defineConfig({
  test: {
    testTimeout: 30_000,
    hookTimeout: 30_000,
    projects: [
      { extends: true, test: { name: "sqljs", include: ["tests/**/*.test.ts"], env: { PIPELINE_ENGINE: "sqljs" } } },
      { extends: true, test: { name: "native", include: pipelineLevel, env: { PIPELINE_ENGINE: "native" } } },
    ],
  },
});
