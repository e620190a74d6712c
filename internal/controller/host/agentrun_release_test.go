package host

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/controller/agentruns"
	"github.com/agentrun/agentrun/internal/controller/agentruns/agentrunstest"
	"github.com/agentrun/agentrun/internal/controller/fleet"
	"github.com/agentrun/agentrun/internal/logserver"
	"github.com/agentrun/agentrun/internal/notify"
)

// hostCacheView reads runs as a host's cache holds them, without the
// released ones (UseHostCache; its field selectors are the API server's to
// apply, which the fake client does not).
type hostCacheView struct {
	client.Client
	selects labels.Selector
}

func newHostCacheView(t *testing.T, c client.Client) hostCacheView {
	t.Helper()
	var opts ctrl.Options
	agentruns.UseHostCache(&opts, agentrunstest.Host)
	for obj, by := range opts.Cache.ByObject {
		if _, ok := obj.(*agentsv1alpha1.AgentRun); ok && by.Label != nil {
			return hostCacheView{c, by.Label}
		}
	}
	t.Fatal("UseHostCache selects every AgentRun")
	return hostCacheView{}
}

func (v hostCacheView) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if err := v.Client.Get(ctx, key, obj, opts...); err != nil {
		return err
	}
	if _, ok := obj.(*agentsv1alpha1.AgentRun); ok && !v.selects.Matches(labels.Set(obj.GetLabels())) {
		return apierrors.NewNotFound(agentsv1alpha1.GroupVersion.WithResource("agentruns").GroupResource(), key.Name)
	}
	return nil
}

func (v hostCacheView) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	if _, ok := list.(*agentsv1alpha1.AgentRunList); ok {
		opts = append(opts, client.MatchingLabelsSelector{Selector: v.selects})
	}
	return v.Client.List(ctx, list, opts...)
}

func TestAFinishedRunIsReleasedWhenItsContainersGo(t *testing.T) {
	h := newHarness(t, agentrunstest.PlainRun("done", nil))
	run := h.runToSuccess("done")
	if !agentruns.Released(run) || len(run.Finalizers) != 0 || len(h.podman.All()) != 0 {
		t.Fatalf("after the pass that removed its container: labels %v, finalizers %v, containers %v; want it released",
			run.Labels, run.Finalizers, h.podman.All())
	}
	// A host's cache no longer holds it, and a pass over it does nothing.
	h.r.Client = newHostCacheView(t, h.r.Client)
	runs := &agentsv1alpha1.AgentRunList{}
	if err := h.r.List(context.Background(), runs); err != nil || len(runs.Items) != 0 {
		t.Errorf("the host's cache lists %d runs (%v), want none", len(runs.Items), err)
	}
}

func TestARunWhoseContainersAreKeptIsNotReleased(t *testing.T) {
	h := newHarness(t, agentrunstest.PlainRun("kept", func(r *agentsv1alpha1.AgentRun) { r.Spec.TTLSecondsAfterFinished = ptr.To[int32](60) }))
	h.r.KeepContainers = true
	run := h.runToSuccess("kept")
	if agentruns.Released(run) || len(h.podman.All()) != 1 {
		t.Fatalf("a run whose container is kept was released (%v), or lost its container %v", run.Labels, h.podman.All())
	}
	// Its host deletes it when its TTL expires, and its container with it.
	h.clock.Step(time.Minute)
	h.pass("kept")
	h.pass("kept")
	if err := h.r.Get(context.Background(), client.ObjectKeyFromObject(run), &agentsv1alpha1.AgentRun{}); !apierrors.IsNotFound(err) || len(h.podman.All()) != 0 {
		t.Errorf("after its TTL: %v, containers %v; want the run and its container gone", err, h.podman.All())
	}
}

func TestAReleasedRunIsDeletedByTheFleetWhenItsTTLExpires(t *testing.T) {
	h := newHarness(t, agentrunstest.PlainRun("ttl", func(r *agentsv1alpha1.AgentRun) { r.Spec.TTLSecondsAfterFinished = ptr.To[int32](60) }))
	run := h.runToSuccess("ttl")
	if !agentruns.Released(run) {
		t.Fatalf("the run with 60s to live was not released: %v", run.Labels)
	}
	releaser := &fleet.ReleaseReconciler{Client: h.r.Client, Clock: h.clock}
	key := ctrl.Request{NamespacedName: client.ObjectKeyFromObject(run)}
	res, err := releaser.Reconcile(context.Background(), key)
	if err != nil || res.RequeueAfter != time.Minute {
		t.Fatalf("the fleet's pass before the TTL: %+v, %v; want to come back in 1m", res, err)
	}
	h.clock.Step(time.Minute)
	if _, err := releaser.Reconcile(context.Background(), key); err != nil {
		t.Fatal(err)
	}
	if err := h.r.Get(context.Background(), key.NamespacedName, &agentsv1alpha1.AgentRun{}); !apierrors.IsNotFound(err) {
		t.Errorf("the released run after its TTL: %v; want it deleted", err)
	}
}

