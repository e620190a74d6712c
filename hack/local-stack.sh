#!/usr/bin/env bash
# The local stack: a Kubernetes control plane on loopback (hack/localstack),
# agentrun's manager serving the webhook and running AgentRuns as Podman host
# "local", and Podman's API service on a Unix socket.
#
#   hack/local-stack.sh up     start what is not running; what runs is kept
#   hack/local-stack.sh down   stop everything it started and remove what it
#                              made, the control plane's AgentRuns included
#   hack/local-stack.sh demo   up, apply config/samples, show the results, and
#                              down again unless a control plane was already up
#
# up never throws state away: a running control plane is kept with its
# AgentRuns, a dead manager is restarted against it, and Podman's API service is
# started when it does not answer. Only a dead control plane is replaced, by a
# new, empty one (its state died with it). down is the one way to wipe.
#
# State lives in $AGENTRUN_LOCAL_DIR (default .local/ in the repository);
# $AGENTRUN_MANAGER_ARGS adds flags to the manager. Progress lines go to stderr;
# the build's output goes to ~/.cache/agentrun/logs/local-stack.log.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=hack/lib.sh
source "$ROOT/hack/lib.sh"
log_setup local-stack agentrun
STATE=${AGENTRUN_LOCAL_DIR:-$ROOT/.local}
HOST_NAME=${AGENTRUN_HOST_NAME:-local}
METRICS_PORT=${AGENTRUN_METRICS_PORT:-18080}
PROBE_PORT=${AGENTRUN_PROBE_PORT:-18081}
TEST_IMAGE=localhost/agentrun-test:latest

# pid_of NAME: the pid recorded in $STATE/NAME.pid, or nothing.
pid_of() { if [[ -f $STATE/$1.pid ]]; then cat "$STATE/$1.pid"; fi; }

# alive NAME: the process recorded in $STATE/NAME.pid runs, and is this
# stack's: its command line names this state folder (the localstack's --dir,
# the manager's --webhook-cert-dir). The check keeps a recycled pid from
# passing for a process that died, and a zombie, whose command line is empty,
# counts as dead.
alive() {
  local pid
  pid=$(pid_of "$1")
  [[ -n $pid && -r /proc/$pid/cmdline ]] || return 1
  tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF -e "$STATE" -e "$STATE/webhook"
}

kubectl() { "$STATE/bin/kubectl" --kubeconfig "$STATE/kubeconfig" "$@"; }

# control_plane_ready: the localstack process runs and its API server answers.
# A slow answer (a loaded machine) is not a dead control plane, and replacing
# it would lose its AgentRuns: a live process gets about 30 s to answer.
control_plane_ready() {
  if ! alive localstack || [[ ! -f $STATE/stack.env || ! -x $STATE/bin/kubectl ]]; then
    return 1
  fi
  for _ in $(seq 10); do
    kubectl get --raw=/readyz --request-timeout=3s >/dev/null 2>&1 && return 0
    alive localstack || return 1
    sleep 1
  done
  return 1
}

wait_for() { # description, seconds, log file, command...
  local what=$1 seconds=$2 log=$3
  shift 3
  for _ in $(seq $((seconds * 10))); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  step "$what did not happen within ${seconds}s; the end of $log:"
  tail -n 30 "$log" 2>/dev/null | sed 's/^/  | /' >&2
  return 1
}

# stop NAME: SIGTERM, then SIGKILL after 15 s.
stop() {
  alive "$1" || return 0
  local pid
  pid=$(pid_of "$1")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 150); do
    alive "$1" || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}

