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
# The local fleet: with AGENTRUN_HOSTS=N (make up HOSTS=N), up starts N Podman
# hosts instead of one, each as a real host would be: a network namespace of
# its own (agentrun-local-I) joined to the machine by a veth pair on a private
# /30 (10.203.I.0/30: .1 the machine's side, .2 the host's), its own Podman
# API service with its own storage and socket ($STATE/hosts/local-I/), the
# test image loaded into it, and its own manager (--mode=host) inside the
# namespace, reaching the API server over the veth. Host local-3 runs Podman 5
# (hack/podman5.sh; AGENTRUN_PODMAN5_HOST names another host, or none). The
# API server listens on 10.203.0.1, an address on the machine's loopback
# device that every namespace reaches through its veth; the webhook and the
# fleet controller run in one "cluster-side" manager on the machine
# (--mode=webhook,fleet), as the in-cluster Deployment would. Faults:
#
#   hack/local-stack.sh kill-host HOST   SIGKILL that host's manager (a crash;
#                                        up restarts it)
#   hack/local-stack.sh cut HOST         the machine's side of its veth down:
#                                        the host loses the API server (its
#                                        Podman and manager keep running)
#   hack/local-stack.sh restore HOST     the veth up again
#   hack/local-stack.sh stop-podman HOST the host's Podman API service stops
#                                        (a Podman 4 host; its containers keep
#                                        running under conmon)
#   hack/local-stack.sh start-podman HOST  and starts again (up does too)
#   hack/local-stack.sh stop-apiserver   the kube-apiserver stops; etcd keeps
#                                        the data (up refuses until it runs)
#   hack/local-stack.sh start-apiserver  the same kube-apiserver starts again
#
# AGENTRUN_HOSTS=0 is a fleet's cluster side alone: the control plane on its
# fleet address and the cluster-side manager, no Podman host (make scale
# brings simulated hosts of its own, test/scale).
#
# AGENTRUN_HOST_NAME is the hosts' name prefix (default local: local-1...) and
# AGENTRUN_FLEET_NET the first two octets of their addresses (default 10.203),
# so that a second fleet (a test's) can run beside one make up started.
#
# up never throws state away: a running control plane is kept with its
# AgentRuns, a dead manager is restarted against it, and Podman's API service is
# started when it does not answer. Only a dead control plane is replaced, by a
# new, empty one (its state died with it). down is the one way to wipe.
#
# State lives in $AGENTRUN_LOCAL_DIR (default .local/ in the repository).
# Every manager reads a configuration file the stack writes there
# (manager.yaml, cluster-manager.yaml, hosts/HOST/manager.yaml);
# $AGENTRUN_MANAGER_CONFIG is merged over each (a JSON merge patch, see
# write_config), $AGENTRUN_MANAGER_ARGS adds flags to every manager, and
# $AGENTRUN_MANAGER_ENV variables to its environment only (GOMEMLIMIT=100MiB,
# say, which the control plane's Go programs must not get). Progress lines go to
# stderr; the build's output goes to ~/.cache/agentrun/logs/local-stack.log.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=hack/lib.sh
source "$ROOT/hack/lib.sh"
log_setup local-stack agentrun
STATE=${AGENTRUN_LOCAL_DIR:-$ROOT/.local}
HOST_NAME=${AGENTRUN_HOST_NAME:-local}
METRICS_PORT=${AGENTRUN_METRICS_PORT:-18080}
PROBE_PORT=${AGENTRUN_PROBE_PORT:-18081}
# Each host's log endpoint (kubectl agentrun logs): on 127.0.0.1 for the
# single host, on the host's own address in its namespace for a fleet.
LOGS_PORT=${AGENTRUN_LOGS_PORT:-18082}
TEST_IMAGE=localhost/agentrun-test:latest
# The fleet (see the top). HOSTS is empty for the single-host stack; a fleet
# that runs keeps its own count (in $STATE/fleet.env) when none is given.
HOSTS=${AGENTRUN_HOSTS:-}
# Kueue (make up KUEUE=1, docs/kueue.md): the localstack runs Kueue's manager
# (hack/kueue.sh builds it) beside the control plane, and the fleet lets Kueue
# admit the runs labelled kueue.x-k8s.io/queue-name. A stack that runs keeps
# what it started with ($STATE/kueue.on).
KUEUE=${AGENTRUN_KUEUE:-}
FLEET_NET=${AGENTRUN_FLEET_NET:-10.203}
PODMAN5_HOST=${AGENTRUN_PODMAN5_HOST:-$HOST_NAME-3}
# A fleet that runs keeps the names and addresses it started with, whatever
# the environment says now (down must find them).
if [[ -f $STATE/fleet.env ]]; then
  HOST_NAME=$(sed -n 's/^HOST_NAME=//p' "$STATE/fleet.env")
  FLEET_NET=$(sed -n 's/^FLEET_NET=//p' "$STATE/fleet.env")
  PODMAN5_HOST=$(sed -n 's/^PODMAN5_HOST=//p' "$STATE/fleet.env")
fi
API_ADDR=$FLEET_NET.0.1

# pid_of NAME: the pid recorded in $STATE/NAME.pid, or nothing.
pid_of() { if [[ -f $STATE/$1.pid ]]; then cat "$STATE/$1.pid"; fi; }

# alive NAME [ARG]: the process recorded in $STATE/NAME.pid runs, and is
# this stack's: its command line has ARG, or names this state folder (the
# localstack's --dir) or the main manager's configuration file (its
# --config). The check keeps a
# recycled pid from passing for a process that died, and a zombie, whose
# command line is empty, counts as dead.
alive() {
  local pid marks=(-e "$STATE" -e "$STATE/manager.yaml" -e "$STATE/cluster-manager.yaml")
  [[ -z ${2:-} ]] || marks=(-e "$2")
  pid=$(pid_of "$1")
  [[ -n $pid && -r /proc/$pid/cmdline ]] || return 1
  tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF "${marks[@]}"
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
  local what=$1 seconds=$2 log=$3 deadline
  shift 3
  # By the clock: on a loaded machine each try can take seconds.
  deadline=$((SECONDS + seconds))
  while ((SECONDS < deadline)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  step "$what did not happen within ${seconds}s; the end of $log:"
  tail -n 30 "$log" 2>/dev/null | sed 's/^/  | /' >&2
  return 1
}

# stop_supervisor NAME: kills the supervisor start_manager put over NAME's
# process (hack/supervise.sh), so that it does not start NAME again.
stop_supervisor() {
  if alive "$1.supervisor" "$STATE/$1.pid"; then
    kill -KILL "$(pid_of "$1.supervisor")" 2>/dev/null || true
  fi
}

# stop NAME [ARG]: SIGTERM, then SIGKILL after 15 s (ARG as for alive).
stop() {
  stop_supervisor "$1"
  alive "$@" || return 0
  local pid
  pid=$(pid_of "$1")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 150); do
    alive "$@" || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}

