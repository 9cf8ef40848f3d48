import { constants, type Stats } from "node:fs";
import { open, stat, type FileHandle } from "node:fs/promises";
import path from "node:path";
import type { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import type { Response } from "node-fetch";
import { httpSchema, type HttpOptions } from "../config/schema.js";
import { clip, PipelineError, redactCredentials } from "../errors.js";
import type { BodySink } from "./spool.js";

/** HTTP settings with their defaults applied. */
export type HttpSettings = Required<HttpOptions>;

/** The defaults of the `http:` options of a load step, as the schema declares them. */
export const httpDefaults: HttpSettings = Object.fromEntries(
  Object.entries(httpSchema.properties).map(([name, option]) => [name, option.default]),
) as unknown as HttpSettings;

/** What a source answered. */
export type FetchResult =
  | { kind: "not_modified" }
  | {
      kind: "body";
      bytes: Uint8Array;
      etag: string | null;
      lastModified: string | null;
      contentType: string | null;
      /** The URL the body came from, credentials masked, when a redirect led to another host. */
      redirectedTo?: string | undefined;
    };

/** What a source answered, its body given to a {@link BodySink} instead of kept. */
export type FetchedHead = { kind: "not_modified" } | (Omit<Extract<FetchResult, { kind: "body" }>, "bytes"> & { size: number });

/** Validators remembered from the previous fetch, for a conditional GET. */
export interface Validators {
  etag: string | null;
  lastModified: string | null;
}

/** Whether a source string is an http(s) URL rather than a local path. */
export function isUrl(source: string): boolean {
  return /^https?:\/\//i.test(source);
}

/**
 * Reads a source: an http(s) URL (with timeouts, retries, a total deadline and a size limit) or a
 * regular file at a path relative to `baseDir`. Either is read as a stream, the size limit applied
 * while reading, and the run's signal stops it.
 */
export async function fetchSource(
  source: string,
  options: { baseDir: string; http: HttpSettings; previous?: Validators | undefined; signal?: AbortSignal | undefined },
): Promise<FetchResult> {
  let chunks: Uint8Array[] = [];
  const head = await fetchSourceInto(source, options, { reset: () => (chunks = []), write: (chunk) => chunks.push(chunk) });
  if (head.kind === "not_modified") return head;
  const { size, ...rest } = head;
  return { ...rest, bytes: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size) };
}

/** Reads a source as {@link fetchSource} does, handing its body to `sink` chunk by chunk, so that the caller need not hold it. */
export async function fetchSourceInto(
  source: string,
  options: { baseDir: string; http: HttpSettings; previous?: Validators | undefined; signal?: AbortSignal | undefined },
  sink: BodySink,
): Promise<FetchedHead> {
  if (isUrl(source)) return fetchHttp(source, options.http, options.previous, options.signal, sink);
  return readLocalSource(path.resolve(options.baseDir, source), options.http.max_bytes, options.signal, sink);
}

/** The URL to request, without the credentials it may carry, and those credentials as a Basic `Authorization` header. */
export function requestTarget(source: string): { url: string; authorization: string | undefined } {
  let url: URL;
  try {
    url = new URL(source);
  } catch {
    throw new PipelineError("E_FETCH", `${redactCredentials(source)} is not a valid URL`);
  }
  if (url.username === "" && url.password === "") return { url: url.href, authorization: undefined };
  const credentials = `${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`;
  url.username = "";
  url.password = "";
  return { url: url.href, authorization: `Basic ${Buffer.from(credentials).toString("base64")}` };
}

/** Bytes read from a local file per call. */
const readChunkBytes = 1024 * 1024;

