#!/usr/bin/env bash
# make scale: a fleet of simulated Podman hosts against a real API server and
# the fleet side as shipped (test/scale; docs/results/scale.md). Each step
# starts a stack of its own (hack/local-stack.sh with AGENTRUN_HOSTS=0, on
# 10.208.0.1) and brings it down again.
#
#   SCALE_HOSTS=100     the largest step's hosts (steps 10, 30 and it)
#   SCALE_STEPS=...     the steps' hosts, comma-separated (default 10,30,SCALE_HOSTS)
#   SCALE_RUNS=10000    the largest step's runs; a smaller step gets as many per host
#   SCALE_RUN_S=1       how long each simulated container runs, in seconds
#   SCALE_HOSTS_PER_PROCESS=25   simulated hosts per process
#   SCALE_QUICK=1       a smoke check: steps 5 and 10, 300 runs, 10 s idle
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=hack/lib.sh
source "$ROOT/hack/lib.sh"
log_setup scale
HOSTS=${SCALE_HOSTS:-100}
if [[ ${SCALE_QUICK:-0} == 1 ]]; then
  STEPS=${SCALE_STEPS:-5,10} RUNS=${SCALE_RUNS:-300} IDLE=10s
else
  STEPS=${SCALE_STEPS:-$( ((HOSTS > 30)) && echo "10,30,$HOSTS" || echo "$HOSTS")} RUNS=${SCALE_RUNS:-10000} IDLE=30s
fi
cd "$ROOT"
step "building the scale command and the simulated hosts (test/scale, test/scale/simhosts)"
logged make -s --no-print-directory build
logged go build -o "$ROOT/bin/scale" ./test/scale
logged go build -o "$ROOT/bin/simhosts" ./test/scale/simhosts
"$ROOT/bin/scale" -steps "$STEPS" -runs "$RUNS" -run-for "${SCALE_RUN_S:-1}s" \
  -hosts-per-process "${SCALE_HOSTS_PER_PROCESS:-25}" -idle "$IDLE" -root "$ROOT" -json "$ROOT/.local/scale.json"
