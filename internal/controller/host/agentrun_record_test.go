package host

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/controller/agentruns"
	"github.com/agentrun/agentrun/internal/controller/agentruns/agentrunstest"
	"github.com/agentrun/agentrun/internal/controller/fleet"
)

// recordingHarness is a harness whose host keeps run records.
func recordingHarness(t *testing.T, objs ...client.Object) *harness {
	h := newHarness(t, objs...)
	h.r.RecordRuns = true
	h.r.APIReader = h.r.Client
	return h
}

// fleetRecords has the fleet's recorder, keeping records for retention,
// pass over the run name, as its watch would once the run finished or is
// being deleted.
func (h *harness) fleetRecords(name string, retention time.Duration) {
	h.t.Helper()
	w := &fleet.RunRecorderReconciler{Client: h.r.Client, Reader: h.r.Client, Retention: retention}
	if _, err := w.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKey{Namespace: "team", Name: name}}); err != nil {
		h.t.Fatal(err)
	}
}

// recordOf reads the record under the run's name, nil when there is none.
func (h *harness) recordOf(run *agentsv1alpha1.AgentRun) *agentsv1alpha1.AgentRunRecord {
	h.t.Helper()
	rec := &agentsv1alpha1.AgentRunRecord{}
	err := h.r.Get(context.Background(), client.ObjectKeyFromObject(run), rec)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		h.t.Fatal(err)
	}
	return rec
}

// runToSuccess takes a run through one container that exits 0, and the pass
// after, that cleans up.
func (h *harness) runToSuccess(name string) *agentsv1alpha1.AgentRun {
	h.t.Helper()
	run := h.reconcileUntil(name, agentsv1alpha1.PhaseRunning)
	if err := h.podman.Exit(run.Status.ContainerName, 0, "done"); err != nil {
		h.t.Fatal(err)
	}
	h.reconcileUntil(name, agentsv1alpha1.PhaseSucceeded)
	run, _, err := h.reconcile(name)
	if err != nil {
		h.t.Fatal(err)
	}
	return run
}

// recreate deletes a run and creates it again from the same manifest, as a
// GitOps sync does; the API server gives it a new UID.
func (h *harness) recreate(run *agentsv1alpha1.AgentRun, edit func(*agentsv1alpha1.AgentRun)) {
	h.t.Helper()
	ctx := context.Background()
	if err := h.r.Delete(ctx, run); err != nil {
		h.t.Fatal(err)
	}
	again := agentrunstest.PlainRun(run.Name, edit)
	again.UID = types.UID(strings.Replace(string(run.UID), "0", "9", 1))
	if err := h.r.Create(ctx, again); err != nil {
		h.t.Fatal(err)
	}
}

func TestARecreatedRunOfTheSameManifestEndsAsRecordedWithoutLaunching(t *testing.T) {
	ttl := func(r *agentsv1alpha1.AgentRun) { r.Spec.TTLSecondsAfterFinished = ptr.To[int32](3600) }
	h := recordingHarness(t, agentrunstest.PlainRun("once", ttl))
	first := h.runToSuccess("once")
	h.fleetRecords("once", time.Hour)

	rec := &agentsv1alpha1.AgentRunRecord{}
	if err := h.r.Get(context.Background(), client.ObjectKeyFromObject(first), rec); err != nil {
		t.Fatalf("no record once the run finished: %v", err)
	}
	if rec.Spec.RunUID != first.UID || rec.Spec.Phase != agentsv1alpha1.PhaseSucceeded || rec.Spec.Host != agentrunstest.Host ||
		rec.Spec.RunKey != agentsv1alpha1.RunKey(first) || rec.Spec.ExitCode == nil || *rec.Spec.ExitCode != 0 {
		t.Fatalf("record = %+v", rec.Spec)
	}

	h.recreate(first, ttl)
	created := h.podman.Calls("Create")
	again := h.reconcileUntil("once", agentsv1alpha1.PhaseSucceeded)
	if n := h.podman.Calls("Create"); n != created {
		t.Errorf("the recreated run created %d container(s)", n-created)
	}
	if c := agentrunstest.Condition(again, agentsv1alpha1.ConditionFinished); c.Reason != agentsv1alpha1.ReasonAlreadyRan ||
		!strings.Contains(c.Message, string(first.UID)) || !strings.Contains(c.Message, agentsv1alpha1.AnnotationRerun) {
		t.Errorf("Finished = %+v; want reason AlreadyRan, naming the run that ran and the way to run it again", c)
	}
	if again.Status.ExitCode == nil || *again.Status.ExitCode != 0 || again.Status.Attempts != 0 {
		t.Errorf("exit code %v, attempts %d; want the recorded 0, and no attempt", again.Status.ExitCode, again.Status.Attempts)
	}

	// Its TTL does not delete it: the next sync would only create it again.
	h.clock.Step(2 * time.Hour)
	for range 2 {
		h.pass("once")
	}
	if err := h.r.Get(context.Background(), client.ObjectKeyFromObject(first), &agentsv1alpha1.AgentRun{}); err != nil {
		t.Errorf("the AlreadyRan run was deleted: %v", err)
	}
	if err := h.r.Get(context.Background(), client.ObjectKeyFromObject(first), rec); err != nil || rec.Spec.RunUID != first.UID {
		t.Errorf("the record must still name the run that ran: %+v, %v", rec.Spec, err)
	}
}

