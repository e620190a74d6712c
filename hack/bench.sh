#!/usr/bin/env bash
# make bench: starts a local stack of its own (host "bench", beside any stack
# `make up` started), runs test/bench against it, and tears it down.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=hack/lib.sh
source "$ROOT/hack/lib.sh"
log_setup bench
# BENCH_PROFILE picks the sizes; any BENCH_* variable below overrides them:
#   quick     one short repetition of everything: proves the code path
#             (about 5 minutes on a quiet machine), not figures to quote;
#             BENCH_QUICK=1 is the same.
#   standard  (the default) the figures to re-measure after every
#             performance change: the launch, raw, cli and agentrun steps,
#             BENCH_N=200 runs, BENCH_REPS=3, with and without
#             BENCH_SCALE=10000 finished runs; no fleet, progress or egress
#             steps (under 30 minutes on a 2-core machine).
#   full      standard plus the 3-host fleet step, the progress step and the
#             egress step (about 90 minutes).
# The progress step's runs print a line a second, all at once, on a host of
# its own: BENCH_PROGRESS_RUNS of them (0 skips the step) for
# BENCH_PROGRESS_DURATION; BENCH_ONLY_PROGRESS=1 runs that step alone.
# The egress step (the egress proxy against direct HTTPS, in the bench's
# own process, no stack needed) downloads BENCH_EGRESS_MIB (0 skips the step)
# on each path twice: as fast as the machine goes (on loopback: the CPU
# each path costs) and with the upstream's answer paced at
# BENCH_EGRESS_LINK_MBIT (1000, a host's 1 Gbit/s link; 0 skips that
# download: what a run waits for, the download goals' figure); and it makes
# BENCH_EGRESS_REQUESTS small requests on each path; BENCH_ONLY_EGRESS=1
# runs that step alone, without starting a stack.
# The scale step (BENCH_SCALE finished runs) also starts a --mode=host and a
# --mode=fleet manager of its own, before and with the finished runs, for
# host_rss_mib_* and fleet_rss_mib_*; BENCH_ONLY_SCALE=1 runs that step alone.
# BENCH_ONLY_SOAK=1 runs make soak's runs alone on this stack (hack/soak.sh,
# which sets it, says what they are).
# BENCH_HOST names the stack's host ("bench"); with other BENCH_*_PORT and
# AGENTRUN_LOGS_PORT values, a second bench can share a Podman with a first
# from another checkout without either taking the other's containers.
PROFILE=${BENCH_PROFILE:-standard}
[[ ${BENCH_QUICK:-0} == 1 ]] && PROFILE=quick
case $PROFILE in
quick)
  N=${BENCH_N:-40} SCALE=${BENCH_SCALE:-1000} REPS=${BENCH_REPS:-1} SETTLE=${BENCH_SETTLE:-5s} LAUNCH_N=${BENCH_LAUNCH_N:-5}
  FLEET_HOSTS=${BENCH_FLEET_HOSTS:-3} PROGRESS_RUNS=${BENCH_PROGRESS_RUNS:-20} PROGRESS_DURATION=${BENCH_PROGRESS_DURATION:-40s}
  EGRESS_MIB=${BENCH_EGRESS_MIB:-20} EGRESS_REQUESTS=${BENCH_EGRESS_REQUESTS:-200}
  ;;
standard | full)
  N=${BENCH_N:-200} SCALE=${BENCH_SCALE:-10000} REPS=${BENCH_REPS:-3} SETTLE=${BENCH_SETTLE:-20s} LAUNCH_N=${BENCH_LAUNCH_N:-20}
  PROGRESS_DURATION=${BENCH_PROGRESS_DURATION:-4m} EGRESS_REQUESTS=${BENCH_EGRESS_REQUESTS:-1000}
  if [[ $PROFILE == full ]]; then
    FLEET_HOSTS=${BENCH_FLEET_HOSTS:-3} PROGRESS_RUNS=${BENCH_PROGRESS_RUNS:-200} EGRESS_MIB=${BENCH_EGRESS_MIB:-100}
  else
    FLEET_HOSTS=${BENCH_FLEET_HOSTS:-0} PROGRESS_RUNS=${BENCH_PROGRESS_RUNS:-0} EGRESS_MIB=${BENCH_EGRESS_MIB:-0}
  fi
  ;;
*)
  step "BENCH_PROFILE=$PROFILE: want quick, standard or full"
  exit 2
  ;;