# control_plane_procs SID: the pids (one a line) of the control plane's
# processes in session SID: the localstack, etcd and kube-apiserver. The
# localstack runs in a session of its own (setsid), and etcd and
# kube-apiserver, its children, stay in that session (envtest gives each a
# process group of its own, so the group does not find them). They are found
# by that session and by their binaries, so that a pid reused since by an
# unrelated process is never taken for theirs.
control_plane_procs() {
  local sid=$1 p stat rest exe p_sid
  for p in /proc/[0-9]*; do
    stat=$(cat "$p/stat" 2>/dev/null) || continue
    rest=${stat##*) } # after "pid (comm) ": state ppid pgrp session ...
    read -r _ _ _ p_sid _ <<<"$rest"
    [[ $p_sid == "$sid" ]] || continue
    exe=$(readlink "$p/exe" 2>/dev/null) || continue
    case ${exe% (deleted)} in
      "$ROOT/bin/localstack" | "$AGENTRUN_CACHE"/k8s/*/etcd | "$AGENTRUN_CACHE"/k8s/*/kube-apiserver) echo "${p#/proc/}" ;;
    esac
  done
}

# is_apiserver PID: the process runs one of the cached kube-apiserver binaries.
is_apiserver() {
  local exe
  exe=$(readlink "/proc/$1/exe" 2>/dev/null) || return 1
  [[ ${exe% (deleted)} == "$AGENTRUN_CACHE"/k8s/*/kube-apiserver ]]
}

# stop_control_plane: stops the localstack and whatever it left behind: when
# the localstack was killed outright, etcd and kube-apiserver outlive it, and
# a kube-apiserver that start-apiserver restarted is not its child. They are
# killed with the data folders envtest made for them.
stop_control_plane() {
  local sid p arg pids=() leftovers=()
  sid=$(pid_of localstack)
  stop localstack
  if [[ -n $sid ]]; then mapfile -t pids < <(control_plane_procs "$sid"); fi
  p=$(pid_of apiserver)
  if [[ -n $p ]] && is_apiserver "$p"; then pids+=("$p"); fi
  for p in "${pids[@]}"; do
    while IFS= read -r -d '' arg; do
      if [[ $arg =~ =(/[^=]*/k8s_test_framework_[0-9]+) ]]; then leftovers+=("${BASH_REMATCH[1]}"); fi
    done <"/proc/$p/cmdline"
    kill -KILL "$p" 2>/dev/null || true
  done
  rm -f "$STATE"/apiserver.{pid,cmdline,environ,stopped}
  if ((${#leftovers[@]})); then
    sleep 0.5 # let the killed processes go before their files
    rm -rf "${leftovers[@]}"
  fi
}

# stop_apiserver: the kube-apiserver stops (SIGKILL);
# etcd, the localstack and the managers keep running. Its command line and
# environment are kept, so that start_apiserver starts the same one again on
# the same address, certificates and etcd (the AgentRuns are kept).
stop_apiserver() {
  local pid=
  if [[ -f $STATE/apiserver.stopped ]]; then
    step "the API server is stopped already (hack/local-stack.sh start-apiserver)"
    return 0
  fi
  pid=$(pid_of apiserver)
  if [[ -z $pid ]] || ! is_apiserver "$pid"; then
    pid=
    local p
    for p in $(control_plane_procs "$(pid_of localstack)"); do
      if is_apiserver "$p"; then pid=$p; fi
    done
  fi
  if [[ -z $pid ]]; then
    step "no kube-apiserver of this stack runs"
    return 1
  fi
  cp "/proc/$pid/cmdline" "$STATE/apiserver.cmdline"
  cp "/proc/$pid/environ" "$STATE/apiserver.environ"
  touch "$STATE/apiserver.stopped"
  # SIGKILL, a crash: a SIGTERM waits for its open watches (up to a minute),
  # during which it still answers some requests.
  kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 100); do
    is_apiserver "$pid" || break
    sleep 0.1
  done
  step "stopped the kube-apiserver (pid $pid, SIGKILL); etcd keeps its data; hack/local-stack.sh start-apiserver starts it again"
}

# start_apiserver: the kube-apiserver stop_apiserver stopped starts again
# with the same command line and environment, in a session of its own; waits
# until it is ready.
start_apiserver() {
  if [[ ! -f $STATE/apiserver.stopped ]]; then
    step "the API server was not stopped by hack/local-stack.sh stop-apiserver"
    return 0
  fi
  local args=() envs=()
  mapfile -d '' -t args <"$STATE/apiserver.cmdline"
  mapfile -d '' -t envs <"$STATE/apiserver.environ"
  echo "=== hack/local-stack.sh: kube-apiserver starting at $(date -u +%FT%TZ)" >>"$STATE/apiserver.log"
  setsid nohup env -i "${envs[@]}" "${args[@]}" >>"$STATE/apiserver.log" 2>&1 &
  echo $! >"$STATE/apiserver.pid"
  rm -f "$STATE/apiserver.stopped"
  wait_for "the kube-apiserver becoming ready" 90 "$STATE/apiserver.log" \
    kubectl get --raw=/readyz --request-timeout=3s
  step "the kube-apiserver runs again (pid $(pid_of apiserver))"
}

# --- The managers' configuration files, in one place. ------------------------

# write_config FILE: writes a manager's configuration file from the YAML on
# stdin (the stack's settings, without apiVersion and kind), with
# $AGENTRUN_MANAGER_CONFIG merged over it: a JSON merge patch, in JSON or
# YAML, that the suites use to change settings of every manager (for example
# {"host":{"heartbeat":{"period":"2s","gracePeriod":"6s"}}}; a list it gives
# replaces the stack's). Every manager reads its file with --config.
write_config() {
  local file=$1
  {
    printf 'apiVersion: config.agentrun.dev/v1alpha1\nkind: Configuration\n'
    cat
  } >"$file.base"
  if [[ -n ${AGENTRUN_MANAGER_CONFIG:-} ]]; then
    "$STATE/bin/kubectl" patch --local -f "$file.base" --type merge -p "$AGENTRUN_MANAGER_CONFIG" -o yaml >"$file"
    rm -f "$file.base"
  else
    mv "$file.base" "$file"
  fi
}

# endpoints_config: the metrics and probe ports of a manager (on 127.0.0.1,
# which is a fleet host's own in its namespace).
endpoints_config() {
  cat <<EOF
metrics:
  bindAddress: "127.0.0.1:$METRICS_PORT"
health:
  bindAddress: "127.0.0.1:$PROBE_PORT"
EOF
}

# cluster_config: the webhook and the fleet's log API, which the localstack
# registered (an APIService for 127.0.0.1:$LOGS_API_PORT).
cluster_config() {
  cat <<EOF
webhook:
  host: "$WEBHOOK_HOST"
  port: $WEBHOOK_PORT
  certDir: "$STATE/webhook"
fleet:
  kueue: $([[ -n $KUEUE ]] && echo true || echo false)
  logsAPI:
    bindAddress: "127.0.0.1:$LOGS_API_PORT"
    certDir: "$STATE/logs-api"
    clientCertDir: "$STATE/logs-client"
EOF
}

# host_config SOCKET SESSIONS LOGS_ADDRESS [LABELS]: what every manager that
# runs AgentRuns gets: the test image and its fake agent, and the one host
# directory the samples mount (the reference sample's /home/user/myrepo),
# named rather than left to the default, which is a real host's choice and
# allows none; the egress forwarder make build writes, and the egress
# sockets beside the sessions (both in the checkout or its state folder,
# which Podman 5 sees too; never under SOCKET's directory, which the host
# forbids runs to mount, session directories included), and for the single
# host the stand-in internet (web_egress_config); LABELS is a YAML flow
# mapping.
host_config() {
  local labels=${4:-"{}"}
  cat <<EOF
host:
  podmanSocket: "$1"
  labels: $labels
  runs:
    defaultImage: "$TEST_IMAGE"
    defaultCommand: [fake-agent]
  volumes:
    allowedPaths: [/home/user/myrepo]
  sessions:
    dir: "$2"
  egress:
    socketDir: "$(dirname "$2")/egress"
    forwarder: "$ROOT/bin/agentrun-forward"
$(web_egress_config)
  logs:
    bindAddress: "$3"
    clientCAFile: "$STATE/logs-client/ca.crt"
EOF
}

# cluster_manager_flags: the cluster-side manager of a fleet, on the machine.
cluster_manager_flags() {
  { endpoints_config; cluster_config; } | write_config "$STATE/cluster-manager.yaml"
  printf '%s\n' --mode=webhook,fleet --config "$STATE/cluster-manager.yaml"
}

# host_manager_flags HOST: a fleet host's manager, inside the host's network
# namespace (so its metrics and probe ports are its own: 127.0.0.1 there).
# Its sessions and egress sockets are in host-mounts/HOST: its folder holds
# its Podman socket, and so may not be mounted.
host_manager_flags() {
  local host=$1 dir=$STATE/hosts/$1 podman=4
  [[ $host == "$PODMAN5_HOST" ]] && podman=5
  {
    endpoints_config
    host_config "$dir/podman.sock" "$STATE/host-mounts/$host/sessions" "$FLEET_NET.$(index_of "$host").2:$LOGS_PORT" "{host: $host, podman: \"$podman\"}"
  } | write_config "$dir/manager.yaml"
  printf '%s\n' --mode=host --host-name "$host" --config "$dir/manager.yaml"
}

# single_manager_flags: the single host's manager, which is also the
# cluster side (the default mode, all).
single_manager_flags() {
  {
    endpoints_config
    cluster_config
    host_config "$AGENTRUN_PODMAN_SOCKET" "$STATE/sessions" "127.0.0.1:$LOGS_PORT"
  } | write_config "$STATE/manager.yaml"
  printf '%s\n' --host-name "$HOST_NAME" --config "$STATE/manager.yaml"
}

# start_manager NAME KUBECONFIG [nsenter --net=...] -- FLAGS...: starts
# bin/manager with FLAGS and $AGENTRUN_MANAGER_ARGS (and the variables of
# $AGENTRUN_MANAGER_ENV), its pid in
# $STATE/NAME.pid and its output appended to $STATE/NAME.log (after a restart
# the log still says how the previous one ended). It runs under
# hack/supervise.sh (pid in $STATE/NAME.supervisor.pid), which starts it again
# when it fails, as systemd does on a real host.
start_manager() {
  local name=$1 kubeconfig=$2 enter=() extra=() environment=()
  shift 2
  while [[ $1 != -- ]]; do
    enter+=("$1")
    shift
  done
  shift
  read -r -a extra <<<"${AGENTRUN_MANAGER_ARGS:-}"
  read -r -a environment <<<"${AGENTRUN_MANAGER_ENV:-}"
  echo "=== hack/local-stack.sh: manager starting at $(date -u +%FT%TZ)" >>"$STATE/$name.log"
  stop_supervisor "$name"
  rm -f "$STATE/$name.pid"
  # env and nsenter exec the manager: the pid the supervisor records is the
  # manager's.
  KUBECONFIG=$kubeconfig nohup "$ROOT/hack/supervise.sh" "$STATE/$name.pid" \
    env "${environment[@]}" "${enter[@]}" "$ROOT/bin/manager" "$@" "${extra[@]}" >>"$STATE/$name.log" 2>&1 &
  echo $! >"$STATE/$name.supervisor.pid"
  # Not this shell's job: stop kills it, and make demo, which starts and
  # stops the stack in one shell, would print "Killed" for it.
  disown $!
  wait_for "the $name's start" 10 "$STATE/$name.log" test -s "$STATE/$name.pid"
}

# --- The single host's stand-in for the internet. ----------------------------

# The machine may have no internet, and the demo shows a run reaching a name
# it may and refused another: the single host's egress proxy resolves names
# with hack/demointernet, which answers WEB_NAMES with its own address and
# serves "hello from NAME" on port 80 (and, on 443, an HTTPS stand-in that
# tells which Authorization it received, with a CA of its own, WEB_CA, which
# the host's proxy trusts: host.egress.upstreamCAFile), from a network
# namespace of its own
# joined to the machine by a veth (hack/netns.sh), on a /24 of
# 198.18.0.0/15 picked by the state folder (the tests' simulated internet
# skips a /24 the machine has an address in). The host may reach it
# (allowedCIDRs: the proxy refuses 198.18.0.0/15 by default) and permits
# example.com, which the egress sample lists, and api.github.com, which the
# credentials sample does; example.org it does not.
WEB_KEY=$(printf %s "$STATE" | sha256sum | cut -c1-8)
WEB_SLOT=$((16#${WEB_KEY:0:4} % 512))
WEB_NET=198.$((18 + WEB_SLOT / 256)).$((WEB_SLOT % 256))
WEB_NS=arweb-$WEB_KEY
WEB_VETH=arweb$WEB_KEY
WEB_NAMES=(example.com example.org api.github.com)
WEB_CA=$STATE/web-ca.pem

# web_egress_config: the single host's egress settings for the stand-in
# (under host.egress); nothing for a fleet's hosts.
web_egress_config() {
  [[ -z $HOSTS ]] || return 0
  cat <<EOF
    resolver: "$WEB_NET.2:53"
    allowedCIDRs: ["$WEB_NET.0/24"]
    permitted: [example.com, api.github.com, github.com]
    upstreamCAFile: "$WEB_CA"
EOF
}

# web_up: the stand-in's namespace, veth and server, each made when missing.
web_up() {
  alive web "$ROOT/bin/demointernet" && return 0
  if [[ ! -e /var/run/netns/$WEB_NS ]]; then "$ROOT/hack/netns.sh" add "$WEB_NS"; fi
  if ! ip link show "$WEB_VETH" >/dev/null 2>&1; then
    "$ROOT/hack/netns.sh" link "$WEB_NS" "$WEB_VETH" "$WEB_NET.1/24" "$WEB_NET.2/24"
  fi
  # nsenter execs it: the pid is the server's.
  nohup nsenter --net="/var/run/netns/$WEB_NS" -- "$ROOT/bin/demointernet" --addr "$WEB_NET.2" --ca-file "$WEB_CA" "${WEB_NAMES[@]}" >>"$STATE/web.log" 2>&1 &
  echo $! >"$STATE/web.pid"
  disown $!
  wait_for "the stand-in internet answering on $WEB_NET.2" 10 "$STATE/web.log" curl -fsS --max-time 2 "http://$WEB_NET.2/"
}

web_down() {
  stop web "$ROOT/bin/demointernet"
  "$ROOT/hack/netns.sh" del "$WEB_NS" "$WEB_VETH"
}

# --- The fleet's hosts. --------------------------------------------------------

fleet_hosts() {
  local i
  for ((i = 1; i <= HOSTS; i++)); do echo "$HOST_NAME-$i"; done
}
netns_of() { echo "agentrun-$1"; }
netns_path() { echo "/var/run/netns/agentrun-$1"; }
# A host's Podman 4.3 run root (mounts, conmon's sockets): 4.3 refuses one
# longer than 50 characters, which a state folder in a deep checkout or in
# /tmp makes, so it lives under /run, keyed by the state folder.
RUNROOT_BASE=/run/agentrun-fleet/$(printf %s "$STATE" | sha256sum | cut -c1-8)
runroot_of() { echo "$RUNROOT_BASE/$1"; }
# The machine's side of the host's veth; the host's side is its eth0.
veth_of() { echo "ar-$1"; }
index_of() { echo "${1##*-}"; }
# in_host HOST CMD...: CMD in the host's network namespace. nsenter, not ip
# netns exec, which remounts /sys and loses the cgroup mounts runc needs.
in_host() {
  local host=$1
  shift
  nsenter --net="$(netns_path "$host")" -- "$@"
}
is_podman5() { [[ $1 == "$PODMAN5_HOST" ]]; }
podman5() { # HOST ARGS...: hack/podman5.sh for the host's own instance
  local host=$1
  shift
  AGENTRUN_PODMAN5_RUN_DIR=$STATE/hosts/$host AGENTRUN_PODMAN5_STORAGE=$STATE/hosts/$host/storage \
    AGENTRUN_PODMAN5_NETNS=$(netns_path "$host") "$ROOT/hack/podman5.sh" "$@"
}
# host_podman HOST ARGS...: the machine's podman CLI against the host's service.
host_podman() {
  local host=$1
  shift
  podman --url "unix://$STATE/hosts/$host/podman.sock" "$@"
}
host_podman_answers() {
  curl -fsS --max-time 2 --unix-socket "$STATE/hosts/$1/podman.sock" http://d/_ping >/dev/null 2>&1
}

# check_fleet_names: the names fit (a link name has at most 15 characters)
# and are not another stack's: a namespace this state folder did not make is
# someone else's (another checkout's fleet, a test's).
check_fleet_names() {
  if [[ ! $HOSTS =~ ^(0|[1-9][0-9]?)$ ]]; then
    step "AGENTRUN_HOSTS must be a number from 0 to 99, not '$HOSTS'"
    exit 2
  fi
  local host
  for host in $(fleet_hosts); do
    if (($(veth_of "$host" | wc -c) > 16)); then
      step "host name $host is too long for its veth's name ($(veth_of "$host")): use a shorter AGENTRUN_HOST_NAME"
      exit 2
    fi
    if [[ -e $(netns_path "$host") && ! -f $STATE/hosts/$host/netns ]]; then
      step "the network namespace $(netns_of "$host") exists but is not this stack's ($STATE): another fleet runs with these names; set AGENTRUN_HOST_NAME and AGENTRUN_FLEET_NET to others"
      exit 1
    fi
  done
}

# host_network HOST: its namespace and veth, made when missing. A host that
# was cut stays cut: up changes no link state it did not make.
host_network() {
  local host=$1 ns veth i dir=$STATE/hosts/$1
  ns=$(netns_of "$host")
  veth=$(veth_of "$host")
  i=$(index_of "$host")
  # shellcheck disable=SC2174 # the sockets' folders are root's only
  mkdir -p -m 0700 "$STATE/hosts" "$dir"
  if [[ ! -e $(netns_path "$host") ]]; then
    "$ROOT/hack/netns.sh" add "$ns"
  fi
  touch "$dir/netns"
  if ! ip link show "$veth" >/dev/null 2>&1; then
    # Everything beyond the /30 (the API server's address) goes to the
    # machine: netns.sh routes the namespace's default there.
    "$ROOT/hack/netns.sh" link "$ns" "$veth" "$FLEET_NET.$i.1/30" "$FLEET_NET.$i.2/30"
  fi
}

# host_podman_up HOST: the host's Podman API service, started in its
# namespace unless it answers, with the test image loaded.
host_podman_up() {
  local host=$1 dir=$STATE/hosts/$1
  if is_podman5 "$host"; then
    # podman5.sh starts it unless it answers, and loads only a missing image.
    podman5 "$host" start >/dev/null
    podman5 "$host" load "$TEST_IMAGE"
    return
  fi
  if ! podman_socket_live "$dir/podman.sock"; then
    stop "hosts/$host/podman" "unix://$dir/podman.sock"
    rm -f "$dir/podman.sock"
    step "starting host $host's Podman API service on $dir/podman.sock"
    # Its own storage (root), run state (runroot) and libpod state (tmpdir:
    # the events log, the locks): nothing is shared with the machine's Podman
    # or another host's. nsenter execs podman: the pid is the service's.
    # shellcheck disable=SC2174 # root's only, as /run/agentrun-podman
    mkdir -p -m 0700 "${RUNROOT_BASE%/*}" "$RUNROOT_BASE"
    mkdir -p "$dir/root" "$(runroot_of "$host")" "$dir/tmp"
    echo "=== hack/local-stack.sh: Podman starting at $(date -u +%FT%TZ)" >>"$dir/podman.log"
    nohup nsenter --net="$(netns_path "$host")" -- \
      podman --root "$dir/root" --runroot "$(runroot_of "$host")" --tmpdir "$dir/tmp" \
      system service --time=0 "unix://$dir/podman.sock" >>"$dir/podman.log" 2>&1 &
    echo $! >"$dir/podman.pid"
    wait_for "host $host's Podman answering" 30 "$dir/podman.log" host_podman_answers "$host"
  fi
  # An image keeps its ID through save and load: copy it only when it differs.
  local want have
  want=$(podman image inspect --format '{{.Id}}' "$TEST_IMAGE")
  have=$(host_podman image inspect --format '{{.Id}}' "$TEST_IMAGE" 2>/dev/null || true)
  if [[ $want != "$have" ]]; then
    # shellcheck disable=SC2317 # run through logged
    load_image() { podman save "$TEST_IMAGE" | host_podman "$host" load; }
    logged load_image
  fi
}

host_manager_ready() {
  in_host "$1" curl -fsS --max-time 2 "http://127.0.0.1:$PROBE_PORT/readyz"
}

# host_is_cut HOST: the machine's side of its veth is down.
host_is_cut() { ! ip -br link show "$(veth_of "$1")" 2>/dev/null | grep -qE '[<,]UP[,>]'; }

# kill_mentioning DIR: SIGKILL every process whose command line names a path
# under DIR: what a host leaves when its service died under it (conmon, a
# container's cleanup), found by the host's own folder and nothing broader.
kill_mentioning() {
  local files f pid
  # One grep over every command line (NUL-separated, hence -a). It lists
  # itself too: each match is checked again once it has exited.
  mapfile -t files < <(grep -alsF "$1/" /proc/[0-9]*/cmdline)
  for f in "${files[@]}"; do
    pid=${f#/proc/}
    pid=${pid%/cmdline}
    [[ $pid != "$$" && $({ tr -d '\0' <"$f"; } 2>/dev/null) == *"$1/"* ]] || continue
    kill -KILL "$pid" 2>/dev/null || true
  done
}

# host_down HOST: its manager, its containers, its Podman service, whatever
# they left, their mounts, its namespace and veth, and its folder.
host_down() {
  local host=$1 dir=$STATE/hosts/$1 m
  stop "hosts/$host/manager" "$dir/manager.yaml"
  if is_podman5 "$host" || [[ -f $dir/service.pid ]]; then
    # Removes its containers, stops the service and whatever shares its mount
    # namespace, and netavark's table in the host's namespace.
    podman5 "$host" stop >/dev/null || true
  elif [[ -f $dir/podman.pid ]]; then
    # Through the service when it answers, else straight on its storage: a
    # container left running would outlive everything here.
    if host_podman_answers "$host"; then
      logged host_podman "$host" rm --all --force --time 0 || true
    elif [[ -e $(netns_path "$host") ]]; then
      logged in_host "$host" podman --root "$dir/root" --runroot "$(runroot_of "$host")" --tmpdir "$dir/tmp" \
        rm --all --force --time 0 || true
    fi
    stop "hosts/$host/podman" "unix://$dir/podman.sock"
  fi
  local runroot
  runroot=$(runroot_of "$host")
  kill_mentioning "$dir"
  kill_mentioning "$runroot"
  # Storage mounts (overlay's own private bind, a container's layers, its
  # shm), deepest first.
  while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done < <(awk -v d="$dir/" -v r="$runroot/" 'index($2, d) == 1 || index($2, r) == 1 { print $2 }' /proc/self/mounts | sort -r)
  if [[ -f $dir/netns ]]; then
    "$ROOT/hack/netns.sh" del "$(netns_of "$host")" "$(veth_of "$host")"
  fi
  rm -rf "$dir" "$runroot" "$STATE/host-mounts/$host"
}

# each_host FUNC HOST...: FUNC for all the hosts at once (they share
# nothing); fails when one of them failed.
each_host() {
  local f=$1 host pids=() pid rc=0
  shift
  for host in "$@"; do
    "$f" "$host" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do
    wait "$pid" || rc=1
  done
  return "$rc"
}

# fleet_up: every host's network, Podman and manager, each started only when
# not running; then waits for the managers it started.
fleet_up() {
  local host started=()
  check_fleet_names
  for host in $(fleet_hosts); do
    host_network "$host"
  done
  # shellcheck disable=SC2046 # host names have no spaces
  each_host host_podman_up $(fleet_hosts)
  # shellcheck source=/dev/null
  source "$STATE/stack.env"
  for host in $(fleet_hosts); do
    local dir=$STATE/hosts/$host
    if alive "hosts/$host/manager" "$dir/manager.yaml"; then
      ((start_managers)) || continue
      stop "hosts/$host/manager" "$dir/manager.yaml"
    elif [[ -f $dir/manager.pid ]]; then
      step "host $host's manager (pid $(pid_of "hosts/$host/manager")) is not running: restarting it"
    fi
    # Each host has a kubeconfig of its own, as a real host would (here the
    # same admin user): its server is the API server's fleet address,
    # which its serving certificate names.
    install -m 0600 "$STATE/kubeconfig" "$dir/kubeconfig"
    local flags=()
    mapfile -t flags < <(host_manager_flags "$host")
    start_manager "hosts/$host/manager" "$dir/kubeconfig" nsenter --net="$(netns_path "$host")" -- "${flags[@]}"
    started+=("$host")
  done
  if ((${#started[@]})); then
    step "started the manager of ${started[*]} in its namespace; waiting for it to be ready (a few seconds)"
  fi
  for host in "${started[@]}"; do
    if host_is_cut "$host"; then
      step "host $host is cut off (hack/local-stack.sh restore $host): not waiting for its manager"
      continue
    fi
    wait_for "host $host's manager becoming ready" 60 "$STATE/hosts/$host/manager.log" host_manager_ready "$host"
  done
}

# --- up, down. ----------------------------------------------------------------

# fleet_mode: reads the fleet a running stack has ($STATE/fleet.env) into
# HOSTS when none was asked for, and refuses a different one: hosts are
# added or removed by make down and up.
fleet_mode() {
  local recorded=
  if [[ -f $STATE/fleet.env ]]; then
    recorded=$(sed -n 's/^HOSTS=//p' "$STATE/fleet.env")
  fi
  if [[ -z $HOSTS ]]; then
    HOSTS=$recorded
  elif [[ -f $STATE/stack.env && $HOSTS != "$recorded" ]]; then
    step "the stack in $STATE runs ${recorded:-as one host}${recorded:+ hosts}, not $HOSTS: make down first"
    exit 1
  fi
  if [[ -n $HOSTS ]]; then check_fleet_names; fi
  if [[ -f $STATE/stack.env ]]; then
    if [[ -n $KUEUE && ! -f $STATE/kueue.on ]]; then
      step "the stack in $STATE runs without Kueue: make down first"
      exit 1
    fi
    [[ ! -f $STATE/kueue.on ]] || KUEUE=1
  fi
}

# api_address: the fleet's API server address on the machine's loopback
# device, where every host's namespace reaches it through its veth.
api_address() {
  if ! ip -br addr show dev lo | grep -qF " $API_ADDR/32"; then
    ip addr add "$API_ADDR/32" dev lo
  fi
}

up() {
  mkdir -p "$STATE/bin"
  fleet_mode
  # Both print their steps only when they have work to do; podman-setup.sh
  # starts Podman's API service when it does not answer (and builds the test
  # image the hosts load).
  "$ROOT/hack/podman-setup.sh" >/dev/null
  local assets
  assets=$("$ROOT/hack/k8s-binaries.sh")
  ln -sf "$assets/kubectl" "$STATE/bin/kubectl"
  # make build writes it: on PATH, kubectl agentrun.
  ln -sf "$ROOT/bin/kubectl-agentrun" "$STATE/bin/kubectl-agentrun"

  # The manager that serves the webhook: the single host's, or the fleet's
  # cluster-side one.
  local main=manager
  [[ -z $HOSTS ]] || main=cluster-manager

  local start_control_plane=0 start_managers=0
  if [[ -f $STATE/apiserver.stopped ]]; then
    # Else it would take the silent API server for a dead control plane and
    # replace it with an empty one.
    step "the kube-apiserver was stopped by hack/local-stack.sh stop-apiserver: start-apiserver first"
    exit 1
  fi
  if ! control_plane_ready; then
    start_control_plane=1
    start_managers=1 # a new control plane has a new API server and webhook certificate
    if alive localstack; then
      step "the control plane (pid $(pid_of localstack)) does not answer: replacing it with a new, empty one; the AgentRuns it held are gone"
    elif [[ -f $STATE/localstack.pid ]]; then
      step "the control plane (pid $(pid_of localstack)) is not running: starting a new, empty one; the AgentRuns it held are gone"
    fi
  elif ! alive "$main"; then
    if [[ -f $STATE/$main.pid ]]; then
      step "the $main (pid $(pid_of "$main")) is not running: restarting it; the control plane and its AgentRuns are kept"
    fi
  elif [[ -z $HOSTS ]] && alive web "$ROOT/bin/demointernet"; then
    step "already up"
    usage
    return
  elif [[ -z $HOSTS ]]; then
    # A new stand-in makes a new CA, which the running manager has not read.
    step "the stand-in internet is not running: starting it, and the manager again, which trusts its CA"
    stop "$main"
  fi

  local targets=(build) what="the manager"
  [[ -n $HOSTS ]] || targets+=(demointernet)
  if ((start_control_plane)); then
    targets+=(localstack)
    what+=" and the local control plane"
  fi
  if ((start_control_plane)) || ! alive "$main" || [[ ! -x $ROOT/bin/manager || ! -x $ROOT/bin/agentrun-forward ]] ||
    [[ -z $HOSTS && ! -x $ROOT/bin/demointernet ]]; then
    step "building $what (seconds; about 3 minutes with a cold Go build cache)"
    logged make -s --no-print-directory -C "$ROOT" "${targets[@]}"
  fi

  if ((start_control_plane)); then
    stop "$main"
    stop_control_plane
    rm -rf "${STATE:?}"/{webhook,aggregator,logs-api,logs-client,kubeconfig,stack.env,fleet.env,kueue.on,kueue,kueue.log,localstack.pid,"$main".pid}
    local bind=() where=127.0.0.1 with=""
    if [[ -n $HOSTS ]]; then
      api_address
      bind=(--bind-address "$API_ADDR")
      where=$API_ADDR
      printf 'HOSTS=%s\nHOST_NAME=%s\nFLEET_NET=%s\nPODMAN5_HOST=%s\n' \
        "$HOSTS" "$HOST_NAME" "$FLEET_NET" "$PODMAN5_HOST" >"$STATE/fleet.env"
    fi
    if [[ -n $KUEUE ]]; then
      bind+=(--kueue "$("$ROOT/hack/kueue.sh")")
      touch "$STATE/kueue.on"
      with=", and Kueue's manager (kueue.log; about 30 seconds more)"
    fi
    step "starting the control plane (etcd, kube-apiserver on $where) with the AgentRun CRD and webhook (about 5 seconds)$with"
    # setsid: a session of its own, so that stop_control_plane finds etcd and
    # kube-apiserver even when the localstack itself was killed.
    KUBEBUILDER_ASSETS=$assets setsid nohup "$ROOT/bin/localstack" --dir "$STATE" "${bind[@]}" >"$STATE/localstack.log" 2>&1 &
    echo $! >"$STATE/localstack.pid"
    wait_for "the control plane start" $((${KUEUE:+120} + 90)) "$STATE/localstack.log" test -f "$STATE/stack.env"
  fi

  # shellcheck source=/dev/null
  source "$STATE/stack.env"
  if ! alive "$main"; then
    local flags=()
    if [[ -z $HOSTS ]]; then
      web_up
      step "starting the manager as Podman host '$HOST_NAME' (webhook on $WEBHOOK_HOST:$WEBHOOK_PORT, metrics on 127.0.0.1:$METRICS_PORT; a few seconds)"
      mapfile -t flags < <(single_manager_flags)
    else
      step "starting the cluster-side manager (webhook on $WEBHOOK_HOST:$WEBHOOK_PORT, metrics on 127.0.0.1:$METRICS_PORT; a few seconds)"
      mapfile -t flags < <(cluster_manager_flags)
    fi
    start_manager "$main" "$STATE/kubeconfig" -- "${flags[@]}"
    wait_for "the $main becoming ready" 60 "$STATE/$main.log" curl -fsS "http://127.0.0.1:$PROBE_PORT/readyz"
  fi
  if [[ -n $HOSTS ]]; then
    fleet_up
  fi
  step "up"
  usage
}

usage() {
  if [[ -z $HOSTS ]]; then
    cat <<EOF
  kubectl:    export KUBECONFIG=$STATE/kubeconfig PATH=$STATE/bin:\$PATH
              kubectl get agentruns -o wide
  logs:       $STATE/manager.log, $STATE/localstack.log
  metrics:    curl http://127.0.0.1:$METRICS_PORT/metrics
  stop:       make down (removes the AgentRuns too; make up restarts only what stopped)
EOF
    return
  fi
  local host
  cat <<EOF
  kubectl:    export KUBECONFIG=$STATE/kubeconfig PATH=$STATE/bin:\$PATH
              kubectl get agentruns -o wide
  logs:       $STATE/cluster-manager.log (webhook, fleet), $STATE/localstack.log
  hosts:      (Podman socket, manager log; metrics: nsenter --net=/var/run/netns/NAMESPACE curl 127.0.0.1:$METRICS_PORT/metrics)
EOF
  local podman
  for host in $(fleet_hosts); do
    podman=
    if is_podman5 "$host"; then podman=", Podman 5"; fi
    printf '              %-10s %s  %s  namespace %s%s\n' "$host" "$STATE/hosts/$host/podman.sock" \
      "$STATE/hosts/$host/manager.log" "$(netns_of "$host")" "$podman"
  done
  cat <<EOF
  secret:     podman --url unix://$STATE/hosts/$HOST_NAME-1/podman.sock secret create NAME -
  faults:     hack/local-stack.sh kill-host|cut|restore HOST
  stop:       make down (removes the AgentRuns too; make up restarts only what stopped)
EOF
}

down() {
  step "stopping the managers, the hosts and the control plane"
  # The managers first: they leave running containers running, as on any
  # restart; the demo deletes its runs before this.
  stop manager
  stop cluster-manager
  local dir hosts=()
  for dir in "$STATE"/hosts/*/; do
    [[ -d $dir ]] || continue
    dir=${dir%/}
    hosts+=("${dir##*/}")
  done
  each_host host_down "${hosts[@]}" || true
  stop_control_plane
  web_down
  if [[ -f $STATE/fleet.env ]]; then
    ip addr del "$API_ADDR/32" dev lo 2>/dev/null || true
  fi
  # Empty once no fleet runs (another state folder's fleet keeps its own).
  rmdir "$RUNROOT_BASE" "${RUNROOT_BASE%/*}" 2>/dev/null || true
  # Only what up made: other things may live in the same folder (make bench
  # writes .local/bench.json).
  rm -rf "${STATE:?}"/{bin,webhook,aggregator,logs-api,logs-client,kubeconfig,stack.env,fleet.env,hosts,host-mounts,manager.log,manager.pid,manager.supervisor.pid,manager.yaml,cluster-manager.log,cluster-manager.pid,cluster-manager.supervisor.pid,cluster-manager.yaml,localstack.log,localstack.pid,apiserver.log,web.log,web.pid,web-ca.pem,egress}
  rmdir "$STATE" 2>/dev/null || true
}

# fault kill-host|cut|restore|stop-podman|start-podman HOST: a fault on one host of a running fleet
# (see the top).
fault() {
  local what=$1 host=${2:-}
  fleet_mode
  if [[ -z $HOSTS || -z $host || ! -d $STATE/hosts/$host ]]; then
    step "no fleet host '$host' in $STATE (hosts: $(fleet_hosts | tr '\n' ' '))"
    exit 2
  fi
  case $what in
    kill-host)
      # A crash that nothing restarts until up: the supervisor goes first.
      stop_supervisor "hosts/$host/manager"
      if alive "hosts/$host/manager" "$STATE/hosts/$host/manager.yaml"; then
        kill -KILL "$(pid_of "hosts/$host/manager")"
        step "killed host $host's manager (SIGKILL); make up restarts it"
      else
        step "host $host's manager is not running"
      fi
      ;;
    cut)
      ip link set "$(veth_of "$host")" down
      step "host $host is cut off from the API server (its Podman and manager keep running)"
      ;;
    restore)
      ip link set "$(veth_of "$host")" up
      step "host $host reaches the API server again"
      ;;
    stop-podman)
      if is_podman5 "$host"; then
        # Its stop removes the containers too: that is a reboot, not an outage.
        step "host $host runs Podman 5, whose service cannot be stopped without its containers: pick a Podman 4 host"
        exit 2
      fi
      # SIGTERM (SIGKILL after 15 s): the service goes, its containers (each
      # under its conmon) keep running, as when systemd restarts podman.service.
      stop "hosts/$host/podman" "unix://$STATE/hosts/$host/podman.sock"
      step "stopped host $host's Podman API service (its containers keep running); start-podman or up starts it"
      ;;
    start-podman)
      host_podman_up "$host"
      step "host $host's Podman API service answers"
      ;;
  esac
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

# secret_use shows that using a Podman secret is an RBAC permission
# (docs/tenancy.md). The kubeconfig's user is in system:masters, which RBAC
# never refuses: it needs no grant for the samples, and the demo asks as
# demo-user instead, whom hack/demo/secret-user.yaml lets use github-token
# only. The runs are server-side dry runs: admitted or refused, never stored.
secret_use() {
  step "demo-user may use the Podman secret github-token only: kubectl apply -f hack/demo/secret-user.yaml"
  kubectl apply -f "$ROOT/hack/demo/secret-user.yaml"
  step "as demo-user, a run naming github-token is admitted (kubectl --as=demo-user create --dry-run=server):"
  # RBAC answers from a cache that the Role reaches a moment after apply.
  wait_for "demo-user's grant" 10 /dev/null create_as_demo_user uses-github-token github-token
  create_as_demo_user uses-github-token github-token
  step "as demo-user, a run naming gitlab-token is refused:"
  if create_as_demo_user uses-gitlab-token gitlab-token; then
    step "demo-user was let use gitlab-token: this is a bug"
    return 1
  fi
  kubectl delete -f "$ROOT/hack/demo/secret-user.yaml" >/dev/null
}

# create_as_demo_user NAME SECRET: a server-side dry run of creating the run
# NAME, which names the Podman secret SECRET, as demo-user.
create_as_demo_user() {
  printf 'apiVersion: agents.agentrun.dev/v1alpha1\nkind: AgentRun\nmetadata: {name: %s}\nspec: {prompt: hi, podman: {secretsEnv: {TOKEN: %s}}}\n' "$1" "$2" |
    kubectl --as=demo-user create --dry-run=server -f -
}

demo() {
  # The demo's secrets go to the machine's Podman, which is the single host's.
  if [[ -n $HOSTS || -f $STATE/fleet.env ]]; then
    step "make demo runs on the single-host stack, and a fleet is up or asked for: make down first, and leave HOSTS unset"
    exit 1
  fi
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
  # Containers run as 1000:1000 (host.containers.user), not root: the agent's
  # workdir is its user's to write.
  if [[ " ${created[*]} " == *" dir:/home/user/myrepo "* ]]; then
    chown 1000:1000 /home/user/myrepo
  fi

  step "kubectl apply -k config/samples"
  kubectl apply -k "$ROOT/config/samples"
  step "waiting for the runs to finish"
  kubectl wait --for=condition=Finished agentrun/hello agentrun/review-prs agentrun/fetch-pages agentrun/whoami --timeout=120s
  echo
  kubectl get agentruns -o wide
  echo
  step "the output of review-prs (status.output):"
  kubectl get agentrun review-prs -o jsonpath='{.status.output}'
  echo
  step "fetch-pages may reach example.com only (spec.egress.allow); its output, then status.egress:"
  local fetched egress
  fetched=$(kubectl get agentrun fetch-pages -o jsonpath='{.status.output}')
  egress=$(kubectl get agentrun fetch-pages -o jsonpath='{.status.egress}')
  printf '%s\n%s\n' "$fetched" "$egress"
  if [[ $fetched != *"hello from example.com"* || $fetched != *"403 Forbidden"* || $fetched == *"hello from example.org"* ]]; then
    step "fetch-pages did not reach example.com and get refused example.org"
    return 1
  fi
  step "whoami uses the token of Podman secret github-token without holding it (spec.egress.credentials): what it saw, then status.egress.credentials:"
  local whoami used
  whoami=$(kubectl get agentrun whoami -o jsonpath='{.status.output}')
  used=$(kubectl get agentrun whoami -o jsonpath='{.status.egress.credentials}')
  printf '%s\n%s\n' "$whoami" "$used"
  # The stand-in echoes the Authorization it received; the proxy masks the
  # header's value it added in that echo, so the run sees "***": the token
  # arrived, and the placeholder (which would show) did not.
  if [[ $whoami != *"GH_TOKEN in the container: agentrun-injected"* || $whoami != *"Authorization: ***"* ]]; then
    step "whoami did not get its token added by the host"
    return 1
  fi
  step "an invalid run is refused: kubectl apply -f hack/demo/invalid-agentrun.yaml"
  if kubectl apply -f "$ROOT/hack/demo/invalid-agentrun.yaml"; then
    step "the invalid run was accepted: this is a bug"
    return 1
  fi
  echo
  secret_use || return 1
  for run in review-prs hello fetch-pages whoami; do
    [[ $(kubectl get agentrun "$run" -o jsonpath='{.status.phase}') == Succeeded ]] || {
      step "run $run did not succeed"
      return 1
    }
  done
  kubectl delete -k "$ROOT/config/samples" --wait=true >/dev/null
  step "applied again after its deletion (as a GitOps sync does), hello does not run twice:"
  kubectl apply -f "$ROOT/config/samples/agents_v1alpha1_agentrun_minimal.yaml"
  kubectl wait --for=condition=Finished agentrun/hello --timeout=60s
  local reason
  reason=$(kubectl get agentrun hello -o jsonpath='{.status.conditions[?(@.type=="Finished")].reason}')
  kubectl get agentrun hello -o jsonpath='{.status.message}'
  echo
  [[ $reason == AlreadyRan ]] || {
    step "hello ended $reason, not AlreadyRan"
    return 1
  }
  # The records too: a demo run again on this stack runs the samples again.
  kubectl delete agentrun hello --wait=true >/dev/null
  kubectl delete agentrunrecords hello review-prs fetch-pages --ignore-not-found >/dev/null
  step "demo done: the sample runs Succeeded, fetch-pages reached example.com and was refused example.org, whoami used a token it never held, demo-user was refused a secret it may not use, and hello applied again did not run twice"
}

case ${1:-} in
  up) up ;;
  down) down ;;
  demo) demo ;;
  kill-host | cut | restore | stop-podman | start-podman) fault "$1" "${2:-}" ;;
  stop-apiserver) stop_apiserver ;;
  start-apiserver) start_apiserver ;;
  *)
    echo "usage: $0 up|down|demo|kill-host HOST|cut HOST|restore HOST|stop-podman HOST|start-podman HOST|stop-apiserver|start-apiserver" >&2
    exit 2
    ;;
esac
