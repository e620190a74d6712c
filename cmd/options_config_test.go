package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"time"

	"github.com/go-logr/logr/funcr"

	"github.com/agentrun/agentrun/internal/agentimage"
)

// writeConfig writes a configuration file with body after its header.
func writeConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "agentrun.yaml")
	if err := os.WriteFile(path, []byte("apiVersion: config.agentrun.dev/v1alpha1\nkind: Configuration\n"+body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestTheConfigFileSetsTheHost(t *testing.T) {
	file := writeConfig(t, `
host:
  labels: {gpu: "true"}
  runs:
    maxConcurrent: 2
  volumes:
    allowedPaths: [/srv/repos]
  resources:
    maxMemory: 2Gi
    maxCPUs: "1.5"
`)
	o, err := parse(t, "--mode=host", "--config", file)
	if err != nil {
		t.Fatal(err)
	}
	cfg := mustHostConfig(t, o, nil)
	if cfg.Labels["gpu"] != "true" || cfg.MaxConcurrentRuns != 2 || strings.Join(cfg.Policy.AllowedVolumePaths, ",") != "/srv/repos" {
		t.Errorf("labels %v, max concurrent %d, allowed paths %v; want the file's", cfg.Labels, cfg.MaxConcurrentRuns, cfg.Policy.AllowedVolumePaths)
	}
	if cfg.Policy.MaxMemoryBytes != 2<<30 || cfg.Policy.MaxNanoCPUs != 1_500_000_000 {
		t.Errorf("max memory %d, max nano CPUs %d; want 2 GiB and 1.5 CPUs", cfg.Policy.MaxMemoryBytes, cfg.Policy.MaxNanoCPUs)
	}
	if cfg.Workers != 16 || cfg.Policy.DefaultMemoryBytes != 512<<20 {
		t.Errorf("workers %d, default memory %d: what the file leaves out must keep its default", cfg.Workers, cfg.Policy.DefaultMemoryBytes)
	}
}

// An invalid file stops the manager at start, and the error names the file
// and the field.
func TestAnInvalidConfigFileIsRefusedWithTheFieldPath(t *testing.T) {
	file := writeConfig(t, "host:\n  volumes:\n    allowedPaths: [/srv/a, /srv/b, repos]\n")
	_, err := parse(t, "--mode=host", "--config", file)
	if err == nil || !strings.Contains(err.Error(), file) || !strings.Contains(err.Error(), `host.volumes.allowedPaths[2]: Invalid value: "repos": must be an absolute path`) {
		t.Errorf("error %v; want the file and host.volumes.allowedPaths[2] named", err)
	}
	file = writeConfig(t, "host:\n  volumes:\n    allowedPath: [/srv/a]\n")
	if _, err := parse(t, "--mode=host", "--config", file); err == nil || !strings.Contains(err.Error(), `unknown field "host.volumes.allowedPath"`) {
		t.Errorf("a misspelt field: %v; want it refused by name", err)
	}
	if _, err := parse(t, "--config", filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Error("a missing file was accepted")
	}
}

// The flags from before the file still work for one release: given, they
// override the file's field, and the manager warns, naming the field.
func TestADeprecatedFlagOverridesTheFileAndWarns(t *testing.T) {
	file := writeConfig(t, "host:\n  runs:\n    maxConcurrent: 2\n    workers: 3\n")
	o, err := parse(t, "--mode=host", "--config", file, "--max-concurrent-runs=7")
	if err != nil {
		t.Fatal(err)
	}
	if cfg := mustHostConfig(t, o, nil); cfg.MaxConcurrentRuns != 7 || cfg.Workers != 3 {
		t.Errorf("max concurrent %d, workers %d; want the flag's 7 and the file's 3", cfg.MaxConcurrentRuns, cfg.Workers)
	}
	var logged []string
	o.warnDeprecated(funcr.New(func(prefix, args string) { logged = append(logged, args) }, funcr.Options{}))
	if len(logged) != 1 || !strings.Contains(logged[0], "--max-concurrent-runs is deprecated") || !strings.Contains(logged[0], "host.runs.maxConcurrent") {
		t.Errorf("logged %q; want one warning naming the flag and host.runs.maxConcurrent", logged)
	}

	o, err = parse(t, "--mode=host", "--config", file)
	if err != nil {
		t.Fatal(err)
	}
	logged = nil
	o.warnDeprecated(funcr.New(func(prefix, args string) { logged = append(logged, args) }, funcr.Options{}))
	if len(logged) != 0 {
		t.Errorf("no deprecated flag given, yet logged %q", logged)
	}
}

// A value a deprecated flag gave that the file's checks refuse says which
// flag gave it.
func TestAnInvalidDeprecatedFlagIsNamed(t *testing.T) {
	_, err := parse(t, "--mode=host", "--max-concurrent-runs=-1")
	if err == nil || !strings.Contains(err.Error(), "host.runs.maxConcurrent") || !strings.Contains(err.Error(), "--max-concurrent-runs") {
		t.Errorf("error %v; want the field and the flag named", err)
	}
}

// Without --config, a host runs as it did with the flags' defaults before
// the file existed: these are the values the flags declared, but for the
// networks runs may name, none only since egress control (issue 27).
func TestNoConfigKeepsTheFlagsDefaults(t *testing.T) {
	o, err := parse(t)
	if err != nil {
		t.Fatal(err)
	}
	c := mustHostConfig(t, o, nil)
	p := c.Policy
	got := []any{c.Defaults.Image, c.OutputTailBytes, c.ProgressPeriod, c.KeepContainers, c.StopGracePeriod, c.ResyncPeriod, c.RecheckPeriod,
		c.DefaultTimeout, c.RetryBackoff, c.MaxRetryBackoff, c.MaxConcurrentRuns, c.Workers, c.DiscardOutput, c.HeartbeatPeriod, c.GracePeriod,
		c.SessionDir, c.SessionCopyMaxBytes, c.SessionCopyMaxFiles, c.RecordRuns, c.LogEndpoint == nil, c.LeaseNamespace,
		strings.Join(p.AllowedVolumePaths, ","), p.AllowVolumeRelabel, strings.Join(p.AllowedNetworks, ","), p.User, p.UserNS,
		strings.Join(p.BlockedContainerPaths, ","), strings.Join(p.AllowedImages, ","), p.DefaultMemoryBytes, p.MaxMemoryBytes,
		p.DefaultNanoCPUs, p.MaxNanoCPUs, p.PidsLimit, p.LogMaxBytes, len(p.Capabilities)}
	want := []any{agentimage.Image, 4096, 10 * time.Second, false, 10 * time.Second, time.Minute, 3 * time.Second,
		30 * time.Minute, 10 * time.Second, 5 * time.Minute, 4, 16, false, 10 * time.Second, 40 * time.Second,
		"/var/lib/agentrun/sessions", int64(1 << 30), 10000, true, true, "agentrun-system",
		"", false, "none", "1000:1000", "",
		"/proc,/sys,/dev,/etc,/usr,/bin,/sbin,/lib,/lib64,/boot,/run/secrets", "localhost/*", int64(512 << 20), int64(8 << 30),
		int64(1e9), int64(4e9), int64(1024), int64(64 << 20), 0}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("setting %d: %v, want %v", i, got[i], want[i])
		}
	}
	mo := o.managerOptions(nil)
	if mo.Metrics.BindAddress != "127.0.0.1:8080" || mo.HealthProbeBindAddress != "127.0.0.1:8081" || mo.LeaderElectionNamespace != "agentrun-system" {
		t.Errorf("metrics %s, probes %s, leader election namespace %s", mo.Metrics.BindAddress, mo.HealthProbeBindAddress, mo.LeaderElectionNamespace)
	}
}

// Settings both sides need have one source. A host holds its runs for the
// fleet's recorder whatever its file says of records (retention is the
// fleet's alone), and the fleet is not told the hosts' grace period: it
// reads each host's from its Lease.
func TestTheFleetAndTheHostsAreNotToldTheSameSettingTwice(t *testing.T) {
	file := writeConfig(t, "fleet:\n  runRecordRetention: 0s\nhost:\n  heartbeat:\n    gracePeriod: 90s\n")
	o, err := parse(t, "--config", file)
	if err != nil {
		t.Fatal(err)
	}
	if !mustHostConfig(t, o, nil).RecordRuns {
		t.Error("a host whose file keeps no records does not hold its runs for the fleet's recorder: the fleet's setting would be the host's too")
	}
	if got := o.fleetConfig().GracePeriod; got != 0 {
		t.Errorf("the fleet was told a grace period (%s): it must read each host's from its Lease", got)
	}
	if got := mustHostConfig(t, o, nil).GracePeriod; got != 90*time.Second {
		t.Errorf("the host's grace period %s, want the file's 90s (which it writes into its Lease)", got)
	}
}
