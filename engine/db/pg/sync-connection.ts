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
  /** Runs `COPY … FROM STDIN` with `data` as its input (text or CSV, as the statement says); bytes are handed over, not copied. */
  copyIn(sql: string, data: string | Uint8Array): number;
  /**
   * Sends a script and returns at once, so that this thread works on while the server runs it;
   * the next call waits for it first, and {@link collect} gives its outcome.
   */
  send(script: ScriptStep[]): void;
  /** The outcome of the script last sent (waiting for it if need be). */
  collect(): ScriptOutcome;
  close(): void;
}

/** One statement of a script: COPY input when `data` is given; `onError` runs (to undo) when it fails, and the script stops. */
export interface ScriptStep {
  sql: string;
  data?: string | Uint8Array;
  onError?: string;
}

/** What a script did: each statement's row count, or the step that failed and its error. */
export type ScriptOutcome = { ok: true; rowCounts: number[] } | { ok: false; failedAt: number; error: PgServerError };

/** Opens a connection; a server that does not answer within `timeoutMs` (or a wrong URL) is an E_DB error naming the URL without its password. */
export function connectSync(url: string, options: { timeoutMs: number; shownUrl: string }): SyncPgConnection {
  const flag = new SharedArrayBuffer(4);
  const signal = new Int32Array(flag);
  const { port1, port2 } = new MessageChannel();
  const file = new URL(import.meta.url.endsWith(".ts") ? "./pg-worker.ts" : "./pg-worker.js", import.meta.url);
  const worker = new Worker(file, { workerData: { flag, port: port2 }, transferList: [port2] });
  worker.unref();
  let closed = false;
  let sent: { kind: string } | undefined;
  let outcome: ScriptOutcome | undefined;

  /** Waits for the answer to the request already posted. */
  const answer = (request: Record<string, unknown>, timeoutMs: number): unknown => {
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
  const call = (request: Record<string, unknown>, timeoutMs: number, transfer: ArrayBuffer[] = []): unknown => {
    if (closed) throw new PipelineError("E_DB", `the connection to ${options.shownUrl} is closed`);
    if (sent) receive();
    Atomics.store(signal, 0, 0);
    port1.postMessage(request, transfer);
    return answer(request, timeoutMs);
  };
  const receive = () => {
    const request = sent!;
    sent = undefined;
    try {
      outcome = { ok: true, rowCounts: answer(request, statementTimeoutMs) as number[] };
    } catch (error) {
      if (!(error instanceof PgServerError)) throw error;
      outcome = { ok: false, failedAt: Number(/^step (\d+): /.exec(error.message)?.[1] ?? -1), error: withoutStep(error) };
    }
  };
  // why: a statement may wait for a lock held by another session; the session's lock timeout bounds it, not this one.
  const statementTimeoutMs = 24 * 3600 * 1000;
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
  return {
    query: (sql, params = []) => call({ kind: "query", sql, params: [...params] }, statementTimeoutMs) as PgResult,
    copyIn: (sql, data) => (call({ kind: "copy", sql, data }, statementTimeoutMs, handedOver([data])) as { rowCount: number }).rowCount,
    send(script) {
      if (closed) throw new PipelineError("E_DB", `the connection to ${options.shownUrl} is closed`);
      if (sent) receive();
      outcome = undefined;
      sent = { kind: "script" };
      Atomics.store(signal, 0, 0);
      port1.postMessage({ kind: "script", script }, handedOver(script.map((step) => step.data)));
    },
    collect() {
      if (sent) receive();
      if (!outcome) throw new Error("collect: no script was sent");
      const result = outcome;
      outcome = undefined;
      return result;
    },
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

/**
 * The buffers of COPY input given as bytes, moved to the worker rather than copied (a batch's
 * memory is then held once, by whichever thread has it); each must own its whole ArrayBuffer.
 */
function handedOver(data: readonly (string | Uint8Array | undefined)[]): ArrayBuffer[] {
  return data.filter((d): d is Uint8Array => d instanceof Uint8Array).map((d) => d.buffer as ArrayBuffer);
}

/** The server's error without the worker's `step N: ` prefix. */
function withoutStep(error: PgServerError): PgServerError {
  return new PgServerError(error.message.replace(/^step \d+: /, ""), error.code, error.position, error.detail);
}
