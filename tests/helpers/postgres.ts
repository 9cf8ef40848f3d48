import { execFileSync, spawnSync } from "node:child_process";
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir, userInfo } from "node:os";
import path from "node:path";

/** A throwaway PostgreSQL cluster on 127.0.0.1 and a random port, started by a test and stopped by it. */
export interface TestPostgres {
  /** postgres://postgres@127.0.0.1:PORT/postgres (trust authentication on loopback only). */
  url: string;
  port: number;
  /** A URL for a new, empty database of the cluster. */
  createDatabase(name: string): string;
  /** Runs SQL with the real psql client; returns its output (unaligned, no header, `|` between columns). */
  psql(database: string, sql: string): string;
  /** Stops the server as a crash would (`-m immediate`: no checkpoint, recovery at the next start) and starts it again. */
  crashAndRestart(): void;
  stop(): void;
}

/** The directory holding initdb and pg_ctl (Debian's postgresql package), or undefined when the server is not installed. */
export function postgresBinDir(): string | undefined {
  const root = "/usr/lib/postgresql";
  if (!existsSync(root)) return undefined;
  const versions = readdirSync(root)
    .filter((version) => existsSync(path.join(root, version, "bin", "initdb")))
    .sort((a, b) => Number(b) - Number(a));
  return versions[0] === undefined ? undefined : path.join(root, versions[0], "bin");
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => resolve(typeof address === "object" && address ? address.port : 0));
    });
  });
}

/**
 * Starts a cluster in a temporary directory: initdb, then pg_ctl start listening on 127.0.0.1 only.
 * As root, the server runs as the `postgres` user (PostgreSQL refuses to run as root).
 */
/** `settings`: more server settings (`name=value`), e.g. `max_prepared_transactions=5` for two-phase commit. */
export async function startPostgres(options: { maxConnections?: number; settings?: string[] } = {}): Promise<TestPostgres> {
  const bin = postgresBinDir();
  if (!bin) throw new Error("PostgreSQL is not installed (apt-get install postgresql); .ci/run installs it");
  const asRoot = userInfo().uid === 0;
  const dir = mkdtempSync(path.join(tmpdir(), "pipeline-pg-"));
  if (asRoot) {
    const uid = Number(execFileSync("id", ["-u", "postgres"], { encoding: "utf8" }).trim());
    const gid = Number(execFileSync("id", ["-g", "postgres"], { encoding: "utf8" }).trim());
    chownSync(dir, uid, gid);
  }
  const run = (tool: string, args: string[]) => {
    const command = asRoot ? "runuser" : path.join(bin, tool);
    const argv = asRoot ? ["-u", "postgres", "--", path.join(bin, tool), ...args] : args;
    const result = spawnSync(command, argv, { encoding: "utf8", cwd: dir });
    if (result.status !== 0) throw new Error(`${tool} ${args.join(" ")} failed: ${result.stderr || result.stdout}`);
  };
  const data = path.join(dir, "data");
  run("initdb", ["-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"]);
  const port = await freePort();
  const settings = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=${options.maxConnections ?? 40}${(options.settings ?? []).map((setting) => ` -c ${setting}`).join("")}`;
  run("pg_ctl", ["-D", data, "-o", settings, "-l", path.join(dir, "server.log"), "-w", "-t", "30", "start"]);
  const url = (database: string) => `postgres://postgres@127.0.0.1:${port}/${database}`;
  const psql = (database: string, sql: string) =>
    execFileSync(path.join(bin, "psql"), ["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url(database), "-c", sql], {
      encoding: "utf8",
    }).trimEnd();
  let stopped = false;
  return {
    url: url("postgres"),
    port,
    createDatabase(name) {
      psql("postgres", `CREATE DATABASE "${name.replaceAll('"', '""')}"`);
      return url(name);
    },
    psql,
    crashAndRestart() {
      run("pg_ctl", ["-D", data, "-m", "immediate", "-w", "stop"]);
      run("pg_ctl", ["-D", data, "-o", settings, "-l", path.join(dir, "server.log"), "-w", "-t", "30", "start"]);
    },
    stop() {
      if (stopped) return;
      stopped = true;
      try {
        run("pg_ctl", ["-D", data, "-m", "immediate", "-w", "stop"]);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}
