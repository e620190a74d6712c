# agentrun's build. Every go command needs the Podman bindings' build tags:
# containers_image_openpgp avoids gpgme (a C library), remote builds the client
# side only.
export GOTOOLCHAIN := local
export GOFLAGS := -tags=remote,containers_image_openpgp
# CGO off: the bindings pull in storage drivers whose cgo parts need C headers
# (btrfs) that a client never uses.
export CGO_ENABLED := 0

LOCALBIN ?= $(CURDIR)/bin

# The manager's version: the tag of the image make image builds. Fixed here, not
# taken from git describe, because the committed manifests name it
# (config/manager's kustomization, config/host/agentrun-host.container,
# docs/deploy.md) and must name an image that make image builds from any
# checkout; a spec in test/e2e checks that they agree with this line. Raise it
# with a release. The image is also tagged :latest.
VERSION ?= 0.1.0
# Exported to hack/manager-image.sh and to the tests (the e2e suite runs a host's
# manager from this image).
export AGENTRUN_MANAGER_IMAGE ?= localhost/agentrun-manager:$(VERSION)
CONTROLLER_TOOLS_VERSION ?= v0.23.0
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen-$(CONTROLLER_TOOLS_VERSION)

# The Podman API socket the tests and the local stack talk to (hack/podman-setup.sh
# starts the service there). Its default is defined once, in hack/lib.sh; it is
# read from there and exported to every script and test run from here. Set
# AGENTRUN_PODMAN_SOCKET (environment or make's command line) to use another.
export AGENTRUN_PODMAN_SOCKET := $(shell bash -c '. "$(CURDIR)/hack/lib.sh" && printf %s "$$AGENTRUN_PODMAN_SOCKET"')
ifeq ($(AGENTRUN_PODMAN_SOCKET),)
$(error could not read AGENTRUN_PODMAN_SOCKET from hack/lib.sh)
endif

.PHONY: all
all: build

