# The runner image (target `runner`) and the storage image with the sqlite3 CLI (target `sqlite3`).
# Build both with `docker compose build`. Base images are Debian-based on purpose (see README).

# --- build: compile the TypeScript, then bundle the command (bin/build.js) ------------------
FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# why: bin/ is a workspace (the `pipeline` command for npx); npm ci needs its package.json.
COPY bin bin
# why: --ignore-scripts skips the `node` devDependency's download; this image already is Node 24.
RUN npm ci --no-audit --no-fund --ignore-scripts
COPY tsconfig.json tsconfig.build.json ./
COPY engine engine
COPY steps steps
RUN node bin/build.js

# --- deps: production dependencies only ---------------------------------------------------
FROM node:24-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
COPY bin bin
# why: sql.js ships a dozen builds (browser, asm.js, debug); Node loads only sql-wasm.js and its .wasm.
RUN npm ci --omit=dev --no-audit --no-fund --ignore-scripts && rm -rf /root/.npm \
 && find node_modules/sql.js/dist -type f ! -name sql-wasm.js ! -name sql-wasm.wasm -delete

# --- runner: what runs the pipeline --------------------------------------------------------
FROM node:24-bookworm-slim AS runner
ENV NODE_ENV=production \
    DB_PATH=/data/sales.db
WORKDIR /app
# why: the runtime needs node only; npm is not shipped, nor any compiler.
RUN rm -rf /usr/local/lib/node_modules/npm /usr/local/bin/npm /usr/local/bin/npx \
 && mkdir -p /data && chown node:node /data
COPY --from=deps /app/node_modules node_modules
COPY --from=build /app/dist dist
COPY package.json pipeline.yaml ./
COPY sql sql
COPY data data
COPY docker/runner-entrypoint.sh /usr/local/bin/runner-entrypoint
USER node
ENTRYPOINT ["node", "/app/dist/engine/cli.js"]
CMD ["run"]

# --- sqlite3: the storage service, with the SQLite CLI --------------------------------------
FROM debian:bookworm-slim AS sqlite3
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends sqlite3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 1000 sqlite && useradd --uid 1000 --gid sqlite --create-home sqlite \
 && mkdir -p /data && chown sqlite:sqlite /data \
 && printf '.timeout 60000\n' > /home/sqlite/.sqliterc && chown sqlite:sqlite /home/sqlite/.sqliterc
# why: with the native engine a run holds SQLite's write lock while it runs; the CLI (sqlite3-admin) waits up to 60 s for it instead of failing at once.
COPY docker/healthcheck.sh /usr/local/bin/healthcheck
ENV DB_PATH=/data/sales.db
USER sqlite
WORKDIR /data
# why: a long-running service, so `docker compose exec sqlite3 sqlite3 /data/sales.db` opens the CLI.
CMD ["sleep", "infinity"]

# --- postgres: the server of the `postgres` compose profile (Debian's PostgreSQL 15) --------
FROM debian:bookworm-slim AS postgres
# why: uid 1000 like the other services; created before the package so that its postinst reuses it. No cluster is
# made at install time (createcluster.conf): the entry point makes one on the named volume at first start.
RUN groupadd --gid 1000 postgres && useradd --uid 1000 --gid postgres --home-dir /var/lib/postgresql --create-home postgres \
 && mkdir -p /etc/postgresql-common && printf 'create_main_cluster = false\n' > /etc/postgresql-common/createcluster.conf \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/postgresql/data /run/postgresql \
 && chown postgres:postgres /var/lib/postgresql/data /run/postgresql && chmod 0700 /var/lib/postgresql/data
COPY docker/postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint
ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data/cluster
USER postgres
WORKDIR /var/lib/postgresql
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint"]