func TestARecreatedRunRunsAgainWhenItsManifestChanged(t *testing.T) {
	for _, tc := range []struct {
		desc string
		edit func(*agentsv1alpha1.AgentRun)
	}{
		{"a new rerun annotation", func(r *agentsv1alpha1.AgentRun) {
			r.Annotations = map[string]string{agentsv1alpha1.AnnotationRerun: "2026-11-29"}
		}},
		{"a new prompt", func(r *agentsv1alpha1.AgentRun) { r.Spec.Prompt = "Review the open PRs again" }},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			h := recordingHarness(t, agentrunstest.PlainRun("twice", nil))
			first := h.runToSuccess("twice")
			h.fleetRecords("twice", time.Hour)
			h.recreate(first, tc.edit)
			h.runToSuccess("twice")
			h.fleetRecords("twice", time.Hour)
			if n := h.podman.Calls("Create"); n != 2 {
				t.Errorf("%d containers created; want one per run", n)
			}
			rec := &agentsv1alpha1.AgentRunRecord{}
			if err := h.r.Get(context.Background(), client.ObjectKeyFromObject(first), rec); err != nil || rec.Spec.RunUID == first.UID {
				t.Errorf("the record should now be the second run's: %+v, %v", rec.Spec, err)
			}
		})
	}
}

func TestWithoutRecordsARecreatedRunRunsAgain(t *testing.T) {
	h := newHarness(t, agentrunstest.PlainRun("plain", nil))
	h.r.APIReader = h.r.Client
	first := h.runToSuccess("plain")
	if err := h.r.Get(context.Background(), client.ObjectKeyFromObject(first), &agentsv1alpha1.AgentRunRecord{}); err == nil {
		t.Errorf("a record was written with fleet.runRecordRetention 0")
	}
	h.recreate(first, nil)
	h.runToSuccess("plain")
	if n := h.podman.Calls("Create"); n != 2 {
		t.Errorf("%d containers created; want 2", n)
	}
}

func TestACancelDoesNotChangeTheRunKey(t *testing.T) {
	run := agentrunstest.PlainRun("k", nil)
	key := agentsv1alpha1.RunKey(run)
	run.Spec.Cancel = true
	run.Status.Phase = agentsv1alpha1.PhaseCancelled
	run.CreationTimestamp = metav1.Now()
	if got := agentsv1alpha1.RunKey(run); got != key {
		t.Errorf("cancel or status changed the run key")
	}
	run.Spec.Timeout = &metav1.Duration{Duration: time.Minute}
	if agentsv1alpha1.RunKey(run) == key {
		t.Errorf("a different spec gave the same run key")
	}
}