##@ Development

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate the CRD, RBAC and webhook manifests under config/.
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd webhook paths="{./api/...,./internal/controller/host,./internal/controller/fleet,./internal/webhook/...}" \
		output:crd:artifacts:config=config/crd/bases \
		output:rbac:artifacts:config=config/rbac \
		output:webhook:artifacts:config=config/webhook

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate the DeepCopy methods and docs/configuration.md (from the configuration file's types).
	$(CONTROLLER_GEN) object paths="{./api/...,./internal/kueueapi}"
	go run ./hack/configdoc -o docs/configuration.md

.PHONY: verify-generated
verify-generated: $(CONTROLLER_GEN) ## Fail when generated files differ from what the markers produce.
	CONTROLLER_GEN=$(CONTROLLER_GEN) hack/verify-generated.sh

.PHONY: fmt
fmt: ## Run go fmt.
	go fmt ./...

.PHONY: vet
vet: ## Run go vet.
	go vet ./...

.PHONY: check-fmt
check-fmt: ## Fail when a Go file is not gofmt-formatted.
	@out=$$(gofmt -l $$(git ls-files --cached --others --exclude-standard '*.go')); \
	if [ -n "$$out" ]; then echo "not gofmt-formatted: $$out"; exit 1; fi

.PHONY: lint
lint: ## Run golangci-lint (.golangci.yml: govet, staticcheck, errcheck, gocritic, ..., and the Kubernetes API conventions over api/), built and cached by hack/golangci-lint.sh.
	@lint=$$(hack/golangci-lint.sh) && "$$lint" run ./...

.PHONY: lint-imports
lint-imports: ## Fail when a package imports across the layers (api, internal, the host and the fleet, the Podman bindings, test helpers).
	@hack/lint-imports.sh

.PHONY: podman
podman: ## Install and configure Podman, build the test image, start the API service.
	@hack/podman-setup.sh >/dev/null

.PHONY: k8s-binaries
k8s-binaries: ## Build (or reuse) etcd, kube-apiserver and kubectl from the Go module proxy.
	@hack/k8s-binaries.sh >/dev/null

.PHONY: kueue
kueue: ## Build (or reuse) Kueue's controller manager from the Go module proxy, with its CRDs and webhook manifests (the Kueue suite's; docs/kueue.md).
	@hack/kueue.sh >/dev/null

# The packages whose tests drive a Podman service (the runtime contract, the
# envtest + Podman suites, the real agent, end to end): make test runs them
# against the host's Podman (4.3.1 on Debian 12) with the rest, then again
# against Podman 5 (hack/podman5.sh). Their suites' names say which version.
PODMAN_PACKAGES := ./internal/podman/... ./internal/controller/... ./test/agent/... ./test/e2e/...

.PHONY: test
test: verify-generated check-fmt vet lint lint-imports k8s-binaries kueue podman agent-image image podman5 ## Run every test: unit, envtest + Podman, the real agent, end to end; the Podman-facing ones against Podman 4 and 5.
	KUBEBUILDER_ASSETS="$$(hack/k8s-binaries.sh)" go test ./... -count=1 -timeout 30m
	@$(MAKE) --no-print-directory test-podman5

.PHONY: podman5
podman5: podman agent-image image ## Start (or reuse) the Podman 5 API service beside the host's (hack/podman5.sh) and copy the test, agent and manager images into it.
	@hack/podman5.sh start >/dev/null
	@hack/podman5.sh load localhost/agentrun-test:latest "$$(hack/agent-image.sh --print-image)" "$(AGENTRUN_MANAGER_IMAGE)"

.PHONY: test-podman5
test-podman5: k8s-binaries kueue podman5 ## Run the Podman-facing tests against Podman 5 only.
	@echo "test-podman5: the Podman-facing packages against Podman 5 (hack/podman5.sh), apart from the run above against $(AGENTRUN_PODMAN_SOCKET)"
	AGENTRUN_PODMAN_SOCKET="$$(hack/podman5.sh start)" KUBEBUILDER_ASSETS="$$(hack/k8s-binaries.sh)" go test $(PODMAN_PACKAGES) -count=1 -timeout 30m

# The inner loop's tier: every package's tests but the local fleet's, the
# fault suite's and the end-to-end suite's (which start whole stacks), against
# the host's Podman only. make test stays the gate.
SLOW_PACKAGES := ./test/e2e ./test/fleet ./test/chaos ./test/bench

.PHONY: test-fast
test-fast: k8s-binaries kueue podman agent-image ## Run the unit tests, the envtest suites and the real-Podman suites on the host's Podman; no fleet, chaos or end-to-end suites.
	KUBEBUILDER_ASSETS="$$(hack/k8s-binaries.sh)" go test $$(go list ./... | grep -v $(foreach p,$(SLOW_PACKAGES),-e '/$(patsubst ./%,%,$(p))$$')) -count=1 -timeout 10m

.PHONY: podman5-stop
podman5-stop: ## Stop the Podman 5 API service and remove what it set up (its storage stays in the cache).
	@hack/podman5.sh stop

# The fuzz targets (internal/webhook/v1alpha1/agentrun_fuzz_test.go) hold the
# webhook against the generated CRD's schema and CEL rules. make test runs their
# seed corpus (testdata/fuzz); make fuzz explores, one target at a time on one
# worker, and writes any failing input to the corpus.
FUZZ_PACKAGE := ./internal/webhook/v1alpha1
FUZZ_TARGETS := FuzzRuleFunctions FuzzAgentRunCreate FuzzAgentRunUpdate
FUZZTIME ?= 10m

.PHONY: fuzz
fuzz: ## Fuzz the webhook against the CRD's schema and CEL rules for FUZZTIME (10m) per target.
	@for target in $(FUZZ_TARGETS); do \
		echo "fuzz: $$target for $(FUZZTIME)"; \
		go test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) -parallel 1 $(FUZZ_PACKAGE) || exit 1; \
	done

.PHONY: test-env
test-env: k8s-binaries ## Print the variables make test sets, to eval before running go test by hand.
	@echo "export GOTOOLCHAIN=$(GOTOOLCHAIN) GOFLAGS=$(GOFLAGS) CGO_ENABLED=$(CGO_ENABLED)"
	@echo "export AGENTRUN_PODMAN_SOCKET=$(AGENTRUN_PODMAN_SOCKET) KUBEBUILDER_ASSETS=$$(hack/k8s-binaries.sh)"
	@echo "export AGENTRUN_MANAGER_IMAGE=$(AGENTRUN_MANAGER_IMAGE)"

