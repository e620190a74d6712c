package host

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/containers"
	"github.com/agentrun/agentrun/internal/controller/agentruns"
	"github.com/agentrun/agentrun/internal/controller/agentruns/agentrunstest"
	"github.com/agentrun/agentrun/internal/egress"
	"github.com/agentrun/agentrun/internal/egressgate"
)

func TestARunsEgressModeComesFromItsSpecElseTheHost(t *testing.T) {
	for _, tc := range []struct {
		name     string
		egress   *agentsv1alpha1.EgressSpec
		network  string
		hostMode agentsv1alpha1.EgressMode
		want     agentsv1alpha1.EgressMode
	}{
		{"names to reach", &agentsv1alpha1.EgressSpec{Allow: []string{"github.com"}}, "", agentsv1alpha1.EgressOpen, agentsv1alpha1.EgressProxy},
		{"an empty list", &agentsv1alpha1.EgressSpec{}, "", agentsv1alpha1.EgressNone, agentsv1alpha1.EgressProxy},
		{"a network", nil, "bridge", agentsv1alpha1.EgressProxy, agentsv1alpha1.EgressOpen},
		{"network none", nil, "none", agentsv1alpha1.EgressOpen, agentsv1alpha1.EgressNone},
		{"the host's", nil, "", agentsv1alpha1.EgressNone, agentsv1alpha1.EgressNone},
		{"a host that says nothing", nil, "", "", agentsv1alpha1.EgressProxy},
	} {
		run := agentrunstest.PlainRun("r", func(r *agentsv1alpha1.AgentRun) {
			r.Spec.Egress, r.Spec.Podman.Network = tc.egress, tc.network
		})
		if got := egressMode(run, tc.hostMode); got != tc.want {
			t.Errorf("%s: mode %q, want %q", tc.name, got, tc.want)
		}
	}
}

// proxyingHarness is a harness whose host proxies runs by default, with
// a socket directory and a forwarder file of the test's.
func proxyingHarness(t *testing.T, permitted []string, run *agentsv1alpha1.AgentRun) *harness {
	t.Helper()
	h := newHarness(t, run)
	withEgressProxy(t, h, permitted)
	return h
}

// withEgressProxy gives h's host an egress proxy, its default mode, with
// the names permitted beyond api.anthropic.com.
func withEgressProxy(t *testing.T, h *harness, permitted []string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "egress")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	forwarder := filepath.Join(dir, "agentrun-forward")
	if err := os.WriteFile(forwarder, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	gate, err := egressgate.New(filepath.Join(dir, "sockets"), egress.Config{}, egressgate.Roots{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gate.Close() })
	h.r.Egress = agentsv1alpha1.HostEgress{Mode: agentsv1alpha1.EgressProxy, Default: []string{"api.anthropic.com"}, Permitted: permitted}
	h.r.EgressProxy = EgressProxy{SocketDir: filepath.Join(dir, "sockets"), Forwarder: forwarder}
	h.r.egress.gate = gate
}

// restartGate gives h's host the gate a new process opens on its socket
// directory, which serves none of the runs yet.
func restartGate(t *testing.T, h *harness) {
	t.Helper()
	gate, err := egressgate.New(h.r.EgressProxy.SocketDir, egress.Config{}, egressgate.Roots{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gate.Close() })
	h.r.egress = egressRuns{gate: gate, host: agentrunstest.Host, recorder: h.recorder, clock: h.clock}
}

