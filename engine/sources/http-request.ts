import type { IncomingMessage } from "node:http";
import { pipeline, type Readable, type Transform } from "node:stream";
import type { ZlibOptions } from "node:zlib";

/** What a server answered to one request: its status and headers, and its body decoded, not yet read. */
export interface HttpResponse {
  status: number;
  statusText: string;
  /** A header's value, repeated ones joined with ", " (as fetch's Headers.get does), or null. */
  header(name: string): string | null;
  /** The body, decoded from its Content-Encoding (gzip, deflate, br); empty for HEAD, 204 and 304. */
  body: Readable;
}

/** The request never got an answer (refused, reset, a name that does not resolve): a network error, as opposed to a bad request. */
export class RequestError extends Error {
  constructor(cause: Error) {
    super(cause.message, { cause });
    this.name = "RequestError";
  }
}

/**
 * Sends one request over http(s) and resolves with the answer once its headers are in, without
 * following redirects; the signal aborts it, body included. Asks for a compressed body, as
 * browsers and node-fetch do, and decodes it.
 */
export function httpRequest(
  url: URL,
  options: { method?: "GET" | "HEAD"; headers: Record<string, string>; signal: AbortSignal },
): Promise<HttpResponse> {
  const method = options.method ?? "GET";
  // why: `import "node:http"` builds an ES module facade that reads every export, and its lazy WebSocket export loads
  // undici (about 0.1 s, more than the rest of an unchanged run's modules); the built-in module itself does not.
  const client = url.protocol === "https:" ? process.getBuiltinModule("node:https") : process.getBuiltinModule("node:http");
  return new Promise((resolve, reject) => {
    const request = client.request(
      url,
      { method, headers: { "accept-encoding": "gzip, deflate, br", ...options.headers }, signal: options.signal },
      (response) => {
        const bodiless = method === "HEAD" || response.statusCode === 204 || response.statusCode === 304;
        decoded(response, bodiless ? null : (response.headers["content-encoding"] ?? null)).then(
          (body) =>
            resolve({
              status: response.statusCode ?? 0,
              statusText: response.statusMessage ?? "",
              header: (name) => response.headersDistinct[name.toLowerCase()]?.join(", ") ?? null,
              body,
            }),
          reject,
        );
      },
    );
    request.on("error", (error) => reject(error.name === "AbortError" ? error : new RequestError(error)));
    request.end();
  });
}

/** The response's body decoded from `coding` (as node-fetch decodes it, leniently, as curl and browsers do). */
async function decoded(response: IncomingMessage, coding: string | null): Promise<Readable> {
  const zlib = process.getBuiltinModule("node:zlib");
  const lenient: ZlibOptions = { flush: zlib.constants.Z_SYNC_FLUSH, finishFlush: zlib.constants.Z_SYNC_FLUSH };
  const through = (decoder: Transform) => pipeline(response, decoder, () => undefined);
  if (coding === "gzip" || coding === "x-gzip") return through(zlib.createGunzip(lenient));
  if (coding === "br") return through(zlib.createBrotliDecompress());
  if (coding !== "deflate" && coding !== "x-deflate") return response;
  // why: old servers send raw deflate under "deflate"; the first byte of a zlib stream says which it is.
  const first = await new Promise<Buffer | null>((resolve) => {
    const settle = () => {
      for (const event of ["readable", "end", "error"]) response.off(event, settle);
      resolve(response.read(1) as Buffer | null);
    };
    for (const event of ["readable", "end", "error"]) response.on(event, settle);
  });
  if (first === null) return response;
  response.unshift(first);
  return through((first[0]! & 0x0f) === 0x08 ? zlib.createInflate() : zlib.createInflateRaw());
}
