// Command simhosts runs several simulated Podman hosts in one process, for
// make scale (test/scale): each host is what the manager binary runs with
// --mode=host (host.SetupHost: claim loop, heartbeat Lease, PodmanHost,
// leader election), configured from the same kind of configuration file,
// with its own identity (the API server sees the host's ServiceAccount,
// agentrun-host-NAME, by impersonation, so RBAC and the ValidatingAdmissionPolicies
// of config/host hold it to its own runs) and its own in-memory container
// engine (internal/containers/fake) in place of Podman: a container "runs"
// for -run-for after its start, then prints a line and exits 0.
//
// It serves, on an address it picks (written to -addr-file once it
// listens): /metrics, the process's Prometheus metrics (client-go's
// rest_client_requests_total summed over its hosts, among them), and
// /creates, the containers each run had created, as JSON
// {"namespace/name": ["host", ...]} (one entry per create that succeeded).
// SIGTERM or SIGINT stops every host.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	configv1alpha1 "github.com/agentrun/agentrun/api/config/v1alpha1"
	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/config"
	"github.com/agentrun/agentrun/internal/containers"
	"github.com/agentrun/agentrun/internal/containers/fake"
	"github.com/agentrun/agentrun/internal/controller/agentruns"
	"github.com/agentrun/agentrun/internal/controller/host"
)

func main() {
	var o options
	flag.StringVar(&o.configFile, "config", "", "the hosts' configuration file (config.agentrun.dev/v1alpha1 Configuration); each host keeps its sessions and egress sockets in a folder of its own under host.sessions.dir and host.egress.socketDir")
	flag.StringVar(&o.prefix, "prefix", "sim", "host names are PREFIX-I")
	flag.IntVar(&o.first, "first", 1, "the first host's I")
	flag.IntVar(&o.count, "count", 25, "how many hosts")
	flag.DurationVar(&o.runFor, "run-for", 5*time.Second, "how long a container runs after its start")
	flag.StringVar(&o.addrFile, "addr-file", "", "where to write the address /metrics and /creates are served on")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "simhosts:", err)
		os.Exit(1)
	}
}

type options struct {
	configFile, prefix, addrFile string
	first, count                 int
	runFor                       time.Duration
}

func run(o options) error {
	cfg, err := config.Load(o.configFile)
	if err != nil {
		return err
	}
	config.Default(cfg)
	if errs := config.Validate(cfg, config.Sections{Host: true}); len(errs) > 0 {
		return fmt.Errorf("%s: %w", o.configFile, errs.ToAggregate())
	}
	// An admin's (--kubeconfig or KUBECONFIG), allowed to impersonate the
	// hosts' ServiceAccounts; read as the manager binary reads its own.
	admin, err := ctrl.GetConfig()
	if err != nil {
		return err
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := agentsv1alpha1.AddToScheme(scheme); err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	creates := &createLog{runs: map[string]map[string][]string{}}
	var wg sync.WaitGroup
	errs := make(chan error, o.count)
	for i := o.first; i < o.first+o.count; i++ {
		name := fmt.Sprintf("%s-%d", o.prefix, i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The host's containers outlive its manager, as under Podman.
			engine := &simulated{engine: fake.New(cfg.Host.Runs.DefaultImage), host: name, runFor: o.runFor, creates: creates}
			engine.Runtime = engine.engine
			if err := supervise(ctx, name, func() (ctrl.Manager, error) {
				return hostManager(cfg, name, admin, scheme, engine)
			}); err != nil {
				errs <- fmt.Errorf("host %s: %w", name, err)
				stop()
			}
		}()
	}
	if err := serve(ctx, o.addrFile, creates); err != nil {
		stop()
		wg.Wait()
		return err
	}
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}

// restarts counts the host managers that stopped on their own and were
// started again.
var restarts = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "simhosts_host_restarts_total",
	Help: "Simulated host managers that stopped (a lost leader election, say) and were started again.",
}, []string{"host"})

func init() { metrics.Registry.MustRegister(restarts) }

