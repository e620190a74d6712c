// Package fleet holds the fleet's controllers: placement of unpinned runs, the
// hosts' lifecycle (heartbeats, failing over a lost host's runs), the run recorder, the
// releaser of finished runs (TTLs of the runs hosts no longer watch) and the
// collector of old run records. They run once per cluster, in the cluster's
// manager (--mode=webhook,fleet, or all), elected among its replicas; the
// reconciler of each Podman host is in internal/controller/host, and what both
// need in internal/controller/agentruns.
package fleet

import (
	"cmp"
	"time"

	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/agentrun/agentrun/internal/controller/agentruns"
	"github.com/agentrun/agentrun/internal/controller/fleet/kueue"
	"github.com/agentrun/agentrun/internal/kueueapi"
)

// FleetConfig is what the fleet's controllers (placement and host lifecycle)
// are set up from. They run once per cluster, not per host: in the cluster's
// manager (--mode=webhook,fleet), elected among its replicas.
type FleetConfig struct {
	// LeaseNamespace holds the hosts' heartbeat Leases. Zero values mean
	// the defaults (DefaultLeaseNamespace, DefaultHostGracePeriod, 1m).
	LeaseNamespace string
	// GracePeriod is how long a host whose Lease gives no duration may go
	// without renewing it before it is declared lost; every other host's
	// grace period is its Lease's spec.leaseDurationSeconds, which the host
	// writes from its own setting.
	GracePeriod time.Duration
	// PinnedRunsWait keeps the runs pinned to a lost host waiting for it,
	// instead of failing them.
	PinnedRunsWait bool
	// RecheckPeriod bounds how long an unschedulable run waits when nothing
	// watched changes.
	RecheckPeriod time.Duration
	// RunRecordRetention is how long an AgentRunRecord outlives the last
	// run of its name and manifest; 0 keeps no records, and deletes those
	// left from before, which hosts would otherwise still honour. It is
	// the fleet's alone: hosts hold every run for the recorder, which
	// writes a record or not.
	RunRecordRetention time.Duration
	// Kueue: Kueue admits the runs labelled kueue.x-k8s.io/queue-name
	// (internal/controller/fleet/kueue); Kueue's CRDs must be installed.
	Kueue bool
	Clock clock.Clock
}

// SetupFleet adds the fleet's scheduler, host lifecycle controller, run
// recorder, releaser of finished runs and run record collector to mgr, which must have been made with CacheOptions;
// with cfg.Kueue, also the controller that keeps queued runs and their Kueue
// Workloads in step.
func SetupFleet(mgr ctrl.Manager, cfg FleetConfig) error {
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	cfg.LeaseNamespace = cmp.Or(cfg.LeaseNamespace, agentruns.DefaultLeaseNamespace)
	cfg.GracePeriod = cmp.Or(cfg.GracePeriod, agentruns.DefaultHostGracePeriod)
	cfg.RecheckPeriod = cmp.Or(cfg.RecheckPeriod, time.Minute)
	if err := agentruns.IndexQueues(mgr); err != nil {
		return err
	}
	recorder := mgr.GetEventRecorder("agentrun-fleet")
	if err := (&PlacementReconciler{
		Client: mgr.GetClient(), Recorder: recorder, RecheckPeriod: ctrl.Result{RequeueAfter: cfg.RecheckPeriod}, Clock: cfg.Clock,
	}).SetupWithManager(mgr); err != nil {
		return err
	}
	if err := (&BudgetReconciler{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Clock: cfg.Clock}).SetupWithManager(mgr); err != nil {
		return err
	}
	if err := (&HostLifecycleReconciler{
		Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Recorder: recorder,
		LeaseNamespace: cfg.LeaseNamespace, GracePeriod: cfg.GracePeriod, PinnedRunsWait: cfg.PinnedRunsWait, Clock: cfg.Clock,
	}).SetupWithManager(mgr); err != nil {
		return err
	}
	// Without records too: it removes the RecordFinalizer of hosts that
	// keep them.
	if err := (&RunRecorderReconciler{
		Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Retention: cfg.RunRecordRetention,
	}).SetupWithManager(mgr); err != nil {
		return err
	}
	if err := (&ReleaseReconciler{Client: mgr.GetClient(), Clock: cfg.Clock}).SetupWithManager(mgr); err != nil {
		return err
	}
	if cfg.Kueue {
		if err := kueueapi.AddToScheme(mgr.GetScheme()); err != nil {
			return err
		}
		if err := (&kueue.Reconciler{
			Client: mgr.GetClient(), Recorder: recorder, Clock: cfg.Clock, RecheckPeriod: cfg.RecheckPeriod,
		}).SetupWithManager(mgr); err != nil {
			return err
		}
	}
	return (&RunRecordReconciler{Client: mgr.GetClient(), Retention: cfg.RunRecordRetention, Clock: cfg.Clock}).SetupWithManager(mgr)
}