func TestAProxiedRunHasNoNetworkButTheForwarderAndItsSocket(t *testing.T) {
	run := agentrunstest.PlainRun("proxied", func(r *agentsv1alpha1.AgentRun) {
		r.Spec.Egress = &agentsv1alpha1.EgressSpec{Allow: []string{"github.com", "api.anthropic.com"}}
	})
	h := proxyingHarness(t, []string{"github.com", "*.npmjs.org"}, run)
	run = h.reconcileUntil("proxied", agentsv1alpha1.PhaseRunning)
	spec, _ := h.podman.SpecOf(run.Status.ContainerName)
	if spec.Network != "none" {
		t.Errorf("network %q, want none: the proxy must be the container's only way out", spec.Network)
	}
	runDir := filepath.Join(h.r.EgressProxy.SocketDir, string(run.UID))
	for _, want := range []containers.Mount{
		{Source: h.r.EgressProxy.Forwarder, Destination: "/usr/libexec/agentrun/agentrun-forward", Options: []string{"ro"}},
		{Source: runDir, Destination: "/run/agentrun", Options: []string{"ro"}},
	} {
		if !slices.ContainsFunc(spec.Mounts, func(m containers.Mount) bool {
			return m.Source == want.Source && m.Destination == want.Destination && slices.Equal(m.Options, want.Options)
		}) {
			t.Errorf("mounts %+v lack %+v", spec.Mounts, want)
		}
	}
	if got := strings.Join(spec.Command[:4], " "); got != "/usr/libexec/agentrun/agentrun-forward exec -- agent" {
		t.Errorf("command starts %q; want the forwarder to start the agent", got)
	}
	if spec.Env["HTTPS_PROXY"] != "http://127.0.0.1:3128" || spec.Env["no_proxy"] != "localhost,127.0.0.1" ||
		spec.Env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] != "1" {
		t.Errorf("env %v lacks the proxy's variables", spec.Env)
	}
	if _, err := os.Stat(filepath.Join(runDir, egressgate.SocketName)); err != nil {
		t.Errorf("the run runs, but its socket is not there: %v", err)
	}
	e := run.Status.Egress
	if e == nil || e.Mode != agentsv1alpha1.EgressProxy || strings.Join(e.Allow, ",") != "api.anthropic.com,github.com" {
		t.Errorf("status.egress = %+v; want mode proxy, the host's defaults and the run's names once each", e)
	}

	// The run ends while a new process, which never served it, runs the
	// host: its directory goes all the same.
	if err := h.podman.Exit(run.Status.ContainerName, 0, "done\n"); err != nil {
		t.Fatal(err)
	}
	_ = h.r.egress.gate.Close()
	restartGate(t, h)
	h.reconcileUntil("proxied", agentsv1alpha1.PhaseSucceeded)
	h.pass("proxied")
	if _, err := os.Stat(runDir); !os.IsNotExist(err) {
		t.Errorf("a finished run's socket directory is left: %v", err)
	}
}

func TestARunAskingBeyondItsHostsCeilingDoesNotStart(t *testing.T) {
	for _, tc := range []struct {
		name      string
		mode      agentsv1alpha1.EgressMode
		permitted []string
		says      string
	}{
		{"beyond the ceiling", agentsv1alpha1.EgressProxy, []string{"github.com"},
			"asks for *.githubusercontent.com, evil.test:22, beyond what host host-a permits (host.egress.permitted: github.com)"},
		{"no ceiling", agentsv1alpha1.EgressProxy, nil, "beyond what host host-a permits (host.egress.permitted: none)"},
		{"no ceiling on a host whose runs get no network", agentsv1alpha1.EgressNone, nil, "beyond what host host-a permits (host.egress.permitted: none)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			run := agentrunstest.PlainRun("greedy", func(r *agentsv1alpha1.AgentRun) {
				r.Spec.Egress = &agentsv1alpha1.EgressSpec{Allow: []string{"github.com", "*.githubusercontent.com", "evil.test:22"}}
			})
			h := proxyingHarness(t, tc.permitted, run)
			h.r.Egress.Mode = tc.mode
			run = h.reconcileUntil("greedy", agentsv1alpha1.PhaseFailed)
			if st := agentruns.StateOf(&run.Status); st.Reason != agentsv1alpha1.ReasonEgressNotPermitted || !strings.Contains(st.Message, tc.says) {
				t.Errorf("%s: %s; want EgressNotPermitted saying %q", st.Reason, st.Message, tc.says)
			}
			if n := h.podman.Calls("Create"); n != 0 {
				t.Errorf("%d containers created for a run that may not start", n)
			}
		})
	}
}

