package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/procfs"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/test/fleet"
)

// stack is a step's running stack: its API server, the cluster-side
// manager, and what the hosts wrote while idle.
type stack struct {
	cfg config
	f   *fleet.Fleet
	k8s client.WithWatch
	// fleetMetrics is the cluster-side manager's /metrics; fleetPID its
	// process.
	fleetMetrics string
	fleetPID     int
	// controlPlanePID is the localstack's, whose children are etcd and
	// kube-apiserver.
	controlPlanePID int
	// idleHosts and idleFleet are the writes per second, by verb, of the
	// hosts (all of them) and of the fleet while no run exists.
	idleHosts, idleFleet writes
	// pprofPort serves the fleet's /debug/pprof on 127.0.0.1.
	pprofPort int
	// sockets is the hosts' egress socket directory.
	sockets string
}

func newStack(f *fleet.Fleet, cfg config) (*stack, error) {
	restCfg, err := clientcmd.BuildConfigFromFlags("", f.Kubeconfig())
	if err != nil {
		return nil, err
	}
	// As fast as the API server takes them: its priority and fairness is
	// the only limit.
	restCfg.QPS = -1
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := agentsv1alpha1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	k8s, err := client.NewWithWatch(restCfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, err
	}
	s := &stack{cfg: cfg, f: f, k8s: k8s, fleetMetrics: fmt.Sprintf("http://127.0.0.1:%d/metrics", f.Options().MetricsPort)}
	if s.fleetPID, err = pidIn(filepath.Join(f.StateDir(), "cluster-manager.pid")); err != nil {
		return nil, err
	}
	if s.controlPlanePID, err = pidIn(filepath.Join(f.StateDir(), "localstack.pid")); err != nil {
		return nil, err
	}
	return s, nil
}

// pidIn reads the pid hack/local-stack.sh recorded in file.
func pidIn(file string) (int, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(data)))
}

// installIdentities makes what a cluster gives Podman hosts, as
// docs/deploy.md installs it: the reconciler's ClusterRole from
// config/default, config/host (the leader election Role and the
// ValidatingAdmissionPolicies), and each host's account from
// hack/host-identity.sh.
func (s *stack) installIdentities(ctx context.Context, names []string) error {
	defaults, err := s.kubectl(nil, "kustomize", filepath.Join(s.cfg.root, "config", "default"))
	if err != nil {
		return err
	}
	decoder := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(defaults), 4096)
	found := false
	for {
		var u unstructured.Unstructured
		if err := decoder.Decode(&u.Object); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return err
		}
		if u.GetKind() == "ClusterRole" && u.GetName() == "agentrun-manager-role" {
			if err := s.k8s.Create(ctx, &u); err != nil {
				return err
			}
			found = true
		}
	}
	if !found {
		return errors.New("config/default has no ClusterRole agentrun-manager-role")
	}
	if _, err := s.kubectl(nil, "apply", "-k", filepath.Join(s.cfg.root, "config", "host")); err != nil {
		return err
	}
	identities, err := exec.Command(filepath.Join(s.cfg.root, "hack", "host-identity.sh"), names...).Output()
	if err != nil {
		return fmt.Errorf("hack/host-identity.sh: %w", err)
	}
	_, err = s.kubectl(identities, "apply", "-f", "-")
	return err
}

