#!/usr/bin/env bash
# $member-match throughput and latency against a store of MEMBERS members, on SQLite and
# PostgreSQL. Matching reads only Patient and Coverage (and their index rows), so only those
# two files of the synthetic set are imported (importing all 5.6 M resources of 100,000
# members takes ~13 min per store on a 2-core machine and changes nothing for matching).
#
#   bench/member_match.sh [MEMBERS] [DATA_DIR]     (default 100000; DATA_DIR reuses a synth set)
#
# Environment: PDEX_BENCH_POSTGRES_URL (admin URL, default postgres://postgres@127.0.0.1:5432/test),
# PDEX_BENCH_CONCURRENCY (16), PDEX_BENCH_SECONDS (20).
set -euo pipefail
cd "$(dirname "$0")/.."
MEMBERS="${1:-100000}"
DATA="${2:-}"
ADMIN_URL="${PDEX_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
PORT=18181
WORK="$(mktemp -d)"
SERVER=""
trap '[ -n "$SERVER" ] && kill $SERVER 2>/dev/null; rm -rf "$WORK"' EXIT

cargo build --release --locked -q --bin pdex
cargo test --release --locked -q --test member_match_bench --no-run
PDEX=target/release/pdex

if [ -z "$DATA" ]; then
  DATA="$WORK/data"
  /usr/bin/time -f "synth: %e s" $PDEX synth --members "$MEMBERS" --seed 42 --out "$DATA" | head -1
fi
mkdir -p "$WORK/match"
cp "$DATA/Patient.ndjson" "$DATA/Coverage.ndjson" "$DATA/members.json" "$WORK/match/"
echo "== data: $(wc -l < "$WORK/match/Patient.ndjson") Patients, $(wc -l < "$WORK/match/Coverage.ndjson") Coverages"

psql "$ADMIN_URL" -qc "drop database if exists pdex_match_bench with (force)" && psql "$ADMIN_URL" -qc "create database pdex_match_bench"
PG_URL="${ADMIN_URL%/*}/pdex_match_bench"
SQLITE_URL="sqlite://$WORK/bench.db"

for URL in "$SQLITE_URL" "$PG_URL"; do
  echo "== store: ${URL%%:*}"
  /usr/bin/time -f "import: %e s" $PDEX import --database-url "$URL" "$WORK/match/Patient.ndjson" "$WORK/match/Coverage.ndjson"
  $PDEX serve --database-url "$URL" --listen "127.0.0.1:$PORT" --no-consent-required \
    --match-failure-limit 1000000 >"$WORK/serve.log" 2>&1 &
  SERVER=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.2; done
  PDEX_BENCH_URL="http://127.0.0.1:$PORT/fhir" PDEX_BENCH_MEMBERS="$WORK/match/members.json" \
    cargo test --release --locked -q --test member_match_bench -- --ignored --nocapture 2>&1 | grep members=
  kill $SERVER; wait $SERVER 2>/dev/null || true; SERVER=""
done
