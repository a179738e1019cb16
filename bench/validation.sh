#!/usr/bin/env bash
# The cost of the R4 write validator (issue 16 item 1): `pdex import` of NDJSON and of
# transaction Bundles, and single writes over HTTP, into fresh SQLite and PostgreSQL stores.
# Run it once with the normal release binary and once with a binary built without the
# validator (see BENCHMARKS.md, "Write validation"), on the same data:
#
#   bench/validation.sh [MEMBERS] [PDEX_BINARY]      (default 300 members, target/release/pdex)
#
# Needs PostgreSQL on 127.0.0.1:5432 with trust auth (PDEX_BENCH_POSTGRES_URL overrides).
set -euo pipefail
cd "$(dirname "$0")/.."
MEMBERS="${1:-300}"
PDEX="${2:-${CARGO_TARGET_DIR:-target}/release/pdex}"
ADMIN_URL="${PDEX_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
PORT=18086
RUNS="${PDEX_BENCH_RUNS:-3}"
WORK="$(mktemp -d)"
SERVER=""
trap '[ -n "$SERVER" ] && kill $SERVER 2>/dev/null; rm -rf "$WORK"' EXIT

echo "== machine: $(nproc) cores, $(uname -sr), binary $PDEX"
$PDEX synth --members "$MEMBERS" --seed 7 --out "$WORK/data" >/dev/null
TOTAL=$(cat "$WORK"/data/*.ndjson | wc -l)
echo "== data: $MEMBERS members, $TOTAL resources, $(du -sh "$WORK/data" | cut -f1) of NDJSON"

# The same resources as transaction Bundles of 100 PUT entries each.
mkdir -p "$WORK/bundles"
python3 - "$WORK" <<'PY'
import json, os, sys
work = sys.argv[1]
lines = []
for f in sorted(os.listdir(f"{work}/data")):
    if f.endswith(".ndjson"):
        lines += [l for l in open(f"{work}/data/{f}") if l.strip()]
for n in range(0, len(lines), 100):
    entries = []
    for l in lines[n:n + 100]:
        r = json.loads(l)
        entries.append({"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}})
    json.dump({"resourceType": "Bundle", "type": "transaction", "entry": entries},
              open(f"{work}/bundles/b{n:07d}.json", "w"))
PY

fresh() {  # a fresh database URL for engine $1
  if [ "$1" = sqlite ]; then
    rm -f "$WORK/bench.db"*; echo "sqlite://$WORK/bench.db"
  else
    psql "$ADMIN_URL" -qc "drop database if exists pdex_bench_v with (force)" >/dev/null
    psql "$ADMIN_URL" -qc "create database pdex_bench_v" >/dev/null
    echo "${ADMIN_URL%/*}/pdex_bench_v"
  fi
}

for db in sqlite postgres; do
  for what in data bundles; do
    for run in $(seq 1 "$RUNS"); do
      url=$(fresh $db)
      $PDEX migrate --database-url "$url" >/dev/null 2>&1 || true
      start=$(date +%s.%N)
      /usr/bin/time -f "%U %S" -o "$WORK/cpu" $PDEX import --database-url "$url" "$WORK/$what" >/dev/null
      end=$(date +%s.%N)
      python3 -c "import sys; s=float(sys.argv[2])-float(sys.argv[1]); u,y=open(sys.argv[4]).read().split()[-2:]; print(f'import $db $what run $run: {s:.2f} s = {int(sys.argv[3])/s:,.0f} resources/s (CPU user {u} s, system {y} s)')" "$start" "$end" "$TOTAL" "$WORK/cpu"
    done
  done

  # single writes: PUT one resource per request on one keep-alive connection
  url=$(fresh $db)
  $PDEX migrate --database-url "$url" >/dev/null 2>&1 || true
  $PDEX client add --database-url "$url" --name "bench" --kind admin --secret --scope 'system/*.cruds' >"$WORK/client.json"
  CLIENT_ID=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["client_id"])' <"$WORK/client.json")
  CLIENT_SECRET=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["client_secret"])' <"$WORK/client.json")
  $PDEX serve --database-url "$url" --listen 127.0.0.1:$PORT --log-format json --token-lifetime 3600 2>"$WORK/serve.log" &
  SERVER=$!
  for _ in $(seq 1 50); do curl -sf http://127.0.0.1:$PORT/health >/dev/null && break; sleep 0.2; done
  TOKEN=$(curl -sf -u "$CLIENT_ID:$CLIENT_SECRET" http://127.0.0.1:$PORT/oauth/token -d grant_type=client_credentials \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  python3 - "$WORK" "$PORT" "$TOKEN" "$db" <<'PY'
import http.client, json, sys, time
work, port, token, db = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
bodies = []
for f in ("Observation.ndjson", "ExplanationOfBenefit.ndjson", "Patient.ndjson"):
    bodies += [l for l in open(f"{work}/data/{f}") if l.strip()][:1000]
conn = http.client.HTTPConnection("127.0.0.1", port)
headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json",
           "Prefer": "return=minimal"}
for rnd in range(2):  # the first round creates, the second updates
    start = time.time()
    for b in bodies:
        r = json.loads(b)
        conn.request("PUT", f"/fhir/{r['resourceType']}/{r['id']}", b.encode(), headers)
        resp = conn.getresponse(); resp.read()
        assert resp.status in (200, 201), (resp.status, b[:200])
    s = time.time() - start
    print(f"single PUT {db} {'create' if rnd == 0 else 'update'}: {len(bodies)} in {s:.2f} s = {len(bodies)/s:,.0f} writes/s, {1000*s/len(bodies):.2f} ms each")
PY
  # the server's own CPU time over the whole run (less sensitive to a busy machine than wall time)
  awk -v db=$db '{printf "server CPU %s: user %.2f s, system %.2f s\n", db, $14/100, $15/100}' /proc/$SERVER/stat
  kill $SERVER; wait $SERVER 2>/dev/null || true; SERVER=""
done
psql "$ADMIN_URL" -qc "drop database if exists pdex_bench_v with (force)" >/dev/null
