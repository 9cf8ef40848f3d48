#!/usr/bin/env bash
# End-to-end test of the real Docker Compose stack (issue: two services under Docker Compose).
# Builds both images, serves the client's files from 127.0.0.1, runs the runner through compose,
# reads the database through the sqlite3 service, kills the stack mid-run, and edits pipeline.yaml
# (a new query) to see the next run take it without a rebuild (the file is restored on exit); then
# the postgres profile: the same pipeline into the PostgreSQL service, read back with psql there.
# Skips, saying why, where no Docker engine can run (offline-docker.sh check).
set -euo pipefail
cd "$(dirname "$0")/../.."
# why: OFFLINE_DOCKER names it from a worktree elsewhere than beside ../shared.
S=${OFFLINE_DOCKER:-../shared/docker/offline-docker.sh}
passed=0
failed=0

if [ ! -x "$S" ] || ! reason=$("$S" check 2>&1); then
  echo "docker e2e: skipped: no Docker engine can run here (${reason:-$S not found})"
  exit 0
fi

# why: the default profile must work as it always did, with no PostgreSQL setting in the environment.
unset PGPASSWORD DATABASE_URL PIPELINE_ENGINE
started=$(date +%s.%N)
engine_was_up=0
docker info >/dev/null 2>&1 && engine_was_up=1
eval "$("$S" start)"
export COMPOSE_PROJECT_NAME=pipeline-e2e
work=$(mktemp -d)
server_pid=""
edited=0
# remove_projects: removes the containers, then the volumes and networks, of this script's two compose projects, found by
# compose's project label (so no compose file is needed, and a run killed before its cleanup is no different); prints how many.
remove_projects() {
  local removed=0 project label ids
  for project in pipeline-e2e pipeline-e2e-firststart; do
    label="label=com.docker.compose.project=$project"
    ids=$(docker ps -aq --filter "$label")
    [ -z "$ids" ] || { docker rm -f $ids >/dev/null; removed=$((removed + $(wc -w <<<"$ids"))); }
    ids=$(docker volume ls -q --filter "$label")
    [ -z "$ids" ] || { docker volume rm $ids >/dev/null; removed=$((removed + $(wc -w <<<"$ids"))); }
    ids=$(docker network ls -q --filter "$label")
    [ -z "$ids" ] || { docker network rm $ids >/dev/null; removed=$((removed + $(wc -w <<<"$ids"))); }
  done
  echo "$removed"
}
cleanup() {
  if [ "$edited" = 1 ]; then cp "$work/pipeline.yaml.orig" pipeline.yaml; rm -f sql/e2e_sales_by_day.sql; fi
  remove_projects >/dev/null 2>&1 || true
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  rm -rf "$work"
  [ "$engine_was_up" = 1 ] || "$S" stop || true
}
trap cleanup EXIT