# stop_control_plane: stops the localstack and whatever it left behind. It
# runs in a session of its own (setsid), and etcd and kube-apiserver, its
# children, stay in that session (envtest gives each a process group of its
# own, so the group does not find them). When the localstack was killed
# outright they outlive it: they are found here by that session and by their
# binaries, so that a pid reused since by an unrelated process is never
# touched, and killed with the data folders envtest made for them.
stop_control_plane() {
  local sid p stat rest exe p_sid arg leftovers=()
  sid=$(pid_of localstack)
  stop localstack
  [[ -n $sid ]] || return 0
  for p in /proc/[0-9]*; do
    stat=$(cat "$p/stat" 2>/dev/null) || continue
    rest=${stat##*) } # after "pid (comm) ": state ppid pgrp session ...
    read -r _ _ _ p_sid _ <<<"$rest"
    [[ $p_sid == "$sid" ]] || continue
    exe=$(readlink "$p/exe" 2>/dev/null) || continue
    case ${exe% (deleted)} in
      "$ROOT/bin/localstack" | "$AGENTRUN_CACHE"/k8s/*/etcd | "$AGENTRUN_CACHE"/k8s/*/kube-apiserver) ;;
      *) continue ;;
    esac
    while IFS= read -r -d '' arg; do
      if [[ $arg =~ =(/[^=]*/k8s_test_framework_[0-9]+) ]]; then leftovers+=("${BASH_REMATCH[1]}"); fi
    done <"$p/cmdline"
    kill -KILL "${p#/proc/}" 2>/dev/null || true
  done
  if ((${#leftovers[@]})); then
    sleep 0.5 # let the killed processes go before their files
    rm -rf "${leftovers[@]}"
  fi
}

up() {
  mkdir -p "$STATE/bin"
  # Both print their steps only when they have work to do; podman-setup.sh
  # starts Podman's API service when it does not answer.
  "$ROOT/hack/podman-setup.sh" >/dev/null
  local assets
  assets=$("$ROOT/hack/k8s-binaries.sh")
  ln -sf "$assets/kubectl" "$STATE/bin/kubectl"

  local start_control_plane=0 start_manager=0
  if ! control_plane_ready; then
    start_control_plane=1
    start_manager=1 # a new control plane has a new API server and webhook certificate
    if alive localstack; then
      step "the control plane (pid $(pid_of localstack)) does not answer: replacing it with a new, empty one; the AgentRuns it held are gone"
    elif [[ -f $STATE/localstack.pid ]]; then
      step "the control plane (pid $(pid_of localstack)) is not running: starting a new, empty one; the AgentRuns it held are gone"
    fi
  elif ! alive manager; then
    start_manager=1
    if [[ -f $STATE/manager.pid ]]; then
      step "the manager (pid $(pid_of manager)) is not running: restarting it; the control plane and its AgentRuns are kept"
    fi
  fi
  if ((!start_control_plane && !start_manager)); then
    step "already up"
    usage
    return
  fi

  local targets=(build) what="the manager"
  if ((start_control_plane)); then
    targets+=(localstack)
    what+=" and the local control plane"
  fi
  step "building $what (seconds; about 3 minutes with a cold Go build cache)"
  logged make -s --no-print-directory -C "$ROOT" "${targets[@]}"

  if ((start_control_plane)); then
    stop manager
    stop_control_plane
    rm -rf "${STATE:?}"/{webhook,kubeconfig,stack.env,localstack.pid,manager.pid}
    step "starting the control plane (etcd, kube-apiserver on 127.0.0.1) with the AgentRun CRD and webhook (about 5 seconds)"
    # setsid: a session of its own, so that stop_control_plane finds etcd and
    # kube-apiserver even when the localstack itself was killed.
    KUBEBUILDER_ASSETS=$assets setsid nohup "$ROOT/bin/localstack" --dir "$STATE" >"$STATE/localstack.log" 2>&1 &
    echo $! >"$STATE/localstack.pid"
    wait_for "the control plane start" 90 "$STATE/localstack.log" test -f "$STATE/stack.env"
  fi

  # shellcheck source=/dev/null
  source "$STATE/stack.env"
  step "starting the manager as Podman host '$HOST_NAME' (webhook on $WEBHOOK_HOST:$WEBHOOK_PORT, metrics on 127.0.0.1:$METRICS_PORT; a few seconds)"
  # The one host directory the samples mount (the reference sample's
  # /home/user/myrepo), named rather than left to the manager's default, which
  # is a real host's choice and may allow none. $AGENTRUN_MANAGER_ARGS comes
  # last, so it can widen this (the last --allowed-volume-paths wins).
  local extra=()
  read -r -a extra <<<"${AGENTRUN_MANAGER_ARGS:-}"
  # Appended, not truncated: after a restart the log still says how the
  # previous manager ended.
  echo "=== hack/local-stack.sh: manager starting at $(date -u +%FT%TZ)" >>"$STATE/manager.log"
  KUBECONFIG=$STATE/kubeconfig nohup "$ROOT/bin/manager" \
    --host-name "$HOST_NAME" \
    --podman-socket "$AGENTRUN_PODMAN_SOCKET" \
    --default-image "$TEST_IMAGE" \
    --default-command fake-agent \
    --allowed-volume-paths /home/user/myrepo \
    --webhook-host "$WEBHOOK_HOST" --webhook-port "$WEBHOOK_PORT" --webhook-cert-dir "$STATE/webhook" \
    --metrics-bind-address "127.0.0.1:$METRICS_PORT" \
    --health-probe-bind-address "127.0.0.1:$PROBE_PORT" \
    "${extra[@]}" \
    >>"$STATE/manager.log" 2>&1 &
  echo $! >"$STATE/manager.pid"
  wait_for "the manager becoming ready" 60 "$STATE/manager.log" curl -fsS "http://127.0.0.1:$PROBE_PORT/readyz"
  step "up"
  usage
}

usage() {
  cat <<EOF
  kubectl:    export KUBECONFIG=$STATE/kubeconfig PATH=$STATE/bin:\$PATH
              kubectl get agentruns -o wide
  logs:       $STATE/manager.log, $STATE/localstack.log
  metrics:    curl http://127.0.0.1:$METRICS_PORT/metrics
  stop:       make down (removes the AgentRuns too; make up restarts only what stopped)
EOF
}

down() {
  step "stopping the manager and the control plane"
  # The manager first: it leaves running containers running, as on any
  # restart; the demo deletes its runs before this.
  stop manager
  stop_control_plane
  # Only what up made: other things may live in the same folder (make bench
  # writes .local/bench.json).
  rm -rf "${STATE:?}"/{bin,webhook,kubeconfig,stack.env,manager.log,manager.pid,localstack.log,localstack.pid}
  rmdir "$STATE" 2>/dev/null || true
}

# What the demo created, removed again when it ends.
created=()
# Whether a control plane ran before the demo: then it is someone's stack
# (make up), with their AgentRuns, and the demo leaves it up.
stack_was_up=0

demo_cleanup() {
  local item
  for item in "${created[@]}"; do
    case $item in
      secret:*) podman secret rm "${item#secret:}" >/dev/null 2>&1 || true ;;
      dir:*) rm -rf "${item#dir:}" ;;
    esac
  done
  if ((EXIT_STATUS != 0)); then
    local f
    for f in manager.log localstack.log; do
      [[ -s $STATE/$f ]] || continue
      step "the demo failed; the end of $f:"
      tail -n 20 "$STATE/$f" | sed 's/^/  | /' >&2
    done
  fi
  if ((stack_was_up)); then
    step "the stack was up before the demo, so it stays up: make down stops it"
  else
    down
  fi
}

