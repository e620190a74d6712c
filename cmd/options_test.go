package main

import (
	"flag"
	"io"
	"strings"
	"testing"
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
	if o.hostName != "Podman-01.example.com" || o.podmanSocket != "/run/podman/podman.sock" {
		t.Errorf("host %q socket %q", o.hostName, o.podmanSocket)
	}
	if !o.runsReconciler() || !o.servesWebhook() {
		t.Errorf("the default mode must do both")
	}
	if got := strings.Join(o.command(), "|"); got != "claude|-p|--output-format|json|--" {
		t.Errorf("default command = %s", got)
	}
	if !strings.HasPrefix(o.metricsAddr, "127.0.0.1:") || !strings.HasPrefix(o.probeAddr, "127.0.0.1:") {
		t.Errorf("metrics and probes must listen on loopback by default: %s %s", o.metricsAddr, o.probeAddr)
	}
	if got := o.leaderElectionID(); got != "agentrun-host-podman-01-example-com" {
		t.Errorf("leader election ID = %s", got)
	}
	if !o.managerOptions(nil).LeaderElectionReleaseOnCancel {
		t.Errorf("the lease must be released on shutdown")
	}
}

func TestParseOptionsModes(t *testing.T) {
	o, err := parse(t, "--mode=webhook")
	if err != nil || o.runsReconciler() || !o.servesWebhook() || o.leaderElectionID() != "agentrun-webhook" {
		t.Errorf("webhook mode: %+v, %v", o, err)
	}
	o, err = parse(t, "--mode=reconciler", "--host-name=h2")
	if err != nil || !o.runsReconciler() || o.servesWebhook() || o.hostName != "h2" {
		t.Errorf("reconciler mode: %+v, %v", o, err)
	}
}

func TestParseOptionsRefusesBadValues(t *testing.T) {
	for _, args := range [][]string{
		{"--mode=both"},
		{"--host-name="},
		{"--output-tail-bytes=70000"},
		{"--default-command="},
		{"--resync-period=0s"},
	} {
		if _, err := parse(t, args...); err == nil {
			t.Errorf("%v: want an error", args)
		}
	}
	if _, err := parse(t, "--mode=webhook", "--host-name="); err != nil {
		t.Errorf("a webhook-only process needs no host name: %v", err)
	}
}
