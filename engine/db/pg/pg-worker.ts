import { parentPort, workerData } from "node:worker_threads";
import type { MessagePort } from "node:worker_threads";
import pg from "pg";
import copyStreams from "pg-copy-streams";

// The PostgreSQL client's own thread: it runs `pg` (asynchronous) and answers the runner's
// thread, which waits on a shared flag (see sync-connection.ts). Self-contained on purpose: it is
// loaded as TypeScript by Node's type stripping under the tests, and compiled in dist/.

interface Request {
  kind: "connect" | "query" | "copy" | "script" | "close";
  script?: { sql: string; data?: string | Uint8Array; onError?: string }[];
  url?: string;
  sql?: string;
  params?: unknown[];
  data?: string | Uint8Array;
  connectTimeoutMs?: number;
}

const { flag, port } = workerData as { flag: SharedArrayBuffer; port: MessagePort };
const signal = new Int32Array(flag);
let client: pg.Client | undefined;

// why: int8 (count, sums of bigint columns) fits a JS number in practice; numeric is a decimal the
// engine only ever stores into real columns; a date stays the ISO text SQLite holds.
pg.types.setTypeParser(20, (text: string) => {
  const value = Number(text);
  return Number.isSafeInteger(value) ? value : BigInt(text);
});
pg.types.setTypeParser(1700, (text: string) => Number(text));
// why: a boolean reads as SQLite holds it (1/0), so a stored row compares equal to a new one.
pg.types.setTypeParser(16, (text: string) => (text === "t" ? 1 : 0));
pg.types.setTypeParser(1082, (text: string) => text);
pg.types.setTypeParser(1114, (text: string) => text);
pg.types.setTypeParser(1184, (text: string) => text);

async function copy(sql: string, data: string | Uint8Array): Promise<number> {
  const stream = client!.query(copyStreams.from(sql));
  await new Promise<void>((resolve, reject) => {
    stream.on("error", reject);
    stream.on("finish", () => resolve());
    stream.end(data);
  });
  return Number((stream as unknown as { rowCount?: number }).rowCount ?? 0);
}

function answer(message: unknown): void {
  port.postMessage(message);
  Atomics.store(signal, 0, 1);
  Atomics.notify(signal, 0);
}

function describe(error: unknown) {
  const e = error as Error & { code?: string; position?: string; detail?: string; hint?: string };
  return { message: e.message, code: e.code, position: e.position, detail: e.detail, hint: e.hint };
}

async function handle(request: Request): Promise<unknown> {
  switch (request.kind) {
    case "connect": {
      client = new pg.Client({ connectionString: request.url, connectionTimeoutMillis: request.connectTimeoutMs ?? 10_000 });
      client.on("error", () => undefined);
      await client.connect();
      return null;
    }
    case "query": {
      const result = await client!.query({ text: request.sql!, values: request.params ?? [], rowMode: "array" });
      const last = Array.isArray(result) ? result[result.length - 1] : result;
      return { rows: last.rows ?? [], fields: (last.fields ?? []).map((f: { name: string }) => f.name), rowCount: last.rowCount ?? 0 };
    }
    case "copy":
      return { rowCount: await copy(request.sql!, request.data ?? "") };
    case "script": {
      // why: statements run one after the other; the first that fails runs its undo and stops the script, named by its index.
      const rowCounts: number[] = [];
      for (const [i, step] of request.script!.entries()) {
        try {
          rowCounts.push(
            step.data === undefined ? (((await client!.query(step.sql)) as pg.QueryResult).rowCount ?? 0) : await copy(step.sql, step.data),
          );
        } catch (error) {
          if (step.onError) await client!.query(step.onError);
          (error as Error).message = `step ${i}: ${(error as Error).message}`;
          throw error;
        }
      }
      return rowCounts;
    }
    case "close": {
      await client?.end();
      client = undefined;
      return null;
    }
  }
}

port.on("message", (request: Request) => {
  handle(request).then(
    (result) => answer({ ok: true, result }),
    (error: unknown) => answer({ ok: false, error: describe(error) }),
  );
});
parentPort?.postMessage("ready");
