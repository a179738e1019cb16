# Sourced by bench/member_match.sh and bench/export.sh: the release build, the server's
# clean-up on exit, and the machine line every result starts with.
TARGET="${CARGO_TARGET_DIR:-target}"
SERVER=""
trap '[ -n "$SERVER" ] && kill $SERVER 2>/dev/null || true' EXIT

cargo build --release --locked -q --bin pdex
cargo test --release --locked -q --test bench --no-run
PDEX=$TARGET/release/pdex
echo "== machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr)"

# A run that was interrupted leaves its jobs queued or running; a new server would resume
# them alongside the measured ones.
cancel_leftover_jobs() {
  local sql="UPDATE jobs SET state = 'cancelled' WHERE state IN ('queued', 'running')"
  case "$1" in
    sqlite://*) [ -e "${1#sqlite://}" ] && python3 -c "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(sys.argv[2]); c.commit()" "${1#sqlite://}" "$sql" || true ;;
    *) psql "$1" -qc "$sql" 2>/dev/null || true ;;
  esac
}
