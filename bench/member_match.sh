#!/usr/bin/env bash
# $member-match throughput and latency, and $bulk-member-match time to manifest, against a
# store of MEMBERS members on SQLite and PostgreSQL. Matching reads only Patient and Coverage
# (and their index rows), so only those two files of the synthetic set are imported.
#
#   bench/member_match.sh [MEMBERS]       (default 100000)
#
# The synthetic set and the stores are kept under $PDEX_BENCH_DIR (default ./pdex-bench) and
# reused by a second run. Environment: PDEX_BENCH_POSTGRES_URL (admin URL, default
# postgres://postgres@127.0.0.1:5432/test), PDEX_BENCH_CONCURRENCY (16), PDEX_BENCH_SECONDS
# (20), PDEX_BENCH_MATCH_COUNT (10000 members in the bulk request), PDEX_BENCH_STORES ("sqlite
# postgres").
set -euo pipefail
cd "$(dirname "$0")/.."
MEMBERS="${1:-100000}"
ADMIN_URL="${PDEX_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
DIR="${PDEX_BENCH_DIR:-$PWD/pdex-bench}/m$MEMBERS"
PG_DB="pdex_match_bench_$MEMBERS"
PORT=18181
mkdir -p "$DIR"
. bench/common.sh
if [ ! -e "$DIR/data/members.json" ]; then
  /usr/bin/time -f "synth: %e s" $PDEX synth --members "$MEMBERS" --seed 42 --out "$DIR/data" | head -1
fi
echo "== data: $(wc -l < "$DIR/data/Patient.ndjson") Patients, $(wc -l < "$DIR/data/Coverage.ndjson") Coverages"

SQLITE_URL="sqlite://$DIR/match.db"
PG_URL="${ADMIN_URL%/*}/$PG_DB"
STORES="${PDEX_BENCH_STORES:-sqlite postgres}"
for URL in "$SQLITE_URL" "$PG_URL"; do
  case " $STORES " in *" ${URL%%:*} "*) ;; *) continue ;; esac
  db=${URL%%:*}
  echo "== store: $db"
  if [ ! -e "$DIR/match-$db.imported" ]; then
    if [ "$db" = postgres ]; then
      psql "$ADMIN_URL" -qc "drop database if exists $PG_DB with (force)"
      psql "$ADMIN_URL" -qc "create database $PG_DB"
    fi
    /usr/bin/time -f "import: %e s" $PDEX import --database-url "$URL" "$DIR/data/Patient.ndjson" "$DIR/data/Coverage.ndjson"
    touch "$DIR/match-$db.imported"
  fi
  cancel_leftover_jobs "$URL"
  $PDEX serve --database-url "$URL" --listen "127.0.0.1:$PORT" --no-consent-required \
    --match-failure-limit 1000000 --export-dir "$DIR/exports-match-$db" >"$DIR/serve-match-$db.log" 2>&1 &
  SERVER=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.2; done
  export PDEX_BENCH_URL="http://127.0.0.1:$PORT/fhir" PDEX_BENCH_DATABASE_URL="$URL" \
    PDEX_BENCH_MEMBERS="$DIR/data/members.json"
  cargo test --release --locked -q --test bench -- --ignored --nocapture --exact member_match 2>&1 | grep members=
  PDEX_BENCH_CONSENT=1 cargo test --release --locked -q --test bench -- --ignored --nocapture --exact member_match 2>&1 | grep members=
  PDEX_BENCH_DATA_EXPORT=0 cargo test --release --locked -q --test bench -- --ignored --nocapture --exact bulk_member_match 2>&1 | grep bulk_member_match
  echo "server peak RSS: $(awk '/VmHWM/{print int($2/1024)}' /proc/$SERVER/status) MiB"
  kill $SERVER; wait $SERVER 2>/dev/null || true; SERVER=""
done
