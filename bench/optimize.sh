#!/usr/bin/env bash
# The optimizer on the six reference instances (and any extra instance files given), each
# scored by the reference evaluate.py: objective, quality against OR-Tools CP-SAT's 300 s
# result (README of schedule-opt), relative utilization gain, moves, wall time.
#
# Usage: bench/optimize.sh [--max-moves N] [--time-limit S] [--iterations N] [--seed N] [EXTRA.json ...]
# Defaults: no move budget, 30 s cap, the binary's default iteration budget, seed 1, 2 threads.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
args=()
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --max-moves|--time-limit|--iterations|--seed|--threads) args+=("$1" "$2"); shift 2 ;;
    *) extra+=("$1"); shift ;;
  esac
done
bin=$(release_cedar)
fixtures=tests/fixtures/schedule-opt
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
printf '%-10s %12s %12s %8s %10s %7s %8s %6s %8s\n' instance before after quality util_gain seated moved budget wall_s
for path in "$fixtures"/instances/*.json "${extra[@]}"; do
  name=$(basename "$path" .json)
  start=$(date +%s.%N)
  "$bin" optimize "$path" --time-limit 30 "${args[@]}" > "$out/$name.json" 2> "$out/$name.log"
  wall=$(echo "$(date +%s.%N) - $start" | bc)
  python3 "$fixtures/evaluate.py" "$path" "$out/$name.json" > "$out/$name.eval.json" || {
    echo "$name: INFEASIBLE"; cat "$out/$name.eval.json"; exit 1; }
  python3 - "$name" "$out/$name.eval.json" "$wall" "${args[*]:-}" <<'EOF'
import json, sys
name, report, wall, args = sys.argv[1], json.load(open(sys.argv[2])), float(sys.argv[3]), sys.argv[4]
# CP-SAT, 2 workers, 300 s (schedule-opt README); None where the reference has no figure.
cpsat = {"small-1": 251_755, "small-2": 248_755, "medium-1": 1_048_700, "medium-2": 1_072_600,
         "large-1": 4_076_465, "large-2": 4_016_625}
b, a = report["before"], report["after"]
ref = cpsat.get(name)
quality = f"{100 * (a['objective'] - b['objective']) / (ref - b['objective']):.1f}%" if ref else "-"
gain = 100 * (a["utilization_pct"] - b["utilization_pct"]) / b["utilization_pct"]
budget = args.split("--max-moves ")[1].split()[0] if "--max-moves" in args else "none"
print(f"{name:<10} {b['objective']:>12,} {a['objective']:>12,} {quality:>8} {gain:>+9.1f}% "
      f"{a['waitlisted_placed']:>7} {a['moved']:>8} {budget:>6} {wall:>8.2f}")
EOF
done
