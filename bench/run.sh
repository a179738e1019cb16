#!/usr/bin/env bash
# Repeatable benchmark: synthesize a data set, import it into SQLite and PostgreSQL, then
# measure single-read latency and a concurrent search mix with wrk against loopback. The
# requests carry an admin client's token (registered with `pdex client add --secret`, got with
# client_secret_basic); any non-2xx answer fails the run.
#
#   bench/run.sh [MEMBERS]            (default 2000 members ≈ 150k resources)
#
# Needs: a release build (built here), wrk (apt-get install wrk), PostgreSQL on
# 127.0.0.1:5432 with trust auth (PDEX_BENCH_POSTGRES_URL overrides the admin URL).
set -euo pipefail
cd "$(dirname "$0")/.."
MEMBERS="${1:-2000}"
ADMIN_URL="${PDEX_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
PORT=18080
WORK="$(mktemp -d)"
SERVER=""
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }

cargo build --release --locked -q --bin pdex
PDEX=${CARGO_TARGET_DIR:-target}/release/pdex

echo "== machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr)"
echo "== synth $MEMBERS members"
/usr/bin/time -f "synth: %e s, max RSS %M KiB" $PDEX synth --members "$MEMBERS" --seed 7 --out "$WORK/data" >"$WORK/synth.txt"
cat "$WORK/synth.txt" | head -1
TOTAL=$(cat "$WORK"/data/*.ndjson | wc -l)
echo "resources: $TOTAL"

psql "$ADMIN_URL" -qc "drop database if exists pdex_bench with (force)" && psql "$ADMIN_URL" -qc "create database pdex_bench"
PG_URL="${ADMIN_URL%/*}/pdex_bench"
SQLITE_URL="sqlite://$WORK/bench.db"

for db in sqlite postgres; do
  url=$SQLITE_URL; [ $db = postgres ] && url=$PG_URL
  echo "== import into $db"
  /usr/bin/time -f "import wall %e s, max RSS %M KiB" $PDEX import --database-url "$url" "$WORK/data"
  echo "== re-import (idempotent) into $db"
  /usr/bin/time -f "re-import wall %e s" $PDEX import --database-url "$url" "$WORK/data"
done

# Patient ids and request mix for wrk.
python3 - "$WORK" <<'PY'
import json, sys, random
work = sys.argv[1]
members = json.load(open(f"{work}/data/members.json"))
random.seed(1)
AUTH = 'wrk.headers["Authorization"] = "Bearer " .. os.getenv("PDEX_BENCH_TOKEN")\n'
ids = [m["patient_id"] for m in random.sample(members, min(200, len(members)))]
paths = []
for pid in ids:
    paths += [
        f"/fhir/Observation?patient={pid}&_revinclude=Provenance:target",
        f"/fhir/Condition?patient={pid}&_revinclude=Provenance:target",
        f"/fhir/Observation?patient={pid}&category=laboratory&date=ge2020-01-01",
        f"/fhir/Encounter?patient={pid}&date=ge2019-01-01",
        f"/fhir/ExplanationOfBenefit?patient={pid}&type=professional",
        f"/fhir/Patient?_id={pid}&_revinclude=Provenance:target",
        f"/fhir/Observation?code=http://loinc.org|8867-4&patient={pid}",
    ]
random.shuffle(paths)
with open(f"{work}/mix.lua", "w") as f:
    f.write("paths = {\n" + ",\n".join(json.dumps(p) for p in paths) + "\n}\n")
    f.write(AUTH + "i = 0\nrequest = function()\n  i = i + 1\n  return wrk.format('GET', paths[(i % #paths) + 1])\nend\n")
with open(f"{work}/read.lua", "w") as f:
    f.write("paths = {\n" + ",\n".join(json.dumps(f"/fhir/Patient/{p}") for p in ids) + "\n}\n")
    f.write(AUTH + "i = 0\nrequest = function()\n  i = i + 1\n  return wrk.format('GET', paths[(i % #paths) + 1])\nend\n")
PY

# wrk with a script; the run fails on any non-2xx answer (wrk reports them as "Non-2xx").
measure() {
  local out="$WORK/wrk.txt"
  wrk "$@" >"$out"
  grep -E "Latency|50%|90%|99%|Requests/sec" "$out"
  if grep -q "Non-2xx" "$out"; then
    grep "Non-2xx" "$out" >&2
    echo "bench: non-2xx answers; the figures above do not count" >&2
    exit 1
  fi
}

for db in sqlite postgres; do
  url=$SQLITE_URL; [ $db = postgres ] && url=$PG_URL
  # the plan's own back office reads every member's data
  $PDEX client add --database-url "$url" --name "bench $db" --kind admin --secret --scope 'system/*.rs' >"$WORK/client.json"
  CLIENT_ID=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["client_id"])' <"$WORK/client.json")
  CLIENT_SECRET=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["client_secret"])' <"$WORK/client.json")
  $PDEX serve --database-url "$url" --listen 127.0.0.1:$PORT --log-format json --token-lifetime 3600 2>"$WORK/serve-$db.log" &
  SERVER=$!
  for _ in $(seq 1 50); do curl -sf http://127.0.0.1:$PORT/health >/dev/null && break; sleep 0.2; done
  PDEX_BENCH_TOKEN=$(curl -sf -u "$CLIENT_ID:$CLIENT_SECRET" http://127.0.0.1:$PORT/oauth/token -d grant_type=client_credentials \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  export PDEX_BENCH_TOKEN
  echo "== $db: single read, 1 connection, ${PDEX_BENCH_READ_SECONDS:-10} s"
  measure -t1 -c1 -d"${PDEX_BENCH_READ_SECONDS:-10}"s --latency -s "$WORK/read.lua" http://127.0.0.1:$PORT
  echo "== $db: search mix, 32 connections, ${PDEX_BENCH_MIX_SECONDS:-20} s"
  measure -t2 -c32 -d"${PDEX_BENCH_MIX_SECONDS:-20}"s --latency -s "$WORK/mix.lua" http://127.0.0.1:$PORT
  kill $SERVER; wait $SERVER 2>/dev/null || true
done
psql "$ADMIN_URL" -qc "drop database if exists pdex_bench with (force)"
