// Package fleet drives the local fleet for test suites: several Podman hosts
// on one machine, each in a network namespace of its own with its own Podman
// API service and manager, around one control plane and a cluster-side
// manager (hack/local-stack.sh with AGENTRUN_HOSTS; docs/fleet.md's "A local
// fleet"). The script does the work; this package runs it with a state folder
// of the suite's, and says where each host's pieces are.
//
// A suite brings a fleet up in a temporary folder and must bring it down
// again, also when it fails (in AfterSuite or a DeferCleanup): the hosts'
// namespaces, veths and Podman services outlive the test process otherwise.
//
//	f, err := fleet.Up(dir, 3) // hosts local-1, local-2, local-3 (Podman 5)
//	defer f.Down()
//	f.Cut("local-1")           // local-1 loses the API server
package fleet

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	configv1alpha1 "github.com/agentrun/agentrun/api/config/v1alpha1"
	"github.com/agentrun/agentrun/internal/testing/freeport"
)

// Options say which fleet to start. Only StateDir and Hosts are required.
type Options struct {
	// StateDir holds the fleet's state (AGENTRUN_LOCAL_DIR): kubeconfig,
	// logs, and hosts/<host>/ with each host's socket and storage.
	StateDir string
	// Hosts is how many Podman hosts (AGENTRUN_HOSTS); 0 is the cluster
	// side alone (control plane and cluster-side manager).
	Hosts int
	// HostPrefix names the hosts PREFIX-1 ... PREFIX-N (AGENTRUN_HOST_NAME;
	// default "local"). Their namespaces are agentrun-PREFIX-I: a suite that
	// may run beside a fleet make up started picks another prefix.
	HostPrefix string
	// Net is the first two octets of the fleet's addresses
	// (AGENTRUN_FLEET_NET; default "10.203"): the API server listens on
	// NET.0.1, host I has NET.I.0/30. Another fleet needs another Net.
	Net string
	// Podman5Host is the host that runs Podman 5 (AGENTRUN_PODMAN5_HOST);
	// empty: PREFIX-3; "none": no host does.
	Podman5Host string
	// MetricsPort and ProbePort are the cluster-side manager's ports on the
	// machine's 127.0.0.1 (AGENTRUN_METRICS_PORT, AGENTRUN_PROBE_PORT; each
	// host's manager uses the same ports in its own namespace). Zero: free
	// ports, so that a suite runs beside a stack make up started.
	MetricsPort, ProbePort int
	// ManagerConfig is merged over every manager's configuration file
	// (AGENTRUN_MANAGER_CONFIG, a JSON merge patch): each field it sets
	// replaces the stack's, a list as a whole.
	ManagerConfig *configv1alpha1.Configuration
	// Env is added to the script's environment (after the above).
	Env []string
}

// Fleet is a fleet started by Up or Start. Its methods run
// hack/local-stack.sh with the same settings.
type Fleet struct {
	opts Options
	root string
	env  []string
}

// Up starts a fleet of n hosts named local-1 ... local-n with state in dir.
func Up(dir string, n int) (*Fleet, error) {
	return Start(Options{StateDir: dir, Hosts: n})
}

// Start brings up the fleet o describes. It returns the Fleet also when the
// script failed, so that the caller can still bring down what started.
func Start(o Options) (*Fleet, error) {
	f, err := New(o)
	if err != nil {
		return nil, err
	}
	return f, f.Up()
}

// New describes a fleet without starting it (Up starts it; Down stops one
// that runs in the same state folder).
func New(o Options) (*Fleet, error) {
	if o.StateDir == "" || o.Hosts < 0 {
		return nil, errors.New("fleet: StateDir is required, and Hosts may not be negative")
	}
	dir, err := filepath.Abs(o.StateDir)
	if err != nil {
		return nil, err
	}
	o.StateDir = dir
	if o.HostPrefix == "" {
		o.HostPrefix = "local"
	}
	if o.Net == "" {
		o.Net = "10.203"
	}
	if o.Podman5Host == "" {
		o.Podman5Host = o.HostPrefix + "-3"
	}
	for _, port := range []*int{&o.MetricsPort, &o.ProbePort} {
		if *port == 0 {
			if *port, err = freeport.One(); err != nil {
				return nil, err
			}
		}
	}
	var patch []byte
	if o.ManagerConfig != nil {
		if patch, err = json.Marshal(o.ManagerConfig); err != nil {
			return nil, err
		}
	}
	env := append(os.Environ(),
		"AGENTRUN_LOCAL_DIR="+o.StateDir,
		"AGENTRUN_HOSTS="+strconv.Itoa(o.Hosts),
		"AGENTRUN_HOST_NAME="+o.HostPrefix,
		"AGENTRUN_FLEET_NET="+o.Net,
		"AGENTRUN_PODMAN5_HOST="+o.Podman5Host,
		"AGENTRUN_MANAGER_CONFIG="+string(patch),
		"AGENTRUN_METRICS_PORT="+strconv.Itoa(o.MetricsPort),
		"AGENTRUN_PROBE_PORT="+strconv.Itoa(o.ProbePort),
	)
	env = append(env, o.Env...)
	return &Fleet{opts: o, root: repoRoot(), env: env}, nil
}

