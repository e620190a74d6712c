package host

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/containers"
	"github.com/agentrun/agentrun/internal/controller/agentruns/agentrunstest"
)

// sessionHarness is a harness whose host runs Claude Code by default and
// keeps sessions in a temporary directory.
func sessionHarness(t *testing.T, objs ...client.Object) *harness {
	h := newHarness(t, objs...)
	h.r.Defaults.Command = []string{"claude", "-p", "--output-format", "json", "--"}
	h.r.SessionDir = t.TempDir()
	h.r.SessionMinAge = time.Minute
	h.r.Policy.User = ""
	// The session mount's link check looks at the real file system.
	h.r.Policy.ResolveHostPath = nil
	return h
}

func claudeOutput(session string) string {
	return `{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"done","session_id":"` + session + `","total_cost_usd":0.001}`
}

func continuing(name, from string, fork bool) *agentsv1alpha1.AgentRun {
	return agentrunstest.PlainRun(name, func(r *agentsv1alpha1.AgentRun) {
		r.UID = types.UID(fmt.Sprintf("c0ffee00-0000-0000-0000-%012x", name))
		r.Spec.ContinueFrom, r.Spec.Fork = from, fork
	})
}

// sessionOne is the session ID of the first run's conversation.
const sessionOne = "0f8fad5b-d9cb-469f-a165-70867728950e"

// transcript is where Claude Code keeps a session's conversation in a
// config dir, for a run in /workspace.
func transcript(session string) string {
	return filepath.Join("projects", "-workspace", session+".jsonl")
}

// writeFiles writes files (path: content) under dir.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// firstRunEnded runs "first" to success with the given files in its
// session directory, and returns it.
func firstRunEnded(t *testing.T, h *harness, files map[string]string) *agentsv1alpha1.AgentRun {
	t.Helper()
	first := h.reconcileUntil("first", agentsv1alpha1.PhaseRunning)
	writeFiles(t, filepath.Join(h.r.SessionDir, first.Status.SessionDir), files)
	if err := h.podman.Exit(first.Status.ContainerName, 0, claudeOutput(sessionOne)); err != nil {
		t.Fatal(err)
	}
	return h.reconcileUntil("first", agentsv1alpha1.PhaseSucceeded)
}

func TestARunKeepsItsClaudeStateInASessionDirectory(t *testing.T) {
	h := sessionHarness(t, agentrunstest.PlainRun("first", nil))
	run := h.reconcileUntil("first", agentsv1alpha1.PhaseRunning)
	if run.Status.SessionDir != string(run.UID) {
		t.Fatalf("status.sessionDir = %q, want the run's UID", run.Status.SessionDir)
	}
	spec, _ := h.podman.SpecOf(run.Status.ContainerName)
	dir := filepath.Join(h.r.SessionDir, run.Status.SessionDir)
	if _, err := os.Stat(dir); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(spec.Mounts, func(m containers.Mount) bool { return m.Source == dir && m.Destination == sessionMountPath }) ||
		spec.Env[claudeConfigDirEnv] != sessionMountPath {
		t.Errorf("mounts %+v, %s=%q; want the session directory at %s", spec.Mounts, claudeConfigDirEnv, spec.Env[claudeConfigDirEnv], sessionMountPath)
	}
	if slices.Contains(spec.Command, "--resume") {
		t.Errorf("a run that continues nothing resumes: %q", spec.Command)
	}
}

