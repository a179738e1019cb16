#!/usr/bin/env bash
# Soak (issue 15): SOAK_SECONDS (default 600) of bounded mixed load — reads by id, searches,
# token requests — against `pdex serve --demo` on PostgreSQL, with a burst of expensive
# searches and a PostgreSQL restart in the middle. Reports, per kind of request, how many
# answers of each status it got (a 500, a hang or a crash is a bug: the run then exits 1),
# and how long service took to come back after the restart. The figures go to BENCHMARKS.md
# ("Soak").
#
#   SOAK_SECONDS=120 bench/soak.sh
#
# The database is a private cluster this script starts itself (initdb + pg_ctl on a free port
# under a temporary folder, as the postgres user when run as root) — never the shared server
# on 5432, which it does not touch. Environment: SOAK_SECONDS (600), SOAK_MEMBERS (synthetic
# members imported before the demo starts, 1000), SOAK_WORKERS (load threads, 4),
# SOAK_DOWN_SECONDS (how long PostgreSQL stays down, 10), SOAK_BURST (expensive searches sent
# at once, 16), PDEX_BIN (a pdex binary to use instead of building the release one).
# Needs python3 (standard library only), curl and PostgreSQL's server binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
SOAK_SECONDS="${SOAK_SECONDS:-600}"
MEMBERS="${SOAK_MEMBERS:-1000}"
WORKERS="${SOAK_WORKERS:-4}"
DOWN="${SOAK_DOWN_SECONDS:-10}"
BURST="${SOAK_BURST:-16}"

PGBIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
[ -x "$PGBIN/initdb" ] || { echo "soak: PostgreSQL's server binaries (initdb, pg_ctl) are needed" >&2; exit 1; }
if [ -n "${PDEX_BIN:-}" ]; then
  PDEX="$PDEX_BIN"
else
  cargo build --release --locked -q --bin pdex
  PDEX="${CARGO_TARGET_DIR:-target}/release/pdex"
fi

