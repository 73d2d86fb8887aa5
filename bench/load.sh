#!/usr/bin/env bash
# The load benchmark of issue [Performance]: the charter's scenarios against `cedar serve
# --no-worker` with wrk (64 connections, 3 s warm-up, 15 s measured), data seeded through the
# API (50 teachers, 2,000 families, 5,000 students, 20,000 lessons). Prints req/s, p50/p99 and
# the CPU share of Cedar and of PostgreSQL (all its processes) per scenario, and Cedar's RSS.
# Usage: bench/load.sh [postgres|sqlite]   (default postgres: a fresh database on $LOAD_PG,
# default postgres://postgres@127.0.0.1:5432, dropped after unless LOAD_KEEP_DB=1). Only some
# scenarios: LOAD_ONLY="a c". LOAD_DB=postgres://… reuses a kept database. Not part of .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
backend="${1:-postgres}"
duration="${LOAD_SECONDS:-15}"
. bench/lib.sh
need wrk
# LOAD_BIN=/path/to/cedar measures another build (say, another profile) as it is.
bin=$(release_cedar "${LOAD_BIN:-}")
port=$(free_port)
work=$(mktemp -d)
export CEDAR_DATA_DIR="$work/data" CEDAR_LOG_LEVEL=warn CEDAR_CONFIG=/dev/null CEDAR_RATE_LIMIT_PER_MINUTE=0 \
  CEDAR_AUTH_RATE_PER_IP=1000000 CEDAR_AUTH_RATE_PER_ACCOUNT=1000000 CEDAR_OWNER_ALERTS=false
pg_db=""
if [ -n "${LOAD_DB:-}" ]; then
  # An already seeded database (LOAD_KEEP_DB=1 from an earlier run): no seeding; scenario d
  # then finds some of its free slots taken by the earlier run.
  export DATABASE_URL="$LOAD_DB"; pg_db="kept"; backend=kept
elif [ "$backend" = postgres ]; then
  pg="${LOAD_PG:-postgres://postgres@127.0.0.1:5432}"
  pg_db="cedar_load_$$"
  psql "$pg/postgres" -qc "CREATE DATABASE $pg_db" >/dev/null
  export DATABASE_URL="$pg/$pg_db"
fi
cleanup() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  if [ -n "$pg_db" ] && [ -n "${LOAD_KEEP_DB:-}" ]; then
    echo "kept the seeded database: $DATABASE_URL (bench/explain.sh reads it)"; return
  fi
  [ -n "$pg_db" ] && [ "$pg_db" != kept ] && psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS $pg_db WITH (FORCE)" >/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

