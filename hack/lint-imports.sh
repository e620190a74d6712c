#!/usr/bin/env bash
# make lint-imports: fails when a package imports across agentrun's layers.
#
#   1. api/ imports nothing under internal/ or controllers/ (direct imports,
#      test files included): the API types are what clients import, and must
#      not drag the implementation with them;
#   2. api/ does not depend, even through other packages, on controller-runtime's
#      webhook packages (sigs.k8s.io/controller-runtime/pkg/webhook/...): the
#      admission validator lives in internal/webhook, and a client of the types
#      must not get a webhook server with them;
#   3. internal/ imports nothing under controllers/ (direct imports, test files
#      included): the reconciler builds on internal/, not the other way round;
#   4. only internal/podman imports Podman's Go module
#      (github.com/containers/podman/v5/...), so the rest of agentrun sees the
#      containers.Runtime interface, not the bindings. Two tests are the
#      exceptions, on purpose: test/bench, whose raw baseline drives the
#      bindings directly, and test/e2e, which starts a host's manager in a
#      container as the Quadlet unit does (host network, user 0), settings
#      agentrun's containers.Spec has no reason to express.
#
# Run it through make, which sets the build tags the Podman bindings need
# (GOFLAGS): without them go list sees a different set of files.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

if [[ ${GOFLAGS:-} != *remote* ]]; then
  echo "lint-imports: GOFLAGS lacks the build tags: run make lint-imports" >&2
  exit 2
fi
mod=$(go list -m)

# Rules 1, 3 and 4: every package's direct imports, its tests' included.
direct=$(go list -f '{{.ImportPath}} {{join .Imports " "}} {{join .TestImports " "}} {{join .XTestImports " "}}' ./... |
  awk -v mod="$mod" '
    function under(path, dir) { return path == mod "/" dir || index(path, mod "/" dir "/") == 1 }
    {
      pkg = $1
      delete seen
      for (i = 2; i <= NF; i++) {
        imp = $i
        if (imp in seen) continue
        seen[imp] = 1
        if (under(pkg, "api") && (under(imp, "internal") || under(imp, "controllers")))
          print pkg " imports " imp ": api/ must not import internal/ or controllers/"
        if (under(pkg, "internal") && under(imp, "controllers"))
          print pkg " imports " imp ": internal/ must not import controllers/"
        if ((imp == "github.com/containers/podman/v5" || index(imp, "github.com/containers/podman/v5/") == 1) &&
            !under(pkg, "internal/podman") && pkg != mod "/test/bench" && pkg != mod "/test/e2e")
          print pkg " imports " imp ": only internal/podman (and test/bench, test/e2e) may import the Podman bindings"
      }
    }')

# Rule 2: every package api/ depends on, and through which of its direct
# imports, so that the message says where to cut.
transitive=$(go list -deps -f '{{.ImportPath}}|{{join .Imports " "}}|{{join .Deps " "}}' ./api/... |
  awk -F'|' -v mod="$mod" '
    function webhook(p) {
      return p == "sigs.k8s.io/controller-runtime/pkg/webhook" || index(p, "sigs.k8s.io/controller-runtime/pkg/webhook/") == 1
    }
    {
      imports[$1] = $2
      deps[$1] = " " $3 " "
      if ($1 == mod "/api" || index($1, mod "/api/") == 1) api[$1] = 1
    }
    END {
      for (pkg in api) {
        n = split(deps[pkg], d, " ")
        for (j = 1; j <= n; j++) {
          if (!webhook(d[j])) continue
          via = ""
          m = split(imports[pkg], direct, " ")
          for (k = 1; k <= m; k++)
            if (direct[k] == d[j] || index(deps[direct[k]], " " d[j] " ")) via = via " " direct[k]
          print pkg " depends on " d[j] " (through" via "): api/ must not pull in the webhook packages"
        }
      }
    }')

if [[ -n $direct$transitive ]]; then
  {
    echo "lint-imports: imports that cross agentrun's layers:"
    [[ -z $direct ]] || sed 's/^/  /' <<<"$direct"
    [[ -z $transitive ]] || sort <<<"$transitive" | sed 's/^/  /'
  } >&2
  exit 1
fi
echo "lint-imports: ok"
