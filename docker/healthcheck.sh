#!/bin/sh
# Healthy when the volume is mounted and readable here and the sqlite3 CLI can read the database on
# it (or, before the first run, can open a database at all). This service mounts it read-only; the
# runner checks that it can write it (doctor, and the lock it takes).
set -eu
test -d /data && test -r /data && test -x /data
if [ -e "$DB_PATH" ]; then
  sqlite3 -readonly "$DB_PATH" 'SELECT count(*) FROM sqlite_schema;' >/dev/null
else
  sqlite3 :memory: 'SELECT sqlite_version();' >/dev/null
fi