WORK="$(mktemp -d)"
chmod 755 "$WORK" # the postgres user reaches its cluster folder through it
SERVER=""
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PGPORT="$(free_port)"
PORT="$(free_port)"
PGDIR="$WORK/pg"
mkdir "$PGDIR"
[ "$(id -u)" = 0 ] && chown postgres:postgres "$PGDIR"
pg_start() {
  as_pg "$PGBIN/pg_ctl" -w -t 60 -D "$PGDIR/data" -l "$PGDIR/log" \
    -o "-p $PGPORT -k $PGDIR -c listen_addresses=127.0.0.1" start >/dev/null
}
pg_stop() { as_pg "$PGBIN/pg_ctl" -w -t 60 -m "${1:-fast}" -D "$PGDIR/data" stop >/dev/null; }
cleanup() {
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null
  pg_stop immediate 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "== machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr)"
as_pg "$PGBIN/initdb" -U postgres --auth=trust -E UTF8 -D "$PGDIR/data" >/dev/null
pg_start
echo "== private PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') on port $PGPORT"
DB_URL="postgres://postgres@127.0.0.1:$PGPORT/postgres"

"$PDEX" synth --members "$MEMBERS" --seed 15 --out "$WORK/data" >/dev/null
"$PDEX" import --database-url "$DB_URL" "$WORK/data" | tail -1
RESOURCES=$(cat "$WORK"/data/*.ndjson | wc -l)

"$PDEX" serve --demo --database-url "$DB_URL" --listen "127.0.0.1:$PORT" \
  --export-dir "$WORK/exports" >"$WORK/serve.log" 2>&1 &
SERVER=$!
for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.2; done
curl -sf "http://127.0.0.1:$PORT/health" >/dev/null || { cat "$WORK/serve.log" >&2; exit 1; }
echo "== data: $MEMBERS synthetic members (seed 15, $RESOURCES resources) under serve --demo's clients; $WORKERS load threads, $SOAK_SECONDS s"

# The load, the burst and the restart, timed by one script. Every request is bounded (30 s
# for HTTP, 60 s for a `pdex token` run); a request that reaches its bound counts as "hung".
python3 - "$PDEX" "http://127.0.0.1:$PORT" "$WORK" "$SOAK_SECONDS" "$WORKERS" "$DOWN" "$BURST" \
  "$PGBIN/pg_ctl" "$PGDIR" "$PGPORT" <<'PY'
import json, os, random, subprocess, sys, threading, time, urllib.error, urllib.request
from collections import Counter

pdex, base, work, seconds, workers, down, burst, pg_ctl, pgdir, pgport = sys.argv[1:]
seconds, workers, down, burst = int(seconds), int(workers), int(down), int(burst)
fhir = base + "/fhir"
token_url = base + "/oauth/token"
kit = os.path.join(work, "exports", "demo")
members = [m["patient_id"] for m in json.load(open(os.path.join(work, "data", "members.json")))]
as_pg = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []

def pdex_token(client, key):
    """One token request through `pdex token`: (status, token or None)."""
    try:
        out = subprocess.run([pdex, "token", "--client", client, "--key", os.path.join(kit, key),
                              "--token-url", token_url], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "hung", None
    if out.returncode == 0:
        return 200, json.loads(out.stdout)["access_token"]
    said = out.stderr.split("answered ")
    return (int(said[1].split()[0]) if len(said) > 1 else "no answer"), None

status, token = pdex_token("demo-admin", "admin.pem")
assert status == 200, f"first token: {status}"
token_lock = threading.Lock()
log, log_lock = [], threading.Lock()
t0 = time.monotonic()
end = t0 + seconds

def record(kind, started, status):
    with log_lock:
        log.append((started - t0, time.monotonic() - t0, kind, status))

def get(path, timeout=30):
    with token_lock:
        bearer = token
    req = urllib.request.Request(fhir + "/" + path, headers={
        "Authorization": "Bearer " + bearer, "Accept": "application/fhir+json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        e.read()
        return e.code
    except TimeoutError:
        return "hung"
    except (urllib.error.URLError, ConnectionError, OSError) as e:
        return "hung" if "timed out" in str(e) else "no answer"

def refresher():
    global token
    while time.monotonic() < end:
        time.sleep(60)
        status, new = pdex_token("demo-admin", "admin.pem")
        if new:
            with token_lock:
                token = new

SEARCHES = ["Observation?patient={p}&_revinclude=Provenance:target",
            "Condition?patient={p}", "ExplanationOfBenefit?patient={p}&type=professional",
            "Encounter?patient={p}&date=ge2019-01-01", "Coverage?beneficiary=Patient/{p}"]
TOKENS = [("demo-payer", "payer.pem"), ("demo-provider", "provider.pem"), ("demo-admin", "admin.pem")]

def worker(seed):
    rnd = random.Random(seed)
    while time.monotonic() < end:
        p = rnd.choice(members)
        kind = rnd.choices(["read", "search", "token"], [45, 45, 10])[0]
        started = time.monotonic()
        if kind == "read":
            status = get(f"Patient/{p}")
        elif kind == "search":
            status = get(rnd.choice(SEARCHES).format(p=p))
        else:
            status, _ = pdex_token(*rnd.choice(TOKENS))
        record(kind, started, status)
        time.sleep(0.02)

health = []
def health_poll():
    while time.monotonic() < end:
        started = time.monotonic()
        try:
            with urllib.request.urlopen(base + "/health", timeout=10) as r:
                status = r.status
        except urllib.error.HTTPError as e:
            status = e.code
        except Exception:
            status = "no answer"
        health.append((started - t0, status))
        time.sleep(0.25)

events = {}
def faults():
    # the burst of expensive searches at 40 %: 64 repeated filters (the default parameter
    # limit), each stopped by the search statement timeout at the latest
    time.sleep(max(0, t0 + seconds * 0.4 - time.monotonic()))
    events["burst"] = time.monotonic() - t0
    expensive = "Patient?" + "&".join(["name:contains=a"] * 64)
    def one():
        started = time.monotonic()
        record("expensive search", started, get(expensive, timeout=60))
    threads = [threading.Thread(target=one) for _ in range(burst)]
    for t in threads: t.start()
    for t in threads: t.join()
    events["burst done"] = time.monotonic() - t0
    # the restart at 50 %
    time.sleep(max(0, t0 + seconds * 0.5 - time.monotonic()))
    events["stop"] = time.monotonic() - t0
    subprocess.run(as_pg + [pg_ctl, "-w", "-t", "60", "-m", "fast", "-D", pgdir + "/data", "stop"],
                   check=True, capture_output=True)
    events["stopped"] = time.monotonic() - t0
    time.sleep(down)
    subprocess.run(as_pg + [pg_ctl, "-w", "-t", "60", "-D", pgdir + "/data", "-l", pgdir + "/log",
                            "-o", f"-p {pgport} -k {pgdir} -c listen_addresses=127.0.0.1", "start"],
                   check=True, capture_output=True)
    events["started"] = time.monotonic() - t0

threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
threads += [threading.Thread(target=f) for f in (health_poll, faults)]
threading.Thread(target=refresher, daemon=True).start()
for t in threads: t.start()
for t in threads: t.join()

ok = lambda s: isinstance(s, int) and s < 400
kinds = sorted({k for _, _, k, _ in log})
def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else 0
print(f"== {len(log)} requests in {time.monotonic() - t0:.0f} s")
print("| kind | requests | by status | p50 | p99 | max |")
print("|---|---|---|---|---|---|")
for k in kinds:
    c = Counter(str(s) for _, _, kk, s in log if kk == k)
    lat = [e - b for b, e, kk, _ in log if kk == k]
    print(f"| {k} | {sum(c.values())} | " + ", ".join(f"{s}: {n}" for s, n in sorted(c.items()))
          + f" | {pct(lat, .5) * 1000:.0f} ms | {pct(lat, .99) * 1000:.0f} ms | {max(lat):.1f} s |")
started = events["started"]
# Service is back at the first read or search that began after PostgreSQL accepted
# connections again and succeeded.
back = min((t for t, _, k, s in log if t >= started and ok(s) and k in ("read", "search")), default=None)
restart = (events["stop"] - 1, (back or started) + 1)
burst_window = (events["burst"], events["burst done"])
failed = [(t, k, s) for t, _, k, s in log if not ok(s) and k != "expensive search"]
def summary(rows):
    return ", ".join(f"{k} {s}: {n}" for (k, s), n in sorted(Counter((k, str(s)) for _, k, s in rows).items())) or "none"
in_restart = [f for f in failed if restart[0] <= f[0] <= restart[1]]
in_burst = [f for f in failed if burst_window[0] <= f[0] <= burst_window[1]]
other = [f for f in failed if f not in in_restart and f not in in_burst]
health_back = min((t for t, s in health if t >= started and s == 200), default=None)
health_down = [t for t, s in health if s != 200]
print(f"restart: stop requested at {events['stop']:.1f} s, down at {events['stopped']:.1f} s, "
      f"accepting again at {started:.1f} s ({started - events['stopped']:.1f} s without a database)")
if back is not None:
    print(f"service back (first successful read or search begun after PostgreSQL was back): {back - started:.2f} s after it")
if health_down:
    print(f"/health not 200 from {min(health_down):.1f} s to {max(health_down):.1f} s; 200 again "
          + (f"{health_back - started:.2f} s after PostgreSQL was back" if health_back is not None else "never"))
else:
    print("/health answered 200 throughout")
slowest = max((e - b for b, e, k, _ in log if k != "expensive search" and restart[0] <= b <= restart[1]), default=0)
print(f"failed ordinary requests around the restart: {len(in_restart)} ({summary(in_restart)}); slowest answer there {slowest:.1f} s")
print(f"failed ordinary requests during the expensive burst: {len(in_burst)} ({summary(in_burst)})")
print(f"failed ordinary requests at other times: {len(other)} ({summary(other)})")
print(f"expensive burst: {burst} sent at {events['burst']:.1f} s, all answered by {events['burst done']:.1f} s")
bad = [x for x in log if x[3] in (500, "hung")]
if bad:
    print(f"soak: {len(bad)} answers were a 500 or hung: {bad[:10]}", file=sys.stderr)
    sys.exit(1)
PY
if ! kill -0 "$SERVER" 2>/dev/null; then
  echo "soak: the server is gone" >&2
  tail -20 "$WORK/serve.log" >&2
  exit 1
fi
echo "server peak RSS: $(awk '/VmHWM/{print int($2/1024)}' /proc/$SERVER/status) MiB"
if grep -q "panicked" "$WORK/serve.log"; then
  echo "soak: the server logged a panic" >&2
  grep -m5 "panicked" "$WORK/serve.log" >&2
  exit 1
fi
