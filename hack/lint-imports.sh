#!/usr/bin/env bash
# make lint-imports: fails when a package imports across agentrun's layers.
#
#   1. api/ imports nothing under internal/ (direct imports, test files
#      included): the API types are what clients import, and must not drag
#      the implementation with them;
#   2. api/ does not depend, even through other packages, on controller-runtime's
#      webhook packages (sigs.k8s.io/controller-runtime/pkg/webhook/...): the
#      admission validator lives in internal/webhook, and a client of the types
#      must not get a webhook server with them;
#   3. nothing under internal/ outside internal/controller imports
#      internal/controller/... (direct imports, test files included): the
#      controllers build on internal/, not the other way round;
#   4. the host's reconciler (internal/controller/host) and the fleet's
#      controllers (internal/controller/fleet) never import each other, and
#      what both share (internal/controller/agentruns) imports neither: they
#      run in different processes (a host's manager on each Podman host, the
#      fleet's once per cluster), and a call across would run on the wrong
#      side or pull one side's setup into the other's binary. Their tests may:
#      the suites run a host and the fleet together, as a cluster does;
#   5. only internal/podman imports Podman's Go module
#      (github.com/containers/podman/v5/...), so the rest of agentrun sees the
#      containers.Runtime interface, not the bindings. Two tests are the
#      exceptions, on purpose: test/bench, whose raw baseline drives the
#      bindings directly, and test/e2e, which starts a host's manager in a
#      container as the Quadlet unit does (host network, user 0), settings
#      agentrun's containers.Spec has no reason to express;
#   6. no product package (the non-test files of cmd/, api/ and internal/)
#      imports a test helper, and the manager binary does not depend on one
#      even through other packages (go list -deps ./cmd/...): fakes, envtest
#      and Podman harnesses must never run in a user's process. A test helper
#      is a package under internal/testing/ (the helpers of many suites), or
#      one beside the package it serves whose name ends in "test"
#      (podmantest, runtimetest, logservertest, controllertest, ...) or is
#      "fake" (Kubernetes' habit: client-go's kubernetes/fake); test helpers
#      may import each other;
#   7. the egress forwarder (cmd/agentrun-forward) depends, even through
#      other packages, on the standard library and internal/egressforward
#      alone: the binary is mounted into every run's container, where it
#      must stay small, static, and carry no code a run has no use for.
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

# Rules 1, 3, 4, 5 and 6 (direct): every package's direct imports, and
# apart its tests' imports.
direct=$(go list -f '{{.ImportPath}}|{{join .Imports " "}}|{{join .TestImports " "}} {{join .XTestImports " "}}' ./... |
  awk -F'|' -v mod="$mod" '
    function under(path, dir) { return path == mod "/" dir || index(path, mod "/" dir "/") == 1 }
    function helper(path,   n, parts) {
      if (index(path, mod "/internal/") != 1) return 0
      if (under(path, "internal/testing")) return 1
      n = split(path, parts, "/")
      return parts[n] ~ /test$/ || parts[n] == "fake"
    }
    function check(pkg, imp, product) {
      if (under(pkg, "api") && under(imp, "internal"))
        print pkg " imports " imp ": api/ must not import internal/"
      if (under(pkg, "internal") && !under(pkg, "internal/controller") && under(imp, "internal/controller"))
        print pkg " imports " imp ": only internal/controller/... may import internal/controller/..."
      if (product && under(pkg, "internal/controller/host") && under(imp, "internal/controller/fleet"))
        print pkg " imports " imp ": the host (internal/controller/host) must not import the fleet (internal/controller/fleet)"
      if (product && under(pkg, "internal/controller/fleet") && under(imp, "internal/controller/host"))
        print pkg " imports " imp ": the fleet (internal/controller/fleet) must not import the host (internal/controller/host)"
      if (pkg == mod "/internal/controller/agentruns" && (under(imp, "internal/controller/host") || under(imp, "internal/controller/fleet")))
        print pkg " imports " imp ": internal/controller/agentruns, which the host and the fleet share, must import neither"
      if ((imp == "github.com/containers/podman/v5" || index(imp, "github.com/containers/podman/v5/") == 1) &&
          !under(pkg, "internal/podman") && pkg != mod "/test/bench" && pkg != mod "/test/e2e")
        print pkg " imports " imp ": only internal/podman (and test/bench, test/e2e) may import the Podman bindings"
      if (product && (under(pkg, "cmd") || under(pkg, "api") || under(pkg, "internal")) && !helper(pkg) && helper(imp))
        print pkg " imports " imp ": product code must not import a test helper"
    }
    {
      pkg = $1
      delete seen
      n = split($2, imports, " ")
      for (i = 1; i <= n; i++) {
        seen[imports[i]] = 1
        check(pkg, imports[i], 1)
      }
      n = split($3, imports, " ")
      for (i = 1; i <= n; i++) {
        if (imports[i] in seen) continue
        seen[imports[i]] = 1
        check(pkg, imports[i], 0)
      }
    }')

# Rule 6 (transitive): the test helpers the manager binary depends on, and
# through which of its packages.
binary=$(go list -deps -f '{{.ImportPath}} {{join .Imports " "}}' ./cmd/... |
  awk -v mod="$mod" '
    function helper(path,   n, parts) {
      if (index(path, mod "/internal/") != 1) return 0
      if (index(path, mod "/internal/testing/") == 1) return 1
      n = split(path, parts, "/")
      return parts[n] ~ /test$/ || parts[n] == "fake"
    }
    {
      for (i = 2; i <= NF; i++)
        if (helper($i) && !helper($1))
          print "./cmd/... depends on the test helper " $i " (imported by " $1 "): the manager binary must not depend on a test helper, even through other packages"
    }' | sort -u)

# Rule 7: what the forwarder's binary depends on beyond the standard library
# and its own package, and through which package.
forwarder=$(go list -deps -f '{{.ImportPath}} {{.Standard}} {{join .Imports " "}}' ./cmd/agentrun-forward |
  awk -v mod="$mod" '
    function allowed(p) { return p == mod "/cmd/agentrun-forward" || p == mod "/internal/egressforward" }
    { standard[$1] = ($2 == "true"); for (i = 3; i <= NF; i++) importers[$i] = importers[$i] " " $1 }
    END {
      for (p in standard)
        if (!standard[p] && !allowed(p))
          print "./cmd/agentrun-forward depends on " p " (imported by" importers[p] "): the forwarder in every run'"'"'s container may use only the standard library and internal/egressforward"
    }' | sort)

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

if [[ -n $direct$transitive$binary$forwarder ]]; then
  {
    echo "lint-imports: imports that cross agentrun's layers:"
    [[ -z $direct ]] || sed 's/^/  /' <<<"$direct"
    [[ -z $transitive ]] || sort <<<"$transitive" | sed 's/^/  /'
    [[ -z $binary ]] || sed 's/^/  /' <<<"$binary"
    [[ -z $forwarder ]] || sed 's/^/  /' <<<"$forwarder"
  } >&2
  exit 1
fi
echo "lint-imports: ok"
