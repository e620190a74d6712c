package config

import (
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/agentrun/agentrun/internal/intercept"
)

// load decodes, defaults and validates a file's content, as the manager does.
func load(t *testing.T, body string, s Sections) field.ErrorList {
	t.Helper()
	cfg, err := Decode([]byte("apiVersion: config.agentrun.dev/v1alpha1\nkind: Configuration\n" + body))
	if err != nil {
		t.Fatalf("decoding:\n%s\n%v", body, err)
	}
	Default(cfg)
	return Validate(cfg, s)
}

var both = Sections{Host: true, Fleet: true}

func TestDefaultsAreValid(t *testing.T) {
	if errs := load(t, "", both); len(errs) > 0 {
		t.Fatal(errs)
	}
}

// Every invalid file is refused with the path of the field at fault, and
// each message says what would be valid.
func TestInvalidFilesNameTheField(t *testing.T) {
	for _, tc := range []struct {
		name, body, field, says string
	}{
		{"relative allowed path", "host:\n  volumes:\n    allowedPaths: [/srv/a, /srv/b, srv/c]\n", "host.volumes.allowedPaths[2]", "absolute"},
		{"relative blocked path", "host:\n  volumes:\n    blockedContainerPaths: [proc]\n", "host.volumes.blockedContainerPaths[0]", "absolute"},
		{"lease namespace", "leaseNamespace: Agentrun_System\n", "leaseNamespace", "RFC 1123"},
		{"grace not past the period", "host:\n  heartbeat:\n    period: 40s\n", "host.heartbeat.gracePeriod", "longer than period"},
		{"grace in parts of seconds", "host:\n  heartbeat:\n    gracePeriod: 40500ms\n", "host.heartbeat.gracePeriod", "whole number of seconds"},
		{"period zero", "host:\n  heartbeat:\n    period: 0s\n", "host.heartbeat.period", "positive"},
		{"lease duration", "leaderElection:\n  leaseDuration: 10s\n", "leaderElection.leaseDuration", "longer than renewDeadline"},
		{"retry period", "leaderElection:\n  retryPeriod: 9s\n", "leaderElection.renewDeadline", "1.2 times retryPeriod"},
		{"negative retention", "fleet:\n  runRecordRetention: -1h\n", "fleet.runRecordRetention", "0 keeps no records"},
		{"log API without certificates", "fleet:\n  logsAPI:\n    bindAddress: :8443\n    certDir: /certs\n", "fleet.logsAPI.clientCertDir", "client certificate"},
		{"label key", "host:\n  labels:\n    bad key: \"1\"\n", "host.labels[bad key]", "valid label"},
		{"empty command", "host:\n  runs:\n    defaultCommand: []\n", "host.runs.defaultCommand", "Required"},
		{"tail bytes", "host:\n  output:\n    tailBytes: 70000\n", "host.output.tailBytes", "between 0 and 65536"},
		{"resync zero", "host:\n  runs:\n    resyncPeriod: 0s\n", "host.runs.resyncPeriod", "positive"},
		{"progress negative", "host:\n  output:\n    progressPeriod: -1s\n", "host.output.progressPeriod", "negative"},
		{"max backoff", "host:\n  runs:\n    maxRetryBackoff: 1s\n", "host.runs.maxRetryBackoff", "at least retryBackoff"},
		{"call timeout", "host:\n  podmanCallTimeout: 0s\n", "host.podmanCallTimeout", "positive"},
		{"workers", "host:\n  runs:\n    workers: 0\n", "host.runs.workers", "at least 1"},
		{"max concurrent", "host:\n  runs:\n    maxConcurrent: -1\n", "host.runs.maxConcurrent", "negative"},
		{"pids", "host:\n  containers:\n    pidsLimit: -1\n", "host.containers.pidsLimit", "negative"},
		{"log size", "host:\n  containers:\n    logMaxSize: 512Ki\n", "host.containers.logMaxSize", "at least 1Mi"},
		{"memory over max", "host:\n  resources:\n    defaultMemory: 16Gi\n", "host.resources.defaultMemory", "maxMemory"},
		{"CPUs over max", "host:\n  resources:\n    defaultCPUs: \"8\"\n", "host.resources.defaultCPUs", "maxCPUs"},
		{"negative CPUs", "host:\n  resources:\n    maxCPUs: \"-1\"\n", "host.resources.maxCPUs", "negative"},
		{"CIDR", "host:\n  notify:\n    allowedCIDRs: [127.0.0.1/32, localhost/8]\n", "host.notify.allowedCIDRs[1]", "not a CIDR"},
		{"log endpoint without CA", "host:\n  logs:\n    bindAddress: 10.0.0.2:18082\n", "host.logs.clientCAFile", "serves the fleet alone"},
		{"log endpoint without URL", "host:\n  logs:\n    bindAddress: 0.0.0.0:18082\n    clientCAFile: /ca.crt\n", "host.logs.url", "no host clients can reach"},
		{"egress mode", "host:\n  egress:\n    mode: bridge\n", "host.egress.mode", `"proxy", "none", "open"`},
		{"egress pattern", "host:\n  egress:\n    permitted: [github.com, \"*.npmjs.org\", https://x.test/]\n", "host.egress.permitted[2]", "no scheme"},
		{"egress default IP", "host:\n  egress:\n    default: [10.0.0.1]\n", "host.egress.default[0]", "IP address"},
		{"egress CIDR", "host:\n  egress:\n    allowedCIDRs: [10.0.0.0]\n", "host.egress.allowedCIDRs[0]", "not a CIDR"},
		{"egress connections", "host:\n  egress:\n    maxConnectionsPerRun: 0\n", "host.egress.maxConnectionsPerRun", "at least 1"},
		{"egress dial timeout", "host:\n  egress:\n    dialTimeout: 0s\n", "host.egress.dialTimeout", "positive"},
		{"egress idle timeout", "host:\n  egress:\n    idleTimeout: -1s\n", "host.egress.idleTimeout", "positive"},
		{"relative socket dir", "host:\n  egress:\n    socketDir: egress\n", "host.egress.socketDir", "absolute"},
		{"long socket dir", "host:\n  egress:\n    socketDir: /" + strings.Repeat("d", 70) + "\n", "host.egress.socketDir", "Unix socket"},
		{"relative forwarder", "host:\n  egress:\n    forwarder: agentrun-forward\n", "host.egress.forwarder", "absolute"},
		{"forwarder under /run", "host:\n  egress:\n    forwarder: /run/agentrun/agentrun-forward\n", "host.egress.forwarder", "must not be under"},
		{"resolver", "host:\n  egress:\n    resolver: dns.test\n", "host.egress.resolver", "IP address and port"},
		{"relative upstream CA", "host:\n  egress:\n    upstreamCAFile: ca.pem\n", "host.egress.upstreamCAFile", "absolute"},
		{"missing upstream CA", "host:\n  egress:\n    upstreamCAFile: /nonexistent/ca.pem\n", "host.egress.upstreamCAFile", "cannot be read"},
		{"relative CA bundle path", "host:\n  egress:\n    caBundlePaths: [etc/ssl/cert.pem]\n", "host.egress.caBundlePaths[0]", "absolute, clean"},
		{"CA bundle over /", "host:\n  egress:\n    caBundlePaths: [/]\n", "host.egress.caBundlePaths[0]", "of a file"},
		{"unclean CA bundle path", "host:\n  egress:\n    caBundlePaths: [/etc/ssl/../cert.pem]\n", "host.egress.caBundlePaths[0]", "absolute, clean"},
		{"CA bundle in the run's directory", "host:\n  egress:\n    caBundlePaths: [/etc/ssl/cert.pem, /run/agentrun/ca.pem]\n", "host.egress.caBundlePaths[1]", "/run/agentrun"},
		{"CA bundle path twice", "host:\n  egress:\n    caBundlePaths: [/etc/ssl/cert.pem, /etc/ssl/cert.pem]\n", "host.egress.caBundlePaths[1]", "Duplicate"},
		{"nine CA bundle paths", "host:\n  egress:\n    caBundlePaths: [/a, /b, /c, /d, /e, /f, /g, /h, /i]\n", "host.egress.caBundlePaths", "at most 8"},
		{"log endpoint address", "host:\n  logs:\n    bindAddress: no-port\n    clientCAFile: /ca.crt\n", "host.logs.bindAddress", "port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			errs := load(t, tc.body, both)
			if len(errs) != 1 {
				t.Fatalf("%d errors, want 1 at %s: %v", len(errs), tc.field, errs)
			}
			if errs[0].Field != tc.field || !strings.Contains(errs[0].Error(), tc.says) {
				t.Errorf("error %q; want it at %s, saying %q", errs[0].Error(), tc.field, tc.says)
			}
		})
	}
}

