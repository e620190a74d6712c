#!/usr/bin/env bash
# Regenerates the CRDs, RBAC, webhook manifests, deepcopy code and
# docs/configuration.md in a scratch copy of the tree and fails when they differ
# from the files in this tree, so a change to the API's markers or the
# configuration's doc comments cannot land without its generated files.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
: "${CONTROLLER_GEN:?set CONTROLLER_GEN to the controller-gen binary}"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cd "$ROOT"
tar --exclude=./.git --exclude=./bin --exclude=./.local -cf - . | tar -C "$scratch" -xf -
cd "$scratch"
make -s manifests generate CONTROLLER_GEN="$CONTROLLER_GEN" >/dev/null
if ! diff -r -u "$ROOT/config" "$scratch/config" || ! diff -r -u "$ROOT/api" "$scratch/api" ||
  ! diff -r -u "$ROOT/internal/kueueapi" "$scratch/internal/kueueapi" ||
  ! diff -u "$ROOT/docs/configuration.md" "$scratch/docs/configuration.md"; then
  echo "generated files are stale: run 'make manifests generate' and commit the result" >&2
  exit 1
fi
