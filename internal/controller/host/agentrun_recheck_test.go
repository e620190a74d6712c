package host

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"

	"k8s.io/utils/ptr"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/containers"
	"github.com/agentrun/agentrun/internal/controller/agentruns/agentrunstest"
)

// A volume's host path is checked when the container is made, and checked
// again right before the container starts (recheckVolumes): a path swapped
// for a symbolic link in between must not be mounted, whether the container
// is the run's first, a retry's, or one adopted from a manager that died
// before starting it. Each test turns /srv/repo into a link at the create
// call, after the launch's own check passed.

// linkAfterCreate makes the harness's /srv/repo resolve elsewhere from the
// first Create call after it is armed.
type linkAfterCreate struct {
	containers.Runtime
	armed, linked atomic.Bool
}

func (l *linkAfterCreate) Create(ctx context.Context, spec containers.Spec) (string, error) {
	if l.armed.Load() {
		l.linked.Store(true)
	}
	return l.Runtime.Create(ctx, spec)
}

// swapRepoForLinkAtCreate installs linkAfterCreate in h, armed.
func swapRepoForLinkAtCreate(h *harness) *linkAfterCreate {
	l := &linkAfterCreate{Runtime: h.r.Runtime}
	l.armed.Store(true)
	h.r.Runtime = l
	h.r.Policy.ResolveHostPath = func(p string) (string, error) {
		if l.linked.Load() && strings.HasPrefix(p+"/", "/srv/repo/") {
			return "/root/elsewhere" + strings.TrimPrefix(p, "/srv/repo"), nil
		}
		return p, nil
	}
	return l
}

// refusedBeforeStart checks the run failed for its linked volume and that
// Podman was asked for no more than wantStarts starts.
func refusedBeforeStart(t *testing.T, h *harness, name string, wantStarts int) {
	t.Helper()
	run := h.reconcileUntil(name, agentsv1alpha1.PhaseFailed)
	c := agentrunstest.Condition(run, agentsv1alpha1.ConditionFailed)
	if c.Reason != agentsv1alpha1.ReasonVolumeNotAllowed || !strings.Contains(c.Message, "/srv/repo is a symbolic link") {
		t.Errorf("Failed condition %s: %s; want VolumeNotAllowed naming the link /srv/repo", c.Reason, c.Message)
	}
	if got := h.podman.Calls("Start"); got != wantStarts {
		t.Errorf("%d container starts, want %d: the container with the linked volume was started", got, wantStarts)
	}
}

func repoRun(name string) *agentsv1alpha1.AgentRun {
	return agentrunstest.PlainRun(name, func(r *agentsv1alpha1.AgentRun) {
		r.Spec.BackoffLimit = ptr.To[int32](2)
		r.Spec.Podman.Volumes = []string{"/srv/repo:/workspace"}
	})
}

func TestVolumeLinkedAfterCreateStopsTheFirstStart(t *testing.T) {
	h := newHarness(t, repoRun("first"))
	swapRepoForLinkAtCreate(h)
	refusedBeforeStart(t, h, "first", 0)
	if got := h.podman.Calls("Create"); got != 1 {
		t.Errorf("%d creates, want 1: the link appears at the create, after the launch's check", got)
	}
}

func TestVolumeLinkedAfterCreateStopsTheRetrysStart(t *testing.T) {
	h := newHarness(t, repoRun("retry"))
	l := swapRepoForLinkAtCreate(h)
	l.armed.Store(false)
	retryingRun(t, h, "retry")
	l.armed.Store(true)
	refusedBeforeStart(t, h, "retry", 1)
}

// A manager that created the container and died before starting it leaves
// it in state created; the next one's create meets it and adopts it.
func TestVolumeLinkedAfterCreateStopsTheAdoptedContainersStart(t *testing.T) {
	run := repoRun("adopted")
	h := newHarness(t, run)
	spec, err := containerSpec(run, h.r.Defaults, agentrunstest.Host, 1)
	if err != nil {
		t.Fatal(err)
	}
	if refused := h.r.Policy.Apply(&spec); refused != nil {
		t.Fatal(refused)
	}
	if _, err := h.podman.Create(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	swapRepoForLinkAtCreate(h)
	refusedBeforeStart(t, h, "adopted", 0)
	if got := h.podman.Calls("Create"); got != 2 {
		t.Errorf("%d creates, want 2 (the dead manager's, and the one that met its container)", got)
	}
	if all := h.podman.All(); len(all) != 1 || all[0].Name != spec.Name {
		t.Errorf("containers %+v; want only the dead manager's %s, adopted", all, spec.Name)
	}
}