async function readLocalSource(file: string, maxBytes: number, signal: AbortSignal | undefined, sink: BodySink): Promise<FetchedHead> {
  if (signal?.aborted) throw aborted(file);
  let handle: FileHandle;
  try {
    // why: O_NONBLOCK, so that opening a FIFO cannot wait for a writer; it changes nothing for a regular file.
    handle = await open(file, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (error) {
    throw await unreadable(file, error);
  }
  try {
    const stats = await handle.stat();
    if (!stats.isFile()) throw notRegular(file, stats);
    if (stats.size > maxBytes) throw tooLarge(file, stats.size, maxBytes);
    sink.reset();
    let size = 0;
    for (let length = Math.min(stats.size + 1, maxBytes + 1, readChunkBytes); ; length = Math.min(readChunkBytes, maxBytes + 1 - size)) {
      if (signal?.aborted) throw aborted(file);
      const buffer = Buffer.allocUnsafeSlow(Math.max(length, 1));
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, null);
      if (bytesRead === 0) break;
      size += bytesRead;
      // why: a file may grow while it is read; the limit holds whatever its size said.
      if (size > maxBytes) throw tooLarge(file, size, maxBytes);
      sink.write(bytesRead === buffer.length ? buffer : buffer.subarray(0, bytesRead));
    }
    return { kind: "body", size, etag: null, lastModified: null, contentType: null };
  } catch (error) {
    if (error instanceof PipelineError) throw error;
    throw await unreadable(file, error);
  } finally {
    await handle.close();
  }
}

async function unreadable(file: string, error: unknown): Promise<PipelineError> {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === "ENOENT") return new PipelineError("E_FETCH", `cannot read ${file}: no such file`);
  // why: opening a socket fails (ENXIO) before it could be examined; say what it is.
  if (code === "ENXIO") {
    const stats = await stat(file).catch(() => undefined);
    if (stats && !stats.isFile()) return notRegular(file, stats);
  }
  return new PipelineError("E_FETCH", `cannot read ${file}: ${(error as Error).message}`);
}

function notRegular(file: string, stats: Stats): PipelineError {
  const kind = stats.isDirectory()
    ? "a directory"
    : stats.isFIFO()
      ? "a FIFO (named pipe)"
      : stats.isCharacterDevice()
        ? "a character device"
        : stats.isBlockDevice()
          ? "a block device"
          : stats.isSocket()
            ? "a socket"
            : "something else";
  return new PipelineError("E_FETCH", `${file} is ${kind}, not a regular file; a source must be a CSV file (or an http(s) URL)`);
}

class Retryable extends Error {
  constructor(
    message: string,
    readonly waitMs?: number,
  ) {
    super(message);
  }
}

let httpClient: Promise<typeof import("node-fetch")> | undefined;

/** node-fetch, loaded once, for every request the runner makes; runs that fetch nothing never load it. */
export function loadHttpClient(): Promise<typeof import("node-fetch")> {
  if (httpClient) return httpClient;
  withoutUndiciInHttpExports();
  return (httpClient = import("node-fetch"));
}

/**
 * why: node-fetch imports `node:http` as an ES module. The module Node makes for it reads every
 * enumerable property of `node:http`, and three of them (WebSocket, CloseEvent, MessageEvent) are
 * getters that load undici, Node's own fetch, for classes nothing here uses: 0.025-0.03 s of every
 * run that fetches, on a quiet machine. Made non-enumerable before that module is made, they stay
 * what they were for whoever reads them (`http.WebSocket`); only an ES module's named import of
 * them would miss them.
 */
function withoutUndiciInHttpExports(): void {
  const http = process.getBuiltinModule?.("node:http") as unknown as Record<string, unknown> | undefined;
  if (!http) return;
  for (const name of ["WebSocket", "CloseEvent", "MessageEvent"]) {
    const property = Object.getOwnPropertyDescriptor(http, name);
    if (property?.get && property.enumerable && property.configurable)
      Object.defineProperty(http, name, { ...property, enumerable: false });
  }
}

