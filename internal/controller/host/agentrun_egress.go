package host

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/containers"
	"github.com/agentrun/agentrun/internal/egress"
	"github.com/agentrun/agentrun/internal/egressforward"
	"github.com/agentrun/agentrun/internal/egressgate"
	"github.com/agentrun/agentrun/internal/policy"
)

// EgressProxy is the host's egress proxy: where it serves proxied runs'
// sockets, the forwarder it mounts into their containers, and the proxy's
// own settings.
type EgressProxy struct {
	// SocketDir holds a directory per proxied run with the run's socket;
	// empty: the host runs no proxy, and a run that needs one fails
	// (EgressUnavailable).
	SocketDir string
	// Forwarder is the path of agentrun-forward on the host.
	Forwarder string
	// Proxy are the proxy's settings, the same for every run.
	Proxy egress.Config
	// UpstreamCAFile holds the CAs the proxy trusts for credentialed
	// upstreams beside the system roots (host.egress.upstreamCAFile); "":
	// none.
	UpstreamCAFile string
	// ProxyWait is how long a run's forwarder waits for the proxy to
	// answer before the run ends EgressUnavailable; 0: the forwarder's own
	// default (a minute, longer than a manager's restart).
	ProxyWait time.Duration
	// CABundlePaths are where a run with credentials finds the bundle of
	// CAs it trusts, its own CA among them, besides the files its TLS
	// variables name: the agent images' system bundles
	// (host.egress.caBundlePaths, whose default the configuration fills).
	CABundlePaths []string
}

// Where a proxied run's container finds the forwarder and the directory of
// its socket, whatever the host's paths: the forwarder dials
// egressforward.Defaults.Socket.
const (
	forwarderInContainer = "/usr/libexec/agentrun/agentrun-forward"
	proxyURL             = "http://127.0.0.1:3128"
)

var socketDirInContainer = strings.TrimSuffix(egressforward.Defaults.Socket, "/"+egressgate.SocketName)

// caBundleInContainer is the bundle as the container sees it, in the run's
// directory mounted at socketDirInContainer.
var caBundleInContainer = socketDirInContainer + "/" + egressgate.CABundleName

