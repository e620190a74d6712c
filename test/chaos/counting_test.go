package chaos_test

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/test/fleet"
)

// The scenario's counts come from the hosts' events; a read that returned
// less than happened must fail the scenario, not count as a clean one. These
// run without the fleet (go test -run TestCount ./test/chaos/).

// succeededOnce is a scenario with one run that succeeded in its first
// attempt on host-a, and that attempt's events.
func succeededOnce() (*scenario, map[string]*agentsv1alpha1.AgentRun, []fleet.ContainerEvent) {
	run := &agentsv1alpha1.AgentRun{ObjectMeta: metav1.ObjectMeta{Name: "r", UID: types.UID("uid-r")}}
	run.Status = agentsv1alpha1.AgentRunStatus{Phase: agentsv1alpha1.PhaseSucceeded, Host: "host-a", Attempts: 1, ExitCode: ptr.To[int32](0)}
	s := &scenario{name: "counting", runs: map[string]*agentsv1alpha1.AgentRun{"r": run}, final: map[string]*agentsv1alpha1.AgentRun{"r": run}}
	events := []fleet.ContainerEvent{
		{Host: "host-a", Action: "create", Name: "c-1", UID: "uid-r", Attempt: 1},
		{Host: "host-a", Action: "died", Name: "c-1", UID: "uid-r", Attempt: 1},
	}
	return s, map[string]*agentsv1alpha1.AgentRun{"uid-r": run}, events
}

func TestCountingACleanAttemptFindsNoProblem(t *testing.T) {
	s, uids, events := succeededOnce()
	r := &figures{}
	s.countAttempts(r, uids, events)
	if len(s.problems) != 0 || r.Succeeded != 1 || r.DuplicateContainers+r.LostResults != 0 {
		t.Errorf("figures %+v, problems %q; want one success and nothing wrong", *r, s.problems)
	}
}

func TestCountingNeedsEveryFinalAttemptsEvents(t *testing.T) {
	_, _, all := succeededOnce()
	for name, events := range map[string][]fleet.ContainerEvent{
		"no events":         nil,
		"no create":         all[1:],
		"no died":           all[:1],
		"two died":          append(all, all[1]),
		"another attempt's": {{Host: "host-a", Action: "create", UID: "uid-r", Attempt: 2}, {Host: "host-a", Action: "died", UID: "uid-r", Attempt: 2}},
	} {
		s, uids, _ := succeededOnce()
		r := &figures{}
		s.countAttempts(r, uids, events)
		if !strings.Contains(strings.Join(s.problems, "\n"), "event(s) read from the hosts, want one of each") {
			t.Errorf("%s: problems %q; want the missing events named", name, s.problems)
		}
	}
}
