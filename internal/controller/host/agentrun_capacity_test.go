package host

import (
	"context"
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/controller/agentruns"
	"github.com/agentrun/agentrun/internal/controller/agentruns/agentrunstest"
)

// lined is a run for line-up tests: created at minute, with a status.
func lined(name string, minute int, status agentsv1alpha1.AgentRunStatus) agentsv1alpha1.AgentRun {
	run := agentsv1alpha1.AgentRun{ObjectMeta: metav1.ObjectMeta{
		Name: name, Namespace: "team", UID: types.UID("uid-" + name),
		CreationTimestamp: metav1.NewTime(time.Date(2026, 1, 1, 0, minute, 0, 0, time.UTC)),
	}}
	run.Status = status
	return run
}

func waiting(reason string) agentsv1alpha1.AgentRunStatus {
	st := agentsv1alpha1.AgentRunStatus{}
	agentruns.ApplyState(&st, 1, agentruns.State{Phase: agentsv1alpha1.PhasePending, Reason: reason, Message: ""})
	return st
}

func TestLineUpGivesSlotsInCreationOrder(t *testing.T) {
	running := agentsv1alpha1.AgentRunStatus{Host: agentrunstest.Host, Phase: agentsv1alpha1.PhaseRunning}
	line := []agentsv1alpha1.AgentRun{
		lined("oldest-running", 0, running),
		lined("secret-missing", 1, waiting(agentsv1alpha1.ReasonSecretNotFound)),
		lined("first-waiting", 2, waiting(agentsv1alpha1.ReasonWaitingForCapacity)),
		lined("second-waiting", 3, waiting(agentsv1alpha1.ReasonWaitingForCapacity)),
		lined("finished", 4, agentsv1alpha1.AgentRunStatus{Phase: agentsv1alpha1.PhaseSucceeded}),
		lined("unclaimed", 5, agentsv1alpha1.AgentRunStatus{}),
	}
	byName := map[string]*agentsv1alpha1.AgentRun{}
	for i := range line {
		byName[line[i].Name] = &line[i]
	}

	// Capacity 3, one running: two slots left, for the two oldest runs that
	// wait only for a slot; the run waiting for a secret does not count.
	var s slotTracker
	for name, want := range map[string]bool{"first-waiting": true, "second-waiting": true, "unclaimed": false, "secret-missing": true} {
		if got := s.lineUp(byName[name], line, agentrunstest.Host, 3, false); got != want {
			t.Errorf("with nothing held, %s gets a slot = %v, want %v", name, got, want)
		}
	}
	// Taking a slot counts at once, before any status says so.
	if !s.lineUp(byName["second-waiting"], line, agentrunstest.Host, 3, true) {
		t.Fatal("second-waiting should get a slot")
	}
	if s.lineUp(byName["unclaimed"], line, agentrunstest.Host, 3, false) {
		t.Error("unclaimed must wait behind first-waiting while second-waiting holds the last but one slot")
	}
	if !s.lineUp(byName["first-waiting"], line, agentrunstest.Host, 3, true) {
		t.Error("first-waiting should get the last slot")
	}
	if s.lineUp(byName["unclaimed"], line, agentrunstest.Host, 3, true) {
		t.Error("no slot is left")
	}
	// A run asking again keeps the slot it holds.
	if !s.lineUp(byName["first-waiting"], line, agentrunstest.Host, 3, true) {
		t.Error("a run holding a slot keeps it")
	}
	if !s.release(client.ObjectKeyFromObject(byName["second-waiting"])) || s.release(client.ObjectKeyFromObject(byName["second-waiting"])) {
		t.Error("release must report the slot once")
	}
	// second-waiting still stands in line (its status says it waits), ahead
	// of unclaimed.
	if s.lineUp(byName["unclaimed"], line, agentrunstest.Host, 3, true) || !s.lineUp(byName["second-waiting"], line, agentrunstest.Host, 3, true) {
		t.Error("a released slot goes to the first in line")
	}
}

func TestLineUpTellsARecreatedRunApart(t *testing.T) {
	old := lined("same-name", 0, waiting(agentsv1alpha1.ReasonWaitingForCapacity))
	var s slotTracker
	if !s.lineUp(&old, nil, agentrunstest.Host, 1, true) {
		t.Fatal("the only run gets the only slot")
	}
	recreated := old.DeepCopy()
	recreated.UID = "uid-recreated"
	if s.lineUp(recreated, []agentsv1alpha1.AgentRun{old}, agentrunstest.Host, 1, false) {
		t.Error("a new run under the old name must not inherit the old run's slot")
	}
}

