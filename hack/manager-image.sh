#!/usr/bin/env bash
# Builds the manager's image, $AGENTRUN_MANAGER_IMAGE (the Makefile sets it:
# localhost/agentrun-manager:<VERSION>), from the static binary bin/manager
# (make build) and the Containerfile at the repository's root, with the host's
# Podman, and tags it <name>:latest too. FROM scratch: nothing is pulled.
#
# Cached: when the image already carries the hash of the binary, the
# Containerfile and this script (label agentrun.manager-image), nothing is
# done, so make test can depend on it. The last line, on stdout, says which.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=hack/lib.sh
source "$ROOT/hack/lib.sh"
log_setup manager-image

IMAGE=${AGENTRUN_MANAGER_IMAGE:?set AGENTRUN_MANAGER_IMAGE (make image sets it from the Makefile VERSION)}
if [[ $IMAGE != *:* || ${IMAGE##*/} != *:* ]]; then
  step "AGENTRUN_MANAGER_IMAGE=$IMAGE has no tag: it must be NAME:VERSION"
  exit 1
fi
VERSION=${IMAGE##*:}
LATEST=${IMAGE%:*}:latest
BINARY=$ROOT/bin/manager

if [[ $(id -u) != 0 ]]; then
  step "must run as root: the image goes into the rootful Podman's storage, which the tests' API service uses"
  exit 1
fi
if ! command -v podman >/dev/null; then
  step "podman is missing: run hack/podman-setup.sh (or make podman) first"
  exit 1
fi
if [[ ! -x $BINARY ]]; then
  step "$BINARY is missing: run make build first (make image does)"
  exit 1
fi

# The image is rebuilt when the binary, the Containerfile, the ignore file,
# this script or the version change. go build rewrites the binary every time,
# so its contents count, not its modification time.
key=$(cd "$ROOT" && cat bin/manager Containerfile .containerignore hack/manager-image.sh <(echo "$IMAGE") | sha256sum | cut -c1-16)
old_id=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
if [[ -n $old_id && $(podman image inspect --format '{{index .Labels "agentrun.manager-image"}}' "$IMAGE") == "$key" ]]; then
  if [[ $(podman image inspect --format '{{.Id}}' "$LATEST" 2>/dev/null || true) != "$old_id" ]]; then
    podman tag "$IMAGE" "$LATEST"
  fi
  echo "$IMAGE: up to date"
  exit 0
fi

step "building $IMAGE from bin/manager (seconds)"
# The context is the repository, narrowed to bin/manager by .containerignore.
logged podman build --quiet --layers=false --file "$ROOT/Containerfile" \
  --build-arg "VERSION=$VERSION" --label "agentrun.manager-image=$key" \
  --tag "$IMAGE" --tag "$LATEST" "$ROOT"

new_id=$(podman image inspect --format '{{.Id}}' "$IMAGE")
if [[ -n $old_id && $old_id != "$new_id" ]]; then
  podman rmi "$old_id" >/dev/null 2>&1 || step "the previous image $old_id is still in use (or tagged elsewhere): not removed"
fi
echo "$IMAGE: built in ${SECONDS}s ($(podman images --format '{{.Size}}' "$IMAGE" | head -n1))"
