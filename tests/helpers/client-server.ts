import { readFileSync } from "node:fs";
import path from "node:path";
import { startServer, type TestServer } from "./http-server.js";
import { clientFixtures, Workspace } from "./workspace.js";

/** A test's own workspace and a local HTTP server serving the client's three files. */
export interface ClientServer {
  server: TestServer;
  ws: Workspace;
  /** The pipeline's URL variables, pointing at the server. */
  env: Record<string, string>;
  /** Removes the workspace and stops the server. */
  close(): Promise<void>;
}

/** Starts a server on a free local port serving produits.csv, magasins.csv and ventes.csv, byte-exact, and a fresh workspace. */
export async function serveClientData(): Promise<ClientServer> {
  const server = await startServer();
  for (const name of ["produits", "magasins", "ventes"])
    server.file(`/${name}.csv`, readFileSync(path.join(clientFixtures, `${name}.csv`)));
  const ws = new Workspace();
  const env = { PRODUCTS_URL: server.url("/produits.csv"), STORES_URL: server.url("/magasins.csv"), SALES_URL: server.url("/ventes.csv") };
  return {
    server,
    ws,
    env,
    close: async () => {
      ws.remove();
      await server.close();
    },
  };
}