esac
SOAK=${BENCH_ONLY_SOAK:-0}
[[ $SOAK == 1 ]] || step "profile $PROFILE: N=$N REPS=$REPS SCALE=$SCALE fleet hosts $FLEET_HOSTS, progress runs $PROGRESS_RUNS, egress $EGRESS_MIB MiB"
EGRESS_FLAGS=(-egress-mib "$EGRESS_MIB" -egress-requests "$EGRESS_REQUESTS" -egress-link-mbit "${BENCH_EGRESS_LINK_MBIT:-1000}"
  -json "$ROOT/.local/bench.json")
C=${BENCH_C:-8}
RESYNC=${BENCH_RESYNC:-10s}
PPROF_PORT=${BENCH_PPROF_PORT:-18092}

if [[ ${BENCH_ONLY_EGRESS:-0} == 1 ]]; then
  cd "$ROOT"
  step "building the benchmark, test/bench (seconds)"
  logged go build -o "$ROOT/bin/bench" ./test/bench
  "$ROOT/bin/bench" -only-egress -reps "$REPS" "${EGRESS_FLAGS[@]}"
  exit 0
fi

export AGENTRUN_LOCAL_DIR=$ROOT/.local/bench-stack
export AGENTRUN_HOST_NAME=${BENCH_HOST:-bench}
export AGENTRUN_METRICS_PORT=${BENCH_METRICS_PORT:-18090}
export AGENTRUN_PROBE_PORT=${BENCH_PROBE_PORT:-18091}
# The soak's runs call back a receiver in the bench's process, on 127.0.0.1,
# and refresh their live output within their few seconds (its host, a
# manager the soak starts, takes the stack's configuration).
HOST_EXTRA=
if [[ $SOAK == 1 ]]; then
  HOST_EXTRA=",\"notify\":{\"allowedCIDRs\":[\"127.0.0.1/32\"]},\"output\":{\"progressPeriod\":\"${SOAK_PROGRESS_PERIOD:-1s}\"}"
fi
# Merged over the stack's configuration file (hack/local-stack.sh write_config).
export AGENTRUN_MANAGER_CONFIG="{\"host\":{\"runs\":{\"maxConcurrent\":$C,\"workers\":$((2 * C)),\"resyncPeriod\":\"$RESYNC\"}$HOST_EXTRA},\"pprof\":{\"bindAddress\":\"127.0.0.1:$PPROF_PORT\"}}"

# The stack is the bench's own, so down is right here: it wipes only
# .local/bench-stack.
at_exit '"$ROOT/hack/local-stack.sh" down'
"$ROOT/hack/local-stack.sh" up >&2
cd "$ROOT"
step "building the benchmark, test/bench (seconds)"
logged go build -o "$ROOT/bin/bench" ./test/bench
"$ROOT/bin/bench" -host "$AGENTRUN_HOST_NAME" -n "$N" -c "$C" -scale "$SCALE" -reps "$REPS" -fleet-hosts "$FLEET_HOSTS" -settle "$SETTLE" -resync-period "$RESYNC" \
  -launch-n "$LAUNCH_N" -podman-cli podman \
  -progress-runs "$PROGRESS_RUNS" -progress-duration "$PROGRESS_DURATION" -only-progress="$([[ ${BENCH_ONLY_PROGRESS:-0} == 1 ]] && echo true || echo false)" \
  -only-scale="$([[ ${BENCH_ONLY_SCALE:-0} == 1 ]] && echo true || echo false)" \
  -only-soak="$([[ $SOAK == 1 ]] && echo true || echo false)" -soak-runs "${SOAK_RUNS:-5000}" -soak-every "${SOAK_EVERY:-1000}" \
  -soak-run-seconds "${SOAK_RUN_SECONDS:-2}" -soak-idle "${SOAK_IDLE:-0}" -soak-mem-profile-rate "${SOAK_MEMPROFILERATE:-0}" \
  -soak-profiles "$ROOT/.local/soak-heap" -soak-json "$ROOT/.local/soak.json" \
  -manager-bin "$ROOT/bin/manager" -stack-config "$AGENTRUN_LOCAL_DIR/manager.yaml" \
  -kubeconfig "$AGENTRUN_LOCAL_DIR/kubeconfig" \
  -podman-socket "$AGENTRUN_PODMAN_SOCKET" \
  -manager-pid "$(cat "$AGENTRUN_LOCAL_DIR/manager.pid")" \
  -metrics-url "http://127.0.0.1:$AGENTRUN_METRICS_PORT/metrics" \
  -pprof-url "http://127.0.0.1:$PPROF_PORT/debug/pprof/" \
  "${EGRESS_FLAGS[@]}"
