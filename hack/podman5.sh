#!/usr/bin/env bash
# A second Podman, version 5 (Debian 13's), beside the host's 4.3.1, so the
# tests can run against both (issue 17). Debian 12 has no Podman 5, so it runs
# from a trixie root file system in a mount namespace of its own:
#
#   hack/podman5.sh start       build the root file system once (about a minute
#                               on a cold machine; cached in $AGENTRUN_CACHE,
#                               keyed by the Podman version), start the API
#                               service unless it answers, print its socket
#   hack/podman5.sh load IMG... copy images from the host's Podman into it
#                               (only those whose ID differs there)
#   hack/podman5.sh stop        remove its containers, stop the service, and
#                               remove the network tables and links it made
#
# Its storage (images, secrets) is kept in the cache, apart from the host's,
# and survives a stop: each start is like a reboot. Progress goes to stderr,
# the tools' output to $AGENTRUN_CACHE/logs/podman5.log.
#
# More than one can run: the local fleet (hack/local-stack.sh) starts one per
# Podman 5 host, each in that host's network namespace, beside the one the
# tests use. Three variables make an instance, the same for all its commands:
#   AGENTRUN_PODMAN5_RUN_DIR  its socket, pid and log (default
#                             /run/agentrun-podman5, the tests' instance)
#   AGENTRUN_PODMAN5_STORAGE  its images and secrets (default in the cache)
#   AGENTRUN_PODMAN5_NETNS    a network namespace to run in, as a path
#                             (/var/run/netns/NAME); default: the caller's
# The root file system is shared, read-only in use.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=hack/lib.sh
source "$ROOT/hack/lib.sh"
# The service's own process (see serve) execs Podman: it keeps no log of ours.
[[ ${1:-} == __serve ]] || log_setup podman5

# The version Debian 13 ships; the root file system is rebuilt when it changes.
VERSION=${AGENTRUN_PODMAN5_VERSION:-5.4.2}
CACHE=$AGENTRUN_CACHE/podman5
ROOTFS=$CACHE/rootfs-$VERSION
STORAGE=${AGENTRUN_PODMAN5_STORAGE:-$CACHE/storage}
NETNS=${AGENTRUN_PODMAN5_NETNS:-}
# A root-only directory under /run, like the 4.3 service's (see hack/lib.sh for
# why not /tmp); it also holds the service's pid and log.
RUN_DIR=${AGENTRUN_PODMAN5_RUN_DIR:-/run/agentrun-podman5}
SOCKET=$RUN_DIR/podman.sock
PIDFILE=$RUN_DIR/service.pid
# The host's 4.3.1 puts its CNI bridge on 10.88.0.0/16 in the same network
# namespace; netavark's default would be the same subnet and the routes would
# clash, so it gets ranges of its own.
SUBNET=10.90.0.0/16
SUBNET_POOL=10.91.0.0/16
# Host paths that runs and tests mount as volumes: the server resolves them
# inside its own root, so they are bound in at the same paths: /tmp (the
# suites' volumes), /home (the e2e sample's workdir, /home/user/myrepo) and
# this checkout.
HOST_PATHS=(/tmp /home "$ROOT")

if [[ $(id -u) != 0 ]]; then
  step "must run as root: agentrun drives a rootful Podman service"
  exit 1
fi

