package host

import (
	"context"
	"errors"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/controller/agentruns/agentrunstest"
)

// The fleet's recorder drops its finalizer from runs as they finish, so the
// host's write of a callback's outcome often meets a newer version. The
// outcome is written to that version at once: going back to the delivery
// queue would wait a turn behind other namespaces' deliveries, each as long
// as a receiver that does not answer keeps it (seen in CI: the outcome of a
// delivered callback still unwritten 30 s later).
func TestACallbacksOutcomeIsWrittenOverAConcurrentChange(t *testing.T) {
	run := agentrunstest.PlainRun("called", nil)
	h := newHarness(t, run)
	conflicts := 0
	h.r.Client = interceptor.NewClient(h.r.Client.(client.WithWatch), interceptor.Funcs{
		SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
			if conflicts == 0 {
				conflicts++
				return apierrors.NewConflict(agentsv1alpha1.GroupVersion.WithResource("agentruns").GroupResource(), obj.GetName(), errors.New("the object has been modified"))
			}
			return c.SubResource(sub).Patch(ctx, obj, patch, opts...)
		},
	})
	read := &agentsv1alpha1.AgentRun{}
	if err := h.r.APIReader.Get(context.Background(), client.ObjectKeyFromObject(run), read); err != nil {
		t.Fatal(err)
	}
	cond := &metav1.Condition{Type: agentsv1alpha1.ConditionNotified, Status: metav1.ConditionTrue, Reason: agentsv1alpha1.ReasonDelivered, Message: "answered HTTP 204 (try 1)"}
	if err := h.r.recordCallback(context.Background(), read, cond); err != nil {
		t.Fatalf("recording the outcome over a concurrent change: %v", err)
	}
	got := &agentsv1alpha1.AgentRun{}
	if err := h.r.APIReader.Get(context.Background(), client.ObjectKeyFromObject(run), got); err != nil {
		t.Fatal(err)
	}
	if c := meta.FindStatusCondition(got.Status.Conditions, agentsv1alpha1.ConditionNotified); conflicts != 1 || c == nil || c.Reason != agentsv1alpha1.ReasonDelivered {
		t.Fatalf("after %d conflict(s), Notified = %+v; want Delivered written", conflicts, c)
	}
}
