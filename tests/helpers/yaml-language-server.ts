import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { root } from "./workspace.js";

/** One diagnostic as the YAML language server publishes it (LSP positions are 0-based). */
export interface LspDiagnostic {
  message: string;
  severity?: number;
  range: { start: { line: number; character: number }; end: { line: number; character: number } };
}

/**
 * Opens a YAML file in the real `yaml-language-server` (the npm package, over stdio with LSP
 * JSON-RPC: initialize, initialized, didOpen) and returns the diagnostics it publishes for it once
 * they settle. The file's own `# yaml-language-server: $schema=` line names the schema.
 */
export async function yamlDiagnostics(file: string, settleMs = 1500, timeoutMs = 30_000): Promise<LspDiagnostic[]> {
  const server = spawn(process.execPath, [path.join(root, "node_modules/yaml-language-server/bin/yaml-language-server"), "--stdio"], {
    stdio: ["pipe", "pipe", "pipe"],
  });
  const uri = pathToFileURL(file).href;
  let nextId = 1;
  const send = (message: object) => {
    const body = Buffer.from(JSON.stringify({ jsonrpc: "2.0", ...message }), "utf8");
    server.stdin.write(`Content-Length: ${body.length}\r\n\r\n`);
    server.stdin.write(body);
  };
  const request = (method: string, params: unknown) => send({ id: nextId++, method, params });
  const notify = (method: string, params: unknown) => send({ method, params });
  const settings = { yaml: { validate: true, hover: true, completion: true, schemaStore: { enable: false }, schemas: {} } };

  try {
    return await new Promise<LspDiagnostic[]>((resolve, reject) => {
      let buffer = Buffer.alloc(0);
      let latest: LspDiagnostic[] | undefined;
      let settle: NodeJS.Timeout | undefined;
      const timeout = setTimeout(
        () => reject(new Error(`yaml-language-server published no diagnostics for ${file} in ${timeoutMs} ms`)),
        timeoutMs,
      );
      server.on("error", reject);
      server.on("exit", (code) => reject(new Error(`yaml-language-server exited (${code}) before publishing diagnostics`)));
      server.stdout.on("data", (chunk: Buffer) => {
        buffer = Buffer.concat([buffer, chunk]);
        for (;;) {
          const headerEnd = buffer.indexOf("\r\n\r\n");
          if (headerEnd < 0) return;
          const length = Number(/Content-Length: (\d+)/i.exec(buffer.subarray(0, headerEnd).toString())?.[1]);
          if (buffer.length < headerEnd + 4 + length) return;
          const message = JSON.parse(buffer.subarray(headerEnd + 4, headerEnd + 4 + length).toString("utf8")) as {
            id?: number;
            method?: string;
            params?: { uri?: string; diagnostics?: LspDiagnostic[]; items?: unknown[] };
          };
          buffer = buffer.subarray(headerEnd + 4 + length);
          // why: the server asks the client things (its settings, capability registrations); an unanswered request can stall it.
          if (message.id !== undefined && message.method !== undefined) {
            const result = message.method === "workspace/configuration" ? (message.params?.items ?? []).map(() => settings.yaml) : null;
            send({ id: message.id, result });
          } else if (message.id === 1 && message.method === undefined) {
            notify("initialized", {});
            notify("workspace/didChangeConfiguration", { settings });
            notify("textDocument/didOpen", { textDocument: { uri, languageId: "yaml", version: 1, text: readFileSync(file, "utf8") } });
          } else if (message.method === "textDocument/publishDiagnostics" && message.params?.uri === uri) {
            latest = message.params.diagnostics ?? [];
            clearTimeout(settle);
            settle = setTimeout(() => {
              clearTimeout(timeout);
              resolve(latest!);
            }, settleMs);
          }
        }
      });
      request("initialize", {
        processId: process.pid,
        rootUri: pathToFileURL(path.dirname(file)).href,
        capabilities: {},
        workspaceFolders: null,
      });
    });
  } finally {
    server.kill();
  }
}
