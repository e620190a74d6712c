package config

import (
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/tools/leaderelection"

	configv1alpha1 "github.com/agentrun/agentrun/api/config/v1alpha1"
	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/egress"
	"github.com/agentrun/agentrun/internal/policy"
)

// Sections says which of the file's process sections the process runs: the
// others are not read, so not checked either.
type Sections struct {
	Host, Fleet bool
}

// maxOutputTailBytes bounds host.output.tailBytes: status.output is part of
// an object the API server stores.
const maxOutputTailBytes = 65536

// minLogMaxSize is the smallest host.containers.logMaxSize: smaller, a log
// started afresh near the run's end could hold less than the host reads for
// the agent's result.
var minLogMaxSize = resource.MustParse("1Mi")

// Validate checks a defaulted configuration, the shared sections and those
// the process runs; every error names its field's path.
func Validate(c *configv1alpha1.Configuration, s Sections) field.ErrorList {
	var errs field.ErrorList
	if msgs := validation.IsDNS1123Label(c.LeaseNamespace); len(msgs) > 0 {
		errs = append(errs, field.Invalid(field.NewPath("leaseNamespace"), c.LeaseNamespace, strings.Join(msgs, "; ")))
	}
	errs = append(errs, validateLeaderElection(&c.LeaderElection, field.NewPath("leaderElection"))...)
	host := field.NewPath("host")
	errs = append(errs, validateHeartbeat(&c.Host.Heartbeat, host.Child("heartbeat"))...)
	fleet := field.NewPath("fleet")
	errs = append(errs, notNegative(c.Fleet.RunRecordRetention, fleet.Child("runRecordRetention"), "0 keeps no records")...)
	if s.Fleet {
		errs = append(errs, validateLogsAPI(&c.Fleet.LogsAPI, fleet.Child("logsAPI"))...)
	}
	if s.Host {
		errs = append(errs, validateHost(&c.Host, host)...)
	}
	return errs
}

// validateLeaderElection says in advance what client-go's leader election
// would refuse at start, naming the fields.
func validateLeaderElection(le *configv1alpha1.LeaderElectionConfiguration, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	retry, renew, lease := le.RetryPeriod.Duration, le.RenewDeadline.Duration, le.LeaseDuration.Duration
	if retry <= 0 {
		errs = append(errs, field.Invalid(p.Child("retryPeriod"), le.RetryPeriod.String(), "must be positive"))
	}
	if renew <= time.Duration(leaderelection.JitterFactor*float64(retry)) {
		errs = append(errs, field.Invalid(p.Child("renewDeadline"), le.RenewDeadline.String(),
			fmt.Sprintf("must be longer than %.1f times retryPeriod (%s)", leaderelection.JitterFactor, le.RetryPeriod.Duration)))
	}
	if lease <= renew {
		errs = append(errs, field.Invalid(p.Child("leaseDuration"), le.LeaseDuration.String(),
			fmt.Sprintf("must be longer than renewDeadline (%s)", le.RenewDeadline.Duration)))
	}
	return errs
}

func validateHeartbeat(hb *configv1alpha1.HeartbeatConfiguration, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if hb.Period.Duration <= 0 {
		errs = append(errs, field.Invalid(p.Child("period"), hb.Period.String(), "must be positive"))
	}
	switch grace := hb.GracePeriod.Duration; {
	case grace <= hb.Period.Duration:
		errs = append(errs, field.Invalid(p.Child("gracePeriod"), hb.GracePeriod.String(),
			fmt.Sprintf("must be longer than period (%s)", hb.Period.Duration)))
	case grace%time.Second != 0:
		// The fleet reads it from the host's Lease, which has seconds.
		errs = append(errs, field.Invalid(p.Child("gracePeriod"), hb.GracePeriod.String(),
			"must be a whole number of seconds: the host's Lease tells the fleet in seconds (spec.leaseDurationSeconds)"))
	}
	return errs
}

func validateLogsAPI(l *configv1alpha1.LogsAPIConfiguration, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if l.BindAddress == "" {
		return nil
	}
	if l.CertDir == "" {
		errs = append(errs, field.Required(p.Child("certDir"), "the log API's serving certificate is needed with bindAddress"))
	}
	if l.ClientCertDir == "" {
		errs = append(errs, field.Required(p.Child("clientCertDir"), "the fleet's client certificate for hosts is needed with bindAddress"))
	}
	return errs
}

