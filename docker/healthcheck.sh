#!/bin/sh
# Healthy when the volume is writable by this user and the sqlite3 CLI can read the database on it
# (or, before the first run, can open a database at all).
set -eu
test -d /data && test -w /data
if [ -e "$DB_PATH" ]; then
  sqlite3 -readonly "$DB_PATH" 'SELECT count(*) FROM sqlite_schema;' >/dev/null
else
  sqlite3 :memory: 'SELECT sqlite_version();' >/dev/null
fi
