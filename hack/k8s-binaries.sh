#!/usr/bin/env bash
# Builds the Kubernetes binaries that envtest and the local stack need (etcd,
# kube-apiserver, kubectl) from the Go module proxy, because release downloads
# are not reachable from our build machines. The binaries are cached outside the
# clone, keyed by version, so that a fresh clone (CI) reuses them and a rerun is
# instant.
#
# Prints the directory holding the three binaries on stdout (use it as
# KUBEBUILDER_ASSETS). When it builds, it prints one line per build on stderr;
# the Go toolchain's download and build output goes to
# ~/.cache/agentrun/logs/k8s-binaries.log.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=hack/lib.sh
source "$ROOT/hack/lib.sh"
K8S_VERSION=${K8S_VERSION:-1.37.2}
ETCD_VERSION=${ETCD_VERSION:-3.7.3}
OUT="$AGENTRUN_CACHE/k8s/v${K8S_VERSION}-etcd-v${ETCD_VERSION}"

if [[ -x "$OUT/etcd" && -x "$OUT/kube-apiserver" && -x "$OUT/kubectl" ]]; then
  echo "$OUT"
  exit 0
fi

log_setup k8s-binaries
mkdir -p "$OUT"
work=$(mktemp -d)
at_exit 'rm -rf "$work"'
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
go_version=$(go env GOVERSION | sed -E 's/^go([0-9]+\.[0-9]+).*/\1/')

build_etcd() {
  local dir="$work/etcd"
  mkdir -p "$dir"
  cat >"$dir/main.go" <<'GO'
// Command etcd runs the etcd server; built here because the etcd module's
// replace directives keep `go install` from building it directly.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (cd "$dir" &&
    printf 'module agentrun.local/etcd\n\ngo %s\n' "$go_version" >go.mod &&
    logged go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" &&
    logged go build -trimpath -o "$OUT/etcd.tmp" . &&
    mv "$OUT/etcd.tmp" "$OUT/etcd")
}

build_kubernetes() {
  local dir="$work/kubernetes"
  mkdir -p "$dir/kube-apiserver" "$dir/kubectl"
  cat >"$dir/kube-apiserver/main.go" <<'GO'
// Command kube-apiserver runs the Kubernetes API server.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() { os.Exit(cli.Run(app.NewAPIServerCommand())) }
GO
  cat >"$dir/kubectl/main.go" <<'GO'
// Command kubectl is the Kubernetes command-line client.
package main

import (
	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"

	_ "k8s.io/client-go/plugin/pkg/client/auth"
)

func main() {
	if err := cli.RunNoErrOutput(cmd.NewDefaultKubectlCommand()); err != nil {
		util.CheckErr(err)
	}
}
GO
  (
    cd "$dir"
    printf 'module agentrun.local/kubernetes\n\ngo %s\n\nrequire k8s.io/kubernetes v%s\n' "$go_version" "$K8S_VERSION" >go.mod
    # k8s.io/kubernetes requires its staging modules at v0.0.0 and expects a
    # replace for each; point every one at the matching published version.
    local modfile
    modfile=$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" 2>>"$LOG" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    if [[ -z $modfile ]]; then
      step "could not download k8s.io/kubernetes@v$K8S_VERSION's go.mod; see $LOG_FINAL"
      exit 1
    fi
    local staging_version="v0.${K8S_VERSION#1.}"
    awk '$2 == "v0.0.0" && $1 ~ /^k8s\.io\// {print $1}' "$modfile" | while read -r m; do
      echo "replace $m => $m $staging_version" >>go.mod
    done
    logged go get "k8s.io/kubernetes@v$K8S_VERSION"
    local major=${K8S_VERSION%%.*} minor
    minor=${K8S_VERSION#*.}; minor=${minor%%.*}
    local ldflags=""
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ldflags+=" -X $pkg.gitVersion=v$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    done
    for cmd in kube-apiserver kubectl; do
      logged go build -trimpath -ldflags "$ldflags" -o "$OUT/$cmd.tmp" "./$cmd"
      mv "$OUT/$cmd.tmp" "$OUT/$cmd"
    done
  )
}

if [[ ! -x "$OUT/etcd" ]]; then
  step "building etcd v$ETCD_VERSION from the Go module proxy into $OUT (about 2 minutes on a cold machine)"
  build_etcd
fi
if [[ ! -x "$OUT/kube-apiserver" || ! -x "$OUT/kubectl" ]]; then
  step "building kube-apiserver and kubectl v$K8S_VERSION from the Go module proxy (about 8 minutes and 3 GB of Go build cache on a cold 2-core machine; once per version)"
  build_kubernetes
fi
step "built: $("$OUT/kube-apiserver" --version 2>&1), etcd $("$OUT/etcd" --version 2>&1 | head -1)"
echo "$OUT"