func validateHost(h *configv1alpha1.HostConfiguration, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	for k, v := range h.Labels {
		if msgs := append(validation.IsQualifiedName(k), validation.IsValidLabelValue(v)...); len(msgs) > 0 {
			errs = append(errs, field.Invalid(p.Child("labels").Key(k), v, "not a valid label: "+strings.Join(msgs, "; ")))
		}
	}
	errs = append(errs, positive(h.PodmanCallTimeout, p.Child("podmanCallTimeout"))...)
	errs = append(errs, validateRuns(&h.Runs, p.Child("runs"))...)
	errs = append(errs, validateOutput(&h.Output, p.Child("output"))...)
	errs = append(errs, validateContainers(&h.Containers, p.Child("containers"))...)
	errs = append(errs, validateResources(&h.Resources, p.Child("resources"))...)
	errs = append(errs, absolutePaths(h.Volumes.AllowedPaths, p.Child("volumes", "allowedPaths"))...)
	errs = append(errs, absolutePaths(h.Volumes.BlockedContainerPaths, p.Child("volumes", "blockedContainerPaths"))...)
	if _, err := LogEndpoint(&h.Logs); err != nil {
		errs = append(errs, err)
	}
	_, cidrErrs := parseCIDRs(h.Notify.AllowedCIDRs, p.Child("notify", "allowedCIDRs"))
	errs = append(errs, cidrErrs...)
	return append(errs, validateEgress(&h.Egress, p.Child("egress"))...)
}

// maxSocketDir bounds host.egress.socketDir: a Unix socket's path has at
// most 107 bytes, and a run's is <socketDir>/<UID, 36>/egress.sock.
const maxSocketDir = 107 - len("/123e4567-e89b-12d3-a456-426614174000/egress.sock")

func validateEgress(e *configv1alpha1.EgressConfiguration, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	modes := []string{string(agentsv1alpha1.EgressProxy), string(agentsv1alpha1.EgressNone), string(agentsv1alpha1.EgressOpen)}
	if !slices.Contains(modes, e.Mode) {
		errs = append(errs, field.NotSupported(p.Child("mode"), e.Mode, modes))
	}
	errs = append(errs, egressPatterns(e.Default, p.Child("default"))...)
	errs = append(errs, egressPatterns(e.Permitted, p.Child("permitted"))...)
	_, cidrErrs := parseCIDRs(e.AllowedCIDRs, p.Child("allowedCIDRs"))
	errs = append(errs, cidrErrs...)
	if *e.MaxConnectionsPerRun < 1 {
		errs = append(errs, field.Invalid(p.Child("maxConnectionsPerRun"), *e.MaxConnectionsPerRun, "must be at least 1"))
	}
	errs = append(errs, positive(e.DialTimeout, p.Child("dialTimeout"))...)
	errs = append(errs, positive(e.IdleTimeout, p.Child("idleTimeout"))...)
	switch dir := *e.SocketDir; {
	case !filepath.IsAbs(dir):
		errs = append(errs, field.Invalid(p.Child("socketDir"), dir, "must be an absolute path"))
	case len(filepath.Clean(dir)) > maxSocketDir:
		errs = append(errs, field.Invalid(p.Child("socketDir"), dir,
			fmt.Sprintf("must have at most %d characters: a run's socket, <socketDir>/<run UID>/egress.sock, must fit a Unix socket's 107", maxSocketDir)))
	}
	switch fwd := *e.Forwarder; {
	case !filepath.IsAbs(fwd):
		errs = append(errs, field.Invalid(p.Child("forwarder"), fwd, "must be an absolute path"))
	case underAny(filepath.Clean(fwd), policy.AlwaysForbiddenVolumePaths):
		errs = append(errs, field.Invalid(p.Child("forwarder"), fwd,
			"must not be under "+strings.Join(policy.AlwaysForbiddenVolumePaths, ", ")+": no run's container may mount from there"))
	}
	if err := upstreamCA(e.UpstreamCAFile, p.Child("upstreamCAFile")); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, caBundlePaths(e.CABundlePaths, p.Child("caBundlePaths"))...)
	if e.Resolver != "" {
		if _, err := netip.ParseAddrPort(e.Resolver); err != nil {
			errs = append(errs, field.Invalid(p.Child("resolver"), e.Resolver, "not an IP address and port (such as 10.0.0.53:53)"))
		}
	}
	return errs
}

// maxCABundlePaths bounds host.egress.caBundlePaths: each is a mount of
// every credentialed run's container.
const maxCABundlePaths = 8

