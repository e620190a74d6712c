#!/usr/bin/env bash
# The local stack: a Kubernetes control plane on loopback (hack/localstack),
# agentrun's manager serving the webhook and running AgentRuns as Podman host
# "local", and Podman's API service on a Unix socket.
#
#   hack/local-stack.sh up     start it in the background (twice is harmless)
#   hack/local-stack.sh down   stop everything it started and remove what it made
#   hack/local-stack.sh demo   up, apply config/samples, show the results, down
#
# State lives in $AGENTRUN_LOCAL_DIR (default .local/ in the repository);
# $AGENTRUN_MANAGER_ARGS adds flags to the manager.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=hack/lib.sh
source "$ROOT/hack/lib.sh"
STATE=${AGENTRUN_LOCAL_DIR:-$ROOT/.local}
HOST_NAME=${AGENTRUN_HOST_NAME:-local}
METRICS_PORT=${AGENTRUN_METRICS_PORT:-18080}
PROBE_PORT=${AGENTRUN_PROBE_PORT:-18081}
TEST_IMAGE=localhost/agentrun-test:latest

say() { echo "agentrun: $*"; }

alive() { [[ -f "$STATE/$1.pid" ]] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

kubectl() { "$STATE/bin/kubectl" --kubeconfig "$STATE/kubeconfig" "$@"; }

prepare() {
  say "preparing Podman: packages, configuration, test image, API service on $AGENTRUN_PODMAN_SOCKET"
  "$ROOT/hack/podman-setup.sh" >/dev/null
  say "building or reusing etcd, kube-apiserver and kubectl (a cold first build takes 8-10 minutes)"
  ASSETS=$("$ROOT/hack/k8s-binaries.sh")
  say "building the manager and the local control plane"
  make -s -C "$ROOT" build localstack
}

wait_for() { # description, seconds, command...
  local what=$1 seconds=$2
  shift 2
  for _ in $(seq $((seconds * 10))); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  say "$what did not happen within ${seconds}s; logs are in $STATE"
  return 1
}

up() {
  if alive localstack && alive manager; then
    say "already up"
    usage
    return
  fi
  down quiet
  prepare
  mkdir -p "$STATE/bin"
  ln -sf "$ASSETS/kubectl" "$STATE/bin/kubectl"

  say "starting the control plane (etcd, kube-apiserver on 127.0.0.1) with the AgentRun CRD and webhook"
  KUBEBUILDER_ASSETS=$ASSETS nohup "$ROOT/bin/localstack" --dir "$STATE" >"$STATE/localstack.log" 2>&1 &
  echo $! >"$STATE/localstack.pid"
  wait_for "the control plane start" 90 test -f "$STATE/stack.env"
  # shellcheck source=/dev/null
  source "$STATE/stack.env"

  say "starting the manager as Podman host '$HOST_NAME' (webhook on $WEBHOOK_HOST:$WEBHOOK_PORT, metrics on 127.0.0.1:$METRICS_PORT)"
  local extra=()
  read -r -a extra <<<"${AGENTRUN_MANAGER_ARGS:-}"
  KUBECONFIG=$STATE/kubeconfig nohup "$ROOT/bin/manager" \
    --host-name "$HOST_NAME" \
    --podman-socket "$AGENTRUN_PODMAN_SOCKET" \
    --default-image "$TEST_IMAGE" \
    --default-command fake-agent \
    --webhook-host "$WEBHOOK_HOST" --webhook-port "$WEBHOOK_PORT" --webhook-cert-dir "$STATE/webhook" \
    --metrics-bind-address "127.0.0.1:$METRICS_PORT" \
    --health-probe-bind-address "127.0.0.1:$PROBE_PORT" \
    "${extra[@]}" \
    >"$STATE/manager.log" 2>&1 &
  echo $! >"$STATE/manager.pid"
  wait_for "the manager becoming ready" 60 curl -fsS "http://127.0.0.1:$PROBE_PORT/readyz"
  say "up"
  usage
}

usage() {
  cat <<EOF
  kubectl:    export KUBECONFIG=$STATE/kubeconfig PATH=$STATE/bin:\$PATH
              kubectl get agentruns -o wide
  logs:       $STATE/manager.log, $STATE/localstack.log
  metrics:    curl http://127.0.0.1:$METRICS_PORT/metrics
  stop:       make down
EOF
}

stop() { # name
  alive "$1" || return 0
  local pid
  pid=$(cat "$STATE/$1.pid")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

down() {
  [[ ${1:-} == quiet ]] || say "stopping the manager and the control plane"
  # The manager first: it leaves running containers running, as on any
  # restart; the demo deletes its runs before this.
  stop manager
  stop localstack
  # Only what up made: other things may live in the same folder (make bench
  # writes .local/bench.json).
  rm -rf "$STATE"/{bin,webhook,kubeconfig,stack.env,manager.log,manager.pid,localstack.log,localstack.pid}
  rmdir "$STATE" 2>/dev/null || true
}

# What the demo created, removed again when it ends.
created=()

demo() {
  cleanup() {
    local rc=$?
    for item in "${created[@]}"; do
      case $item in
        secret:*) podman secret rm "${item#secret:}" >/dev/null 2>&1 || true ;;
        dir:*) rm -rf "${item#dir:}" ;;
      esac
    done
    down
    exit $rc
  }
  # Not at_exit: cleanup ends the script with the demo's status.
  trap cleanup EXIT
  up

  say "creating what the reference sample needs: Podman secrets github-token and gitlab-token, and /home/user/myrepo"
  for secret in github-token gitlab-token; do
    if ! podman secret inspect "$secret" >/dev/null 2>&1; then
      printf 'demo-%s-not-a-real-token' "$secret" | podman secret create "$secret" - >/dev/null
      created+=("secret:$secret")
    fi
  done
  for dir in /home/user /home/user/myrepo; do
    if [[ ! -e $dir ]]; then
      mkdir "$dir"
      created=("dir:$dir" "${created[@]}")
    fi
  done

  say "kubectl apply -k config/samples"
  kubectl apply -k "$ROOT/config/samples"
  say "waiting for the runs to finish"
  kubectl wait --for=condition=Finished agentrun --all --timeout=120s
  echo
  kubectl get agentruns -o wide
  echo
  say "the output of review-prs (status.output):"
  kubectl get agentrun review-prs -o jsonpath='{.status.output}'
  echo
  say "an invalid run is refused: kubectl apply -f hack/demo/invalid-agentrun.yaml"
  if kubectl apply -f "$ROOT/hack/demo/invalid-agentrun.yaml"; then
    say "the invalid run was accepted: this is a bug"
    return 1
  fi
  echo
  for run in review-prs hello; do
    [[ $(kubectl get agentrun "$run" -o jsonpath='{.status.phase}') == Succeeded ]] || {
      say "run $run did not succeed"
      return 1
    }
  done
  kubectl delete -k "$ROOT/config/samples" --wait=true >/dev/null
  say "demo done: both sample runs Succeeded; tearing down"
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
