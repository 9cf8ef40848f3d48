import { readFile } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import fetch, { FetchError, type Response } from "node-fetch";
import type { HttpOptions } from "../config/schema.js";
import { PipelineError } from "../errors.js";

/** HTTP settings with their defaults applied. */
export type HttpSettings = Required<HttpOptions>;

/** The defaults of the `http:` options of a load step. */
export const httpDefaults: HttpSettings = {
  timeout_ms: 30_000,
  retries: 3,
  backoff_ms: 500,
  max_backoff_ms: 10_000,
  max_bytes: 512 * 1024 * 1024,
};

/** What a source answered. */
export type FetchResult =
  | { kind: "not_modified" }
  | { kind: "body"; bytes: Uint8Array; etag: string | null; lastModified: string | null; contentType: string | null };

/** Validators remembered from the previous fetch, for a conditional GET. */
export interface Validators {
  etag: string | null;
  lastModified: string | null;
}

/** Whether a source string is an http(s) URL rather than a local path. */
export function isUrl(source: string): boolean {
  return /^https?:\/\//i.test(source);
}

/** Reads a source: an http(s) URL (with timeouts, retries and a size limit) or a path relative to `baseDir`. */
export async function fetchSource(
  source: string,
  options: { baseDir: string; http: HttpSettings; previous?: Validators | undefined; signal?: AbortSignal | undefined },
): Promise<FetchResult> {
  if (isUrl(source)) return fetchHttp(source, options.http, options.previous, options.signal);
  const file = path.resolve(options.baseDir, source);
  try {
    const bytes = new Uint8Array(await readFile(file));
    if (bytes.length > options.http.max_bytes) throw tooLarge(source, bytes.length, options.http.max_bytes);
    return { kind: "body", bytes, etag: null, lastModified: null, contentType: null };
  } catch (error) {
    if (error instanceof PipelineError) throw error;
    const reason = (error as NodeJS.ErrnoException).code === "ENOENT" ? "no such file" : (error as Error).message;
    throw new PipelineError("E_FETCH", `cannot read ${file}: ${reason}`);
  }
}

class Retryable extends Error {
  constructor(
    message: string,
    readonly waitMs?: number,
  ) {
    super(message);
  }
}

async function fetchHttp(
  url: string,
  http: HttpSettings,
  previous: Validators | undefined,
  signal: AbortSignal | undefined,
): Promise<FetchResult> {
  const failures: string[] = [];
  for (let attempt = 0; ; attempt++) {
    try {
      return await attemptHttp(url, http, previous, signal);
    } catch (error) {
      if (!(error instanceof Retryable)) throw error;
      failures.push(error.message);
      if (attempt >= http.retries) {
        const tries = attempt + 1;
        throw new PipelineError("E_FETCH", `GET ${url} failed after ${tries} attempt${tries > 1 ? "s" : ""}: ${failures.join("; ")}`);
      }
      const backoff = Math.min(http.max_backoff_ms, http.backoff_ms * 2 ** attempt);
      const wait = error.waitMs ?? backoff;
      if (wait > http.max_backoff_ms) {
        throw new PipelineError(
          "E_FETCH",
          `GET ${url} -> ${error.message}; the server asks to retry in ${Math.ceil(wait / 1000)} s, longer than http.max_backoff_ms (${http.max_backoff_ms})`,
        );
      }
      try {
        await sleep(wait, undefined, { signal });
      } catch {
        throw aborted(url);
      }
    }
  }
}

async function attemptHttp(
  url: string,
  http: HttpSettings,
  previous: Validators | undefined,
  signal: AbortSignal | undefined,
): Promise<FetchResult> {
  const controller = new AbortController();
  const stop = () => controller.abort();
  signal?.addEventListener("abort", stop, { once: true });
  let timer = setTimeout(() => controller.abort(), http.timeout_ms);
  const headers: Record<string, string> = { accept: "text/csv, text/plain;q=0.9, */*;q=0.1", "user-agent": "pipeline-runner" };
  if (previous?.etag) headers["if-none-match"] = previous.etag;
  if (previous?.lastModified) headers["if-modified-since"] = previous.lastModified;
  let response: Response;
  try {
    try {
      response = await fetch(url, { headers, signal: controller.signal, follow: 5, compress: true });
    } catch (error) {
      if (signal?.aborted) throw aborted(url);
      throw networkError(error, http);
    }
    if (response.status === 304 && previous) return { kind: "not_modified" };
    if (response.status === 429 || response.status >= 500) {
      response.body?.resume();
      throw new Retryable(`${response.status} ${response.statusText}`, retryAfterMs(response.headers.get("retry-after")));
    }
    if (response.status !== 200) {
      response.body?.resume();
      throw new PipelineError("E_FETCH", `GET ${url} -> ${response.status} ${response.statusText}`);
    }
    const declared = Number(response.headers.get("content-length") ?? NaN);
    if (declared > http.max_bytes && !response.headers.get("content-encoding")) throw tooLarge(url, declared, http.max_bytes);
    const chunks: Buffer[] = [];
    let size = 0;
    try {
      for await (const chunk of response.body ?? []) {
        clearTimeout(timer);
        timer = setTimeout(() => controller.abort(), http.timeout_ms);
        size += (chunk as Buffer).length;
        if (size > http.max_bytes) {
          controller.abort();
          throw tooLarge(url, size, http.max_bytes);
        }
        chunks.push(chunk as Buffer);
      }
    } catch (error) {
      if (error instanceof PipelineError) throw error;
      if (signal?.aborted) throw aborted(url);
      throw networkError(error, http, `after ${size} bytes of the body`);
    }
    return {
      kind: "body",
      bytes: new Uint8Array(Buffer.concat(chunks, size)),
      etag: response.headers.get("etag"),
      lastModified: response.headers.get("last-modified"),
      contentType: response.headers.get("content-type"),
    };
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", stop);
  }
}

function aborted(url: string): PipelineError {
  return new PipelineError("E_ABORTED", `interrupted while fetching ${url}; nothing was saved`, { exitCode: 130 });
}

function networkError(error: unknown, http: HttpSettings, when = ""): Error {
  const suffix = when ? ` ${when}` : "";
  if ((error as Error).name === "AbortError") return new Retryable(`no answer within ${http.timeout_ms} ms${suffix}`);
  if (error instanceof FetchError && error.type === "max-redirect")
    return new PipelineError("E_FETCH", `${error.message} (more than 5 redirects)`);
  return new Retryable(`${networkReason(error)}${suffix}`);
}

/** A network error's reason without node-fetch's "request to <url> failed" preamble (the URL is already said). */
export function networkReason(error: unknown): string {
  return (error as Error).message.replace(/^request to \S+ failed, reason: /, "");
}

function retryAfterMs(header: string | null): number | undefined {
  if (header === null) return undefined;
  if (/^\d+$/.test(header.trim())) return Number(header.trim()) * 1000;
  const date = Date.parse(header);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}

function tooLarge(source: string, size: number, limit: number): PipelineError {
  return new PipelineError("E_FETCH", `${source} is larger than the ${limit}-byte limit (http.max_bytes): ${size} bytes or more`);
}