async function fetchHttp(
  source: string,
  http: HttpSettings,
  previous: Validators | undefined,
  signal: AbortSignal | undefined,
  sink: BodySink,
): Promise<FetchedHead> {
  const shown = redactCredentials(source);
  const target = requestTarget(source);
  const deadline = performance.now() + http.total_timeout_ms;
  const failures: string[] = [];
  for (let attempt = 0; ; attempt++) {
    try {
      return await attemptHttp(target, shown, http, previous, signal, deadline, sink);
    } catch (error) {
      if (!(error instanceof Retryable)) throw error;
      failures.push(error.message);
      const tries = attempt + 1;
      const failed = `GET ${shown} failed after ${tries} attempt${tries > 1 ? "s" : ""}: ${failures.join("; ")}`;
      if (attempt >= http.retries) throw new PipelineError("E_FETCH", failed);
      const backoff = Math.min(http.max_backoff_ms, http.backoff_ms * 2 ** attempt);
      const wait = error.waitMs ?? backoff;
      if (wait > http.max_backoff_ms) {
        throw new PipelineError(
          "E_FETCH",
          `GET ${shown} -> ${error.message}; the server asks to retry in ${Math.ceil(wait / 1000)} s, longer than http.max_backoff_ms (${http.max_backoff_ms})`,
        );
      }
      if (performance.now() + wait >= deadline) {
        throw new PipelineError(
          "E_FETCH",
          `${failed}; no time left for another attempt within ${http.total_timeout_ms} ms (http.total_timeout_ms)`,
        );
      }
      try {
        await sleep(wait, undefined, { signal });
      } catch {
        throw aborted(shown);
      }
    }
  }
}

/** Redirects followed at most, per attempt. */
const maxRedirects = 5;

async function attemptHttp(
  target: { url: string; authorization: string | undefined },
  shown: string,
  http: HttpSettings,
  previous: Validators | undefined,
  signal: AbortSignal | undefined,
  deadline: number,
  sink: BodySink,
): Promise<FetchedHead> {
  if (signal?.aborted) throw aborted(shown);
  const controller = new AbortController();
  // why: which of the three ways to stop fired decides the error: the run's signal, the deadline, or silence.
  let stoppedBy: "signal" | "deadline" | "silence" | undefined;
  const stop = (reason: typeof stoppedBy) => () => {
    stoppedBy ??= reason;
    controller.abort();
  };
  const onSignal = stop("signal");
  signal?.addEventListener("abort", onSignal, { once: true });
  const deadlineTimer = setTimeout(stop("deadline"), Math.max(0, deadline - performance.now()));
  let silenceTimer = setTimeout(stop("silence"), http.timeout_ms);
  const responses: Response[] = [];
  let size = 0;
  let complete = false;
  const failure = (error: unknown, when = ""): Error => {
    const suffix = when ? ` ${when}` : "";
    if (stoppedBy === "signal" || signal?.aborted) return aborted(shown);
    if (stoppedBy === "deadline") {
      return new PipelineError(
        "E_FETCH",
        `GET ${shown} not finished within ${http.total_timeout_ms} ms (http.total_timeout_ms); ${size} bytes received; raise http.total_timeout_ms if this source needs longer`,
      );
    }
    if (stoppedBy === "silence" || (error as Error).name === "AbortError")
      return new Retryable(`no answer within ${http.timeout_ms} ms${suffix}`);
    return new Retryable(`${networkReason(error)}${suffix}`);
  };
  try {
    const { default: fetch, FetchError } = await loadHttpClient();
    const source = new URL(target.url);
    let url = source;
    let authorization = target.authorization;
    let response: Response;
    for (let redirects = 0; ; redirects++) {
      const headers: Record<string, string> = { accept: "text/csv, text/plain;q=0.9, */*;q=0.1", "user-agent": "pipeline-runner" };
      if (previous?.etag) headers["if-none-match"] = previous.etag;
      if (previous?.lastModified) headers["if-modified-since"] = previous.lastModified;
      if (authorization) headers["authorization"] = authorization;
      try {
        response = await fetch(url.href, { headers, signal: controller.signal, redirect: "manual", compress: true });
      } catch (error) {
        if (!(error instanceof FetchError) && stoppedBy === undefined && (error as Error).name !== "AbortError") {
          throw new PipelineError("E_FETCH", `GET ${shownUrl(url, source, shown)}: ${(error as Error).message}`);
        }
        throw failure(error);
      }
      responses.push(response);
      const location = response.headers.get("location");
      if (![301, 302, 303, 307, 308].includes(response.status) || location === null) break;
      discard(response);
      const status = `GET ${shownUrl(url, source, shown)} -> ${response.status} redirect`;
      if (redirects >= maxRedirects)
        throw new PipelineError("E_FETCH", `${status}: maximum redirect reached (more than ${maxRedirects} redirects)`);
      let next: URL;
      try {
        next = new URL(location, url);
      } catch {
        throw new PipelineError("E_FETCH", `${status} to an invalid URL: ${JSON.stringify(clip(redactCredentials(location)))}`);
      }
      const refusal = redirectRefusal(source, next, http);
      if (refusal) throw new PipelineError("E_FETCH", `${status} ${refusal}`);
      // why: credentials are for the source's host; a redirect elsewhere does not take them along.
      if (next.hostname !== source.hostname) authorization = undefined;
      if (next.username !== "" || next.password !== "") {
        const stripped = requestTarget(next.href);
        authorization = stripped.authorization;
        next = new URL(stripped.url);
      }
      url = next;
    }
    if (response.status === 304 && previous) return { kind: "not_modified" };
    const statusText = clip(response.statusText, 100);
    if (response.status === 429 || response.status >= 500) {
      throw new Retryable(`${response.status} ${statusText}`, retryAfterMs(response.headers.get("retry-after")));
    }
    if (response.status !== 200)
      throw new PipelineError("E_FETCH", `GET ${shownUrl(url, source, shown)} -> ${response.status} ${statusText}`);
    const declared = Number(response.headers.get("content-length") ?? NaN);
    if (declared > http.max_bytes && !response.headers.get("content-encoding")) throw tooLarge(shown, declared, http.max_bytes);
    sink.reset();
    try {
      for await (const chunk of response.body ?? []) {
        clearTimeout(silenceTimer);
        silenceTimer = setTimeout(stop("silence"), http.timeout_ms);
        size += (chunk as Buffer).length;
        if (size > http.max_bytes) throw tooLarge(shown, size, http.max_bytes);
        sink.write(chunk as Buffer);
      }
    } catch (error) {
      if (error instanceof PipelineError) throw error;
      throw failure(error, `after ${size} bytes of the body`);
    }
    complete = true;
    return {
      kind: "body",
      size,
      etag: response.headers.get("etag"),
      lastModified: response.headers.get("last-modified"),
      contentType: response.headers.get("content-type"),
      redirectedTo: url.hostname === source.hostname ? undefined : redactCredentials(url.href),
    };
  } finally {
    clearTimeout(silenceTimer);
    clearTimeout(deadlineTimer);
    signal?.removeEventListener("abort", onSignal);
    // why: a body left unread keeps its connection open, and the process alive (a 404 that never ends, a refused size).
    if (!complete) for (const response of responses) discard(response);
  }
}

