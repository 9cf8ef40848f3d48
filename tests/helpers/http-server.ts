import { createHash } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

/** Handles one request; `hit` counts earlier requests to the same path (0 for the first). */
export type Route = (request: IncomingMessage, response: ServerResponse, hit: number) => void;

/** A real HTTP server on a free local port. */
export interface TestServer {
  url(path: string): string;
  /** Serves `body` at `path` with an ETag, answering 304 to a matching If-None-Match. */
  file(path: string, body: string | Uint8Array, contentType?: string): void;
  route(path: string, handler: Route): void;
  /** Requests seen per path, with their headers. */
  requests(path: string): IncomingMessage["headers"][];
  /** How many connections are open on the server side now. */
  openConnections(): Promise<number>;
  close(): Promise<void>;
}

/** Starts a server on `host` (127.0.0.1 unless told; any 127.x.y.z is local on Linux), port 0. Unknown paths answer 404. */
export async function startServer(host = "127.0.0.1"): Promise<TestServer> {
  const routes = new Map<string, Route>();
  const seen = new Map<string, IncomingMessage["headers"][]>();
  const server = createServer((request, response) => {
    const path = new URL(request.url ?? "/", "http://x").pathname;
    const list = seen.get(path) ?? [];
    list.push(request.headers);
    seen.set(path, list);
    const route = routes.get(path);
    if (!route) {
      response.writeHead(404, { "content-type": "text/plain" }).end("not found");
      return;
    }
    route(request, response, list.length - 1);
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: (path) => `http://${host}:${port}${path}`,
    file(path, body, contentType = "text/csv") {
      const bytes = typeof body === "string" ? Buffer.from(body, "utf8") : Buffer.from(body);
      const etag = `"${createHash("sha1").update(bytes).digest("hex")}"`;
      routes.set(path, (request, response) => {
        if (request.headers["if-none-match"] === etag) {
          response.writeHead(304, { etag }).end();
          return;
        }
        response.writeHead(200, { "content-type": contentType, "content-length": bytes.length, etag }).end(bytes);
      });
    },
    route: (path, handler) => void routes.set(path, handler),
    requests: (path) => seen.get(path) ?? [],
    openConnections: () =>
      new Promise((resolve, reject) => server.getConnections((error, count) => (error ? reject(error) : resolve(count)))),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