[ "$backend" = kept ] || "$bin" admin create --email load@bench.example --password 'load-bench-password' >/dev/null
# LOAD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 (or libmimalloc.so.2) compares allocators.
LD_PRELOAD="${LOAD_PRELOAD:-}" "$bin" serve --no-worker --addr "127.0.0.1:$port" & pid=$!
url="http://127.0.0.1:$port"
until curl -fs "$url/ready" >/dev/null; do sleep 0.05; done
token=$(curl -s -X POST -H 'content-type: application/json' -d '{"email":"load@bench.example","password":"load-bench-password"}' \
  "$url/auth/v1/token?grant_type=password" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
if [ "$backend" = kept ]; then
  psql "$DATABASE_URL" -Atc "SELECT id FROM teachers ORDER BY created_at, id" > "$work/teachers.txt"
  psql "$DATABASE_URL" -Atc "SELECT id FROM students ORDER BY created_at, id" > "$work/students.txt"
else
  echo "== seeding through the API"
  time python3 bench/load/seed.py "$url" "$token" "$work/ids.json"
  python3 - "$work" <<'PY'
import json, sys
ids = json.load(open(f"{sys.argv[1]}/ids.json"))
for name in ("teachers", "students"):
    open(f"{sys.argv[1]}/{name}.txt", "w").write("\n".join(ids[name]) + "\n")
PY
fi
if [ -n "$pg_db" ]; then psql "$DATABASE_URL" -qc "ANALYZE" >/dev/null; fi
export TOKEN="$token" TEACHERS="$work/teachers.txt" STUDENTS="$work/students.txt"

ticks() { # CPU ticks (user + system) of the given pids
  local total=0
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] || continue
    total=$(( total + $(awk '{print $14 + $15}' "/proc/$p/stat") ))
  done
  echo "$total"
}
pg_ticks() { # "pid ticks" of every PostgreSQL process, sorted for join
  for p in $(pgrep -x postgres); do
    [ -r "/proc/$p/stat" ] && echo "$p $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null)"
  done | sort -k1,1
}
busy() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
hz=$(getconf CLK_TCK)
printf '%-44s %10s %9s %9s %7s %7s\n' scenario "req/s" "p50 ms" "p99 ms" "cedar" "pg"
run() { # name, script, path
  local name="$1" script="$2" path="$3"
  RUN=1 wrk -t2 -c64 -d3s -s "bench/load/$script" "$url$path" >/dev/null 2>&1
  RUN=2 wrk -t2 -c64 -d"${duration}s" --latency -s "bench/load/$script" "$url$path" >"$work/wrk.out" &
  local wrk_pid=$!
  sleep 0.2
  # PostgreSQL's share: the ticks of its processes (the pool's backends live through the
  # run). With SQLite: everything the machine did besides Cedar and wrk (loopback TCP mostly).
  local c0 b0 w0; c0=$(ticks "$pid"); b0=$(busy); w0=$(ticks "$wrk_pid"); pg_ticks > "$work/pg0"
  sleep "$duration"
  local c1 b1 w1; c1=$(ticks "$pid"); b1=$(busy); w1=$(ticks "$wrk_pid"); pg_ticks > "$work/pg1"
  wait "$wrk_pid"
  local out; out=$(cat "$work/wrk.out")
  local p0=$(( b0 - c0 - w0 )) p1=$(( b1 - c1 - w1 ))
  if [ -n "$pg_db" ]; then # the growth of every PostgreSQL process alive at both ends
    p0=0; p1=$(join "$work/pg0" "$work/pg1" | awk '{d += $3 - $2} END {print d + 0}')
  fi
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out"); p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  ms() { python3 -c "v='$1'; print(round(float(v[:-2]) if v.endswith('ms') else float(v[:-2])/1000 if v.endswith('us') else float(v[:-1])*1000, 2))"; }
  printf '%-44s %10s %9s %9s %7.2f %7.2f\n' "$name" "$rps" "$(ms "$p50")" "$(ms "$p99")" \
    "$(python3 -c "print(($c1-$c0)/$hz/$duration)")" "$(python3 -c "print(($p1-$p0)/$hz/$duration)")"
  grep -q "Non-2xx" <<<"$out" && grep "Non-2xx" <<<"$out" | sed 's/^/    /' || true
}
only="${LOAD_ONLY:-a b c d e}"
want() { [[ " $only " == *" $1 "* ]]; }
want a && IDS="$STUDENTS" PATH_PREFIX="/v1/students/" run "a GET /v1/students/{id}" ids.lua "/"
want b && PATH_Q="/v1/students?q=an&limit=50" run "b GET /v1/students?q=an&limit=50" fixed.lua "/"
want c && IDS="$TEACHERS" run "c GET /v1/lessons (one teacher's week)" week.lua "/"
want d && run "d POST /v1/lessons (half conflicting)" book.lua "/"
tampered="${token%?????}AAAAA"
want e && TOKEN="$tampered" PATH_Q="/v1/me" run "e tampered token -> 401" fixed.lua "/"
[ -n "${LOAD_HOLD:-}" ] && { echo "holding: $url (token in \$TOKEN); Ctrl-C ends"; echo "$url $token $pid" > "${LOAD_HOLD}"; wait "$pid"; }
rss() { awk '/VmRSS|RssAnon|RssFile/ {printf "%s %s %s  ", $1, $2, $3}' /proc/$pid/status; }
echo "Cedar RSS after the run: $(rss)"
sleep 11
echo "Cedar RSS 11 s later (freed heap returned a second after a burst, and every 10 s): $(rss)"
