package fleet_test

import (
	"context"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/test/fleet"
)

// Create's AlreadyExists: the suite's own object (a create client-go sent
// again after an answer it could retry, the first one stored) is success;
// another object of that name gets the run a new name, not a failure and
// never the other's place.
func TestCreateTellsItsOwnObjectFromAnothersOfTheSameName(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := agentsv1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientBuilder().WithScheme(scheme).Build()
	ctx := context.Background()

	run := fleet.NewRun("race", nil)
	if err := fleet.Create(ctx, c, run); err != nil {
		t.Fatal(err)
	}
	again := run.DeepCopy()
	again.ResourceVersion = ""
	if err := fleet.Create(ctx, c, again); err != nil || again.Name != run.Name {
		t.Errorf("the same run created again: %v, name %s; want success under its name %s", err, again.Name, run.Name)
	}

	other := fleet.NewRun("race", nil)
	other.Name = run.Name
	if err := fleet.Create(ctx, c, other); err != nil {
		t.Fatal(err)
	}
	if other.Name == run.Name {
		t.Errorf("another run took the name %s of an existing one", run.Name)
	}
}