func TestTheFleetReleasesOnlyTheFinishedRunsNoHostWill(t *testing.T) {
	finished := func(name, host string, edit func(*agentsv1alpha1.AgentRun)) *agentsv1alpha1.AgentRun {
		return agentrunstest.PlainRun(name, func(r *agentsv1alpha1.AgentRun) {
			r.Status.Host, r.Status.Phase = host, agentsv1alpha1.PhaseFailed
			if edit != nil {
				edit(r)
			}
		})
	}
	present := &agentsv1alpha1.PodmanHost{}
	present.Name = "present"
	runs := map[string]bool{ // released afterwards
		"never-placed":      true,
		"host-removed":      true,
		"host-present":      false, // its host releases it
		"containers-remain": false,
		"running":           false,
		// Released by mistake: its host watches it again.
		"created-released": false,
		"released-early":   false,
	}
	h := newHarness(t, present,
		finished("never-placed", "", nil),
		finished("host-removed", "gone", nil),
		finished("host-present", "present", nil),
		finished("containers-remain", "gone", func(r *agentsv1alpha1.AgentRun) { r.Finalizers = []string{agentruns.Finalizer} }),
		agentrunstest.PlainRun("running", func(r *agentsv1alpha1.AgentRun) { r.Status.Phase = agentsv1alpha1.PhaseRunning }),
		agentrunstest.PlainRun("created-released", agentruns.MarkReleased),
		finished("released-early", "present", func(r *agentsv1alpha1.AgentRun) {
			r.Finalizers = []string{agentruns.Finalizer}
			agentruns.MarkReleased(r)
		}))
	releaser := &fleet.ReleaseReconciler{Client: h.r.Client, Clock: h.clock}
	for name, want := range runs {
		key := client.ObjectKey{Namespace: "team", Name: name}
		if _, err := releaser.Reconcile(context.Background(), ctrl.Request{NamespacedName: key}); err != nil {
			t.Fatal(err)
		}
		run := &agentsv1alpha1.AgentRun{}
		if err := h.r.Get(context.Background(), key, run); err != nil {
			t.Fatal(err)
		}
		if agentruns.Released(run) != want {
			t.Errorf("%s: released %v, want %v", name, agentruns.Released(run), want)
		}
	}
}

func TestARunIsReleasedOnceItsCallbackWent(t *testing.T) {
	h := newHarness(t, agentrunstest.PlainRun("notifies", func(r *agentsv1alpha1.AgentRun) {
		r.Spec.Notify = &agentsv1alpha1.NotifySpec{URL: "https://example.com/hook"}
	}))
	h.r.callbacks.queue = notify.NewQueue(h.clock)
	run := h.runToSuccess("notifies")
	if agentruns.Released(run) || len(run.Finalizers) != 0 {
		t.Fatalf("a run whose callback has yet to go: labels %v, finalizers %v; want it held, its container gone", run.Labels, run.Finalizers)
	}
	if err := h.r.recordCallback(context.Background(), run, notifiedCondition(run, 200, nil, 1)); err != nil {
		t.Fatal(err)
	}
	if run, _, _ = h.reconcile("notifies"); !agentruns.Released(run) {
		t.Errorf("once its callback went: labels %v; want it released", run.Labels)
	}
}

func TestAReleasedRunsSessionOutlivesTheHostsCache(t *testing.T) {
	h := sessionHarness(t, agentrunstest.PlainRun("first", nil))
	firstRunEnded(t, h, map[string]string{transcript(sessionOne): "conversation"})
	first, _, _ := h.reconcile("first")
	if !agentruns.Released(first) {
		t.Fatalf("the first run was not released: %v", first.Labels)
	}
	h.r.Client = newHostCacheView(t, h.r.Client)
	dir := filepath.Join(h.r.SessionDir, first.Status.SessionDir)
	past := h.clock.Now().Add(-2 * time.Minute)
	if err := os.Chtimes(dir, past, past); err != nil {
		t.Fatal(err)
	}
	if err := h.r.collectSessions(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("the released run's session went while the run is there: %v", err)
	}
	// A run continuing it reads it from the API server.
	if err := h.r.Create(context.Background(), continuing("second", "first", false)); err != nil {
		t.Fatal(err)
	}
	second := h.reconcileUntil("second", agentsv1alpha1.PhaseRunning)
	if spec, _ := h.podman.SpecOf(second.Status.ContainerName); !slices.Contains(spec.Command, "--resume="+sessionOne) {
		t.Errorf("the continuing run's command %q does not resume the released run's session", spec.Command)
	}
	// Once the released run is deleted, its session goes.
	if err := h.r.Delete(context.Background(), first); err != nil {
		t.Fatal(err)
	}
	if err := h.r.collectSessions(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("the deleted run's session directory is still there")
	}
}

// A log request for a released run, out of its host's cache, is told its
// container is gone (410: the client shows status.output), not that the run
// does not exist.
func TestTheLogEndpointTellsAReleasedRunsContainerIsGone(t *testing.T) {
	h := newHarness(t, agentrunstest.PlainRun("done", nil))
	h.runToSuccess("done")
	view := newHostCacheView(t, h.r.Client)
	for name, tc := range map[string]struct {
		reader client.Reader
		want   int
	}{
		"the host's cache alone": {view, http.StatusNotFound},
		"as the host reads":      {cacheThenAPI{view, h.r.Client}, http.StatusGone},
	} {
		srv := &logserver.Server{Host: agentrunstest.Host, Runtime: h.podman, Reader: tc.reader}
		req := httptest.NewRequest(http.MethodGet, logserver.Request{Namespace: "team", Name: "done"}.URL("https://host"), nil)
		req.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{{}}}} // the fleet's
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, req)
		if rec.Code != tc.want {
			t.Errorf("%s: HTTP %d (%s), want %d", name, rec.Code, strings.TrimSpace(rec.Body.String()), tc.want)
		}
	}
}