func TestTheHostWritesNoRecordAndADeletedRunWaitsForTheFleetsRecord(t *testing.T) {
	ttl := func(r *agentsv1alpha1.AgentRun) { r.Spec.TTLSecondsAfterFinished = ptr.To[int32](0) }
	h := recordingHarness(t, agentrunstest.PlainRun("held", ttl))
	first := h.runToSuccess("held")
	if rec := h.recordOf(first); rec != nil {
		t.Fatalf("the host wrote a record: %+v", rec.Spec)
	}
	// The TTL deletes it and its container goes; the fleet is down: the
	// run waits, held by the fleet's finalizer alone.
	for range 2 {
		h.pass("held")
	}
	held := &agentsv1alpha1.AgentRun{}
	if err := h.r.Get(context.Background(), client.ObjectKeyFromObject(first), held); err != nil {
		t.Fatalf("the run went before the fleet recorded it: %v", err)
	}
	if held.DeletionTimestamp.IsZero() || !slices.Equal(held.Finalizers, []string{agentruns.RecordFinalizer}) {
		t.Fatalf("deletion %v, finalizers %v; want the run being deleted, held by %s alone", held.DeletionTimestamp, held.Finalizers, agentruns.RecordFinalizer)
	}

	h.fleetRecords("held", time.Hour)
	rec := h.recordOf(first)
	if rec == nil || rec.Spec.RunUID != first.UID || rec.Spec.RunKey != agentsv1alpha1.RunKey(first) ||
		rec.Spec.Phase != agentsv1alpha1.PhaseSucceeded || rec.Spec.Host != agentrunstest.Host {
		t.Fatalf("the fleet's record = %+v", rec)
	}
	if err := h.r.Get(context.Background(), client.ObjectKeyFromObject(first), held); !apierrors.IsNotFound(err) {
		t.Errorf("the recorded run is still there (%v): %v", err, held.Finalizers)
	}

	// The same manifest, applied again, ends as the fleet recorded it.
	again := agentrunstest.PlainRun("held", ttl)
	again.UID = "uid-again"
	if err := h.r.Create(context.Background(), again); err != nil {
		t.Fatal(err)
	}
	if c := agentrunstest.Condition(h.reconcileUntil("held", agentsv1alpha1.PhaseSucceeded), agentsv1alpha1.ConditionFinished); c.Reason != agentsv1alpha1.ReasonAlreadyRan {
		t.Errorf("Finished = %+v; want reason AlreadyRan", c)
	}
}

func TestTheFleetLetsGoUnrecordedARunDeletedBeforeItFinishedOrWhenRecordsAreOff(t *testing.T) {
	for _, tc := range []struct {
		desc      string
		retention time.Duration
		finish    bool
	}{
		{"deleted while it runs", time.Hour, false},
		{"finished, records off in the fleet", 0, true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			h := recordingHarness(t, agentrunstest.PlainRun("r", nil))
			run := h.reconcileUntil("r", agentsv1alpha1.PhaseRunning)
			if !controllerutil.ContainsFinalizer(run, agentruns.RecordFinalizer) {
				t.Fatalf("finalizers %v; the host adds %s with its own", run.Finalizers, agentruns.RecordFinalizer)
			}
			if tc.finish {
				run = h.runToSuccess("r")
			} else if err := h.r.Delete(context.Background(), run); err != nil {
				t.Fatal(err)
			}
			h.fleetRecords("r", tc.retention)
			if rec := h.recordOf(run); rec != nil {
				t.Errorf("recorded: %+v", rec.Spec)
			}
			got := &agentsv1alpha1.AgentRun{}
			if err := h.r.Get(context.Background(), client.ObjectKeyFromObject(run), got); client.IgnoreNotFound(err) != nil ||
				controllerutil.ContainsFinalizer(got, agentruns.RecordFinalizer) {
				t.Errorf("the fleet kept its finalizer: %v, %v", got.Finalizers, err)
			}
		})
	}
}

// A host that drops its finalizer from a stale copy of the run must not put
// back the fleet's record finalizer, which the fleet took off meanwhile: a
// merge patch replaces the whole list.
func TestDroppingTheFinalizerFromAStaleCopyKeepsWhatTheFleetTookOff(t *testing.T) {
	run := agentrunstest.Run("r")
	run.Finalizers = []string{agentruns.Finalizer, agentruns.RecordFinalizer}
	run.Status.Host, run.Status.Phase = agentrunstest.Host, agentsv1alpha1.PhaseSucceeded
	h := newHarness(t, run)
	stale := &agentsv1alpha1.AgentRun{}
	if err := h.r.Get(context.Background(), client.ObjectKeyFromObject(run), stale); err != nil {
		t.Fatal(err)
	}
	fresh := stale.DeepCopy()
	controllerutil.RemoveFinalizer(fresh, agentruns.RecordFinalizer) // the fleet recorded the run
	if err := h.r.Update(context.Background(), fresh); err != nil {
		t.Fatal(err)
	}
	if err := h.r.dropFinalizer(context.Background(), stale); err != nil {
		t.Fatalf("dropping the finalizer from a stale copy: %v", err)
	}
	got := &agentsv1alpha1.AgentRun{}
	if err := h.r.Get(context.Background(), client.ObjectKeyFromObject(run), got); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(got.Finalizers, agentruns.RecordFinalizer) {
		t.Fatalf("finalizers = %v: the host's stale copy put back the record finalizer the fleet took off", got.Finalizers)
	}
}
