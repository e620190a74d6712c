#!/usr/bin/env bash
# Prepares this machine's Podman for agentrun's tests and local stack:
#   1. installs Podman (Debian packages) when it is missing;
#   2. writes a containers.conf drop-in with the settings these hosts need
#      (runc, cgroupfs, file events, rlimits within the hard limits);
#   3. builds the local test image from busybox-static (no registry is reachable);
#   4. starts Podman's API service on a Unix socket under a temporary folder
#      (so it never collides with a host's own podman.socket) unless one
#      already answers there.
# Idempotent: a second run only checks, and prints nothing but the socket path
# on stdout. Each step it does take prints one line on stderr; the package
# manager's and Podman's own output go to ~/.cache/agentrun/logs/podman-setup.log.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=hack/lib.sh
source "$ROOT/hack/lib.sh"
log_setup podman-setup
SOCKET=$AGENTRUN_PODMAN_SOCKET
TEST_IMAGE=${AGENTRUN_TEST_IMAGE:-localhost/agentrun-test:latest}

if [[ $(id -u) != 0 ]]; then
  step "must run as root: agentrun drives the rootful Podman service"
  exit 1
fi

if ! command -v podman >/dev/null || [[ ! -x /bin/busybox ]] || ! command -v catatonit >/dev/null; then
  step "installing podman, runc, catatonit and busybox-static from Debian (about a minute on a cold machine)"
  export DEBIAN_FRONTEND=noninteractive
  logged apt-get update -q
  logged apt-get install -y -q --no-install-recommends podman runc catatonit busybox-static
fi

mkdir -p /etc/containers/containers.conf.d
containers_conf hack/podman-setup.sh >/etc/containers/containers.conf.d/50-agentrun.conf

# The image is rebuilt when test/image changes: its label records a hash of it.
image_hash=$(cd "$ROOT" && find test/image -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
current_hash=$(podman image inspect --format '{{index .Labels "agentrun.test-image-hash"}}' "$TEST_IMAGE" 2>/dev/null || true)
if [[ "$current_hash" != "$image_hash" ]]; then
  step "building the test image $TEST_IMAGE from busybox-static and test/image (a few seconds)"
  rootfs=$(mktemp -d)
  at_exit 'rm -rf "$rootfs"'
  mkdir -p "$rootfs"/{bin,etc,tmp,workspace,usr/local/bin}
  chmod 1777 "$rootfs/tmp"
  cp /bin/busybox "$rootfs/bin/busybox"
  for applet in $(/bin/busybox --list); do
    [[ -e "$rootfs/bin/$applet" ]] || ln -s busybox "$rootfs/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nagent:x:1000:1000:agent:/workspace:/bin/sh\n' >"$rootfs/etc/passwd"
  printf 'root:x:0:\nagent:x:1000:\n' >"$rootfs/etc/group"
  install -m 0755 "$ROOT"/test/image/bin/* "$rootfs/usr/local/bin/"
  build_fetch() { (cd "$ROOT" && CGO_ENABLED=0 GOFLAGS= go build -trimpath -o "$rootfs/usr/local/bin/fetch" ./test/image/fetch); }
  logged build_fetch
  import_test_image() {
    tar -C "$rootfs" -c . | podman import \
      --change 'ENV PATH=/usr/local/bin:/bin' --change 'WORKDIR /workspace' \
      --change "LABEL agentrun.test-image-hash=$image_hash" \
      - "$TEST_IMAGE"
  }
  logged import_test_image
fi

if ! podman_socket_live "$SOCKET"; then
  step "starting the Podman API service on unix://$SOCKET (about a second)"
  socket_dir=$(dirname "$SOCKET")
  # The socket is the whole host: its directory must be root's alone, and a
  # link there could point the service, or a check, somewhere else.
  if [[ -L $socket_dir ]]; then
    step "$socket_dir is a symbolic link; refusing to put the Podman API socket there"
    exit 1
  fi
  mkdir -p -m 0700 "$socket_dir"
  chmod 0700 "$socket_dir"
  if [[ $(stat -c %u "$socket_dir") != 0 ]]; then
    step "$socket_dir is not owned by root; refusing to put the Podman API socket there"
    exit 1
  fi
  rm -f "$SOCKET"
  # Started from /: the service and every conmon it starts inherit its working
  # directory, and conmon fails ("Failed to get working directory") once that
  # directory is deleted, as a CI clone that started the service is.
  # Appended to, with a dated line: a service that died leaves its last
  # words there for whoever looks after it was replaced.
  echo "=== hack/podman-setup.sh: Podman $(podman --version | cut -d' ' -f3) starting at $(date -u +%FT%TZ)" >>"$(dirname "$SOCKET")/service.log"
  (cd / && exec nohup podman system service --time=0 "unix://$SOCKET" >>"$(dirname "$SOCKET")/service.log" 2>&1) &
  for _ in $(seq 100); do
    curl -fsS --max-time 1 --unix-socket "$SOCKET" http://d/_ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -fsS --max-time 2 --unix-socket "$SOCKET" http://d/_ping >/dev/null || {
    step "the Podman API service did not answer; the end of $(dirname "$SOCKET")/service.log:"
    tail -n 20 "$(dirname "$SOCKET")/service.log" | sed 's/^/  | /' >&2
    exit 1
  }
fi
echo "$SOCKET"
