package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/containers"
	"github.com/agentrun/agentrun/internal/controller/host"
	"github.com/agentrun/agentrun/internal/policy"
)

func parse(t *testing.T, args ...string) (*options, error) {
	t.Helper()
	fs := flag.NewFlagSet("manager", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return parseOptions(fs, args, func() (string, error) { return "Podman-01.example.com", nil })
}

func TestParseOptionsDefaults(t *testing.T) {
	o, err := parse(t)
	if err != nil {
		t.Fatal(err)
	}
	if o.hostName != "podman-01.example.com" || o.cfg.Host.PodmanSocket != "/run/podman/podman.sock" {
		t.Errorf("host %q socket %q", o.hostName, o.cfg.Host.PodmanSocket)
	}
	if !o.runsReconciler() || !o.servesWebhook() || !o.runsFleet() {
		t.Errorf("the default mode must do all three")
	}
	if got := strings.Join(mustHostConfig(t, o, nil).Defaults.Command, "|"); got != "claude|-p|--output-format|json|--" {
		t.Errorf("default command = %s", got)
	}
	if !strings.HasPrefix(o.cfg.Metrics.BindAddress, "127.0.0.1:") || !strings.HasPrefix(o.cfg.Health.BindAddress, "127.0.0.1:") {
		t.Errorf("metrics and probes must listen on loopback by default: %s %s", o.cfg.Metrics.BindAddress, o.cfg.Health.BindAddress)
	}
	if got := o.leaderElectionID(); got != "agentrun-host-podman-01.example.com" {
		t.Errorf("leader election ID = %s", got)
	}
	mo := o.managerOptions(nil)
	if mo.PprofBindAddress != "" {
		t.Errorf("the profiling endpoints must be off unless asked for: %s", mo.PprofBindAddress)
	}
	if !mo.LeaderElection || !mo.LeaderElectionReleaseOnCancel {
		t.Errorf("leader election must be on by default (two managers of one host would each count its slots), its lease released on shutdown")
	}
	if got := mustHostConfig(t, o, nil).Policy.LogMaxBytes; got != 64<<20 {
		t.Errorf("a container's log is bounded to %d bytes by default, want 64 MiB", got)
	}
	if *mo.LeaseDuration != 15*time.Second || *mo.RenewDeadline != 10*time.Second || *mo.RetryPeriod != 2*time.Second {
		t.Errorf("lease timings %s %s %s", *mo.LeaseDuration, *mo.RenewDeadline, *mo.RetryPeriod)
	}
}

// Lease names were once lower-cased and cut to 50 characters, so that two
// hosts could share one; host names are DNS names now and name their leases
// whole.
func TestLeaderElectionIDsOfDistinctHostsDiffer(t *testing.T) {
	long := strings.Repeat("a", 60)
	a, errA := parse(t, "--host-name="+long+"-1")
	b, errB := parse(t, "--host-name="+long+"-2")
	if errA != nil || errB != nil {
		t.Fatal(errA, errB)
	}
	if a.leaderElectionID() == b.leaderElectionID() {
		t.Errorf("hosts %s and %s share the lease %s", a.hostName, b.hostName, a.leaderElectionID())
	}
	if _, err := parse(t, "--host-name=Host-1"); err == nil {
		t.Errorf("an upper-case host name would be lower-cased into another host's lease: want an error")
	}
}

func TestParseOptionsModes(t *testing.T) {
	o, err := parse(t, "--mode=webhook,fleet")
	if err != nil || o.runsReconciler() || !o.servesWebhook() || !o.runsFleet() || o.leaderElectionID() != "agentrun-cluster" {
		t.Errorf("cluster mode: %+v, %v", o, err)
	}
	for _, mode := range []string{"reconciler", "host"} {
		o, err = parse(t, "--mode="+mode, "--host-name=h2", "--host-labels=gpu=true, zone=a")
		if err != nil || !o.runsReconciler() || o.servesWebhook() || o.runsFleet() || o.hostName != "h2" {
			t.Errorf("%s mode: %+v, %v", mode, o, err)
			continue
		}
		if cfg := mustHostConfig(t, o, nil); cfg.Labels["gpu"] != "true" || cfg.Labels["zone"] != "a" || cfg.LeaseNamespace != "agentrun-system" {
			t.Errorf("%s mode: labels %v, lease namespace %q", mode, cfg.Labels, cfg.LeaseNamespace)
		}
	}
}

func TestParseOptionsRefusesBadValues(t *testing.T) {
	for _, args := range [][]string{
		{"--mode=both"},
		{"--mode="},
		{"--host-name=Host_1"},
		{"--host-name=" + strings.Repeat("a", 240)},
		{"--host-labels=gpu"},
		{"--host-labels=bad key=1"},
		{"--heartbeat-period=40s"},
		{"--host-name="},
		{"--output-tail-bytes=70000"},
		{"--default-command="},
		{"--resync-period=0s"},
		{"--progress-period=-1s"},
		{"--leader-elect-lease-duration=10s"},
		{"--leader-elect-retry-period=9s"},
		{"--container-log-max-size=512k"},
		{"--container-log-max-size=lots"},
	} {
		if _, err := parse(t, args...); err == nil {
			t.Errorf("%v: want an error", args)
		}
	}
	if _, err := parse(t, "--mode=webhook", "--host-name="); err != nil {
		t.Errorf("a webhook-only process needs no host name: %v", err)
	}
}

func TestLogEndpointOptions(t *testing.T) {
	o, err := parse(t, "--mode=host")
	if err != nil || mustHostConfig(t, o, nil).LogEndpoint != nil {
		t.Fatalf("default: err %v, endpoint %+v; want none", err, mustHostConfig(t, o, nil).LogEndpoint)
	}
	if _, err := parse(t, "--mode=host", "--logs-bind-address=10.203.1.2:18082"); err == nil {
		t.Error("a log endpoint without --logs-client-ca-file was accepted: it would not know the fleet")
	}
	o, err = parse(t, "--mode=host", "--logs-bind-address=10.203.1.2:18082", "--logs-client-ca-file=/etc/agentrun/fleet-ca.crt")
	if err != nil {
		t.Fatal(err)
	}
	if got := mustHostConfig(t, o, nil).LogEndpoint; got.URL != "https://10.203.1.2:18082" || got.BindAddress != "10.203.1.2:18082" {
		t.Errorf("endpoint %+v; want its URL from the bind address", got)
	}
	o, err = parse(t, "--mode=host", "--logs-bind-address=:18082", "--logs-url=https://podman-01.example.com:18082", "--logs-cert-dir=/etc/agentrun/logs", "--logs-client-ca-file=/etc/agentrun/fleet-ca.crt")
	if err != nil {
		t.Fatal(err)
	}
	if got := mustHostConfig(t, o, nil).LogEndpoint; got.URL != "https://podman-01.example.com:18082" || got.CertDir != "/etc/agentrun/logs" {
		t.Errorf("endpoint %+v; want the URL and certificates given", got)
	}
	for _, bind := range []string{":18082", "0.0.0.0:18082", "no-port"} {
		if _, err := parse(t, "--mode=host", "--logs-bind-address="+bind, "--logs-client-ca-file=/ca.crt"); err == nil {
			t.Errorf("--logs-bind-address=%s without --logs-url was accepted", bind)
		}
	}
	if _, err := parse(t, "--mode=fleet", "--logs-api-bind-address=:8443"); err == nil {
		t.Error("the fleet's log API without its certificates was accepted")
	}
}

// The suites each build their own policy; these see the one the manager
// builds from its flags, which is what a host runs with.

// mountRefusal is what the host's policy says of a run that mounts source.
func mountRefusal(t *testing.T, p policy.Policy, source string) string {
	t.Helper()
	spec := containers.Spec{Image: "localhost/agent:1", Mounts: []containers.Mount{{Source: source, Destination: "/workspace"}}}
	if refused := p.Apply(&spec); refused != nil {
		return refused.Reason + ": " + refused.Message
	}
	return ""
}

func TestHostPolicyDefaults(t *testing.T) {
	o, err := parse(t, "--mode=host")
	if err != nil {
		t.Fatal(err)
	}
	p := mustHostConfig(t, o, nil).Policy
	if got := strings.Join(p.ForbiddenVolumePaths, ","); got != "/run/podman" {
		t.Errorf("forbidden volume paths %q; want the Podman socket's directory", got)
	}
	if got := mountRefusal(t, p, "/tmp/repo"); !strings.Contains(got, "this host allows no volumes") {
		t.Errorf("a volume on a default host: %q; want it refused, the allowlist being empty", got)
	}
	spec := containers.Spec{Image: "localhost/agent:1"}
	if refused := p.Apply(&spec); refused != nil {
		t.Fatal(refused)
	}
	if spec.User != "1000:1000" || len(spec.CapAdd) != 0 || strings.Join(spec.CapDrop, ",") != "ALL" || !spec.NoNewPrivileges {
		t.Errorf("container user %q, capabilities added %v, dropped %v, no-new-privileges %t; want 1000:1000, none, ALL, true",
			spec.User, spec.CapAdd, spec.CapDrop, spec.NoNewPrivileges)
	}
	if o.cfg.Host.PodmanCallTimeout.Duration != 2*time.Minute {
		t.Errorf("Podman call deadline %s, want 2m", o.cfg.Host.PodmanCallTimeout)
	}
}

// Outside /run (which no run may mount anyway) only the socket's own
// directory keeps runs from the Podman API, even where the allowlist holds it.
func TestHostPolicyForbidsTheSocketDirectoryWhereverItIs(t *testing.T) {
	o, err := parse(t, "--mode=host", "--podman-socket=/srv/podman/podman.sock", "--allowed-volume-paths=/srv")
	if err != nil {
		t.Fatal(err)
	}
	p := mustHostConfig(t, o, nil).Policy
	for _, source := range []string{"/srv/podman", "/srv"} {
		if got := mountRefusal(t, p, source); !strings.Contains(got, "is or holds /srv/podman, which no run may mount") {
			t.Errorf("volume %s: %q; want it refused for holding the Podman socket", source, got)
		}
	}
}

// stalledPodman answers no ping until its caller gives up.
type stalledPodman struct{ containers.Runtime }

func (stalledPodman) Ping(ctx context.Context) error {
	<-ctx.Done()
	return ctx.Err()
}

func TestHostRuntimeHasTheCallDeadline(t *testing.T) {
	o, err := parse(t, "--mode=host", "--podman-call-timeout=100ms")
	if err != nil {
		t.Fatal(err)
	}
	// The outer deadline only ends the test when the host's own is missing.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := mustHostConfig(t, o, stalledPodman{}).Runtime.Ping(ctx); !errors.Is(err, containers.ErrUnavailable) {
		t.Errorf("a ping Podman never answers: %v; want ErrUnavailable after --podman-call-timeout", err)
	}
}

func mustHostConfig(t *testing.T, o *options, rt containers.Runtime) host.HostConfig {
	t.Helper()
	cfg, err := o.hostConfig(rt)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// A host's manager caches the runs it may act on, not the cluster's
// released ones; a manager that runs the fleet too needs every run.
func TestOnlyAHostOnlyManagerLeavesReleasedRunsOutOfItsCache(t *testing.T) {
	released := labels.Set{agentsv1alpha1.LabelReleased: "true"}
	for args, wantSelected := range map[string]bool{
		"--mode=host": false, "--mode=all": true, "--mode=webhook,fleet": true, "--mode=host,fleet": true,
	} {
		o, err := parse(t, args, "--host-name=h2")
		if err != nil {
			t.Fatal(err)
		}
		for obj, by := range o.managerOptions(nil).Cache.ByObject {
			if _, ok := obj.(*agentsv1alpha1.AgentRun); ok {
				if got := by.Label == nil || by.Label.Matches(released); got != wantSelected {
					t.Errorf("%s: a released run cached %v, want %v", args, got, wantSelected)
				}
			}
		}
	}
}
