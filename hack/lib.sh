# shellcheck shell=bash
# Sourced by the hack scripts, and read by the Makefile: the defaults that the
# scripts and the tests must agree on, written once, and the helpers that keep
# the scripts quiet.
#
# Defaults. An environment variable that is already set wins, so a caller (the
# Makefile, the e2e suite, a user) can point everything elsewhere at once.
#
# AGENTRUN_PODMAN_SOCKET: the Podman API socket the tests and the local stack
# use (hack/podman-setup.sh starts the service there). This line is its only
# definition: the Makefile exports it to every script and test it runs, the
# scripts source this file, and internal/testing/testenv refuses to guess it. In a
# directory of its own under /run that only root may enter (podman-setup.sh
# makes it 0700 and checks it is no link), never under /tmp, which any user
# can write into and which runs are allowed to mount in the test suites; and
# apart from a host's own /run/podman/podman.sock.
export AGENTRUN_PODMAN_SOCKET=${AGENTRUN_PODMAN_SOCKET:-/run/agentrun-podman/podman.sock}
# AGENTRUN_CACHE: what outlives a checkout (the Kubernetes binaries, the agent
# image's downloads, the scripts' logs), so a fresh clone reuses it.
export AGENTRUN_CACHE=${AGENTRUN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/agentrun}

# containers_conf WRITER prints the containers.conf settings every Podman
# service of the tests needs (the 4.3 one and the 5 one alike): crun cannot
# create containers on these hosts (hybrid cgroups), and root lacks
# CAP_SYS_RESOURCE, so Podman's default rlimits must stay under the hard
# limits. The events log is not rotated at Podman's default 1 MB: Podman
# 5.4.2's service crashed (nil pointer in libpod/events/logfile.go, reading a
# rotated file for an open event stream) when the fleet suite's 200 runs
# filled it, taking the host's Podman down.
containers_conf() {
  local nofile nproc
  nofile=$(ulimit -Hn)
  nproc=$(ulimit -Hu)
  [[ $nofile == unlimited || $nofile -gt 16384 ]] && nofile=16384
  [[ $nproc == unlimited || $nproc -gt 16384 ]] && nproc=16384
  cat <<CONF
# Written by agentrun's $1.
[containers]
default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=${nproc}:${nproc}"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_max_size = "1g"
CONF
}

# Exit handlers. Scripts register cleanups with at_exit instead of setting their
# own EXIT trap, so that several can coexist; they run last-registered first,
# with EXIT_STATUS set to the script's exit status.
_at_exit=()
at_exit() { _at_exit+=("$1"); }
_run_at_exit() {
  EXIT_STATUS=$?
  local i
  for ((i = ${#_at_exit[@]} - 1; i >= 0; i--)); do
    eval "${_at_exit[i]}" || true
  done
  exit "$EXIT_STATUS"
}
trap _run_at_exit EXIT

# Quiet progress. A script calls log_setup NAME [PREFIX] once; then
#   step TEXT      prints one progress line, "PREFIX: TEXT", on stderr (say what
#                  is done and, when slow, how long it takes on a cold machine);
#   logged CMD...  runs CMD with its output (apt, go, npm, podman chatter) going
#                  to the log instead of the terminal; when CMD fails it prints
#                  the log's path and its last lines, and returns CMD's status.
# The log is $AGENTRUN_CACHE/logs/NAME.log, from the last run that logged
# anything (a run that only checked leaves the previous one). A run writes a
# file of its own and moves it there at exit, so that two runs at once (make up
# beside the e2e suite, two checkouts) do not write into one file.
log_setup() {
  LOG_NAME=$1
  STEP_PREFIX=${2:-$1}
  local dir=$AGENTRUN_CACHE/logs
  mkdir -p "$dir"
  LOG_FINAL=$dir/$LOG_NAME.log
  LOG=$(mktemp "$dir/.$LOG_NAME.XXXXXX")
  at_exit 'if [[ -s $LOG ]]; then mv -f "$LOG" "$LOG_FINAL"; else rm -f "$LOG"; fi'
}

step() { echo "${STEP_PREFIX:-agentrun}: $*" >&2; }

logged() {
  local rc=0
  echo "+ $*" >>"$LOG"
  "$@" >>"$LOG" 2>&1 </dev/null || rc=$?
  if ((rc != 0)); then
    step "failed (exit status $rc): $*"
    step "the end of its output follows; all of it is in $LOG_FINAL"
    tail -n 30 "$LOG" | sed 's/^/  | /' >&2
  fi
  return "$rc"
}

# Podman API sockets. A service is started on a socket only when nothing
# listens there. One that listens but is slow to answer is a live service on a
# loaded machine (the suites run side by side on two cores), and removing its
# socket cuts off every client it has: at stop 34 the e2e suite's
# podman-setup.sh, under make test-podman5, took two seconds without an answer
# for "dead" and put a Podman 4 service on the Podman 5 tests' socket.
#
# podman_socket_state SOCKET prints answers, dead (no socket, or the
# connection refused: nothing listens) or busy (connected, but no answer
# within two seconds, or an answer that is not Podman's).
podman_socket_state() {
  local rc=0
  curl -fsS --max-time 2 --unix-socket "$1" http://d/_ping >/dev/null 2>&1 || rc=$?
  case $rc in
    0) echo answers ;;
    7) echo dead ;;
    *) echo busy ;;
  esac
}

# podman_socket_live SOCKET: true when a service answers there, waiting up to
# a minute while it is busy; false when nothing listens (the caller may start
# one). One that listens and never answers is not replaced: the script stops.
podman_socket_live() {
  local end=$((SECONDS + 60))
  while ((SECONDS < end)); do
    case $(podman_socket_state "$1") in
      answers) return 0 ;;
      dead) return 1 ;;
    esac
    sleep 1
  done
  step "something listens on unix://$1 but has not answered for a minute; not replacing it (stop that service first)"
  exit 1
}