// caBundleVariables name the file of trusted CAs for OpenSSL, git, Python's
// requests, curl and Node.js. Node adds its file to its own roots; the
// others take it instead of theirs, and the bundle holds the system roots.
var caBundleVariables = []string{"SSL_CERT_FILE", "GIT_SSL_CAINFO", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"}

// egressMode is how a run's container reaches the network on a host whose
// mode for runs that ask nothing is hostMode (empty: proxy): through the
// proxy when the run lists names, on its network when it names one (none
// is no network), else the host's way.
func egressMode(run *agentsv1alpha1.AgentRun, hostMode agentsv1alpha1.EgressMode) agentsv1alpha1.EgressMode {
	switch network := run.Spec.Podman.Network; {
	case run.Spec.Egress != nil:
		return agentsv1alpha1.EgressProxy
	case network == "none":
		return agentsv1alpha1.EgressNone
	case network != "":
		return agentsv1alpha1.EgressOpen
	}
	return cmp.Or(hostMode, agentsv1alpha1.EgressProxy)
}

// planEgress is the run's egress on this host as it launches: its mode and,
// through the proxy, the names it may reach (the host's defaults and its
// own). A run asking beyond the host's ceiling is refused. The host's mode
// is for runs that ask nothing: on a host whose mode is none, a run that
// lists names within the ceiling is proxied (a host that lets no run out
// permits nothing and has no defaults).
func (r *AgentRunReconciler) planEgress(run *agentsv1alpha1.AgentRun) (*agentsv1alpha1.EgressStatus, *policy.Refusal) {
	plan := &agentsv1alpha1.EgressStatus{Mode: egressMode(run, r.Egress.Mode), Credentials: plannedCredentials(run)}
	if plan.Mode != agentsv1alpha1.EgressProxy {
		return plan, nil
	}
	var asked []string
	if run.Spec.Egress != nil {
		asked = run.Spec.Egress.Allow
	}
	askedPolicy, err := egress.ParsePolicy(asked...)
	if err != nil {
		return nil, &policy.Refusal{Reason: agentsv1alpha1.ReasonEgressNotPermitted, Message: "spec.egress.allow: " + err.Error()}
	}
	// What every run may reach, a run may also ask for.
	ceiling, err := egress.ParsePolicy(slices.Concat(r.Egress.Permitted, r.Egress.Default)...)
	if err != nil {
		return nil, &policy.Refusal{Reason: agentsv1alpha1.ReasonEgressUnavailable, Message: fmt.Sprintf("host %s's host.egress: %v", r.Host, err)}
	}
	if uncovered := ceiling.Uncovered(askedPolicy); len(uncovered) > 0 {
		return nil, &policy.Refusal{Reason: agentsv1alpha1.ReasonEgressNotPermitted, Message: fmt.Sprintf(
			"spec.egress.allow asks for %s, beyond what host %s permits (host.egress.permitted: %s)",
			patternList(uncovered), r.Host, orNone(r.Egress.Permitted))}
	}
	for _, name := range slices.Concat(r.Egress.Default, asked) {
		if !slices.Contains(plan.Allow, name) {
			plan.Allow = append(plan.Allow, name)
		}
	}
	return plan, nil
}

func patternList(p egress.Policy) string {
	names := make([]string, len(p))
	for i, q := range p {
		names[i] = q.String()
	}
	return strings.Join(names, ", ")
}

func orNone(list []string) string {
	if len(list) == 0 {
		return "none"
	}
	return strings.Join(list, ", ")
}

// agentCommand splits a container's command into the egress forwarder's
// part, up to and with its --, which withEgress puts first for a proxied
// run (empty otherwise), and the agent's own command, to which flags for the
// agent go.
func agentCommand(command []string) (forwarder, agent []string) {
	if len(command) > 0 && command[0] == forwarderInContainer {
		if end := slices.Index(command, "--"); end >= 0 {
			return command[:end+1], command[end+1:]
		}
	}
	return nil, command
}

// withEgress gives a run's container its egress: no network but loopback
// in modes none and proxy, and through the proxy the forwarder and the
// run's socket directory, read-only, the command started by the forwarder
// and the proxy variables set. The host adds these mounts: the run's
// volume rules do not apply to them.
func (r *AgentRunReconciler) withEgress(spec *containers.Spec, run *agentsv1alpha1.AgentRun, mode agentsv1alpha1.EgressMode) *policy.Refusal {
	switch mode {
	case agentsv1alpha1.EgressNone:
		spec.Network = "none"
		return nil
	case agentsv1alpha1.EgressOpen:
		return nil
	}
	if r.egress.gate == nil {
		return &policy.Refusal{Reason: agentsv1alpha1.ReasonEgressUnavailable, Message: fmt.Sprintf(
			"host %s runs no egress proxy (host.egress.socketDir is empty), and this run's egress goes through one", r.Host)}
	}
	if info, err := os.Stat(r.EgressProxy.Forwarder); err != nil || !info.Mode().IsRegular() {
		return &policy.Refusal{Reason: agentsv1alpha1.ReasonEgressUnavailable, Message: fmt.Sprintf(
			"host %s's egress forwarder %s is missing (host.egress.forwarder): install agentrun-forward there (docs/deploy.md)", r.Host, r.EgressProxy.Forwarder)}
	}
	hostMounts := []string{socketDirInContainer, forwarderInContainer}
	if hasCredentials(run) {
		hostMounts = append(hostMounts, r.EgressProxy.CABundlePaths...)
	}
	for _, m := range spec.Mounts {
		if slices.Contains(hostMounts, m.Destination) {
			return &policy.Refusal{Reason: agentsv1alpha1.ReasonVolumeNotAllowed, Message: fmt.Sprintf(
				"a volume mounts at %s, where a proxied run gets its egress", m.Destination)}
		}
	}
	runDir := r.egress.gate.RunDir(string(run.UID))
	spec.Network = "none"
	spec.Mounts = append(spec.Mounts,
		containers.Mount{Source: r.EgressProxy.Forwarder, Destination: forwarderInContainer, Options: []string{"ro"}},
		containers.Mount{Source: runDir, Destination: socketDirInContainer, Options: []string{"ro"}})
	prefix := []string{forwarderInContainer, "exec"}
	if r.EgressProxy.ProxyWait > 0 {
		prefix = append(prefix, "--proxy-wait="+r.EgressProxy.ProxyWait.String())
	}
	spec.Command = slices.Concat(prefix, []string{"--"}, spec.Command)
	for _, name := range []string{"HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"} {
		spec.Env[name] = proxyURL
	}
	spec.Env["NO_PROXY"], spec.Env["no_proxy"] = "localhost,127.0.0.1", "localhost,127.0.0.1"
	// Claude Code's telemetry and update checks would only be refused.
	spec.Env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] = "1"
	if hasCredentials(run) {
		r.trustRunCA(spec, run, runDir)
	}
	return nil
}

// hasCredentials tells whether the proxy adds credentials to the run's
// requests, and so ends the TLS of their hosts with the run's CA.
func hasCredentials(run *agentsv1alpha1.AgentRun) bool {
	return run.Spec.Egress != nil && len(run.Spec.Egress.Credentials) > 0
}

// trustRunCA makes the container trust the run's CA, whose certificates the
// proxy shows for credentialed hosts, and sets the credentials'
// placeholders. The bundle is the file the gate writes into the run's
// directory, mounted read-only over the images' system bundles. The TLS
// variables override the run's own env: a run that named another bundle
// would fail every request to a credentialed host, and the bundle holds
// the system roots besides the run's CA.
func (r *AgentRunReconciler) trustRunCA(spec *containers.Spec, run *agentsv1alpha1.AgentRun, runDir string) {
	bundle := filepath.Join(runDir, egressgate.CABundleName)
	for _, path := range r.EgressProxy.CABundlePaths {
		spec.Mounts = append(spec.Mounts, containers.Mount{Source: bundle, Destination: path, Options: []string{"ro"}})
	}
	for _, name := range caBundleVariables {
		spec.Env[name] = caBundleInContainer
	}
	for _, c := range run.Spec.Egress.Credentials {
		for _, name := range c.PlaceholderEnv {
			spec.Env[name] = agentsv1alpha1.CredentialPlaceholder
		}
	}
}