// repoRoot is the repository's root, found from this file's location.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// script runs hack/local-stack.sh ARGS with the fleet's settings and returns
// its combined output (progress lines, and the end of a log on failure).
func (f *Fleet) script(args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(f.root, "hack", "local-stack.sh"), args...)
	cmd.Env = f.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("hack/local-stack.sh %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// Up starts what is not running (the script's up): after KillHost, it
// restarts that host's manager and nothing else.
func (f *Fleet) Up() error { _, err := f.script("up"); return err }

// Down stops every manager and Podman service of the fleet and removes its
// namespaces, veths and state. It does nothing when nothing runs.
func (f *Fleet) Down() error { _, err := f.script("down"); return err }

// KillHost SIGKILLs the host's manager (a crash); its Podman keeps running.
func (f *Fleet) KillHost(host string) error { _, err := f.script("kill-host", host); return err }

// Cut takes the machine's side of the host's veth down: the host's manager no
// longer reaches the API server; its Podman and manager keep running.
func (f *Fleet) Cut(host string) error { _, err := f.script("cut", host); return err }

// Restore brings the host's veth up again.
func (f *Fleet) Restore(host string) error { _, err := f.script("restore", host); return err }

// StopPodman stops the host's Podman API service (a Podman 4 host; the
// script refuses the Podman 5 one): its containers keep running under their
// conmon, its manager's calls fail until StartPodman (or Up).
func (f *Fleet) StopPodman(host string) error {
	_, err := f.script("stop-podman", host)
	return err
}

// StartPodman starts the host's Podman API service again.
func (f *Fleet) StartPodman(host string) error {
	_, err := f.script("start-podman", host)
	return err
}

// RestartPodman stops the host's Podman API service and starts it again.
func (f *Fleet) RestartPodman(host string) error {
	if err := f.StopPodman(host); err != nil {
		return err
	}
	return f.StartPodman(host)
}

// StopAPIServer stops the kube-apiserver; etcd keeps its data and every
// manager keeps running. Up refuses to run until StartAPIServer.
func (f *Fleet) StopAPIServer() error { _, err := f.script("stop-apiserver"); return err }

// StartAPIServer starts the kube-apiserver StopAPIServer stopped, with the
// same address, certificates and etcd, and waits until it is ready.
func (f *Fleet) StartAPIServer() error { _, err := f.script("start-apiserver"); return err }

// Options returns the settings the fleet runs with, defaults filled in.
func (f *Fleet) Options() Options { return f.opts }

// StateDir is the fleet's state folder.
func (f *Fleet) StateDir() string { return f.opts.StateDir }

// Hosts returns the hosts' names, PREFIX-1 first.
func (f *Fleet) Hosts() []string {
	hosts := make([]string, f.opts.Hosts)
	for i := range hosts {
		hosts[i] = f.Host(i + 1)
	}
	return hosts
}

// Host returns the name of host i (from 1).
func (f *Fleet) Host(i int) string { return fmt.Sprintf("%s-%d", f.opts.HostPrefix, i) }

// Podman5Host is the host that runs Podman 5, or "" when none does.
func (f *Fleet) Podman5Host() string {
	for _, h := range f.Hosts() {
		if h == f.opts.Podman5Host {
			return h
		}
	}
	return ""
}

// HostDir is the host's folder: its socket, logs, pids and storage.
func (f *Fleet) HostDir(host string) string { return filepath.Join(f.opts.StateDir, "hosts", host) }

// SessionDir is the host's host.sessions.dir, outside HostDir, which holds
// the Podman socket and so may not be mounted into runs.
func (f *Fleet) SessionDir(host string) string {
	return filepath.Join(f.opts.StateDir, "host-mounts", host, "sessions")
}

// Socket is the path of the host's Podman API socket.
func (f *Fleet) Socket(host string) string { return filepath.Join(f.HostDir(host), "podman.sock") }

// Kubeconfig is the admin kubeconfig, usable on the machine and in every
// host's namespace (its server is the API server's fleet address).
func (f *Fleet) Kubeconfig() string { return filepath.Join(f.opts.StateDir, "kubeconfig") }

// HostKubeconfig is the kubeconfig the host's manager uses.
func (f *Fleet) HostKubeconfig(host string) string {
	return filepath.Join(f.HostDir(host), "kubeconfig")
}

// ManagerLog is the host's manager's log; "" names the cluster-side one.
func (f *Fleet) ManagerLog(host string) string {
	if host == "" {
		return filepath.Join(f.opts.StateDir, "cluster-manager.log")
	}
	return filepath.Join(f.HostDir(host), "manager.log")
}

// Netns is the name of the host's network namespace (as ip netns lists it).
func (f *Fleet) Netns(host string) string { return "agentrun-" + host }

// NetnsPath is the path of the host's network namespace, for nsenter --net.
func (f *Fleet) NetnsPath(host string) string { return "/var/run/netns/" + f.Netns(host) }

// Veth is the name of the machine's side of the host's veth.
func (f *Fleet) Veth(host string) string { return "ar-" + host }

// APIServerAddress is the address the API server listens on.
func (f *Fleet) APIServerAddress() string { return f.opts.Net + ".0.1" }

// APIServer is the API server's URL (https://NET.0.1:PORT), from the state
// the control plane wrote.
func (f *Fleet) APIServer() (string, error) {
	data, err := os.ReadFile(filepath.Join(f.opts.StateDir, "stack.env"))
	if err != nil {
		return "", err
	}
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "API_SERVER="); ok {
			return strings.TrimSuffix(v, "/"), nil
		}
	}
	return "", errors.New("fleet: no API_SERVER in stack.env")
}