// A process checks the sections it runs: a fleet does not refuse a host
// section it never reads, as the flags' checks never did.
func TestOnlyTheSectionsRunAreChecked(t *testing.T) {
	host := "host:\n  output:\n    tailBytes: 70000\n"
	if errs := load(t, host, Sections{Fleet: true}); len(errs) > 0 {
		t.Errorf("a fleet refused the host section: %v", errs)
	}
	fleet := "fleet:\n  logsAPI:\n    bindAddress: :8443\n"
	if errs := load(t, fleet, Sections{Host: true}); len(errs) > 0 {
		t.Errorf("a host refused the fleet section: %v", errs)
	}
}

func TestDecodingIsStrict(t *testing.T) {
	for name, body := range map[string]string{
		"unknown field":  "apiVersion: config.agentrun.dev/v1alpha1\nkind: Configuration\nhost:\n  volumes:\n    allowedPath: [/srv]\n",
		"duplicate":      "apiVersion: config.agentrun.dev/v1alpha1\nkind: Configuration\nleaseNamespace: a\nleaseNamespace: b\n",
		"other version":  "apiVersion: config.agentrun.dev/v1beta9\nkind: Configuration\n",
		"other kind":     "apiVersion: config.agentrun.dev/v1alpha1\nkind: Setup\n",
		"no apiVersion":  "kind: Configuration\n",
		"wrong type":     "apiVersion: config.agentrun.dev/v1alpha1\nkind: Configuration\nhost:\n  runs:\n    workers: many\n",
		"bad quantity":   "apiVersion: config.agentrun.dev/v1alpha1\nkind: Configuration\nhost:\n  resources:\n    maxMemory: lots\n",
		"bad duration":   "apiVersion: config.agentrun.dev/v1alpha1\nkind: Configuration\nhost:\n  runs:\n    defaultTimeout: 30\n",
		"list as string": "apiVersion: config.agentrun.dev/v1alpha1\nkind: Configuration\nhost:\n  volumes:\n    allowedPaths: /srv,/home\n",
	} {
		if _, err := Decode([]byte(body)); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
	_, err := Decode([]byte("apiVersion: config.agentrun.dev/v1alpha1\nkind: Configuration\nhost:\n  volumes:\n    allowedPath: [/srv]\n"))
	if !strings.Contains(err.Error(), `unknown field "host.volumes.allowedPath"`) {
		t.Errorf("unknown field: %v; want its path named", err)
	}
}

// A list the file gives empty says "none"; a list it leaves out gets its
// default.
func TestEmptyListsStayEmpty(t *testing.T) {
	cfg, err := Decode([]byte("apiVersion: config.agentrun.dev/v1alpha1\nkind: Configuration\nhost:\n  containers:\n    allowedNetworks: []\n"))
	if err != nil {
		t.Fatal(err)
	}
	Default(cfg)
	if n := cfg.Host.Containers.AllowedNetworks; n == nil || len(n) != 0 {
		t.Errorf("allowedNetworks: [] became %v", n)
	}
	if got := strings.Join(cfg.Host.Containers.AllowedImages, ","); got != "localhost/*" {
		t.Errorf("allowedImages left out became %q", got)
	}
}

// A host left to its defaults sends runs through the proxy, to the agent's
// API alone, and lets them ask for nothing more.
func TestEgressDefaultsFailClosed(t *testing.T) {
	cfg, err := Decode([]byte("apiVersion: config.agentrun.dev/v1alpha1\nkind: Configuration\n"))
	if err != nil {
		t.Fatal(err)
	}
	Default(cfg)
	e := HostEgress(&cfg.Host)
	if e.Mode != "proxy" || strings.Join(e.Default, ",") != "api.anthropic.com" || e.Permitted == nil || len(e.Permitted) != 0 {
		t.Errorf("host.egress defaulted to %+v; want mode proxy, default [api.anthropic.com], permitted []", e)
	}
	proxy, err := EgressProxy(&cfg.Host)
	if err != nil {
		t.Fatal(err)
	}
	if len(proxy.Destinations.Allowed) != 0 || proxy.Resolver != nil || proxy.MaxConns != 256 {
		t.Errorf("the proxy's defaults are %+v; want no private range allowed, the host's resolver, 256 connections", proxy)
	}
}

// The upstream CA file is read when the configuration is checked: a file
// of certificates passes, and a file of anything else (a key, say, given by
// mistake) is refused at its field rather than trusted as nothing.
func TestUpstreamCAFileMustHoldCertificates(t *testing.T) {
	dir := t.TempDir()
	cert := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(cert, caPEM(t), 0o600); err != nil {
		t.Fatal(err)
	}
	notCert := filepath.Join(dir, "key.pem")
	if err := os.WriteFile(notCert, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("k")}), 0o600); err != nil {
		t.Fatal(err)
	}

	errs := load(t, "host:\n  egress:\n    upstreamCAFile: "+notCert+"\n", both)
	if len(errs) != 1 || errs[0].Field != "host.egress.upstreamCAFile" || !strings.Contains(errs[0].Error(), "no PEM certificate") {
		t.Errorf("a file without a certificate: %v; want one error at host.egress.upstreamCAFile saying it holds no PEM certificate", errs)
	}

	if errs := load(t, "host:\n  egress:\n    upstreamCAFile: "+cert+"\n", both); len(errs) > 0 {
		t.Errorf("a file of a certificate: %v", errs)
	}
}

// Without a setting, credentialed runs get their bundle at the system
// bundle path of the agent image.
func TestCABundleDefaults(t *testing.T) {
	cfg, err := Decode([]byte("apiVersion: config.agentrun.dev/v1alpha1\nkind: Configuration\n"))
	if err != nil {
		t.Fatal(err)
	}
	Default(cfg)
	if got := cfg.Host.Egress.CABundlePaths; len(got) != 1 || got[0] != "/etc/ssl/certs/ca-certificates.crt" {
		t.Errorf("host.egress.caBundlePaths defaulted to %q; want [/etc/ssl/certs/ca-certificates.crt]", got)
	}
}

func caPEM(t *testing.T) []byte {
	t.Helper()
	ca, err := intercept.NewAuthority([]string{"example.test"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca.CertPEM()
}
