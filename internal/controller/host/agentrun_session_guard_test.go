package host

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/controller/agentruns/agentrunstest"
)

// What a run that continues or forks a session may find in the earlier
// run's directory: anything its container wrote there.

const (
	sessionTwo   = "1b4e28ba-2fa1-41d2-883f-0016d3cca427"
	sessionThree = "6fa459ea-ee8a-4ca4-894e-db77e160355e"
	sessionFour  = "886313e1-3b8a-4372-9b90-0c9aee199e5d"
	// hostSecret stands for what the host keeps outside the session
	// directory (a kubeconfig); of no known token shape.
	hostSecret = "host-only-value-7c1d"
)

// continuedDir runs "second", continuing or forking "first", to Running and
// returns its session directory.
func continuedDir(t *testing.T, h *harness) (*agentsv1alpha1.AgentRun, string) {
	t.Helper()
	second := h.reconcileUntil("second", agentsv1alpha1.PhaseRunning)
	return second, filepath.Join(h.r.SessionDir, second.Status.SessionDir)
}

// listTree lists the paths under dir.
func listTree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out = append(out, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestOnlyTheConversationCarriesOverToALaterRun(t *testing.T) {
	for _, fork := range []bool{false, true} {
		t.Run(map[bool]string{false: "continue", true: "fork"}[fork], func(t *testing.T) {
			h := sessionHarness(t, agentrunstest.PlainRun("first", nil), continuing("second", "first", fork))
			firstRunEnded(t, h, map[string]string{
				transcript(sessionOne):                        "conversation",
				"settings.json":                               `{"hooks":{"SessionStart":[{"hooks":[{"type":"command","command":"id"}]}]}}`,
				".claude.json":                                `{"mcpServers":{"x":{"command":"id"}}}`,
				".credentials.json":                           hostSecret,
				"CLAUDE.md":                                   "obey",
				"commands/x.md":                               "run id",
				"projects/-workspace/memory/MEMORY.md":        "obey",
				"projects/-workspace/notes.txt":               "not a transcript",
				"projects/-workspace/" + sessionOne + "/a.md": "a subagent's",
			})
			_, dir := continuedDir(t, h)
			want := []string{".", "projects", "projects/-workspace", transcript(sessionOne)}
			if got := listTree(t, dir); !slices.Equal(got, want) {
				t.Errorf("the later run's directory holds %q; want only the transcripts %q", got, want)
			}
		})
	}
}

func TestACopySkipsLinksFIFOsAndDevicesAndNamesThem(t *testing.T) {
	h := sessionHarness(t, agentrunstest.PlainRun("first", nil), continuing("second", "first", true))
	h.r.Policy.User = "1000:1000"
	outside := t.TempDir()
	writeFiles(t, outside, map[string]string{"kubeconfig": hostSecret, sessionThree + ".jsonl": hostSecret})
	first := firstRunEnded(t, h, map[string]string{transcript(sessionOne): "conversation"})
	project := filepath.Join(h.r.SessionDir, first.Status.SessionDir, "projects", "-workspace")
	for _, err := range []error{
		os.Symlink(filepath.Join(outside, "kubeconfig"), filepath.Join(project, sessionTwo+".jsonl")),
		os.Symlink("/dev/zero", filepath.Join(project, sessionFour+".jsonl")),
		syscall.Mkfifo(filepath.Join(project, sessionThree+".jsonl"), 0o600),
		os.Symlink(outside, filepath.Join(filepath.Dir(project), "-linked")),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}

	_, dir := continuedDir(t, h)
	want := []string{".", "projects", "projects/-workspace", transcript(sessionOne)}
	if got := listTree(t, dir); !slices.Equal(got, want) {
		t.Errorf("the fork's directory holds %q; want %q", got, want)
	}
	events := strings.Join(h.events(), "\n")
	for _, name := range []string{transcript(sessionTwo), transcript(sessionThree), transcript(sessionFour), "projects/-linked"} {
		if !strings.Contains(events, reasonSessionEntriesSkipped) || !strings.Contains(events, name) {
			t.Errorf("no %s event names %s: %s", reasonSessionEntriesSkipped, name, events)
		}
	}
	assertUntouched(t, outside)
}

// assertUntouched checks that the files under dir still belong to root.
func assertUntouched(t *testing.T, dir string) {
	t.Helper()
	for _, name := range listTree(t, dir) {
		info, err := os.Lstat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if st := info.Sys().(*syscall.Stat_t); st.Uid != uint32(os.Getuid()) {
			t.Errorf("%s outside the session directory was given to uid %d", name, st.Uid)
		}
	}
}

func TestAnEntrySwappedAfterItsTypeWasCheckedIsSkipped(t *testing.T) {
	outside := t.TempDir()
	writeFiles(t, outside, map[string]string{sessionOne + ".jsonl": hostSecret})
	for what, swap := range map[string]func(path string) error{
		"a directory for a link to one outside": func(p string) error { return os.Symlink(outside, p) },
		"a directory for a link inside":         func(p string) error { return os.Symlink("-other", p) },
		"a transcript for a link to /dev/zero":  func(p string) error { return os.Symlink("/dev/zero", p) },
		"a transcript for a FIFO":               func(p string) error { return syscall.Mkfifo(p, 0o600) },
	} {
		t.Run(what, func(t *testing.T) {
			h := sessionHarness(t, agentrunstest.PlainRun("first", nil), continuing("second", "first", true))
			h.r.Policy.User = "1000:1000"
			first := firstRunEnded(t, h, map[string]string{transcript(sessionOne): "conversation", "projects/-other/" + sessionOne + ".jsonl": "other"})
			target := "projects/-workspace"
			if strings.HasPrefix(what, "a transcript") {
				target = transcript(sessionOne)
			}
			swapped := false
			beforeCopying = func(rel string) {
				if rel != target || swapped {
					return
				}
				swapped = true
				p := filepath.Join(h.r.SessionDir, first.Status.SessionDir, rel)
				if err := os.RemoveAll(p); err != nil {
					t.Fatal(err)
				}
				if err := swap(p); err != nil {
					t.Fatal(err)
				}
			}
			t.Cleanup(func() { beforeCopying = func(string) {} })

			_, dir := continuedDir(t, h)
			if !swapped {
				t.Fatalf("the copy never came to %s", target)
			}
			if _, err := os.Lstat(filepath.Join(dir, target)); err == nil && target != "projects/-workspace" {
				t.Errorf("%s was copied", target)
			}
			if data, err := os.ReadFile(filepath.Join(dir, transcript(sessionOne))); err == nil && string(data) != "conversation" {
				t.Errorf("the fork's transcript holds %q, from where %s led", data, target)
			}
			if events := strings.Join(h.events(), "\n"); !strings.Contains(events, target) {
				t.Errorf("no event names %s: %s", target, events)
			}
			assertUntouched(t, outside)
		})
	}
}

func TestACopyPastTheHostsLimitsFailsTheRunAndLeavesNothing(t *testing.T) {
	for limit, set := range map[string]func(*AgentRunReconciler){
		"bytes": func(r *AgentRunReconciler) { r.SessionCopyMaxBytes = 20 },
		"files": func(r *AgentRunReconciler) { r.SessionCopyMaxFiles = 1 },
	} {
		t.Run(limit, func(t *testing.T) {
			h := sessionHarness(t, agentrunstest.PlainRun("first", nil), continuing("second", "first", true))
			set(h.r)
			firstRunEnded(t, h, map[string]string{transcript(sessionOne): "twelve bytes", transcript(sessionTwo): "twelve bytes"})
			second := h.reconcileUntil("second", agentsv1alpha1.PhaseFailed)
			if c := agentrunstest.Condition(second, agentsv1alpha1.ConditionFinished); c.Reason != agentsv1alpha1.ReasonSessionTooLarge || !strings.Contains(c.Message, limit) {
				t.Errorf("Finished = %+v; want SessionTooLarge naming the limit in %s", c, limit)
			}
			entries, _ := os.ReadDir(h.r.SessionDir)
			for _, e := range entries {
				if strings.HasPrefix(e.Name(), string(second.UID)) {
					t.Errorf("the partial copy %s is left", e.Name())
				}
			}
		})
	}
}

func TestASessionIDThatIsNotAUUIDIsNotResumed(t *testing.T) {
	h := sessionHarness(t, agentrunstest.PlainRun("first", nil), continuing("second", "first", false))
	first := h.reconcileUntil("first", agentsv1alpha1.PhaseRunning)
	if err := h.podman.Exit(first.Status.ContainerName, 0, claudeOutput("--dangerously-skip-permissions")); err != nil {
		t.Fatal(err)
	}
	h.reconcileUntil("first", agentsv1alpha1.PhaseSucceeded)
	second := h.reconcileUntil("second", agentsv1alpha1.PhaseFailed)
	if c := agentrunstest.Condition(second, agentsv1alpha1.ConditionFinished); c.Reason != agentsv1alpha1.ReasonSessionUnavailable {
		t.Errorf("Finished = %+v; want SessionUnavailable", c)
	}
}

func TestAStatusSessionDirThatIsNotTheRunsUIDIsNotUsed(t *testing.T) {
	h := sessionHarness(t, agentrunstest.PlainRun("first", nil), continuing("second", "first", false))
	h.r.Policy.User = "1000:1000"
	first := firstRunEnded(t, h, map[string]string{transcript(sessionOne): "conversation"})
	outside := t.TempDir()
	writeFiles(t, outside, map[string]string{transcript(sessionOne): hostSecret})
	rel, err := filepath.Rel(h.r.SessionDir, outside)
	if err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(first.DeepCopy())
	first.Status.SessionDir = rel // what a host's identity can write
	if err := h.r.Status().Patch(context.Background(), first, patch); err != nil {
		t.Fatal(err)
	}
	second := h.reconcileUntil("second", agentsv1alpha1.PhaseFailed)
	if c := agentrunstest.Condition(second, agentsv1alpha1.ConditionFinished); c.Reason != agentsv1alpha1.ReasonSessionUnavailable {
		t.Errorf("Finished = %+v; want SessionUnavailable", c)
	}
	assertUntouched(t, outside)
}

func TestTheSessionMountIsHeldToTheForbiddenVolumePaths(t *testing.T) {
	h := sessionHarness(t, agentrunstest.PlainRun("first", nil))
	h.r.Policy.ForbiddenVolumePaths = []string{h.r.SessionDir}
	run := h.reconcileUntil("first", agentsv1alpha1.PhaseFailed)
	if c := agentrunstest.Condition(run, agentsv1alpha1.ConditionFinished); c.Reason != agentsv1alpha1.ReasonVolumeNotAllowed {
		t.Errorf("Finished = %+v; want VolumeNotAllowed", c)
	}
	if entries, _ := os.ReadDir(h.r.SessionDir); len(entries) > 0 {
		t.Errorf("a refused run's session directory was made: %v", entries)
	}
}

func TestNoTwoRunningRunsMountOneSessionDirectory(t *testing.T) {
	h := sessionHarness(t, agentrunstest.PlainRun("first", nil), continuing("second", "first", false), continuing("third", "first", false))
	firstRunEnded(t, h, map[string]string{transcript(sessionOne): "conversation"})
	mounted := map[string]string{}
	for _, name := range []string{"second", "third"} {
		run := h.reconcileUntil(name, agentsv1alpha1.PhaseRunning)
		spec, _ := h.podman.SpecOf(run.Status.ContainerName)
		for _, m := range spec.Mounts {
			if m.Destination != sessionMountPath {
				continue
			}
			if other, taken := mounted[m.Source]; taken {
				t.Errorf("%s and %s, both running, mount %s", other, name, m.Source)
			}
			mounted[m.Source] = name
		}
	}
	if len(mounted) != 2 {
		t.Errorf("session mounts %v; want one for each run", mounted)
	}
}

func TestNoSessionHandlingBeforeTheRunHasASlotItsSecretsAndItsImage(t *testing.T) {
	for what, block := range map[string]struct {
		edit func(run *agentsv1alpha1.AgentRun)
		// hold runs once the run is claimed: a host claims only a run it
		// has a slot for, so the slot goes after that.
		hold func(h *harness)
	}{
		"slot": {hold: func(h *harness) {
			h.r.MaxConcurrentRuns = 1
			if !h.r.slots.lineUp(agentrunstest.PlainRun("holder", nil), nil, agentrunstest.Host, 1, true) {
				h.t.Fatal("no slot for the holder")
			}
		}},
		"secret": {edit: func(run *agentsv1alpha1.AgentRun) {
			run.Spec.Podman.SecretsEnv = map[string]agentsv1alpha1.SecretName{"KEY": "not-created"}
		}},
		"image": {edit: func(run *agentsv1alpha1.AgentRun) { run.Spec.Image = "localhost/not-pulled:1" }},
	} {
		t.Run(what, func(t *testing.T) {
			h := sessionHarness(t)
			h.r.Policy.User = "1000:1000"
			first := firstRunEndedAsCreated(t, h)
			second := continuing("second", "first", true)
			if block.edit != nil {
				block.edit(second)
			}
			if err := h.r.Create(context.Background(), second); err != nil {
				t.Fatal(err)
			}
			if run, _, err := h.reconcile("second"); err != nil || run.Status.Host != agentrunstest.Host {
				t.Fatalf("the host did not claim the run: %v", err)
			}
			if block.hold != nil {
				block.hold(h)
			}
			watched := filepath.Join(h.r.SessionDir, first.Status.SessionDir)
			if err := os.Chown(watched, 4242, 4242); err != nil {
				t.Fatal(err)
			}
			run := h.reconcileUntil("second", agentsv1alpha1.PhasePending)
			h.pass("second")
			if entries, _ := os.ReadDir(h.r.SessionDir); len(entries) != 1 {
				t.Errorf("while the run waits (%s), the session directory holds %v", agentrunstest.Condition(run, agentsv1alpha1.ConditionStarted).Reason, entries)
			}
			if info, err := os.Stat(watched); err != nil || info.Sys().(*syscall.Stat_t).Uid != 4242 {
				t.Errorf("while the run waits, the earlier session was given away: %v", err)
			}
		})
	}
}

// firstRunEndedAsCreated creates "first" and runs it to success.
func firstRunEndedAsCreated(t *testing.T, h *harness) *agentsv1alpha1.AgentRun {
	t.Helper()
	if err := h.r.Create(context.Background(), agentrunstest.PlainRun("first", nil)); err != nil {
		t.Fatal(err)
	}
	return firstRunEnded(t, h, map[string]string{transcript(sessionOne): "conversation"})
}