demo() {
  if control_plane_ready; then stack_was_up=1; fi
  at_exit demo_cleanup
  up

  step "creating what the reference sample needs: Podman secrets github-token and gitlab-token, and /home/user/myrepo"
  create_secret() { printf 'demo-%s-not-a-real-token' "$1" | podman secret create "$1" -; }
  for secret in github-token gitlab-token; do
    if ! podman secret inspect "$secret" >/dev/null 2>&1; then
      logged create_secret "$secret"
      created+=("secret:$secret")
    fi
  done
  for dir in /home/user /home/user/myrepo; do
    if [[ ! -e $dir ]]; then
      mkdir "$dir"
      created=("dir:$dir" "${created[@]}")
    fi
  done
  # Containers run as 1000:1000 (--container-user), not root: the agent's
  # workdir is its user's to write.
  if [[ " ${created[*]} " == *" dir:/home/user/myrepo "* ]]; then
    chown 1000:1000 /home/user/myrepo
  fi

  step "kubectl apply -k config/samples"
  kubectl apply -k "$ROOT/config/samples"
  step "waiting for the runs to finish"
  kubectl wait --for=condition=Finished agentrun/hello agentrun/review-prs --timeout=120s
  echo
  kubectl get agentruns -o wide
  echo
  step "the output of review-prs (status.output):"
  kubectl get agentrun review-prs -o jsonpath='{.status.output}'
  echo
  step "an invalid run is refused: kubectl apply -f hack/demo/invalid-agentrun.yaml"
  if kubectl apply -f "$ROOT/hack/demo/invalid-agentrun.yaml"; then
    step "the invalid run was accepted: this is a bug"
    return 1
  fi
  echo
  for run in review-prs hello; do
    [[ $(kubectl get agentrun "$run" -o jsonpath='{.status.phase}') == Succeeded ]] || {
      step "run $run did not succeed"
      return 1
    }
  done
  kubectl delete -k "$ROOT/config/samples" --wait=true >/dev/null
  step "demo done: both sample runs Succeeded"
}

case ${1:-} in
  up) up ;;
  down) down ;;
  demo) demo ;;
  *)
    echo "usage: $0 up|down|demo" >&2
    exit 2
    ;;
esac
