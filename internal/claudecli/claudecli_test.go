package claudecli

import (
	"slices"
	"strings"
	"testing"

	"k8s.io/utils/ptr"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

var defaultCommand = []string{"claude", "-p", "--output-format", "json", "--"}

func TestCommandPutsTheFlagsBeforeThePrompt(t *testing.T) {
	got, err := Command(defaultCommand, &agentsv1alpha1.ClaudeSpec{
		Model: "opus", MaxTurns: ptr.To[int32](7), MaxBudgetUSD: "0.50", PermissionMode: "plan",
		AppendSystemPrompt: "Answer in French.", AllowedTools: []string{"Read", "Bash(git diff:*)"}, DisallowedTools: []string{"WebFetch"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"claude", "-p", "--output-format", "json",
		"--model=opus", "--max-turns=7", "--max-budget-usd=0.50", "--permission-mode=plan", "--append-system-prompt=Answer in French.",
		"--allowedTools", "Read", "Bash(git diff:*)", "--disallowedTools", "WebFetch", "--"}
	if !slices.Equal(got, want) {
		t.Errorf("command =\n%q\nwant\n%q", got, want)
	}
	if !slices.Equal(defaultCommand, []string{"claude", "-p", "--output-format", "json", "--"}) {
		t.Errorf("the host's default command was changed: %q", defaultCommand)
	}
}

func TestCommandEndsTheOptionsWhenTheDefaultDoesNot(t *testing.T) {
	// A tool list last would swallow the prompt appended after it.
	got, err := Command([]string{"/usr/local/bin/claude", "-p"}, &agentsv1alpha1.ClaudeSpec{AllowedTools: []string{"Read"}})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"/usr/local/bin/claude", "-p", "--allowedTools", "Read", "--"}; !slices.Equal(got, want) {
		t.Errorf("command = %q, want %q", got, want)
	}
}

func TestCommandWithoutOptionsIsTheDefault(t *testing.T) {
	got, err := Command([]string{"my-agent", "--json"}, nil)
	if err != nil || !slices.Equal(got, []string{"my-agent", "--json"}) {
		t.Errorf("command = %q, %v", got, err)
	}
}

func TestCommandRefusesOptionsForAnotherAgent(t *testing.T) {
	_, err := Command([]string{"aider", "--yes"}, &agentsv1alpha1.ClaudeSpec{Model: "opus"})
	if err == nil || !strings.Contains(err.Error(), "not Claude Code (aider --yes)") {
		t.Errorf("err = %v; want the host's command named", err)
	}
}

func TestInsertFlagsGoBeforeTheEndOfOptions(t *testing.T) {
	for _, tc := range []struct {
		command, want []string
	}{
		{[]string{"claude", "-p", "--", "-- a prompt"}, []string{"claude", "-p", "--resume", "s1", "--", "-- a prompt"}},
		{[]string{"claude", "-p", "a prompt"}, []string{"claude", "-p", "--resume", "s1", "a prompt"}},
	} {
		if got := InsertFlags(slices.Clone(tc.command), "--resume", "s1"); !slices.Equal(got, tc.want) {
			t.Errorf("InsertFlags(%q) = %q, want %q", tc.command, got, tc.want)
		}
	}
}

func TestOnlyCanonicalUUIDsAreSessionIDs(t *testing.T) {
	for id, want := range map[string]bool{
		"0f8fad5b-d9cb-469f-a165-70867728950e":          true,
		"--dangerously-skip-permissions":                false,
		"0F8FAD5B-D9CB-469F-A165-70867728950E":          false,
		"{0f8fad5b-d9cb-469f-a165-70867728950e}":        false,
		"urn:uuid:0f8fad5b-d9cb-469f-a165-70867728950e": false,
		"0f8fad5bd9cb469fa16570867728950e":              false,
		"":                                              false,
	} {
		if got := IsSessionID(id); got != want {
			t.Errorf("IsSessionID(%q) = %v, want %v", id, got, want)
		}
	}
}

func TestResumeFlagsKeepTheIDInTheFlag(t *testing.T) {
	id := "0f8fad5b-d9cb-469f-a165-70867728950e"
	if got, want := ResumeFlags(id, false), []string{"--resume=" + id}; !slices.Equal(got, want) {
		t.Errorf("continue: %q, want %q", got, want)
	}
	if got, want := ResumeFlags(id, true), []string{"--resume=" + id, "--fork-session"}; !slices.Equal(got, want) {
		t.Errorf("fork: %q, want %q", got, want)
	}
}
