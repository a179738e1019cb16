#!/usr/bin/env bash
# System-level Bulk export benchmark: resources/s and the server's peak RSS on SQLite and
# PostgreSQL, over a synthetic store of MEMBERS members (20000 ≈ 1.1 M resources).
#
#   bench/export.sh [MEMBERS]        (default 20000)
#
# The stores are built once and kept under $PDEX_BENCH_DIR (default ./pdex-bench): a second
# run skips synth and import. Needs a release build (built here) and PostgreSQL on
# 127.0.0.1:5432 with trust auth (PDEX_BENCH_POSTGRES_URL overrides the admin URL).
set -euo pipefail
cd "$(dirname "$0")/.."
MEMBERS="${1:-20000}"
ADMIN_URL="${PDEX_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
DIR="${PDEX_BENCH_DIR:-./pdex-bench}/m$MEMBERS"
PG_DB="pdex_export_bench_$MEMBERS"
PORT=18081
mkdir -p "$DIR"
SERVER=
trap '[ -n "$SERVER" ] && kill $SERVER 2>/dev/null || true' EXIT

cargo build --release --locked -q
PDEX=target/release/pdex

echo "== machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr)"
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

for db in sqlite postgres; do
  url=$SQLITE_URL; [ $db = postgres ] && url=$PG_URL
  rm -rf "$DIR/exports-$db"
  $PDEX serve --database-url "$url" --listen 127.0.0.1:$PORT --log-format json \
    --export-dir "$DIR/exports-$db" --export-workers 1 2>"$DIR/serve-$db.log" &
  SERVER=$!
  for _ in $(seq 1 100); do curl -sf http://127.0.0.1:$PORT/health >/dev/null && break; sleep 0.2; done
  base=http://127.0.0.1:$PORT/fhir
  start=$(date +%s.%N)
  poll=$(curl -si -H 'Prefer: respond-async' "$base/\$export" | tr -d '\r' | awk -F': ' 'tolower($1)=="content-location"{print $2}')
  while :; do
    code=$(curl -s -o "$DIR/manifest-$db.json" -w '%{http_code}' "$poll")
    [ "$code" = 200 ] && break
    [ "$code" = 202 ] || [ "$code" = 429 ] || { echo "poll: $code"; cat "$DIR/manifest-$db.json"; exit 1; }
    sleep 1
  done
  end=$(date +%s.%N)
  rss=$(awk '/VmHWM/{print $2}' /proc/$SERVER/status)
  python3 - "$DIR/manifest-$db.json" "$DIR/serve-$db.log" "$start" "$end" "$rss" "$db" <<'PY'
import json, sys
manifest, log, start, end, rss, db = sys.argv[1:]
m = json.load(open(manifest))
count = sum(o["count"] for o in m["output"])
files = len(m["output"])
job = [json.loads(l) for l in open(log) if '"export job completed"' in l]
secs = float(job[-1]["fields"]["seconds"]) if job and "fields" in job[-1] else float(job[-1]["seconds"])
wall = float(end) - float(start)
print(f"{db}: {count} resources in {files} files; job {secs:.1f} s = {count/secs:,.0f} resources/s; "
      f"kick-off to manifest {wall:.1f} s; server peak RSS {int(rss)/1024:.0f} MiB")
PY
  du -sh "$DIR/exports-$db/files" | awk '{print "output size: " $1}'
  kill $SERVER; wait $SERVER 2>/dev/null || true
  SERVER=
done
