#!/usr/bin/env bash
# Builds Kueue's controller manager from the Go module proxy and lays out its
# CRDs and webhook configurations beside it, for the Kueue suite
# (internal/controller/fleet/kueue) and the local stack.
# Release downloads are not reachable from our build machines, as for the
# Kubernetes binaries (hack/k8s-binaries.sh); the module zip carries both the
# manager's source and its generated CRDs.
#
# The manager is built inside Kueue's own module, with Kueue's go.mod and
# go.sum, so its Kubernetes library versions never meet ours. It is cached
# outside the clone, keyed by version, so a fresh clone (CI) reuses it and a
# rerun is instant.
#
# Prints the directory holding `manager`, `crds/` and `webhooks/` on stdout. When it builds,
# it prints one line on stderr; the Go toolchain's output goes to
# ~/.cache/agentrun/logs/kueue.log.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=hack/lib.sh
source "$ROOT/hack/lib.sh"
KUEUE_VERSION=${KUEUE_VERSION:-0.17.0}
OUT="$AGENTRUN_CACHE/kueue/v${KUEUE_VERSION}"

if [[ -x "$OUT/manager" && -d "$OUT/crds" && -d "$OUT/webhooks" ]]; then
  echo "$OUT"
  exit 0
fi

log_setup kueue
mkdir -p "$OUT"
work=$(mktemp -d)
at_exit 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"'
export GOTOOLCHAIN=local GOFLAGS= CGO_ENABLED=0

dir=$(go mod download -json "sigs.k8s.io/kueue@v$KUEUE_VERSION" 2>>"$LOG" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
if [[ -z $dir ]]; then
  step "could not download sigs.k8s.io/kueue@v$KUEUE_VERSION; see $LOG_FINAL"
  exit 1
fi

# copy_manifests SRC DEST copies the YAML files of the module's SRC into DEST.
copy_manifests() {
  [[ -d "$OUT/$2" ]] && return
  rm -rf "$OUT/$2.tmp"
  mkdir -p "$OUT/$2.tmp"
  cp "$dir/$1"/*.yaml "$OUT/$2.tmp/"
  chmod u+w "$OUT/$2.tmp"/*.yaml
  mv "$OUT/$2.tmp" "$OUT/$2"
}
copy_manifests config/components/crd/bases crds
copy_manifests config/components/webhook webhooks

if [[ ! -x "$OUT/manager" ]]; then
  step "building Kueue v$KUEUE_VERSION's manager from the Go module proxy into $OUT (about 10 minutes on a cold 2-core machine; once per version)"
  # The module cache is read-only; build in a copy so the go command may
  # write what it needs beside the sources.
  cp -r "$dir/." "$work/"
  chmod -R u+w "$work"
  (cd "$work" &&
    logged go build -trimpath \
      -ldflags "-X sigs.k8s.io/kueue/pkg/version.GitVersion=v$KUEUE_VERSION" \
      -o "$OUT/manager.tmp" ./cmd/kueue &&
    mv "$OUT/manager.tmp" "$OUT/manager")
  step "built: $OUT/manager"
fi
echo "$OUT"