// InNetns returns a command that runs name with args inside the host's
// network namespace (nsenter --net: ip netns exec would remount /sys).
func (f *Fleet) InNetns(host, name string, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--net=" + f.NetnsPath(host), "--", name}, args...)...)
}

// Kubectl runs the fleet's kubectl with the admin kubeconfig and returns its
// combined output.
func (f *Fleet) Kubectl(args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(f.opts.StateDir, "bin", "kubectl"), append([]string{"--kubeconfig", f.Kubeconfig()}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Podman runs the machine's podman CLI against the host's service
// (podman --url unix://SOCKET ARGS) with stdin, and returns its combined
// output. The 4.3.1 CLI works against the Podman 5 host for what the suites
// need (secrets, run, inspect, rm), not for its events.
func (f *Fleet) Podman(host, stdin string, args ...string) (string, error) {
	cmd := exec.Command("podman", append([]string{"--url", "unix://" + f.Socket(host)}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// HTTPClient returns a client whose every request goes to the host's Podman
// API socket (use any host name in the URL: http://d/v4.0.0/libpod/...).
func (f *Fleet) HTTPClient(host string) *http.Client {
	sock := f.Socket(host)
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}},
	}
}

// ManagerPID is the pid of the host's manager as the script recorded it
// (the process may have died since).
func (f *Fleet) ManagerPID(host string) (int, error) {
	data, err := os.ReadFile(filepath.Join(f.HostDir(host), "manager.pid"))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(data)))
}

// PrintLogs writes the end of every log of the fleet (Logs) to w, each under
// a line with its path: what a failed suite shows.
func (f *Fleet) PrintLogs(w io.Writer, tailBytes int) {
	for path, tail := range f.Logs(tailBytes) {
		fmt.Fprintf(w, "--- %s (end)\n%s\n", path, tail)
	}
}

// Logs returns the end of every log of the fleet (the control plane, the
// managers, the hosts' Podman services), by path, for a failed suite's
// report.
func (f *Fleet) Logs(tailBytes int) map[string]string {
	logs := map[string]string{}
	paths := []string{filepath.Join(f.opts.StateDir, "localstack.log"), filepath.Join(f.opts.StateDir, "apiserver.log"), f.ManagerLog("")}
	for _, h := range f.Hosts() {
		for _, name := range []string{"manager.log", "podman.log", "service.log"} {
			paths = append(paths, filepath.Join(f.HostDir(h), name))
		}
	}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if len(data) > tailBytes {
			data = data[len(data)-tailBytes:]
		}
		logs[p] = string(data)
	}
	return logs
}
