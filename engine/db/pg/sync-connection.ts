import { MessageChannel, receiveMessageOnPort, Worker } from "node:worker_threads";
import { PipelineError } from "../../errors.js";

/** What a PostgreSQL statement answered: the last statement's rows as arrays, its column names, and its row count. */
export interface PgResult {
  rows: unknown[][];
  fields: string[];
  rowCount: number;
}

/** An error the server reported, with its SQLSTATE and, for a syntax error, the 1-based character position in the statement. */
export class PgServerError extends Error {
  override readonly name = "PgServerError";
  constructor(
    message: string,
    readonly code: string | undefined,
    readonly position: number | undefined,
    readonly detail: string | undefined,
  ) {
    super(message);
  }
}

/**
 * A synchronous connection to a PostgreSQL server. The `pg` client runs in a worker thread; each
 * call posts a request and blocks this thread on a shared flag until the worker answers, so the
 * engine's database interface stays synchronous for every engine (sql.js and node:sqlite are).
 */
export interface SyncPgConnection {
  query(sql: string, params?: readonly unknown[]): PgResult;
  /** Runs `COPY … FROM STDIN` with `data` as its input (text or CSV, as the statement says). */
  copyIn(sql: string, data: string): number;
  close(): void;
}

/** Opens a connection; a server that does not answer within `timeoutMs` (or a wrong URL) is an E_DB error naming the URL without its password. */
export function connectSync(url: string, options: { timeoutMs: number; shownUrl: string }): SyncPgConnection {
  const flag = new SharedArrayBuffer(4);
  const signal = new Int32Array(flag);
  const { port1, port2 } = new MessageChannel();
  const file = new URL(import.meta.url.endsWith(".ts") ? "./pg-worker.ts" : "./pg-worker.js", import.meta.url);
  const worker = new Worker(file, { workerData: { flag, port: port2 }, transferList: [port2] });
  worker.unref();
  let closed = false;

  const call = (request: Record<string, unknown>, timeoutMs: number): unknown => {
    if (closed) throw new PipelineError("E_DB", `the connection to ${options.shownUrl} is closed`);
    Atomics.store(signal, 0, 0);
    port1.postMessage(request);
    const waited = Atomics.wait(signal, 0, 0, timeoutMs);
    const reply = receiveMessageOnPort(port1)?.message as
      | { ok: true; result: unknown }
      | { ok: false; error: { message: string; code?: string; position?: string; detail?: string } }
      | undefined;
    if (waited === "timed-out" || reply === undefined) {
      terminate();
      throw new PipelineError("E_DB", `${options.shownUrl}: no answer within ${timeoutMs} ms (${String(request["kind"])})`);
    }
    if (!reply.ok) {
      const { message, code, position, detail } = reply.error;
      throw new PgServerError(message, code, position === undefined ? undefined : Number(position), detail);
    }
    return reply.result;
  };
  const terminate = () => {
    closed = true;
    port1.close();
    void worker.terminate();
  };

  try {
    call({ kind: "connect", url, connectTimeoutMs: options.timeoutMs }, options.timeoutMs + 1000);
  } catch (error) {
    terminate();
    if (error instanceof PipelineError) throw error;
    throw new PipelineError("E_DB", `cannot connect to ${options.shownUrl}: ${(error as Error).message}`, { cause: error });
  }
  // why: a statement may wait for a lock held by another session; the session's lock timeout bounds it, not this one.
  const statementTimeoutMs = 24 * 3600 * 1000;
  return {
    query: (sql, params = []) => call({ kind: "query", sql, params: [...params] }, statementTimeoutMs) as PgResult,
    copyIn: (sql, data) => (call({ kind: "copy", sql, data }, statementTimeoutMs) as { rowCount: number }).rowCount,
    close() {
      if (closed) return;
      try {
        call({ kind: "close" }, 5000);
      } finally {
        terminate();
      }
    },
  };
}
