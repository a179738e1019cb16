#!/usr/bin/env bash
# Bulk export benchmark on SQLite and PostgreSQL over a synthetic store of MEMBERS members
# (20000 ≈ 1.1 M resources): a system-level $export by an admin client (resources/s and the
# server's peak RSS), then a $bulk-member-match of half the members by a payer and the
# $davinci-data-export of its Matched Group.
#
#   bench/export.sh [MEMBERS]        (default 20000)
#
# The stores are built once and kept under $PDEX_BENCH_DIR (default ./pdex-bench): a second
# run skips synth and import. Needs PostgreSQL on 127.0.0.1:5432 with trust auth
# (PDEX_BENCH_POSTGRES_URL overrides the admin URL). PDEX_BENCH_STORES="sqlite" or "postgres"
# measures one store only.
set -euo pipefail
cd "$(dirname "$0")/.."
MEMBERS="${1:-20000}"
ADMIN_URL="${PDEX_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
DIR="${PDEX_BENCH_DIR:-$PWD/pdex-bench}/m$MEMBERS"
PG_DB="pdex_export_bench_$MEMBERS"
PORT=18081
mkdir -p "$DIR"
. bench/common.sh
if [ ! -e "$DIR/data/members.json" ]; then
  /usr/bin/time -f "synth: %e s" $PDEX synth --members "$MEMBERS" --seed 7 --out "$DIR/data" | head -1
fi
echo "resources in the data set: $(cat "$DIR"/data/*.ndjson | wc -l)"

SQLITE_URL="sqlite://$DIR/store.db"
PG_URL="${ADMIN_URL%/*}/$PG_DB"
if [ ! -e "$DIR/sqlite.imported" ]; then
  /usr/bin/time -f "sqlite import: %e s" $PDEX import --database-url "$SQLITE_URL" "$DIR/data"
  touch "$DIR/sqlite.imported"
fi
if [ ! -e "$DIR/postgres.imported" ]; then
  psql "$ADMIN_URL" -qc "drop database if exists $PG_DB with (force)"
  psql "$ADMIN_URL" -qc "create database $PG_DB"
  /usr/bin/time -f "postgres import: %e s" $PDEX import --database-url "$PG_URL" "$DIR/data"
  touch "$DIR/postgres.imported"
fi

for db in ${PDEX_BENCH_STORES:-sqlite postgres}; do
  url=$SQLITE_URL; [ $db = postgres ] && url=$PG_URL
  rm -rf "$DIR/exports-$db"
  cancel_leftover_jobs "$url"
  $PDEX serve --database-url "$url" --listen 127.0.0.1:$PORT --log-format json \
    --export-dir "$DIR/exports-$db" --export-workers 1 --export-poll-interval-seconds 1 \
    2>"$DIR/serve-$db.log" &
  SERVER=$!
  for _ in $(seq 1 100); do curl -sf http://127.0.0.1:$PORT/health >/dev/null && break; sleep 0.2; done
  export PDEX_BENCH_URL="http://127.0.0.1:$PORT/fhir" PDEX_BENCH_DATABASE_URL="$url" \
    PDEX_BENCH_MEMBERS="$DIR/data/members.json"
  echo "== $db"
  cargo test --release --locked -q --test bench -- --ignored --nocapture --exact system_export 2>&1 | grep '^export'
  echo "server peak RSS after the system export: $(awk '/VmHWM/{print int($2/1024)}' /proc/$SERVER/status) MiB"
  grep '"export job completed"' "$DIR/serve-$db.log" | tail -1
  du -sh "$DIR/exports-$db" | awk '{print "output size: " $1}'
  PDEX_BENCH_MATCH_COUNT=$((MEMBERS / 2)) \
    cargo test --release --locked -q --test bench -- --ignored --nocapture --exact bulk_member_match 2>&1 | grep -E '^(bulk_member_match|davinci)'
  echo "server peak RSS after the payer exchange: $(awk '/VmHWM/{print int($2/1024)}' /proc/$SERVER/status) MiB"
  kill $SERVER; wait $SERVER 2>/dev/null || true
  SERVER=
done
