package chaos_test

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

// The kill-point scenarios hold each run's status.output to what its
// container printed, which they know beforehand: these hold what they expect
// to what the runs' commands print, run here with sh (go test -run
// TestKillPointOutputs ./test/chaos/, without the fleet).

func TestKillPointOutputsPrinterIsWhatItsCommandPrints(t *testing.T) {
	run, want := printer("p", "host-a", "")
	cmd := exec.Command(run.Spec.Command[0], run.Spec.Command[1:]...)
	cmd.Env = []string{"TOKEN=" + string(run.Spec.Podman.Env["TOKEN"])}
	got, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want || strings.Count(want, "\n") != printerLines {
		t.Errorf("the printer's command prints %q; want %q", got, want)
	}
}

func TestKillPointOutputsFakeAgentIsWhatTheImagePrints(t *testing.T) {
	prompt := "fork of kp-session-abcde"
	got, err := exec.Command("sh", filepath.Join(repoRoot(), "test", "image", "bin", "fake-agent"), "--resume=x", "--fork-session", "--", prompt).Output()
	if err != nil {
		t.Fatal(err)
	}
	// Its session ID is random: the run's status reports it.
	_, session, _ := strings.Cut(string(got), `"session_id":"`)
	session, _, _ = strings.Cut(session, `"`)
	run := &agentsv1alpha1.AgentRun{Status: agentsv1alpha1.AgentRunStatus{AgentResult: &agentsv1alpha1.AgentResult{SessionID: session}}}
	if want := fakeAgentOutput(prompt, run); string(got) != want || session == "" {
		t.Errorf("fake-agent prints %q; want %q", got, want)
	}
}