// kubectl runs the stack's kubectl with stdin and returns its output.
func (s *stack) kubectl(stdin []byte, args ...string) ([]byte, error) {
	cmd := exec.Command(filepath.Join(s.f.StateDir(), "bin", "kubectl"), append([]string{"--kubeconfig", s.f.Kubeconfig()}, args...)...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return out, nil
}

// writes are API-server writes by verb (POST, PUT, PATCH, DELETE).
type writes map[string]float64

func (w writes) total() (t float64) {
	for _, v := range w {
		t += v
	}
	return t
}

func (w writes) minus(o writes) writes {
	out := writes{}
	for k, v := range w {
		out[k] = v - o[k]
	}
	return out
}

func (w writes) scaled(f float64) writes {
	out := writes{}
	for k, v := range w {
		out[k] = v * f
	}
	return out
}

func (w writes) String() string {
	var parts []string
	for _, verb := range []string{"POST", "PUT", "PATCH", "DELETE"} {
		if w[verb] != 0 {
			parts = append(parts, fmt.Sprintf("%s %.2f", verb, w[verb]))
		}
	}
	return fmt.Sprintf("%.2f (%s)", w.total(), strings.Join(parts, ", "))
}

// counters are the writes of the fleet and of the hosts (all processes
// together) so far, and the CPU time of each part of the stack (fleet,
// hosts, kube-apiserver, etcd), at one moment.
type counters struct {
	at           time.Time
	fleet, hosts writes
	placement    placementWork
	cpu          map[string]float64
	// hostRestarts is how many host managers stopped (a lost leader
	// election) and were started again.
	hostRestarts float64
}

func (s *stack) counters(ctx context.Context, procs []*simProcess) (counters, error) {
	c := counters{at: time.Now(), hosts: writes{}}
	fleet, err := scrape(ctx, s.fleetMetrics)
	if err != nil {
		return c, err
	}
	c.fleet, c.placement = writesOf(fleet), placementOf(fleet)
	for _, p := range procs {
		families, err := scrape(ctx, "http://"+p.addr+"/metrics")
		if err != nil {
			return c, err
		}
		for k, v := range writesOf(families) {
			c.hosts[k] += v
		}
		for _, m := range families["simhosts_host_restarts_total"].GetMetric() {
			c.hostRestarts += m.GetCounter().GetValue()
		}
	}
	c.cpu, err = s.cpuSeconds(procs)
	return c, err
}

// cpuSeconds is the CPU time used so far by the fleet, the hosts' processes
// together, and the control plane's kube-apiserver and etcd (the
// localstack's children).
func (s *stack) cpuSeconds(procs []*simProcess) (map[string]float64, error) {
	out := map[string]float64{}
	add := func(part string, pid int) error {
		proc, err := procfs.NewProc(pid)
		if err != nil {
			return err
		}
		st, err := proc.Stat()
		if err != nil {
			return err
		}
		out[part] += st.CPUTime()
		return nil
	}
	if err := add("fleet", s.fleetPID); err != nil {
		return nil, s.fleetRestarted(err)
	}
	for _, p := range procs {
		if err := add("hosts", p.cmd.Process.Pid); err != nil {
			return nil, err
		}
	}
	all, err := procfs.AllProcs()
	if err != nil {
		return nil, err
	}
	for _, p := range all {
		st, err := p.Stat()
		if err != nil || st.PPID != s.controlPlanePID {
			continue
		}
		out[st.Comm] += st.CPUTime()
	}
	return out, nil
}

// fleetRestarted explains a failure to read the cluster-side manager's
// process: when its supervisor started another (hack/supervise.sh), the
// step's counters and CPU would mix two processes, so the step fails and
// says so.
func (s *stack) fleetRestarted(err error) error {
	file := filepath.Join(s.f.StateDir(), "cluster-manager.pid")
	if now, perr := pidIn(file); perr == nil && now != s.fleetPID {
		return fmt.Errorf("the cluster-side manager restarted during the step (pid %d, now %d; its log: %s): its figures would mix two processes: %w",
			s.fleetPID, now, filepath.Join(s.f.StateDir(), "cluster-manager.log"), err)
	}
	return err
}

// scrape reads a /metrics.
func scrape(ctx context.Context, url string) (map[string]*dto.MetricFamily, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", url, err)
	}
	return families, nil
}

// writesOf is client-go's rest_client_requests_total summed by method,
// without GET (reads).
func writesOf(families map[string]*dto.MetricFamily) writes {
	out := writes{}
	for _, m := range families["rest_client_requests_total"].GetMetric() {
		if method := labelOf(m, "method"); method != http.MethodGet {
			out[method] += m.GetCounter().GetValue()
		}
	}
	return out
}

// placementWork is the fleet's placement controller's work so far: its
// passes, and the time they took and waited in its queue, in seconds.
type placementWork struct {
	passes, work, queued float64
}

func placementOf(families map[string]*dto.MetricFamily) (p placementWork) {
	for _, m := range families["controller_runtime_reconcile_time_seconds"].GetMetric() {
		if labelOf(m, "controller") == "placement" {
			p.passes += float64(m.GetHistogram().GetSampleCount())
			p.work += m.GetHistogram().GetSampleSum()
		}
	}
	for _, m := range families["workqueue_queue_duration_seconds"].GetMetric() {
		if labelOf(m, "name") == "placement" {
			p.queued += m.GetHistogram().GetSampleSum()
		}
	}
	return p
}

func labelOf(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// fleetMemory is the cluster-side manager's resident memory now and its
// peak so far, in MiB.
func (s *stack) fleetMemory() (now, peak float64, err error) {
	proc, err := procfs.NewProc(s.fleetPID)
	if err != nil {
		return 0, 0, err
	}
	st, err := proc.NewStatus()
	if err != nil {
		return 0, 0, err
	}
	const mib = 1 << 20
	return float64(st.VmRSS) / mib, float64(st.VmHWM) / mib, nil
}