.PHONY: chaos
chaos: k8s-binaries podman podman5 ## Run the fault suite (test/chaos) at full scale on a fleet of its own: manager kills, Podman and API-server outages, a cut host, write conflicts, racing hosts; prints the figures (also .local/chaos.json). CHAOS_FOCUS=REGEXP: some scenarios. make test runs its short form.
	@hack/chaos.sh

##@ Build

# bin/agentrun-forward is mounted into every run's container: static (CGO off,
# above), standard library only (make lint-imports) and stripped.
.PHONY: build
build: ## Build the manager binary, the kubectl plugin (bin/kubectl-agentrun: on PATH, kubectl agentrun) and the runs' egress forwarder (bin/agentrun-forward).
	go build -o $(LOCALBIN)/manager ./cmd
	go build -o $(LOCALBIN)/kubectl-agentrun ./cmd/kubectl-agentrun
	go build -trimpath -ldflags='-s -w' -o $(LOCALBIN)/agentrun-forward ./cmd/agentrun-forward

.PHONY: image
image: build podman ## Build (or reuse) the image localhost/agentrun-manager:VERSION (and :latest) from bin/manager, FROM scratch, with Podman.
	@hack/manager-image.sh

.PHONY: localstack
localstack: ## Build the local control plane used by make up and make demo.
	go build -o $(LOCALBIN)/localstack ./hack/localstack

.PHONY: demointernet
demointernet: ## Build the single host's stand-in for the internet (hack/demointernet), which make up and make demo start.
	go build -o $(LOCALBIN)/demointernet ./hack/demointernet

.PHONY: agent-image
agent-image: podman ## Build (or reuse) the Claude Code image localhost/agentrun-claude, without any registry.
	@hack/agent-image.sh

.PHONY: bench
bench: ## Measure agentrun against raw Podman and the podman CLI, medians of 3 (BENCH_PROFILE=standard, the default: launch, raw, cli and agentrun steps, 200 runs, with and without 10,000 finished runs, under 30 min; quick: a short proof of the code path; full: plus a 3-host fleet, live output of 200 runs and the egress proxy); BENCH_ONLY_PROGRESS=1, BENCH_ONLY_EGRESS=1: that step alone.
	@hack/bench.sh

.PHONY: soak
soak: ## Leaks over thousands of runs: SOAK_RUNS=5000 short runs through one host, BENCH_C=8 at a time, with live output and signed callbacks; at every SOAK_EVERY=1000 the memory of the host's manager (--mode=host, as a host runs it), heap after a GC, goroutines, open files, and containers, secrets and session directories left; fails past the goals (also .local/soak.json).
	@hack/soak.sh

.PHONY: scale
scale: k8s-binaries ## Simulate a fleet of SCALE_HOSTS=100 hosts (in-memory containers of SCALE_RUN_S=1 s, the fleet side as shipped, a real API server) and SCALE_RUNS=10000 unpinned runs, at 10, 30 and 100 hosts: placement rate, create-to-Running latency, API writes per run and per host, the fleet's memory and CPU (also .local/scale.json); SCALE_QUICK=1: 5 and 10 hosts, 300 runs.
	@hack/scale.sh

##@ Local stack

.PHONY: demo
demo: ## Start a local stack, run the samples, show the results, tear it down (a stack make up started stays up).
	@hack/local-stack.sh demo

# HOSTS=N: the local fleet, N Podman hosts each in a network namespace of its
# own (hack/local-stack.sh); without it, the one host "local".
.PHONY: up
up: ## Start the local stack in the background, or restart only its parts that are not running (kubeconfig in .local/kubeconfig); HOSTS=3: a fleet of 3 Podman hosts; KUEUE=1: with Kueue's queues (docs/kueue.md).
	@$(if $(HOSTS),AGENTRUN_HOSTS=$(HOSTS) )$(if $(KUEUE),AGENTRUN_KUEUE=1 )hack/local-stack.sh up

.PHONY: down
down: ## Stop the local stack and remove its state, AgentRuns included.
	@hack/local-stack.sh down

$(CONTROLLER_GEN):
	mkdir -p $(LOCALBIN)
	GOBIN=$(LOCALBIN) go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)
	mv $(LOCALBIN)/controller-gen $(CONTROLLER_GEN)

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  %-18s %s\n", $$1, $$2 } /^##@/ { printf "\n%s\n", substr($$0, 5) }' $(MAKEFILE_LIST)