// runDirInContainer is where a proxied run's directory (its socket, its CA
// and bundle) is mounted in its container: a bundle path there would be
// hidden by it or hide part of it.
const runDirInContainer = "/run/agentrun"

// caBundlePaths checks host.egress.caBundlePaths: absolute, clean paths in
// the container, none twice, none in the run's directory.
func caBundlePaths(paths []string, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if len(paths) > maxCABundlePaths {
		errs = append(errs, field.TooMany(p, len(paths), maxCABundlePaths))
	}
	seen := map[string]bool{}
	for i, path := range paths {
		switch {
		case !filepath.IsAbs(path) || filepath.Clean(path) != path || path == "/":
			errs = append(errs, field.Invalid(p.Index(i), path, "must be an absolute, clean path of a file in the container, such as "+DefaultCABundlePath))
		case underAny(path, []string{runDirInContainer}):
			errs = append(errs, field.Invalid(p.Index(i), path, "must not be under "+runDirInContainer+", where the run's own directory is mounted"))
		case seen[path]:
			errs = append(errs, field.Duplicate(p.Index(i), path))
		}
		seen[path] = true
	}
	return errs
}

// upstreamCA checks host.egress.upstreamCAFile, which the host reads when
// it starts (egressgate.SystemRoots): an absolute path to a readable file of
// PEM certificates, so that the file's fault is named at its field, and a
// file of anything else (a key, given by mistake) is not trusted as
// nothing.
func upstreamCA(file string, p *field.Path) *field.Error {
	if file == "" {
		return nil
	}
	if !filepath.IsAbs(file) {
		return field.Invalid(p, file, "must be an absolute path")
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return field.Invalid(p, file, "cannot be read: "+err.Error())
	}
	if !x509.NewCertPool().AppendCertsFromPEM(data) {
		return field.Invalid(p, file, "holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
	}
	return nil
}

// underAny tells whether path is one of dirs or below one of them.
func underAny(path string, dirs []string) bool {
	return slices.ContainsFunc(dirs, func(d string) bool { return path == d || strings.HasPrefix(path, d+"/") })
}

// egressPatterns checks entries in spec.egress.allow's form.
func egressPatterns(patterns []string, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	for i, s := range patterns {
		if _, err := egress.ParsePattern(s); err != nil {
			errs = append(errs, field.Invalid(p.Index(i), s, err.Error()))
		}
	}
	return errs
}

func validateRuns(r *configv1alpha1.RunsConfiguration, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if strings.TrimSpace(r.DefaultImage) == "" {
		errs = append(errs, field.Required(p.Child("defaultImage"), "runs that set no spec.image need one"))
	}
	if len(r.DefaultCommand) == 0 {
		errs = append(errs, field.Required(p.Child("defaultCommand"), "runs that set no spec.command need one"))
	}
	errs = append(errs, positive(r.DefaultTimeout, p.Child("defaultTimeout"))...)
	errs = append(errs, positive(r.RetryBackoff, p.Child("retryBackoff"))...)
	if r.MaxRetryBackoff.Duration < r.RetryBackoff.Duration {
		errs = append(errs, field.Invalid(p.Child("maxRetryBackoff"), r.MaxRetryBackoff.String(),
			fmt.Sprintf("must be at least retryBackoff (%s)", r.RetryBackoff.Duration)))
	}
	errs = append(errs, notNegative(r.StopGracePeriod, p.Child("stopGracePeriod"), "")...)
	errs = append(errs, positive(r.ResyncPeriod, p.Child("resyncPeriod"))...)
	errs = append(errs, positive(r.RecheckPeriod, p.Child("recheckPeriod"))...)
	if *r.MaxConcurrent < 0 {
		errs = append(errs, field.Invalid(p.Child("maxConcurrent"), *r.MaxConcurrent, "must not be negative (0: no cap)"))
	}
	if *r.Workers < 1 {
		errs = append(errs, field.Invalid(p.Child("workers"), *r.Workers, "must be at least 1"))
	}
	return errs
}

func validateOutput(o *configv1alpha1.OutputConfiguration, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if *o.TailBytes < 0 || *o.TailBytes > maxOutputTailBytes {
		errs = append(errs, field.Invalid(p.Child("tailBytes"), *o.TailBytes, fmt.Sprintf("must be between 0 and %d", maxOutputTailBytes)))
	}
	return append(errs, notNegative(o.ProgressPeriod, p.Child("progressPeriod"), "0 leaves status.output to the run's end")...)
}

func validateContainers(c *configv1alpha1.ContainersConfiguration, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if *c.PidsLimit < 0 {
		errs = append(errs, field.Invalid(p.Child("pidsLimit"), *c.PidsLimit, "must not be negative"))
	}
	if c.LogMaxSize.Cmp(minLogMaxSize) < 0 {
		errs = append(errs, field.Invalid(p.Child("logMaxSize"), c.LogMaxSize.String(), "must be at least 1Mi"))
	}
	return errs
}

func validateResources(r *configv1alpha1.ResourcesConfiguration, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	for _, q := range []struct {
		name string
		q    *resource.Quantity
	}{{"defaultMemory", r.DefaultMemory}, {"maxMemory", r.MaxMemory}, {"defaultCPUs", r.DefaultCPUs}, {"maxCPUs", r.MaxCPUs}} {
		if q.q.Sign() < 0 {
			errs = append(errs, field.Invalid(p.Child(q.name), q.q.String(), "must not be negative (0: no limit)"))
		}
	}
	if r.MaxMemory.Sign() > 0 && r.DefaultMemory.Cmp(*r.MaxMemory) > 0 {
		errs = append(errs, field.Invalid(p.Child("defaultMemory"), r.DefaultMemory.String(), fmt.Sprintf("must not exceed maxMemory (%s)", r.MaxMemory)))
	}
	if r.MaxCPUs.Sign() > 0 && r.DefaultCPUs.Cmp(*r.MaxCPUs) > 0 {
		errs = append(errs, field.Invalid(p.Child("defaultCPUs"), r.DefaultCPUs.String(), fmt.Sprintf("must not exceed maxCPUs (%s)", r.MaxCPUs)))
	}
	return errs
}

// absolutePaths refuses relative paths: a relative entry would never match a
// mount, and the operator meant something by it.
func absolutePaths(paths []string, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	for i, path := range paths {
		if !filepath.IsAbs(path) {
			errs = append(errs, field.Invalid(p.Index(i), path, "must be an absolute path"))
		}
	}
	return errs
}

func positive(d *metav1.Duration, p *field.Path) field.ErrorList {
	if d.Duration <= 0 {
		return field.ErrorList{field.Invalid(p, d.String(), "must be positive")}
	}
	return nil
}

func notNegative(d *metav1.Duration, p *field.Path, zero string) field.ErrorList {
	if d.Duration < 0 {
		msg := "must not be negative"
		if zero != "" {
			msg += " (" + zero + ")"
		}
		return field.ErrorList{field.Invalid(p, d.String(), msg)}
	}
	return nil
}

// parseCIDRs parses a list of CIDRs (host.notify.allowedCIDRs,
// host.egress.allowedCIDRs), masked.
func parseCIDRs(cidrs []string, p *field.Path) ([]netip.Prefix, field.ErrorList) {
	var out []netip.Prefix
	var errs field.ErrorList
	for i, item := range cidrs {
		prefix, err := netip.ParsePrefix(strings.TrimSpace(item))
		if err != nil {
			errs = append(errs, field.Invalid(p.Index(i), item, "not a CIDR (such as 127.0.0.1/32 or 10.20.0.0/16)"))
			continue
		}
		out = append(out, prefix.Masked())
	}
	return out, errs
}

// logsPath is where a log endpoint's settings are in the file.
var logsPath = field.NewPath("host", "logs")

// LogEndpoint is the host's log endpoint, nil when host.logs.bindAddress is
// empty.
func LogEndpoint(l *configv1alpha1.LogEndpointConfiguration) (*Endpoint, *field.Error) {
	if l.BindAddress == "" {
		return nil, nil
	}
	host, port, err := net.SplitHostPort(l.BindAddress)
	if err != nil {
		return nil, field.Invalid(logsPath.Child("bindAddress"), l.BindAddress, err.Error())
	}
	u := l.URL
	if u == "" {
		if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
			return nil, field.Required(logsPath.Child("url"), fmt.Sprintf("bindAddress (%q) names no host clients can reach", l.BindAddress))
		}
		u = "https://" + net.JoinHostPort(host, port)
	}
	if l.ClientCAFile == "" {
		return nil, field.Required(logsPath.Child("clientCAFile"), "needed with bindAddress: the log endpoint serves the fleet alone")
	}
	return &Endpoint{BindAddress: l.BindAddress, URL: u, CertDir: l.CertDir, ClientCAFile: l.ClientCAFile}, nil
}

// Endpoint is a host's log endpoint, as the host serves and publishes it.
type Endpoint struct {
	BindAddress, URL, CertDir, ClientCAFile string
}