// A pass still in flight as its manager stops meets a closed gate: the run
// waits for the next manager, it does not fail.
func TestAProxiedRunMeetingAStoppingManagersGateWaitsForTheNext(t *testing.T) {
	run := agentrunstest.PlainRun("stopping", nil)
	h := proxyingHarness(t, nil, run)
	_ = h.r.egress.gate.Close()
	met := 0
	for range 5 {
		run, _, err := h.reconcile("stopping")
		if errors.Is(err, egressgate.ErrClosed) {
			met++
		} else if err != nil {
			t.Fatalf("a pass meeting a closed gate returned %v; want its ErrClosed", err)
		}
		if run.Status.Phase.IsFinished() || run.Status.ContainerName != "" {
			t.Fatalf("a stopping manager ended or launched the run: %s %s (%s)", run.Status.Phase, agentruns.StateOf(&run.Status).Reason, run.Status.Message)
		}
	}
	if met == 0 {
		t.Fatal("no pass met the closed gate")
	}
	restartGate(t, h)
	h.reconcileUntil("stopping", agentsv1alpha1.PhaseRunning)
}

func TestAProxiedRunWhoseForwarderFoundNoProxyEndsEgressUnavailable(t *testing.T) {
	run := agentrunstest.PlainRun("cut-off", nil)
	h := proxyingHarness(t, nil, run)
	run = h.reconcileUntil("cut-off", agentsv1alpha1.PhaseRunning)
	if err := h.podman.Exit(run.Status.ContainerName, 121, "agentrun-forward: no egress proxy answers\n"); err != nil {
		t.Fatal(err)
	}
	run = h.reconcileUntil("cut-off", agentsv1alpha1.PhaseFailed)
	if st := agentruns.StateOf(&run.Status); st.Reason != agentsv1alpha1.ReasonEgressUnavailable || !strings.Contains(st.Message, "found no proxy on host host-a") {
		t.Errorf("%s: %s; want EgressUnavailable", st.Reason, st.Message)
	}
}

func TestAHostWithoutItsForwarderStartsNoProxiedRun(t *testing.T) {
	run := agentrunstest.PlainRun("no-forwarder", nil)
	h := proxyingHarness(t, nil, run)
	h.r.EgressProxy.Forwarder = "/nonexistent/agentrun-forward"
	run = h.reconcileUntil("no-forwarder", agentsv1alpha1.PhaseFailed)
	if st := agentruns.StateOf(&run.Status); st.Reason != agentsv1alpha1.ReasonEgressUnavailable || !strings.Contains(st.Message, "/nonexistent/agentrun-forward is missing") {
		t.Errorf("%s: %s; want EgressUnavailable naming the forwarder", st.Reason, st.Message)
	}
}

// An agent retrying a refused name in a loop gets one event a minute, which
// counts every refusal since the last.
func TestDeniedEventsComeAtMostOnceAMinuteAndCountEveryRefusal(t *testing.T) {
	var d denials
	at := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	msg, due := d.refused("evil.test:443", at)
	if !due || !strings.Contains(msg, "refused 1 connection(s) of this run: evil.test:443 (1)") {
		t.Fatalf("first refusal: %q, %v; want an event at once", msg, due)
	}
	for i := range 5 {
		if _, due := d.refused("evil.test:443", at.Add(time.Duration(i+1)*time.Second)); due {
			t.Fatalf("refusal %d within the minute made an event", i+2)
		}
	}
	_, _ = d.refused("other.test:80", at.Add(30*time.Second))
	msg, due = d.refused("evil.test:443", at.Add(time.Minute))
	if !due || !strings.Contains(msg, "refused 7 connection(s) of this run: evil.test:443 (6), other.test:80 (1)") {
		t.Errorf("a minute on: %q, %v; want every refusal since the last event, most refused first", msg, due)
	}
	if _, due := d.flush(); due {
		t.Error("nothing refused since the last event, yet flush has a message")
	}
}

