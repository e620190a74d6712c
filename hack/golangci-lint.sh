#!/usr/bin/env bash
# Builds the golangci-lint that make lint runs, from the Go module proxy:
# golangci-lint v2 with kube-api-linter (the Kubernetes API conventions)
# linked in as its module plugin "kubeapilinter". golangci-lint's own way to
# add a module plugin, golangci-lint custom, clones golangci-lint's git
# repository, which our build machines cannot reach; a main of our own that
# imports both modules does what the clone would build. The binary is cached
# outside the clone, keyed by both versions and by the Go that built it
# (golangci-lint refuses code of a newer Go than its own), so that a fresh
# clone (CI) reuses it and a rerun is instant.
#
# GOLANGCI_LINT_VERSION is the newest golangci-lint the module proxy serves
# here; kube-api-linter has no releases, only commits (pseudo-versions).
#
# Prints the binary's path on stdout. When it builds, it prints one line on
# stderr; the Go toolchain's download and build output goes to
# ~/.cache/agentrun/logs/golangci-lint.log.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=hack/lib.sh
source "$ROOT/hack/lib.sh"
GOLANGCI_LINT_VERSION=${GOLANGCI_LINT_VERSION:-2.15.0}
KUBE_API_LINTER_VERSION=${KUBE_API_LINTER_VERSION:-v0.0.0-20260716143926-092fe0c72997}
# The tool is built with the machine's Go, not the repo's build tags
# (GOFLAGS): those are for agentrun's code, which .golangci.yml's
# run.build-tags gives the linter.
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
go_version=$(go env GOVERSION)
OUT="$AGENTRUN_CACHE/golangci-lint/v${GOLANGCI_LINT_VERSION}-kal-${KUBE_API_LINTER_VERSION##*-}-${go_version}/golangci-lint"

if [[ -x $OUT ]]; then
  echo "$OUT"
  exit 0
fi

log_setup golangci-lint
step "building golangci-lint v$GOLANGCI_LINT_VERSION with kube-api-linter from the Go module proxy into $(dirname "$OUT") (about 2 minutes on a cold machine)"
mkdir -p "$(dirname "$OUT")"
work=$(mktemp -d)
at_exit 'rm -rf "$work"'
cat >"$work/main.go" <<'GO'
// Command golangci-lint is golangci-lint with kube-api-linter registered as
// the module plugin "kubeapilinter", as golangci-lint custom would build it.
package main

import (
	"fmt"
	"os"

	"github.com/golangci/golangci-lint/v2/pkg/commands"
	"github.com/golangci/golangci-lint/v2/pkg/exitcodes"

	_ "sigs.k8s.io/kube-api-linter" // registers the plugin in its init
)

// Set by the build (-ldflags -X): what golangci-lint version prints.
var version, goVersion, kalVersion string

func main() {
	info := commands.BuildInfo{Version: version, GoVersion: goVersion, Commit: "kube-api-linter " + kalVersion, Date: "(unknown)"}
	if err := commands.Execute(info); err != nil {
		fmt.Fprintf(os.Stderr, "golangci-lint: %v\n", err)
		os.Exit(exitcodes.Failure)
	}
}
GO
(
  cd "$work"
  printf 'module agentrun.local/golangci-lint\n\ngo %s\n' "$(sed -E 's/^go([0-9]+\.[0-9]+).*/\1/' <<<"$go_version")" >go.mod
  logged go get "github.com/golangci/golangci-lint/v2@v$GOLANGCI_LINT_VERSION" "sigs.k8s.io/kube-api-linter@$KUBE_API_LINTER_VERSION"
  logged go build -trimpath \
    -ldflags "-X main.version=$GOLANGCI_LINT_VERSION -X main.goVersion=$go_version -X main.kalVersion=$KUBE_API_LINTER_VERSION" \
    -o "$OUT.tmp" .
  mv "$OUT.tmp" "$OUT"
)
echo "$OUT"