/** Why a redirect from `source` to `next` is not followed, or undefined when it is. */
function redirectRefusal(source: URL, next: URL, http: HttpSettings): string | undefined {
  if (next.protocol !== "http:" && next.protocol !== "https:") {
    return `to a ${next.protocol} URL, refused: a source is only fetched over http(s)`;
  }
  if (next.hostname === source.hostname || http.allow_redirect_hosts.some((host) => host.toLowerCase() === next.hostname)) return undefined;
  return `to ${redactCredentials(next.href)}, another host (${next.hostname}), refused; list it in http.allow_redirect_hosts to follow it`;
}

/** The URL as messages show it: the source as written, or a URL a redirect led to. */
function shownUrl(url: URL, source: URL, shown: string): string {
  return url === source ? shown : redactCredentials(url.href);
}

/** Closes a response's body without reading it, and with it the connection. */
function discard(response: Response): void {
  const body = response.body as Readable | null;
  if (!body || body.destroyed) return;
  // why: node-fetch may still emit an abort error on it; with no listener that would be thrown.
  body.on("error", () => undefined);
  body.destroy();
}

function aborted(source: string): PipelineError {
  return new PipelineError("E_ABORTED", `interrupted while fetching ${source}; nothing was saved`, { exitCode: 130 });
}

/** A network error's reason without node-fetch's "request to <url> failed" preamble (the URL is already said). */
export function networkReason(error: unknown): string {
  return redactCredentials((error as Error).message.replace(/^request to \S+ failed, reason: /, ""));
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
