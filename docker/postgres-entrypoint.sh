#!/bin/sh
# The postgres service: at first start, a cluster on the named volume with the role and database the
# runner loads into (the role's password from the secret postgres_password, i.e. PGPASSWORD on the
# host); then the server, in the foreground. Runs as uid 1000 (postgres), never as root.
set -eu
: "${POSTGRES_USER:=pipeline}" "${POSTGRES_DB:=sales}"
secret=/run/secrets/postgres_password

# why: the cluster is made in $PGDATA.init and renamed into place once its role and database exist, so a
# first start killed half-way leaves no cluster that looks finished; the next start begins again.
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  password=$(cat "$secret" 2>/dev/null || true)
  if [ -z "$password" ]; then
    echo "postgres: no password: set PGPASSWORD in the environment of docker compose (the secret postgres_password is empty)" >&2
    exit 1
  fi
  case $password in *"
"*) echo "postgres: PGPASSWORD must be one line" >&2; exit 1 ;; esac
  echo "postgres: first start: a new cluster in $PGDATA, role $POSTGRES_USER, database $POSTGRES_DB" >&2
  new="$PGDATA.init"
  rm -rf "$new"
  initdb --pgdata="$new" --username=postgres --encoding=UTF8 --no-locale --auth-local=peer --auth-host=scram-sha-256 >/dev/null
  # why: the runner (uid 1000 in its own container) connects through the shared socket; peer authentication
  # names it postgres here, and this map lets that uid log in as the runner's role, with no password to hold.
  printf 'runner postgres %s\nrunner postgres postgres\n' "$POSTGRES_USER" >>"$new/pg_ident.conf"
  {
    printf 'local all all peer map=runner\n'
    printf 'host all all all scram-sha-256\n'
  } >"$new/pg_hba.conf"
  # why: single-user mode reads the statements on stdin, so the password is on no command line; it is stored as a SCRAM hash.
  quoted=$(printf '%s' "$password" | sed "s/'/''/g")
  postgres --single -D "$new" -c log_min_messages=fatal postgres >/dev/null <<SQL
CREATE ROLE "$POSTGRES_USER" LOGIN PASSWORD '$quoted'
CREATE DATABASE "$POSTGRES_DB" OWNER "$POSTGRES_USER"
SQL
  unset password quoted
  mv "$new" "$PGDATA"
fi

exec postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/run/postgresql "$@"
