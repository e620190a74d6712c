#!/usr/bin/env bash
# supervise.sh PIDFILE CMD...: runs CMD, writes its pid to PIDFILE, and starts
# it again 2 s after it exits with a failure, as systemd's Restart=on-failure
# does for the shipped units (config/host/agentrun-host.service and .container).
# The local stack runs each manager under it: a manager exits when it loses its
# leader lease (an API server outage longer than its renew deadline) and must
# come back by itself, as it does on a real host.
#
# SIGTERM stops CMD and then the supervisor. SIGKILL of the supervisor leaves
# CMD running unsupervised: hack/local-stack.sh kills the supervisor first
# wherever it stops a manager for good (stop, kill-host).
set -uo pipefail

pidfile=$1
shift
child=
trap 'if [[ -n $child ]]; then kill -TERM "$child" 2>/dev/null; wait "$child"; fi; exit 0' TERM INT
while :; do
  "$@" &
  child=$!
  # Renamed into place: a reader never sees the file empty.
  echo "$child" >"$pidfile.new"
  mv -f "$pidfile.new" "$pidfile"
  wait "$child"
  rc=$?
  ((rc == 0)) && exit 0
  echo "=== hack/supervise.sh: the process exited with status $rc at $(date -u +%FT%TZ); starting it again in 2 s (Restart=on-failure)"
  sleep 2
done
