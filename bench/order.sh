#!/usr/bin/env bash
# Regenerates build/cedar.order, the linker's symbol ordering for release builds (build.rs
# passes it to lld). It lists every function a release `cedar serve` runs from start-up
# through each kind of request the load benchmark makes — recorded by valgrind's callgrind,
# which sees every function executed, not a sample — so that the linker places them side by
# side. Why: the kernel maps a file-backed page together with its neighbours (64 KB around
# each fault), so code that start-up touches here and there keeps most of the 20 MB of text
# resident; packed together it is a few megabytes (docs/performance.md, "Fourth round").
# A stale list costs nothing but locality: names it lists that no longer exist are skipped.
# Usage: bench/order.sh   (needs valgrind and PostgreSQL on $LOAD_PG, default
# postgres://postgres@127.0.0.1:5432; takes a few minutes). Not part of .ci/run.
# bench/order.sh --check [BIN]: how much of the list a release binary still has — after a
# toolchain or dependency upgrade renames functions, run this, and regenerate when it falls.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
if [ "${1:-}" = "--check" ]; then
  bin="${2:-${CARGO_TARGET_DIR:-target}/release/cedar}"
  nm --defined-only "$bin" | awk '{print $3}' | sort -u > "${TMPDIR:-/tmp}/cedar.symbols.$$"
  listed=$(wc -l < build/cedar.order)
  found=$(sort -u build/cedar.order | comm -12 - "${TMPDIR:-/tmp}/cedar.symbols.$$" | wc -l)
  rm -f "${TMPDIR:-/tmp}/cedar.symbols.$$"
  echo "build/cedar.order: $found of $listed listed names are defined in $bin"
  exit 0
fi
need valgrind
# Which functions run does not depend on where they sit, so any release build will do
# (ORDER_BIN=/path/to/cedar records a given one). Function names carry hashes that change
# with the toolchain and the dependencies (even a patched one): record the build you ship.
bin=$(release_cedar "${ORDER_BIN:-}")
work=$(mktemp -d)
pg="${LOAD_PG:-postgres://postgres@127.0.0.1:5432}"
pg_db="cedar_order_$$"
cleanup() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null
  psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS $pg_db WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
port=$(free_port)
url="http://127.0.0.1:$port"
export CEDAR_LOG_LEVEL=warn CEDAR_CONFIG=/dev/null CEDAR_RATE_LIMIT_PER_MINUTE=0 CEDAR_OWNER_ALERTS=false

call() { # method path [body] → response body on stdout
  curl -s -X "$1" -H "authorization: Bearer $token" -H 'content-type: application/json' ${3:+-d "$3"} "$url$2"
}
id_of() { python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'; }

workload() { # every request kind of bench/load.sh and its seeding, a few times each
  token=$(curl -s -X POST -H 'content-type: application/json' \
    -d '{"email":"order@bench.example","password":"order-bench-password"}' \
    "$url/auth/v1/token?grant_type=password" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  local teacher family student
  teacher=$(call POST /v1/teachers '{"first_name":"Ada","last_name":"Roy","email":"ada@order.example","instruments":["piano"]}' | id_of)
  family=$(call POST /v1/families '{"name":"Côté"}' | id_of)
  student=$(call POST /v1/students "{\"family_id\":\"$family\",\"first_name\":\"Léa\",\"last_name\":\"Côté\",\"instrument\":\"piano\",\"teacher_id\":\"$teacher\"}" | id_of)
  for round in 1 2 3; do
    call POST /v1/lessons "{\"teacher_id\":\"$teacher\",\"student_id\":\"$student\",\"starts_at\":\"2027-01-0${round}T20:00:00Z\",\"duration_minutes\":30,\"recurrence\":{\"rrule\":\"FREQ=WEEKLY;COUNT=4\"},\"override_availability\":true}" >/dev/null
    call POST /v1/lessons "{\"teacher_id\":\"$teacher\",\"student_id\":\"$student\",\"starts_at\":\"2028-02-0${round}T20:00:00Z\",\"duration_minutes\":30,\"override_availability\":true}" >/dev/null
    call POST /v1/lessons "{\"teacher_id\":\"$teacher\",\"student_id\":\"$student\",\"starts_at\":\"2028-02-0${round}T20:00:00Z\",\"duration_minutes\":30,\"override_availability\":true}" >/dev/null
    call GET "/v1/students/$student" >/dev/null
    call GET "/v1/students?q=an&limit=50" >/dev/null
    # Twice: read (or read again, the round's bookings changed it), then a kept page.
    call GET "/v1/lessons?teacher_id=$teacher&from=2027-01-01T00:00:00Z&to=2027-01-31T00:00:00Z" >/dev/null
    call GET "/v1/lessons?teacher_id=$teacher&from=2027-01-01T00:00:00Z&to=2027-01-31T00:00:00Z" >/dev/null
    curl -s -H "authorization: Bearer ${token%?????}AAAAA" "$url/v1/me" >/dev/null
    curl -s "$url/health" "$url/ready" >/dev/null
  done
}

record() { # backend name, then `cedar serve` arguments
  local name="$1"; shift
  "$bin" admin create --email order@bench.example --password 'order-bench-password' >/dev/null
  valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.$name" --compress-strings=no --compress-pos=no \
    --demangle=no "$bin" serve --addr "127.0.0.1:$port" "$@" 2>"$work/valgrind.$name.log" & pid=$!
  for _ in $(seq 1 1200); do curl -fs "$url/ready" >/dev/null && break; sleep 0.1; done
  workload
  kill -TERM "$pid"; wait "$pid" || true; pid=""
  echo "$name: $(grep -c '^fn=' "$work/callgrind.$name") functions"
}

CEDAR_DATA_DIR="$work/sqlite" record sqlite
psql "$pg/postgres" -qc "CREATE DATABASE $pg_db" >/dev/null
CEDAR_DATA_DIR="$work/pg" DATABASE_URL="$pg/$pg_db" record postgres --no-worker

mkdir -p build
# What the PostgreSQL server ran (production's backend) first, then what only SQLite's did;
# each in order of first appearance; only names the binary defines (not libc's).
nm --defined-only "$bin" | awk '{print $3}' > "$work/defined"
cat "$work"/callgrind.postgres "$work"/callgrind.sqlite | sed -n 's/^c\?fn=//p' \
  | awk -v defined="$work/defined" 'BEGIN { while ((getline name < defined) > 0) def[name] = 1 } def[$0] && !seen[$0]++' \
  > build/cedar.order
echo "build/cedar.order: $(wc -l < build/cedar.order) names"
