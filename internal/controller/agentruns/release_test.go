package agentruns

import (
	"context"
	"errors"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

func TestUntilTTLExpiry(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	run := &agentsv1alpha1.AgentRun{}
	run.Spec.TTLSecondsAfterFinished = ptr.To[int32](60)
	if _, ok := UntilTTLExpiry(run, now); ok {
		t.Fatal("an unfinished run does not expire")
	}
	run.Status.Phase = agentsv1alpha1.PhaseFailed
	run.Status.CompletionTime = ptr.To(metav1.NewTime(now.Add(-15 * time.Second)))
	if left, ok := UntilTTLExpiry(run, now); !ok || left != 45*time.Second {
		t.Errorf("left = %s, %v; want 45s", left, ok)
	}
	run.Spec.TTLSecondsAfterFinished = nil
	if _, ok := UntilTTLExpiry(run, now); ok {
		t.Error("no TTL, no expiry")
	}
}

func TestDeleteExpiredTakesOnlyTheRunItWasGiven(t *testing.T) {
	ctx := context.Background()
	scheme := runtime.NewScheme()
	if err := agentsv1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	expired := &agentsv1alpha1.AgentRun{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "nightly", UID: "first"}}
	again := expired.DeepCopy()
	again.UID = "second"
	// The fake client ignores delete preconditions: this one checks the UID
	// as the API server does, so the test sees what DeleteExpired asks for.
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(again).WithInterceptorFuncs(interceptor.Funcs{
		Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			del := (&client.DeleteOptions{}).ApplyOptions(opts)
			stored := &agentsv1alpha1.AgentRun{}
			if err := c.Get(ctx, client.ObjectKeyFromObject(obj), stored); err != nil {
				return err
			}
			if del.Preconditions != nil && del.Preconditions.UID != nil && *del.Preconditions.UID != stored.UID {
				return apierrors.NewConflict(agentsv1alpha1.GroupVersion.WithResource("agentruns").GroupResource(), obj.GetName(), errors.New("UID precondition failed"))
			}
			return c.Delete(ctx, obj, opts...)
		},
	}).Build()

	if err := DeleteExpired(ctx, c, expired); err == nil {
		t.Fatal("the run created again under the expired one's name was deleted")
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(again), &agentsv1alpha1.AgentRun{}); err != nil {
		t.Fatalf("the run created again is gone: %v", err)
	}
	if err := DeleteExpired(ctx, c, again); err != nil {
		t.Fatalf("deleting the expired run: %v", err)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(again), &agentsv1alpha1.AgentRun{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the expired run is still there: %v", err)
	}
	if err := DeleteExpired(ctx, c, again); err != nil {
		t.Errorf("a run already gone is no error: %v", err)
	}
}