func TestPendingPassListsOnlyUnfinishedRuns(t *testing.T) {
	objs := []client.Object{}
	for i := range 1000 {
		done := agentrunstest.PlainRun(fmt.Sprintf("done-%04d", i), nil)
		done.UID = types.UID(fmt.Sprintf("done-%04d", i))
		done.Status = agentsv1alpha1.AgentRunStatus{Host: agentrunstest.Host, Phase: agentsv1alpha1.PhaseSucceeded}
		objs = append(objs, done)
	}
	objs = append(objs, agentrunstest.PlainRun("pending", nil))
	h := newHarness(t, objs...)
	h.r.MaxConcurrentRuns = 4

	h.reconcileUntil("pending", agentsv1alpha1.PhaseRunning)
	if got := h.listed.Load(); got > 10 {
		t.Fatalf("claiming and launching one run listed %d objects; a pass must list only the unfinished runs in this host's line", got)
	}
}

// A run can go without this host's reconciler ever seeing it gone: its
// finalizer removed by hand and the object deleted, then a run of the same
// name created before the next pass, which reads the new one. The slot the
// old run held must not stay taken (it did: the host then stayed full for
// good, the new run waiting behind a run that no longer exists).
func TestSlotOfARunReplacedUnderTheSameNameIsFreed(t *testing.T) {
	h := newHarness(t, agentrunstest.PlainRun("same-name", nil))
	h.r.MaxConcurrentRuns = 1
	old := h.reconcileUntil("same-name", agentsv1alpha1.PhaseRunning)

	ctx := context.Background()
	patch := client.MergeFrom(old.DeepCopy())
	old.Finalizers = nil
	if err := h.r.Patch(ctx, old, patch); err != nil {
		t.Fatal(err)
	}
	if err := h.r.Delete(ctx, old); err != nil {
		t.Fatal(err)
	}
	replacement := agentrunstest.PlainRun("same-name", nil)
	replacement.UID = "4567cdef-0000-0000-0000-000000000000"
	if err := h.r.Create(ctx, replacement); err != nil {
		t.Fatal(err)
	}
	run := h.reconcileUntil("same-name", agentsv1alpha1.PhaseRunning)
	if run.UID != replacement.UID {
		t.Fatalf("the pass read run %s, want the replacement %s", run.UID, replacement.UID)
	}
}

// A slot given back wakes the run it goes to, not the whole line: each
// woken pass reads the line again, and all but the first would only wait.
// The cache may still show the released run running: it is not counted.
func TestReleasedSlotWakesTheRunsTheFreeSlotsGoTo(t *testing.T) {
	running := agentsv1alpha1.AgentRunStatus{Host: agentrunstest.Host, Phase: agentsv1alpha1.PhaseRunning}
	line := []agentsv1alpha1.AgentRun{
		lined("done", 0, running), // its Succeeded status not in the cache yet
		lined("other", 1, running),
		lined("first", 2, waiting(agentsv1alpha1.ReasonWaitingForCapacity)),
		lined("second", 3, waiting(agentsv1alpha1.ReasonWaitingForCapacity)),
		lined("third", 4, agentsv1alpha1.AgentRunStatus{}),
	}
	var s slotTracker
	for i := range line[:2] {
		if !s.lineUp(&line[i], line, agentrunstest.Host, 2, true) {
			t.Fatalf("%s should hold a slot", line[i].Name)
		}
	}
	done := client.ObjectKeyFromObject(&line[0])
	s.release(done)
	woken := s.firstInLine(line, agentrunstest.Host, 2, done)
	if len(woken) != 1 || woken[0].Name != "first" {
		t.Fatalf("one slot freed woke %v; want [first]", names(woken))
	}
	// The cache catches up with done; other ends too.
	line[0].Status.Phase = agentsv1alpha1.PhaseSucceeded
	s.release(client.ObjectKeyFromObject(&line[1]))
	if woken := s.firstInLine(line, agentrunstest.Host, 2, client.ObjectKeyFromObject(&line[1])); len(woken) != 2 || woken[1].Name != "second" {
		t.Fatalf("two slots free woke %v; want [first second]", names(woken))
	}
}

func names(runs []*agentsv1alpha1.AgentRun) []string {
	var out []string
	for _, r := range runs {
		out = append(out, r.Name)
	}
	return out
}