// supervise runs a host's manager until ctx ends, and a new one whenever it
// stops on its own, as systemd restarts agentrun-host.service (a manager
// that loses its leader election exits).
func supervise(ctx context.Context, name string, newManager func() (ctrl.Manager, error)) error {
	for {
		mgr, err := newManager()
		if err != nil {
			return err
		}
		err = mgr.Start(ctx)
		if ctx.Err() != nil {
			return nil
		}
		restarts.WithLabelValues(name).Inc()
		ctrl.Log.Error(err, "Simulated host stopped; starting it again", "host", name)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

// hostUser is the ServiceAccount hack/host-identity.sh makes for a host.
func hostUser(namespace, name string) rest.ImpersonationConfig {
	return rest.ImpersonationConfig{
		UserName: "system:serviceaccount:" + namespace + ":agentrun-host-" + name,
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"},
	}
}

// hostManager is one simulated host's manager, set up as the manager binary
// sets up --mode=host --host-name NAME from cfg, over an in-memory engine.
func hostManager(cfg *configv1alpha1.Configuration, name string, admin *rest.Config, scheme *runtime.Scheme,
	engine *simulated) (ctrl.Manager, error) {
	restCfg := rest.CopyConfig(admin)
	restCfg.Impersonate = hostUser(cfg.LeaseNamespace, name)
	le := cfg.LeaderElection
	opts := ctrl.Options{
		Scheme: scheme,
		// The process serves one /metrics for all its hosts.
		Metrics:                       metricsserver.Options{BindAddress: "0"},
		LeaderElection:                *le.LeaderElect,
		LeaderElectionID:              "agentrun-host-" + name,
		LeaderElectionNamespace:       cfg.LeaseNamespace,
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 &le.LeaseDuration.Duration,
		RenewDeadline:                 &le.RenewDeadline.Duration,
		RetryPeriod:                   &le.RetryPeriod.Duration,
		// The hosts' controllers have the same names in one process.
		Controller: ctrlconfig.Controller{SkipNameValidation: ptr.To(true)},
	}
	agentruns.UseHostCache(&opts, name)
	mgr, err := ctrl.NewManager(restCfg, opts)
	if err != nil {
		return nil, err
	}
	hc, err := host.ConfigFromFile(cfg, name, engine)
	if err != nil {
		return nil, err
	}
	hc.SessionDir = filepath.Join(hc.SessionDir, name)
	hc.EgressProxy.SocketDir = filepath.Join(hc.EgressProxy.SocketDir, name)
	if err := os.MkdirAll(hc.EgressProxy.SocketDir, 0o700); err != nil {
		return nil, err
	}
	if _, err := host.SetupHost(mgr, hc); err != nil {
		return nil, err
	}
	return mgr, nil
}

// simulated is a host's engine: containers exit by themselves runFor after
// their start, and every create that succeeds is noted in creates.
type simulated struct {
	containers.Runtime
	engine  *fake.Runtime
	host    string
	runFor  time.Duration
	creates *createLog
}

func (s *simulated) Create(ctx context.Context, spec containers.Spec) (string, error) {
	id, err := s.Runtime.Create(ctx, spec)
	if err == nil {
		s.creates.add(spec.Labels[agentsv1alpha1.LabelNamespace]+"/"+spec.Labels[agentsv1alpha1.LabelName], spec.Labels[agentsv1alpha1.LabelAttempt], s.host)
	}
	return id, err
}

func (s *simulated) Start(ctx context.Context, id string) error {
	if err := s.Runtime.Start(ctx, id); err != nil {
		return err
	}
	time.AfterFunc(s.runFor, func() {
		// A container stopped or removed before its end is not there to exit.
		_ = s.engine.Exit(id, 0, "simulated agent: done\n")
	})
	return nil
}

// createLog is, by run (namespace/name) and attempt, the host of each
// container create that succeeded.
type createLog struct {
	mu   sync.Mutex
	runs map[string]map[string][]string
}

func (l *createLog) add(run, attempt, host string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.runs[run] == nil {
		l.runs[run] = map[string][]string{}
	}
	l.runs[run][attempt] = append(l.runs[run][attempt], host)
}

func (l *createLog) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	l.mu.Lock()
	defer l.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(l.runs)
}

// serve serves /metrics and /creates on a free port of 127.0.0.1, whose
// address it writes to addrFile, until ctx ends.
func serve(ctx context.Context, addrFile string, creates *createLog) error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(metrics.Registry, promhttp.HandlerOpts{}))
	mux.Handle("/creates", creates)
	// Where a simulated host's time goes (go tool pprof http://ADDR/debug/pprof/profile).
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := os.WriteFile(addrFile, []byte(l.Addr().String()), 0o600); err != nil {
		return err
	}
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
