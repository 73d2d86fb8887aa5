#!/usr/bin/env bash
# Foundation figures: release binary size, start → /ready, idle RSS, GET /health under load.
# Usage: bench/http.sh [DATABASE_URL]   (default: SQLite in a temp dir)
# Needs wrk (installed from Debian's packages if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
need wrk

bin=$(release_cedar)
port=$(free_port)
data=$(mktemp -d)
# Load tests measure throughput, not the general request limit.
export CEDAR_DATA_DIR="$data" CEDAR_LOG_LEVEL=warn CEDAR_CONFIG=/dev/null CEDAR_RATE_LIMIT_PER_MINUTE=0
[ -n "${1:-}" ] && export DATABASE_URL="$1"

echo "binary size: $(du -h "$bin" | cut -f1) ($(stat -c %s "$bin") bytes)"
start=$(date +%s%N)
"$bin" serve --addr "127.0.0.1:$port" &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$data"' EXIT
until curl -fs "http://127.0.0.1:$port/ready" >/dev/null; do sleep 0.005; done
echo "start → /ready 200: $(( ($(date +%s%N) - start) / 1000000 )) ms (includes migrating a new database)"
sleep 1
echo "idle RSS: $(awk '/VmRSS|RssAnon|RssFile/ {printf "%s %s %s  ", $1, $2, $3}' /proc/$pid/status)"
wrk -t2 -c64 -d10s --latency "http://127.0.0.1:$port/health" | grep -E "Requests/sec|Latency|50%|99%"
echo "RSS after load: $(awk '/VmRSS|RssAnon|RssFile/ {printf "%s %s %s  ", $1, $2, $3}' /proc/$pid/status)"