// A running run's counts are published with its output, before it ends.
func TestARunningRunsEgressCountsArePublishedWithItsProgress(t *testing.T) {
	run := agentrunstest.PlainRun("counted", nil)
	h := proxyingHarness(t, nil, run)
	h.r.ProgressPeriod = 10 * time.Second
	run = h.reconcileUntil("counted", agentsv1alpha1.PhaseRunning)

	c, err := net.Dial("unix", filepath.Join(h.r.EgressProxy.SocketDir, string(run.UID), egressgate.SocketName))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := fmt.Fprint(c, "GET http://denied.test/ HTTP/1.1\r\nHost: denied.test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("denied.test answered %d, want 403", resp.StatusCode)
	}

	h.clock.Step(10 * time.Second)
	run, _ = h.publish("counted")
	want := &agentsv1alpha1.EgressStatus{Mode: agentsv1alpha1.EgressProxy, Allow: []string{"api.anthropic.com"}, Refused: 1,
		TopRefused: []agentsv1alpha1.EgressRefusal{{Destination: "denied.test:80", Count: 1}}}
	if !reflect.DeepEqual(run.Status.Egress, want) {
		t.Errorf("status.egress while running = %+v, want %+v", run.Status.Egress, want)
	}
}

// A host's mode is for runs that ask nothing: on a host whose mode is none,
// a run that lists names within the ceiling is proxied, not refused.
func TestAHostWhoseRunsGetNoNetworkProxiesARunThatAsksWithinItsCeiling(t *testing.T) {
	run := agentrunstest.PlainRun("asks", func(r *agentsv1alpha1.AgentRun) {
		r.Spec.Egress = &agentsv1alpha1.EgressSpec{Allow: []string{"github.com"}}
	})
	h := proxyingHarness(t, []string{"github.com"}, run)
	h.r.Egress.Mode = agentsv1alpha1.EgressNone
	run = h.reconcileUntil("asks", agentsv1alpha1.PhaseRunning)
	if run.Status.Egress == nil || run.Status.Egress.Mode != agentsv1alpha1.EgressProxy {
		t.Fatalf("status.egress %+v, want mode proxy", run.Status.Egress)
	}
	if n := h.podman.Calls("Create"); n != 1 {
		t.Errorf("%d containers created, want the run's one", n)
	}
}

// A run deleted while no manager ran leaves its socket directory, which no
// pass of the reconciler sees again: the host's collector removes it once
// old enough, and keeps the directories of its runs and of launches.
func TestTheEgressDirectoriesOfRunsGoneGoOnceOldEnough(t *testing.T) {
	h := proxyingHarness(t, nil, agentrunstest.PlainRun("kept", nil))
	h.r.SessionMinAge = time.Minute
	kept := h.reconcileUntil("kept", agentsv1alpha1.PhaseRunning)
	dir := h.r.EgressProxy.SocketDir
	gone, young, keptDir := filepath.Join(dir, "deleted-run-uid"), filepath.Join(dir, "launching-run-uid"), filepath.Join(dir, string(kept.UID))
	for _, d := range []string{gone, young} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	past := h.clock.Now().Add(-2 * time.Minute)
	for _, d := range []string{gone, keptDir} {
		if err := os.Chtimes(d, past, past); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chtimes(young, h.clock.Now(), h.clock.Now()); err != nil {
		t.Fatal(err)
	}
	if err := h.r.collectEgressDirs(context.Background()); err != nil {
		t.Fatal(err)
	}
	for d, want := range map[string]bool{gone: false, young: true, keptDir: true} {
		if _, err := os.Stat(d); (err == nil) != want {
			t.Errorf("%s exists: %v, want %v", filepath.Base(d), err == nil, want)
		}
	}
}
