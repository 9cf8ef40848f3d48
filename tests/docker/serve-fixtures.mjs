// A static file server for the Docker end-to-end test: serves a directory on 127.0.0.1 at a free
// port and prints the port (FIXTURES_HOST and FIXTURES_PORT choose others, for a container). `/slow/<file>` sends the same file a few bytes at a time over ~8 s,
// so a run can be killed while it is in progress.
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import path from "node:path";

const root = path.resolve(process.argv[2] ?? ".");
const server = createServer(async (request, response) => {
  const url = new URL(request.url ?? "/", "http://x");
  const slow = url.pathname.startsWith("/slow/");
  const name = path.basename(url.pathname);
  let body;
  try {
    body = await readFile(path.join(root, name));
  } catch {
    response.writeHead(404).end("not found");
    return;
  }
  response.writeHead(200, { "content-type": "text/csv", "content-length": body.length });
  if (!slow) return void response.end(body);
  let offset = 0;
  const step = Math.max(1, Math.ceil(body.length / 80));
  const timer = setInterval(() => {
    if (response.destroyed || offset >= body.length) {
      clearInterval(timer);
      response.end();
      return;
    }
    response.write(body.subarray(offset, offset + step));
    offset += step;
  }, 100);
});
server.listen(Number(process.env["FIXTURES_PORT"] ?? 0), process.env["FIXTURES_HOST"] ?? "127.0.0.1", () =>
  console.log(server.address().port),
);
process.on("SIGTERM", () => server.close(() => process.exit(0)));