ping_socket() { curl -fsS --max-time 2 --unix-socket "$SOCKET" http://d/_ping >/dev/null 2>&1; }

# service_pid: the pid in the pid file, while that process is this instance's
# service (its command line names the socket; "__serve" until it execs Podman).
# A pid is reused once the service is gone (pid_max is 32768 here and the
# suites start thousands of processes), and stop kills the pid's whole mount
# namespace: a stranger's must never pass.
service_pid() {
  local pid cmdline
  pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
  [[ -n $pid ]] || return 1
  cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 1
  [[ $cmdline == *" unix://$SOCKET"* || $cmdline == *"podman5.sh __serve"* ]] || return 1
  echo "$pid"
}

# Runs a command inside the service's namespaces and root (its own 5.x CLI:
# the host's 4.3.1 CLI cannot read everything a 5.x server sends).
in_root() {
  local pid
  pid=$(service_pid)
  nsenter --target "$pid" --mount --net --root --wd -- env PODMAN_IGNORE_CGROUPSV1_WARNING=1 "$@"
}

# in_netns CMD...: CMD in the instance's network namespace (as is without one).
in_netns() {
  if [[ -n $NETNS ]]; then
    nsenter --net="$NETNS" -- "$@"
  else
    "$@"
  fi
}

build_rootfs() {
  [[ -x $ROOTFS/usr/bin/podman ]] && return 0
  step "building a Debian 13 root file system with Podman $VERSION in $ROOTFS (about a minute, once)"
  if ! command -v debootstrap >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    logged apt-get update -q
    logged apt-get install -y -q --no-install-recommends debootstrap
  fi
  local mirror tmp
  # The machine's own Debian mirror (active lines only: deb822 URIs or
  # one-line deb entries; not the security archive, which has no trixie base).
  mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null |
    sed -nE 's/^(URIs:|deb)[[:space:]]+(\[[^]]*\][[:space:]]+)?(https?:\/\/[^[:space:]]*debian\/?)([[:space:]].*)?$/\3/p' |
    grep -v security | head -n1 || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  mkdir -p "$CACHE"
  # Built aside and moved into place at the end, so an interrupted build is
  # never taken for a finished one.
  tmp=$(mktemp -d "$CACHE/.rootfs.XXXXXX")
  at_exit "rm -rf '$tmp'"
  logged debootstrap --variant=minbase trixie "$tmp" "$mirror"
  mount -t proc proc "$tmp/proc"
  at_exit "umount '$tmp/proc' 2>/dev/null"
  logged chroot "$tmp" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    podman runc conmon netavark aardvark-dns catatonit iptables nftables ca-certificates
  umount "$tmp/proc"
  local got
  # From the package database: podman itself needs /proc to start.
  # shellcheck disable=SC2016 # ${Version} is dpkg-query's field, not the shell's
  got=$(chroot "$tmp" dpkg-query -W -f '${Version}' podman | sed -E 's/^[0-9]+://; s/[+~-].*//')
  if [[ $got != "$VERSION" ]]; then
    step "Debian 13 now ships Podman $got, not $VERSION: set AGENTRUN_PODMAN5_VERSION=$got (and update docs/development.md)"
    exit 1
  fi
  rm -rf "$ROOTFS"
  mv "$tmp" "$ROOTFS"
}

# The configuration is in the shared root file system: written only when it
# changed, so that starting one instance never truncates the file under
# another one that is reading it.
write_config() {
  local conf=$ROOTFS/etc/containers/containers.conf.d/50-agentrun.conf want
  mkdir -p "${conf%/*}"
  want=$({
    containers_conf hack/podman5.sh
    cat <<CONF

[network]
default_subnet = "$SUBNET"
default_subnet_pools = [{"base" = "$SUBNET_POOL", "size" = 24}]
CONF
  })
  if [[ $(cat "$conf" 2>/dev/null) != "$want" ]]; then
    printf '%s\n' "$want" >"$conf.tmp"
    mv -f "$conf.tmp" "$conf"
  fi
}

# The service's side of start, run by unshare in a fresh mount namespace whose
# mounts propagate nowhere: everything mounted here goes when its last process
# does.
serve() {
  local r=$ROOTFS p
  mount --bind "$r" "$r"
  mount -t proc proc "$r/proc"
  mount --rbind /sys "$r/sys" # brings the cgroup mounts runc needs
  mount --rbind /dev "$r/dev"
  mount -t tmpfs -o mode=0755 tmpfs "$r/run"
  # The host paths first: a run directory under one of them (the fleet's,
  # in the checkout or /tmp) is then already there, and its bind goes on top.
  for p in "${HOST_PATHS[@]}"; do
    mkdir -p "$r$p"
    mount --rbind "$p" "$r$p"
  done
  mkdir -p "$r$RUN_DIR" "$r/var/lib/containers/storage"
  mount --bind "$RUN_DIR" "$r$RUN_DIR"
  mount --bind "$STORAGE" "$r/var/lib/containers/storage"
  mkdir -p "$r/.old-root"
  cd "$r"
  pivot_root . .old-root
  umount -l /.old-root
  rmdir /.old-root
  cd /
  PODMAN_IGNORE_CGROUPSV1_WARNING=1 exec podman system service --time=0 "unix://$SOCKET"
}

start() {
  if podman_socket_live "$SOCKET"; then
    echo "$SOCKET"
    return 0
  fi
  build_rootfs
  write_config
  if [[ -n $NETNS && ! -e $NETNS ]]; then
    step "no network namespace at $NETNS"
    exit 1
  fi
  if [[ -L $RUN_DIR ]]; then
    step "$RUN_DIR is a symbolic link; refusing to put the Podman API socket there"
    exit 1
  fi
  # Made 0700 from the start (its parent, /run, exists), and again in case
  # it was there before.
  # shellcheck disable=SC2174
  mkdir -p -m 0700 "$RUN_DIR"
  mkdir -p "$STORAGE"
  chmod 0700 "$RUN_DIR" "$STORAGE"
  if [[ $(stat -c %u "$RUN_DIR") != 0 ]]; then
    step "$RUN_DIR is not owned by root; refusing to put the Podman API socket there"
    exit 1
  fi
  # A service that died leaves its namespace's containers behind; clean first.
  if service_pid >/dev/null; then stop_service; fi
  rm -f "$SOCKET"
  step "starting Podman $VERSION's API service on unix://$SOCKET (about a second)"
  # nsenter and unshare exec what they run: the pid is the service's.
  local enter=()
  [[ -z $NETNS ]] || enter=(nsenter "--net=$NETNS" --)
  # Appended to, with a dated line: a service that died leaves its last
  # words there for whoever looks after it was replaced.
  echo "=== hack/podman5.sh: Podman $VERSION starting at $(date -u +%FT%TZ)" >>"$RUN_DIR/service.log"
  nohup "${enter[@]}" unshare --mount --propagation private -- bash "$0" __serve >>"$RUN_DIR/service.log" 2>&1 &
  echo $! >"$PIDFILE"
  for _ in $(seq 100); do
    ping_socket && break
    sleep 0.1
  done
  ping_socket || {
    step "the Podman $VERSION API service did not answer; the end of $RUN_DIR/service.log:"
    tail -n 20 "$RUN_DIR/service.log" | sed 's/^/  | /' >&2
    exit 1
  }
  echo "$SOCKET"
}

# load IMG...: the images the suites run (built for the host's Podman by
# hack/podman-setup.sh and hack/agent-image.sh) copied into the 5.x storage,
# only when missing or different (an image keeps its ID through save and load).
load() {
  local img want have
  ping_socket || { step "Podman $VERSION is not running: run hack/podman5.sh start"; exit 1; }
  for img in "$@"; do
    want=$(podman image inspect --format '{{.Id}}' "$img")
    have=$(in_root podman image inspect --format '{{.Id}}' "$img" 2>/dev/null || true)
    [[ $want == "$have" ]] && continue
    step "copying $img into Podman $VERSION's storage (seconds; a minute for the agent image)"
    load_one() { podman save "$img" | in_root podman load; }
    logged load_one
    # The copy it replaces (the manager's image changes with every build)
    # would otherwise stay behind, untagged, in the cache.
    if [[ -n $have ]]; then
      logged in_root podman rmi "$have" || step "the previous $img ($have) is still in use: not removed"
    fi
  done
}

# The namespace's processes: the service and whatever it started (conmon and
# the containers' processes) share its mount namespace.
namespace_pids() {
  local ns p
  ns=$(readlink "/proc/$1/ns/mnt") || return 0
  for p in /proc/[0-9]*; do
    [[ $(readlink "$p/ns/mnt" 2>/dev/null) == "$ns" ]] && echo "${p#/proc/}"
  done
  return 0
}

stop_service() {
  local pid pids
  pid=$(service_pid) || return 0
  # The service's own process is unshare's child (bash exec'd podman).
  # A second try when the first fails: a container's own cleanup (its exit
  # command) can tear its network down under the first, which then fails
  # on a bridge that went with the last container.
  in_root podman rm --all --force --time 0 >/dev/null 2>&1 ||
    logged in_root podman rm --all --force --time 0 || true
  pids=$(namespace_pids "$pid")
  # shellcheck disable=SC2086
  [[ -n $pids ]] && kill $pids 2>/dev/null
  for _ in $(seq 50); do
    [[ -z $(namespace_pids "$pid") ]] && break
    sleep 0.1
  done
  pids=$(namespace_pids "$pid")
  # shellcheck disable=SC2086
  [[ -n $pids ]] && kill -KILL $pids 2>/dev/null
  kill "$pid" 2>/dev/null || true
  rm -f "$PIDFILE" "$SOCKET"
}

stop() {
  local pid
  if pid=$(service_pid); then
    step "stopping Podman $VERSION's API service"
    stop_service
  fi
  # Netavark's firewall rules and bridge, left in the network namespace
  # (the machine's, or the instance's own while it exists).
  if [[ -n $NETNS && ! -e $NETNS ]]; then return 0; fi
  if [[ -x $ROOTFS/usr/sbin/nft ]] && in_netns chroot "$ROOTFS" nft list table inet netavark >/dev/null 2>&1; then
    in_netns chroot "$ROOTFS" nft delete table inet netavark
  fi
  if in_netns ip link show podman0 >/dev/null 2>&1; then
    in_netns ip link delete podman0
  fi
}

case ${1:-} in
  start) start ;;
  load) shift; load "$@" ;;
  stop) stop ;;
  __serve) serve ;;
  *)
    echo "usage: $0 start|load IMAGE...|stop" >&2
    exit 2
    ;;
esac
