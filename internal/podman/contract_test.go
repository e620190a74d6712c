package podman

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/containers/podman/v5/pkg/bindings/secrets"

	rt "github.com/agentrun/agentrun/internal/containers"
	"github.com/agentrun/agentrun/internal/containers/runtimetest"
)

// TestContract runs the behaviour every runtime must show against the real
// service; the fake runs the same contract, which keeps it true to Podman.
func TestContract(t *testing.T) {
	runtimetest.Contract(t, runtimetest.Harness{
		New:       func(t *testing.T) rt.Runtime { return newRuntime(t) },
		Image:     testImage,
		AddSecret: func(t *testing.T, r rt.Runtime, name, value string) { addSecret(t, r.(*Runtime), name, value) },
		RunToExit: func(t *testing.T, r rt.Runtime, s rt.Spec, code int32, output string) string {
			t.Helper()
			// The output and code go in as arguments, so no quoting can
			// change them.
			s.Command = []string{"sh", "-c", `printf %s "$1"; exit "$2"`, "sh", output, strconv.Itoa(int(code))}
			return runtimetest.CreateAndStart(t, r, s)
		},
		Running: func(t *testing.T, r rt.Runtime, s rt.Spec) string {
			t.Helper()
			// Printed by the process under the container's init, which
			// set up its signal handling before it started the process.
			s.Command = []string{"sh", "-c", "echo running; exec sleep 300"}
			id := runtimetest.CreateAndStart(t, r, s)
			waitOutput(t, r.(*Runtime), id, "running\n")
			return id
		},
		Unavailable: func(t *testing.T) rt.Runtime { return New(filepath.Join(t.TempDir(), "absent.sock")) },
	})
}

// addSecret creates a Podman secret, removed when the test ends.
func addSecret(t *testing.T, r *Runtime, name, value string) {
	t.Helper()
	ctx, err := r.connect(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := secrets.Create(ctx, strings.NewReader(value), new(secrets.CreateOptions).WithName(name)); err != nil {
		t.Fatalf("creating secret %s: %v", name, err)
	}
	t.Cleanup(func() {
		// t.Context has ended by the time cleanups run.
		ctx, err := r.connect(context.Background())
		if err == nil {
			err = secrets.Remove(ctx, name)
		}
		if err != nil {
			t.Logf("cleanup: removing secret %s: %v", name, err)
		}
	})
}