check() { # check NAME EXPECTED ACTUAL
  if [ "$2" = "$3" ]; then
    passed=$((passed + 1)); echo "  ok: $1"
  else
    failed=$((failed + 1)); echo "  FAILED: $1: expected [$2], got [$3]"
  fi
}
# rc LOG COMMAND...: runs COMMAND with its output in LOG and prints its exit code (set -e stays out of the way).
rc() { local log=$1; shift; if "$@" >"$log" 2>&1; then echo 0; else echo $?; fi; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

"$S" seed . >/dev/null
# why: the override gives every built service host networking for its build; the postgres service is in a profile.
override=$(COMPOSE_PROFILES=postgres "$S" override .)
export COMPOSE_FILE="docker-compose.yml:$override:tests/docker/compose.test.yml"
# why: the postgres phase's compose file names the files it serves.
export E2E_FILES="$work/pgfiles"

# why: a run of this script killed before its cleanup (SIGKILL, a machine stopped) leaves its projects in the engine, which
# outlives it; the checks below start from an empty database and a new cluster, so what is left goes first.
leftovers=$(remove_projects)
[ "$leftovers" = 0 ] || echo "docker e2e: removed $leftovers container(s), volume(s) and network(s) an earlier run left behind"

t0=$(now); docker compose --profile postgres build -q; t1=$(now); docker compose --profile postgres build -q; t2=$(now)
size=$(docker image inspect pipeline-runner:local --format '{{.Size}}')
echo "docker e2e: build $(elapsed "$t0" "$t1") s (this machine's cache as it was), rebuild $(elapsed "$t1" "$t2") s (warm); runner image $((size / 1000000)) MB"

mkdir "$work/files" && cp tests/fixtures/client/*.csv "$work/files/"
node tests/docker/serve-fixtures.mjs "$work/files" >"$work/port" &
server_pid=$!
for _ in $(seq 50); do [ -s "$work/port" ] && break; sleep 0.1; done
port=$(cat "$work/port")
export PRODUCTS_URL="http://127.0.0.1:$port/produits.csv" STORES_URL="http://127.0.0.1:$port/magasins.csv" SALES_URL="http://127.0.0.1:$port/ventes.csv"
q() { docker compose exec -T sqlite3 sqlite3 -batch /data/sales.db "$1"; }

echo "the brief's demo order: storage first, with an empty database"
docker compose up -d --wait sqlite3 >/dev/null 2>&1
check "the sqlite3 service is healthy" "healthy" "$(docker inspect --format '{{.State.Health.Status}}' "$(docker compose ps -q sqlite3)")"
# why: the sqlite3 service mounts the volume read-only, so it cannot create the file either: the runner's first run does.
check "there is no database yet" 1 "$(rc "$work/empty.log" docker compose exec -T sqlite3 test -e /data/sales.db)"

echo "the runner fills it"
t3=$(now); code=$(rc "$work/run1.log" docker compose run --rm -T runner); t4=$(now)
check "docker compose run runner exits 0" 0 "$code"
echo "  (one run through compose: $(elapsed "$t3" "$t4") s)"
check "30 sales, read through the sqlite3 service" 30 "$(q 'SELECT count(*) FROM sales')"
check "total revenue" "5268.78|122" "$(q 'SELECT revenue, quantity FROM revenue_total')"
check "the README's query" "2023-05-27|2023-06-25|30|122|526878|5268.78" "$(q 'SELECT * FROM revenue_total')"
check "integrity and foreign keys" "ok" "$(q 'PRAGMA integrity_check; PRAGMA foreign_key_check;')"
check "the summary sheet is on the volume" 1 "$(docker compose exec -T sqlite3 grep -c "Chiffre d'affaires total\*\* : $(printf '5\u202f268,78\u00a0€')" /data/reports/fiche-synthese.md)"

echo "a second run adds nothing"
check "second run exits 0" 0 "$(rc "$work/run2.log" docker compose run --rm -T runner)"
check "still 30 sales" 30 "$(q 'SELECT count(*) FROM sales')"
check "nothing changed, so no second run recorded" "1|succeeded" "$(q 'SELECT run_id, status FROM pipeline_runs')"
check "and the runner said so" 1 "$(grep -c 'nothing changed since run 1; the database was not rewritten' "$work/run2.log")"

echo "--dry-run and validate through compose"
check "--dry-run exits 0" 0 "$(rc "$work/plan.log" docker compose run --rm -T runner --dry-run)"
check "--dry-run prints the plan" 1 "$(grep -c '^4. load_sales' "$work/plan.log")"
validated=$(docker compose run --rm -T -e NO_COLOR=1 runner validate 2>/dev/null || true)
check "validate" "pipeline.yaml is valid: 11 steps, 10 tables" "$validated"
check "doctor exits 0" 0 "$(rc "$work/doctor.log" docker compose run --rm -T runner doctor)"

echo "a failed run is kept on the volume, then recorded"
check "a run whose sales source answers 404 exits 1" 1 "$(SALES_URL="http://127.0.0.1:$port/missing.csv" rc "$work/failed.log" docker compose run --rm -T runner)"
check "its journal is beside the database" 1 "$(docker compose exec -T sqlite3 grep -c '"status":"failed"' /data/sales.db.failed-runs.jsonl)"

echo "killing the stack mid-run"
before=$(q 'SELECT count(*), (SELECT count(*) FROM pipeline_runs) FROM sales')
{ cat tests/fixtures/client/ventes.csv; printf '\r\n2023-06-26,REF001,1,1'; } >"$work/files/ventes-more.csv"
SALES_URL="http://127.0.0.1:$port/slow/ventes-more.csv" docker compose run --rm -T runner >"$work/killed.log" 2>&1 &
runner_pid=$!
for _ in $(seq 100); do grep -q 'load_sales' "$work/killed.log" 2>/dev/null && break; sleep 0.1; done
sleep 1
docker kill $(docker ps -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME") >/dev/null
wait "$runner_pid" 2>/dev/null || true
check "the run was killed while loading sales" 1 "$(grep -c 'load_sales' "$work/killed.log")"
docker compose up -d --wait sqlite3 >/dev/null 2>&1
check "after the kill: integrity" "ok" "$(q 'PRAGMA integrity_check;')"
check "after the kill: the state before the run" "$before" "$(q 'SELECT count(*), (SELECT count(*) FROM pipeline_runs) FROM sales')"
check "the next run succeeds" 0 "$(SALES_URL="http://127.0.0.1:$port/ventes-more.csv" rc "$work/run3.log" docker compose run --rm -T runner)"
check "and imports the new sale" 31 "$(q 'SELECT count(*) FROM sales')"
check "and records the failed run, with its error" "2|failed" "$(q "SELECT run_id, status FROM pipeline_runs WHERE error LIKE 'E_FETCH GET %missing.csv -> 404%'")"

echo "the sqlite3 service only reads; deliberate changes go through sqlite3-admin (profile admin)"
schema_before=$(q "SELECT count(*) FROM sqlite_schema")
# why: 8 is SQLITE_READONLY, which the sqlite3 CLI returns as its exit code.
check "the sqlite3 service cannot plant a trigger" "8|$schema_before" "$(rc "$work/plant.log" docker compose exec -T sqlite3 sqlite3 -batch /data/sales.db 'CREATE TRIGGER x100 AFTER INSERT ON sales BEGIN UPDATE sales SET quantity = quantity * 100 WHERE rowid = new.rowid; END;')|$(q "SELECT count(*) FROM sqlite_schema")"
check "and says the database is read-only" 1 "$(grep -c 'readonly database' "$work/plant.log")"
check "the sqlite3 service cannot create or touch the lock" 1 "$(rc "$work/lock.log" docker compose exec -T sqlite3 touch /data/sales.db.lock)"
check "the sqlite3 service cannot replace the database" 1 "$(rc "$work/mv.log" docker compose exec -T sqlite3 sh -c 'cp /data/sales.db /tmp/x.db && mv /tmp/x.db /data/sales.db')"
check "nor write its own file system, even its home" 1 "$(rc "$work/rootfs.log" docker compose exec -T sqlite3 touch /home/sqlite/x)"
# why: CapBnd, the bounding set: a uid-1000 process has no effective capability anyway; cap_drop empties what it could ever gain.
caps='grep -E "^(CapBnd|NoNewPrivs)" /proc/self/status | cut -f2 | paste -sd"|"'
check "the sqlite3 service has no capability and no way to gain one" "0000000000000000|1" "$(docker compose exec -T sqlite3 sh -c "$caps")"
check "the runner has no capability and no way to gain one" "0000000000000000|1" "$(docker compose run --rm -T --entrypoint sh runner -c "$caps" 2>/dev/null)"
check "the runner cannot write outside the volume, even its home" 1 "$(rc "$work/runner-rootfs.log" docker compose run --rm -T --entrypoint sh runner -c 'touch /home/node/x')"
check "the sqlite3 service has its memory and pid limits and a read-only root" "536870912|64|true" "$(docker inspect --format '{{.HostConfig.Memory}}|{{.HostConfig.PidsLimit}}|{{.HostConfig.ReadonlyRootfs}}' "$(docker compose ps -q sqlite3)")"
check "a query still works through it" 31 "$(q 'SELECT count(*) FROM sales')"
check "sqlite3-admin plants the trigger (a deliberate write)" 0 "$(rc "$work/admin.log" docker compose run --rm -T sqlite3-admin sqlite3 -batch /data/sales.db 'CREATE TRIGGER x100 AFTER INSERT ON sales BEGIN UPDATE sales SET quantity = quantity * 100 WHERE rowid = new.rowid; END;')"
{ cat "$work/files/ventes-more.csv"; printf '\r\n2023-06-27,REF002,1,1'; } >"$work/files/ventes-trigger.csv"
check "the runner refuses a database with a trigger on its tables" 1 "$(SALES_URL="http://127.0.0.1:$port/ventes-trigger.csv" rc "$work/drift.log" docker compose run --rm -T runner)"
check "naming it and how to remove it" 1 "$(grep -c 'E_DRIFT .*trigger "x100" on table sales.*DROP TRIGGER "x100";' "$work/drift.log")"
check "sqlite3-admin removes it" 0 "$(rc "$work/admin2.log" docker compose run --rm -T sqlite3-admin sqlite3 -batch /data/sales.db 'DROP TRIGGER "x100";')"
check "then the run goes on, quantities as sent" 0 "$(SALES_URL="http://127.0.0.1:$port/ventes-trigger.csv" rc "$work/run4.log" docker compose run --rm -T runner)"
check "the new sale, stored once, quantity 1" "32|1" "$(q "SELECT count(*), (SELECT quantity FROM sales WHERE date = '2023-06-27') FROM sales")"

echo "an edit of pipeline.yaml takes effect at the next run, without a rebuild"
image_before=$(docker image inspect pipeline-runner:local --format '{{.Id}}')
cp pipeline.yaml "$work/pipeline.yaml.orig"
edited=1
printf -- '-- Units per day (e2e: a query added by editing pipeline.yaml).\nSELECT date, sum(quantity) AS quantity FROM sales GROUP BY date\n' >sql/e2e_sales_by_day.sql
awk '{ print } /^tables:$/ { print "  e2e_sales_by_day:\n    columns:\n      date: { type: date }\n      quantity: { type: integer, required: true }\n    primary_key: [date]\n" }' "$work/pipeline.yaml.orig" >pipeline.yaml
printf '\n  - name: e2e_sales_by_day\n    type: sql\n    file: sql/e2e_sales_by_day.sql\n    into: e2e_sales_by_day\n' >>pipeline.yaml
# The edit adds one table and one step to whatever the shipped pipeline declares.
one_more=$(printf '%s\n' "$validated" | awk '{ print $1, $2, $3, $4 + 1, "steps,", $6 + 1, "tables" }')
check "validate sees the new step" "$one_more" "$(docker compose run --rm -T -e NO_COLOR=1 runner validate 2>/dev/null || true)"
check "the edited pipeline runs" 0 "$(SALES_URL="http://127.0.0.1:$port/ventes-trigger.csv" rc "$work/edited.log" docker compose run --rm -T runner)"
check "the new table, read through the sqlite3 service" "$(q 'SELECT count(DISTINCT date), sum(quantity) FROM sales')" "$(q 'SELECT count(*), sum(quantity) FROM e2e_sales_by_day')"
check "with rows" 1 "$(q 'SELECT count(*) > 0 FROM e2e_sales_by_day')"
check "and no image was rebuilt" "$image_before" "$(docker image inspect pipeline-runner:local --format '{{.Id}}')"
cp "$work/pipeline.yaml.orig" pipeline.yaml && rm -f sql/e2e_sales_by_day.sql && edited=0
check "pipeline.yaml, sql/ and data/ are mounted read-only" "ro|ro|ro" "$(docker compose run --rm -T --entrypoint sh runner -c 'for m in /app/pipeline.yaml /app/sql /app/data; do grep " $m " /proc/mounts | cut -d" " -f4 | cut -d, -f1; done' 2>/dev/null | paste -sd'|')"

echo "the postgres profile: the same pipeline into the PostgreSQL service"
# A password of this run only; the checks below look for it where it must not be.
export PGPASSWORD="e2e-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
mkdir "$work/pgfiles" && cp tests/fixtures/client/*.csv "$work/pgfiles/" && chmod 755 "$work/pgfiles" && chmod 644 "$work/pgfiles"/*
export COMPOSE_FILE="docker-compose.yml:$override:tests/docker/compose.postgres.test.yml"
export PRODUCTS_URL=http://fixtures:8080/produits.csv STORES_URL=http://fixtures:8080/magasins.csv SALES_URL=http://fixtures:8080/ventes.csv
pg() { docker compose --profile postgres "$@"; }
pq() { pg exec -T postgres psql -XAtq -v ON_ERROR_STOP=1 -c "$1"; }
sqlite_runs=$(q 'SELECT count(*) FROM pipeline_runs')
pg up -d --wait fixtures >/dev/null 2>&1
t5=$(now); code=$(rc "$work/pg1.log" pg run --rm -T runner); t6=$(now)
check "docker compose --profile postgres run runner exits 0" 0 "$code"
echo "  (first run, the server's first start included: $(elapsed "$t5" "$t6") s)"
check "the runner started once the server was healthy" "healthy" "$(docker inspect --format '{{.State.Health.Status}}' "$(pg ps -q postgres)")"
check "and saved into the server, through its socket" 1 "$(grep -c 'saved postgres://\*\*\*@/sales?host=/run/postgresql' "$work/pg1.log")"
check "30 sales, read with psql in the postgres service" 30 "$(pq 'SELECT count(*) FROM sales')"
check "the README's query, to the cent, as on SQLite" "2023-05-27|2023-06-25|30|122|526878|5268.78" "$(pq 'SELECT * FROM revenue_total')"
check "exact cents are bigint on the server" "bigint" "$(pq "SELECT data_type FROM information_schema.columns WHERE table_name = 'revenue_total' AND column_name = 'revenue_cents'")"
check "the SQLite file was not written" "$sqlite_runs" "$(q 'SELECT count(*) FROM pipeline_runs')"
check "a second run exits 0" 0 "$(rc "$work/pg2.log" pg run --rm -T runner)"
check "and changes nothing" "30|1|succeeded" "$(pq 'SELECT (SELECT count(*) FROM sales), run_id, status FROM pipeline_runs')"
check "and says so" 1 "$(grep -c 'nothing changed since run 1; the database was not rewritten' "$work/pg2.log")"

echo "the password: from PGPASSWORD, shown nowhere"
check "not in docker compose config" 0 "$(pg config 2>&1 | grep -c -- "$PGPASSWORD" || true)"
check "not in the runner's output" 0 "$(cat "$work/pg1.log" "$work/pg2.log" | grep -c -- "$PGPASSWORD" || true)"
check "not in the postgres service's logs nor its container's settings" 0 "$({ pg logs postgres; docker inspect "$(pg ps -q postgres)"; } 2>&1 | grep -c -- "$PGPASSWORD" || true)"
check "the runner holds no copy of it" 0 "$(pg run --rm -T --no-deps --entrypoint sh runner -c 'env; cat /run/secrets/* 2>/dev/null' 2>/dev/null | grep -c -- "$PGPASSWORD" || true)"
check "it is the role's password over TCP" 30 "$(pg exec -T -e PGPASSWORD postgres psql -XAtq -h 127.0.0.1 -U pipeline -d sales -c 'SELECT count(*) FROM sales' 2>&1)"
check "a wrong one is refused" 2 "$(rc "$work/pg-wrong.log" pg exec -T -e PGPASSWORD=wrong postgres psql -XAtq -h 127.0.0.1 -U pipeline -d sales -c 'SELECT 1')"
check "saying so" 1 "$(grep -c 'password authentication failed for user "pipeline"' "$work/pg-wrong.log")"

echo "the postgres service's hardening"
check "runs as uid 1000" 1000 "$(pg exec -T postgres id -u)"
check "has no capability and no way to gain one" "0000000000000000|1" "$(pg exec -T postgres sh -c "$caps")"
check "has its memory and pid limits" "1073741824|160" "$(docker inspect --format '{{.HostConfig.Memory}}|{{.HostConfig.PidsLimit}}' "$(pg ps -q postgres)")"
check "listens on the project's network only (no published port)" "{}" "$(docker inspect --format '{{json .HostConfig.PortBindings}}' "$(pg ps -q postgres)")"

echo "a first start killed while it makes the cluster"
# why: its own project, so the cluster of the checks above stays as it is; it is removed at once (and by cleanup).
main_project=$COMPOSE_PROJECT_NAME
export COMPOSE_PROJECT_NAME=pipeline-e2e-firststart
pg up -d postgres >/dev/null 2>&1
for _ in $(seq 200); do pg logs postgres 2>/dev/null | grep -q 'first start' && break; sleep 0.05; done
docker kill "$(pg ps -q postgres)" >/dev/null
echo "  (killed after: $(pg logs postgres 2>&1 | grep -c 'ready to accept connections') server start(s); 0 means during the first start)"
check "the next start comes up healthy" 0 "$(rc "$work/firststart.log" pg up -d --wait postgres)"
check "with the runner's role and database" "pipeline|sales" "$(pg exec -T postgres psql -XAtq -U pipeline -d sales -c 'SELECT current_user, current_database()' 2>&1)"
pg down -v >/dev/null 2>&1
export COMPOSE_PROJECT_NAME=$main_project

echo "docker compose down (without -v) keeps the server's data"
pg down >/dev/null 2>&1
check "no container left" "" "$(docker ps -aq --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME")"
check "the volume is kept" 1 "$(docker volume ls -q | grep -cx "${COMPOSE_PROJECT_NAME}_postgres-data")"
pg up -d --wait postgres fixtures >/dev/null 2>&1
check "after up: the figures are still there" "30|526878|1" "$(pq 'SELECT (SELECT count(*) FROM sales), (SELECT revenue_cents FROM revenue_total), (SELECT count(*) FROM pipeline_runs)')"
check "and the next run finds nothing to do" 1 "$(pg run --rm -T runner 2>&1 | grep -c 'nothing changed since run 1')"
# why: the runner follows the server, not the command line (docs/postgres.md): documented, so checked.
check "while the server runs, a run without the profile loads into it too" 1 "$(docker compose run --rm -T -e NO_COLOR=1 runner --dry-run 2>/dev/null | grep -c '^Plan for .* -> postgres://\*\*\*@/sales?host=/run/postgresql$')"
pg down >/dev/null 2>&1
check "without the server, the runner is back on the SQLite file" 1 "$(docker compose run --rm -T -e NO_COLOR=1 runner --dry-run 2>/dev/null | grep -c '^Plan for .* -> /data/sales.db$')"
docker compose down >/dev/null 2>&1
echo "  (the postgres profile's checks: $(elapsed "$t5" "$(now)") s)"

echo "the runtime image"
run_in() { docker run --rm --network none --entrypoint sh pipeline-runner:local -c "$1"; }
check "runs as uid 1000" 1000 "$(run_in 'id -u')"
check "has no dev dependencies" "" "$(run_in 'ls /app/node_modules | grep -E "^(typescript|vitest|prettier|json-schema-to-ts|@types|node)$" || true')"
check "has no compiler toolchain nor npm" "" "$(run_in 'for t in gcc cc g++ make npm npx; do command -v $t; done || true')"
check "runs Node 24" 24 "$(run_in 'node -p "process.versions.node.split(\".\")[0]"')"

echo "docker e2e: $passed passed, $failed failed in $(elapsed "$started" "$(now)") s"
[ "$failed" = 0 ]
