import { spawn } from "node:child_process";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { brotliCompressSync, deflateRawSync, deflateSync, gzipSync } from "node:zlib";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { decodeText } from "../engine/sources/csv.js";
import { fetchSource, httpDefaults, type HttpSettings } from "../engine/sources/fetch.js";
import { startServer, type TestServer } from "./helpers/http-server.js";
import { root } from "./helpers/workspace.js";

let server: TestServer;
beforeEach(async () => {
  server = await startServer();
});
afterEach(() => server.close());

const fast: HttpSettings = { ...httpDefaults, retries: 2, backoff_ms: 10, max_backoff_ms: 2_000, timeout_ms: 2_000 };
const get = (path: string, http: Partial<HttpSettings> = {}, previous?: { etag: string | null; lastModified: string | null }) =>
  fetchSource(server.url(path), { baseDir: "/", http: { ...fast, ...http }, previous });
const text = (result: Awaited<ReturnType<typeof fetchSource>>) =>
  result.kind === "body" ? decodeText(result.bytes, undefined, "test") : "<not modified>";

describe("HTTP sources", () => {
  test("a 500 is retried, then the body is read", async () => {
    server.route("/x.csv", (_q, r, hit) => (hit < 2 ? r.writeHead(500).end("boom") : r.writeHead(200).end("a\n1")));
    expect(text(await get("/x.csv"))).toBe("a\n1");
    expect(server.requests("/x.csv")).toHaveLength(3);
  });

  test("retries stop after `retries` and the error lists each attempt", async () => {
    server.route("/x.csv", (_q, r) => r.writeHead(503, "Service Unavailable").end());
    await expect(get("/x.csv")).rejects.toThrow(
      `GET ${server.url("/x.csv")} failed after 3 attempts: 503 Service Unavailable; 503 Service Unavailable; 503 Service Unavailable`,
    );
  });

  test("429 waits as long as Retry-After says", async () => {
    const times: number[] = [];
    server.route("/x.csv", (_q, r, hit) => {
      times.push(performance.now());
      if (hit === 0) r.writeHead(429, { "retry-after": "1" }).end();
      else r.writeHead(200).end("ok");
    });
    expect(text(await get("/x.csv"))).toBe("ok");
    expect(times[1]! - times[0]!).toBeGreaterThanOrEqual(950);
  });

  test("a Retry-After longer than max_backoff_ms fails at once with a message", async () => {
    server.route("/x.csv", (_q, r) => r.writeHead(429, "Too Many Requests", { "retry-after": "3600" }).end());
    await expect(get("/x.csv")).rejects.toThrow("the server asks to retry in 3600 s, longer than http.max_backoff_ms (2000)");
    expect(server.requests("/x.csv")).toHaveLength(1);
  });

  test("4xx other than 429 is not retried", async () => {
    await expect(get("/missing.csv")).rejects.toThrow(`GET ${server.url("/missing.csv")} -> 404 Not Found`);
    expect(server.requests("/missing.csv")).toHaveLength(1);
  });

  test("a server that does not answer times out", async () => {
    server.route("/slow.csv", () => undefined);
    await expect(get("/slow.csv", { timeout_ms: 200, retries: 1 })).rejects.toThrow(
      "failed after 2 attempts: no answer within 200 ms; no answer within 200 ms",
    );
  });

  test("a body cut short of its Content-Length is an error, retried", async () => {
    server.route("/cut.csv", (_q, r) => {
      r.writeHead(200, { "content-length": "100" });
      r.write("a,b\n1,2\n");
      setTimeout(() => r.destroy(), 20);
    });
    await expect(get("/cut.csv", { retries: 1 })).rejects.toThrow(/failed after 2 attempts: .*(Premature close|aborted|socket)/i);
  });

  test("a body over max_bytes is refused, declared or streamed", async () => {
    server.file("/big.csv", "x".repeat(5000));
    await expect(get("/big.csv", { max_bytes: 1000 })).rejects.toThrow(
      "is larger than the 1000-byte limit (http.max_bytes): 5000 bytes or more",
    );
    server.route("/stream.csv", (_q, r) => {
      r.writeHead(200);
      for (let i = 0; i < 10; i++) r.write("y".repeat(500));
      r.end();
    });
    await expect(get("/stream.csv", { max_bytes: 1000 })).rejects.toThrow("is larger than the 1000-byte limit");
  });

  test.each([
    ["gzip", "gzip", gzipSync],
    ["x-gzip", "gzip", gzipSync],
    ["deflate", "zlib", deflateSync],
    ["deflate", "raw deflate, as old servers send", deflateRawSync],
    ["br", "brotli", brotliCompressSync],
  ])("%s bodies (%s) are decoded, and the request asks for them", async (coding, _kind, compress) => {
    server.route("/z.csv", (_q, r) => r.writeHead(200, { "content-encoding": coding }).end(compress("a,b\n1,2")));
    expect(text(await get("/z.csv"))).toBe("a,b\n1,2");
    expect(server.requests("/z.csv")[0]!["accept-encoding"]).toBe("gzip, deflate, br");
  });

  test("an empty deflate body is an empty source", async () => {
    server.route("/z.csv", (_q, r) => r.writeHead(200, { "content-encoding": "deflate" }).end());
    const result = await get("/z.csv");
    expect(result.kind === "body" && result.bytes.length).toBe(0);
  });

  test("a redirect loop stops with a clear error", async () => {
    server.route("/loop.csv", (_q, r) => r.writeHead(302, { location: "/loop.csv" }).end());
    await expect(get("/loop.csv")).rejects.toThrow(/maximum redirect reached.*more than 5 redirects/);
  });

  test("UTF-8 is decoded whatever the Content-Type says, and a BOM is dropped", async () => {
    server.file("/bom.csv", Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from("Référence\n1")]), "text/csv; charset=ISO-8859-1");
    expect(text(await get("/bom.csv"))).toBe("Référence\n1");
  });

  // why: node-fetch imports node:http as an ES module, whose facade read three getters that load undici (0.05-0.08 s a run).
  test("a fetch in a fresh process does not load undici, and node:http still gives its WebSocket", async () => {
    server.file("/fresh.csv", "a\n1");
    const script = `
      const { fetchSource, httpDefaults } = await import(${JSON.stringify(pathToFileURL(path.join(root, "dist/engine/sources/fetch.js")).href)});
      const got = await fetchSource(process.argv[1], { baseDir: "/", http: httpDefaults });
      const http = process.getBuiltinModule("node:http");
      console.log(JSON.stringify({
        bytes: got.kind === "body" ? got.bytes.length : -1,
        undici: process.moduleLoadList.filter((m) => m.includes("undici")),
        webSocket: typeof http.WebSocket,
      }));`;
    const child = spawn(process.execPath, ["--input-type=module", "-e", script, server.url("/fresh.csv")]);
    let out = "";
    child.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (out += chunk.toString()));
    expect(await new Promise((resolve) => child.on("close", resolve)), out).toBe(0);
    expect(JSON.parse(out)).toEqual({ bytes: 3, undici: [], webSocket: "function" });
  });

  test("a remembered ETag makes a conditional GET, answered 304", async () => {
    server.file("/x.csv", "a\n1");
    const first = await get("/x.csv");
    expect(first.kind).toBe("body");
    const etag = first.kind === "body" ? first.etag : null;
    expect(etag).toMatch(/^"/);
    expect(await get("/x.csv", {}, { etag, lastModified: null })).toEqual({ kind: "not_modified" });
    expect(server.requests("/x.csv")[1]?.["if-none-match"]).toBe(etag);
  });
});

describe("local sources", () => {
  test("a missing file names the path", async () => {
    await expect(fetchSource("nope.csv", { baseDir: "/tmp", http: fast })).rejects.toThrow("cannot read /tmp/nope.csv: no such file");
  });
});
