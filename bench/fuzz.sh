#!/usr/bin/env bash
# Fuzzes the API from its own OpenAPI document with Schemathesis (stateless phases: examples,
# coverage, fuzzing) as the demo school's admin, and fails on any 5xx, any status code the
# operation does not document, or a response that contradicts its schema or content type.
#
# Usage: bench/fuzz.sh [sqlite|postgres] [MAX_EXAMPLES]   (default: sqlite 10)
# PostgreSQL: a fresh database on $FUZZ_PG (default postgres://postgres@127.0.0.1:5432), dropped after.
# Installs Schemathesis from PyPI into target/fuzz-venv on first use. Not part of .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
backend="${1:-sqlite}"
examples="${2:-10}"
venv="${CARGO_TARGET_DIR:-target}/fuzz-venv"
if [ ! -x "$venv/bin/schemathesis" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "schemathesis>=4,<5"
fi

cargo build --quiet
bin="${CARGO_TARGET_DIR:-target}/debug/cedar"
port=$(free_port)
data=$(mktemp -d)
export CEDAR_DATA_DIR="$data" CEDAR_LOG_LEVEL=error CEDAR_CONFIG=/dev/null CEDAR_RATE_LIMIT_PER_MINUTE=0 \
  CEDAR_AUTH_RATE_PER_IP=100000 CEDAR_AUTH_RATE_PER_ACCOUNT=100000 CEDAR_PUBLIC_URL="http://127.0.0.1:$port"
pg_db=""
if [ "$backend" = postgres ]; then
  base="${FUZZ_PG:-postgres://postgres@127.0.0.1:5432}"
  pg_db="cedar_fuzz_$$"
  psql "$base/postgres" -qc "CREATE DATABASE $pg_db" >/dev/null
  export DATABASE_URL="$base/$pg_db"
fi
cleanup() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  [ -n "$pg_db" ] && psql "$base/postgres" -qc "DROP DATABASE IF EXISTS $pg_db WITH (FORCE)" >/dev/null
  rm -rf "$data"
}
trap cleanup EXIT

"$bin" demo >/dev/null
"$bin" serve --no-worker --addr "127.0.0.1:$port" &
pid=$!
until curl -fs "http://127.0.0.1:$port/ready" >/dev/null; do sleep 0.05; done
token=$(curl -fs "http://127.0.0.1:$port/auth/v1/token?grant_type=password" -H 'content-type: application/json' \
  -d '{"email":"admin@demo.cedarheights.ca","password":"cedar-demo-2026"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

report="$data/report"
set +e
"$venv/bin/schemathesis" run "http://127.0.0.1:$port/openapi.json" \
  --url "http://127.0.0.1:$port" -H "Authorization: Bearer $token" \
  --phases examples,coverage,fuzzing --max-examples "$examples" --seed 20261129 --workers 1 \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --exclude-path-regex '^/auth/v1/(logout|user)$|^/v1/me/sessions/' --suppress-health-check all --no-shrink \
  --report ndjson --report-dir "$report" --no-color --output-truncate true
status=$?
set -e
# The run must not have locked itself out (a revoked token makes the rest of it meaningless).
echo "admin token at the end: $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v1/me" -H "Authorization: Bearer $token")"
if [ -n "${FUZZ_DEBUG:-}" ]; then
  curl -s "http://127.0.0.1:$port/v1/me" -H "Authorization: Bearer $token"; echo
  sqlite3 "$data/cedar.db" "SELECT action, details FROM audit_log WHERE action LIKE 'auth.%' OR action LIKE 'user.%' ORDER BY id DESC LIMIT 20" 2>/dev/null || true
fi
# Requests actually sent, from the run's event stream.
python3 - "$report" <<'EOF'
import json, pathlib, sys
requests = 0
for path in pathlib.Path(sys.argv[1]).glob("*.ndjson"):
    for line in path.read_text().splitlines():
        event = json.loads(line)
        for kind, body in event.items():
            if kind == "ScenarioFinished":
                for case in (body.get("recorder") or {}).get("interactions", {}).values():
                    requests += 1
print(f"requests sent: {requests}")
EOF
exit $status