func TestAContinuingRunWaitsThenResumesTheSessionInADirectoryOfItsOwn(t *testing.T) {
	for _, c := range []struct {
		name          string
		fork, proxied bool
	}{{"continue", false, false}, {"fork", true, false}, {"continue through the egress proxy", false, true}, {"fork through the egress proxy", true, true}} {
		fork := c.fork
		t.Run(c.name, func(t *testing.T) {
			h := sessionHarness(t, agentrunstest.PlainRun("first", nil), continuing("second", "first", fork))
			if c.proxied {
				withEgressProxy(t, h, nil)
			}
			first := h.reconcileUntil("first", agentsv1alpha1.PhaseRunning)
			h.pass("second") // claims it
			if c := agentrunstest.Condition(h.reconcileUntil("second", agentsv1alpha1.PhasePending), agentsv1alpha1.ConditionStarted); c.Reason != agentsv1alpha1.ReasonWaitingForSession {
				t.Fatalf("while the first runs, Started = %+v; want WaitingForSession", c)
			}
			writeFiles(t, filepath.Join(h.r.SessionDir, first.Status.SessionDir), map[string]string{transcript(sessionOne): "conversation"})
			if err := h.podman.Exit(first.Status.ContainerName, 0, claudeOutput(sessionOne)); err != nil {
				t.Fatal(err)
			}
			h.reconcileUntil("first", agentsv1alpha1.PhaseSucceeded)

			second := h.reconcileUntil("second", agentsv1alpha1.PhaseRunning)
			spec, _ := h.podman.SpecOf(second.Status.ContainerName)
			wantFlags := []string{"--resume=" + sessionOne}
			if fork {
				wantFlags = append(wantFlags, "--fork-session")
			}
			// The flags go to Claude's own command, before its own --; a
			// proxied run's command starts with the forwarder, whose flags
			// end at a -- of their own.
			claude := slices.Index(spec.Command, "claude")
			if wrapped := claude > 0 && spec.Command[claude-1] == "--"; claude < 0 || wrapped != c.proxied {
				t.Fatalf("command %q; want Claude's command, behind the forwarder's -- when proxied (%t)", spec.Command, c.proxied)
			}
			agent := spec.Command[claude:]
			end := slices.Index(agent, "--")
			if end < len(wantFlags) || !slices.Equal(agent[end-len(wantFlags):end], wantFlags) {
				t.Errorf("command %q; want %q before Claude's --", spec.Command, wantFlags)
			}
			if second.Status.SessionDir != string(second.UID) {
				t.Errorf("status.sessionDir = %q, want the run's UID %s", second.Status.SessionDir, second.UID)
			}
			if data, err := os.ReadFile(filepath.Join(h.r.SessionDir, second.Status.SessionDir, transcript(sessionOne))); err != nil || string(data) != "conversation" {
				t.Errorf("the second run's directory lacks the first run's conversation: %q, %v", data, err)
			}
		})
	}
}

func TestAContinuingRunFailsWithoutASession(t *testing.T) {
	h := sessionHarness(t, continuing("orphan", "never-existed", false))
	run := h.reconcileUntil("orphan", agentsv1alpha1.PhaseFailed)
	if c := agentrunstest.Condition(run, agentsv1alpha1.ConditionFinished); c.Reason != agentsv1alpha1.ReasonSessionUnavailable {
		t.Errorf("Finished = %+v; want SessionUnavailable", c)
	}
}

func TestUnusedSessionDirectoriesGoOnceOldEnough(t *testing.T) {
	h := sessionHarness(t, agentrunstest.PlainRun("kept", nil))
	kept := h.reconcileUntil("kept", agentsv1alpha1.PhaseRunning)
	old, young := filepath.Join(h.r.SessionDir, "deleted-run-uid"), filepath.Join(h.r.SessionDir, "launching-run-uid")
	for _, d := range []string{old, young} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	past := h.clock.Now().Add(-2 * time.Minute)
	for _, d := range []string{old, filepath.Join(h.r.SessionDir, kept.Status.SessionDir)} {
		if err := os.Chtimes(d, past, past); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chtimes(young, h.clock.Now(), h.clock.Now()); err != nil {
		t.Fatal(err)
	}
	if err := h.r.collectSessions(context.Background()); err != nil {
		t.Fatal(err)
	}
	for d, want := range map[string]bool{old: false, young: true, filepath.Join(h.r.SessionDir, kept.Status.SessionDir): true} {
		if _, err := os.Stat(d); (err == nil) != want {
			t.Errorf("%s exists: %v, want %v", filepath.Base(d), err == nil, want)
		}
	}
}
