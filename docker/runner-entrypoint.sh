#!/bin/sh
# The runner under Docker Compose: into the postgres service when the `postgres` profile runs it (its
# socket is then on the shared volume /run/postgresql), else into the SQLite file on the data volume.
set -eu
if [ -n "${POSTGRES_URL:-}" ] && [ -S /run/postgresql/.s.PGSQL.5432 ]; then
  export DB_PATH="$POSTGRES_URL"
fi
exec node /app/dist/engine/cli.js "$@"
