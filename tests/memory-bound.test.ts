import v8 from "node:v8";
import { describe, expect, it } from "vitest";
import { boundYoungGeneration, youngGenerationBytes } from "../engine/memory.js";

const newSpaceBytes = () => v8.getHeapSpaceStatistics().find((space) => space.space_name === "new_space")!.space_size;

describe("V8's young generation during a load", () => {
  it("stays within its bound while a loop allocates millions of objects and keeps a few thousand alive, as a load does", () => {
    const alive: { text: string; values: number[] }[] = [];
    for (let i = 0; i < 20_000_000; i++) {
      if ((i & 8191) === 0) boundYoungGeneration();
      alive.push({ text: `row ${i}`, values: [i, i + 1] });
      if (alive.length > 3000) alive.splice(0, 1000);
    }
    expect(newSpaceBytes()).toBeLessThanOrEqual(youngGenerationBytes);
  });
});
