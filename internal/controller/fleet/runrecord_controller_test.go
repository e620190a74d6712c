package fleet

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	fakeclient "sigs.k8s.io/controller-runtime/pkg/client/fake"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/controller/agentruns/agentrunstest"
)

func TestARecordGoesOnlyOnceItsRunHasBeenGoneForTheRetention(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := agentsv1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	run := agentrunstest.PlainRun("r", nil)
	rec := &agentsv1alpha1.AgentRunRecord{
		ObjectMeta: metav1.ObjectMeta{Namespace: run.Namespace, Name: run.Name},
		Spec: agentsv1alpha1.AgentRunRecordSpec{RunKey: agentsv1alpha1.RunKey(run), RunUID: run.UID, Phase: agentsv1alpha1.PhaseSucceeded,
			CompletionTime: &metav1.Time{Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}},
	}
	c := fakeclient.NewClientBuilder().WithScheme(scheme).WithObjects(run, rec).Build()
	clock := clocktesting.NewFakeClock(time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC))
	g := &RunRecordReconciler{Client: c, Retention: 24 * time.Hour, Clock: clock}
	ctx := context.Background()
	pass := func() ctrl.Result {
		t.Helper()
		res, err := g.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(rec)})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	exists := func() bool {
		return c.Get(ctx, client.ObjectKeyFromObject(rec), &agentsv1alpha1.AgentRunRecord{}) == nil
	}

	// Ten months after the run finished, it still exists: the record stays.
	if res := pass(); res.RequeueAfter != 0 || !exists() {
		t.Fatalf("with its run present: %+v, record exists %v", res, exists())
	}
	// Gone: the record lasts the retention from this moment, not from
	// the run's completion long ago.
	if err := c.Delete(ctx, run); err != nil {
		t.Fatal(err)
	}
	if res := pass(); res.RequeueAfter != 24*time.Hour || !exists() {
		t.Fatalf("just after the run went: %+v, record exists %v", res, exists())
	}
	clock.Step(23 * time.Hour)
	if res := pass(); res.RequeueAfter != time.Hour || !exists() {
		t.Fatalf("an hour before its end: %+v, record exists %v", res, exists())
	}
	clock.Step(time.Hour)
	pass()
	if exists() {
		t.Fatalf("the record outlived its retention")
	}
}
