package fake_test

import (
	"testing"

	"github.com/agentrun/agentrun/internal/containers"
	"github.com/agentrun/agentrun/internal/containers/fake"
	"github.com/agentrun/agentrun/internal/containers/runtimetest"
)

// TestContract holds the fake to what Podman does (internal/podman runs the
// same contract against the real service).
func TestContract(t *testing.T) {
	const image = "localhost/agentrun-test:latest"
	runtimetest.Contract(t, runtimetest.Harness{
		New:   func(*testing.T) containers.Runtime { return fake.New(image) },
		Image: image,
		AddSecret: func(_ *testing.T, r containers.Runtime, name, value string) {
			r.(*fake.Runtime).SetSecret(name, value)
		},
		RunToExit: func(t *testing.T, r containers.Runtime, s containers.Spec, code int32, output string) string {
			t.Helper()
			id := runtimetest.CreateAndStart(t, r, s)
			if err := r.(*fake.Runtime).Exit(id, code, output); err != nil {
				t.Fatalf("Exit(%s) = %v", s.Name, err)
			}
			return id
		},
		// The fake's process runs, and takes a stop, as soon as it starts.
		Running: runtimetest.CreateAndStart,
		Unavailable: func(*testing.T) containers.Runtime {
			r := fake.New(image)
			r.SetUnavailable(true)
			return r
		},
	})
}
