package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/testing/freeport"
)

// A manager's memory by side. The stack's manager runs everything in one
// process (--mode=all), whose cache holds every run for the fleet; a real
// host runs --mode=host, whose cache leaves released runs out. To tell the
// two apart, the scale step starts one more manager of the same binary
// beside the stack's for each figure, in --mode=host (a host of its own,
// <host>-mem, on the same Podman) or --mode=fleet, from the stack's
// configuration file with its own ports and directories, without GOMEMLIMIT
// as the shipped units, and reads its resident memory once it is ready and
// has settled. A fresh process each time: the resident set of one that once
// held more does not shrink back.

// sideMemory starts a manager in mode and measures it after settle.
func sideMemory(ctx context.Context, k8s client.Client, cfg config, mode string) (memoryBreakdown, error) {
	m, err := startSide(ctx, k8s, cfg, mode, cfg.host+"-mem", false)
	if err != nil {
		return memoryBreakdown{}, err
	}
	defer m.stop()
	time.Sleep(cfg.settle)
	return memoryOf(m.pid, m.metricsURL)
}

// sideManager is a manager of the stack's binary, started beside the
// stack's own, ready.
type sideManager struct {
	pid int
	// dir holds its configuration file, log, sessions and egress sockets.
	dir                  string
	metricsURL, pprofURL string
	stop                 func()
}

// startSide starts a manager in mode (as host, in --mode=host) and waits
// until it is ready. profiled serves its /debug/pprof/ (pprofURL), which
// the shipped units do not. stop ends it and removes its PodmanHost and
// directory. env is added to its environment.
func startSide(ctx context.Context, k8s client.Client, cfg config, mode, host string, profiled bool, env ...string) (m *sideManager, err error) {
	dir, err := os.MkdirTemp("", "agentrun-bench-"+mode+"-")
	if err != nil {
		return nil, err
	}
	var undo []func()
	m = &sideManager{dir: dir, stop: func() {
		for _, f := range slices.Backward(undo) {
			f()
		}
	}}
	undo = append(undo, func() { _ = os.RemoveAll(dir) })
	defer func() {
		if err != nil {
			m.stop()
		}
	}()
	ports, err := freeport.Take(4)
	if err != nil {
		return nil, err
	}
	addr := func(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }
	metrics, health := addr(ports[0]), addr(ports[1])
	pprof := ""
	if profiled {
		pprof = addr(ports[3])
		m.pprofURL = "http://" + pprof + "/debug/pprof/"
	}
	m.metricsURL = "http://" + metrics + "/metrics"
	file, err := sideConfig(cfg.stackConfig, dir, metrics, health, addr(ports[2]), pprof)
	if err != nil {
		return nil, err
	}
	args := []string{"--mode=" + mode, "--config", file}
	if mode == "host" {
		args = append(args, "--host-name", host)
		// Its PodmanHost goes with it: the fleet would only declare it lost.
		undo = append(undo, func() {
			_ = k8s.Delete(context.Background(), &agentsv1alpha1.PodmanHost{ObjectMeta: metav1.ObjectMeta{Name: host}})
		})
	}
	cmd := exec.Command(cfg.managerBin, args...)
	cmd.Env = append(slices.DeleteFunc(os.Environ(), func(v string) bool { return strings.HasPrefix(v, "GOMEMLIMIT=") }),
		"KUBECONFIG="+cfg.kubeconfig)
	cmd.Env = append(cmd.Env, env...)
	logFile, err := os.Create(filepath.Join(dir, "manager.log"))
	if err != nil {
		return nil, err
	}
	undo = append(undo, func() { _ = logFile.Close() })
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting a --mode=%s manager: %w", mode, err)
	}
	m.pid = cmd.Process.Pid
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	undo = append(undo, func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	// A host is ready once its Podman answers; the fleet has no readiness
	// check, only its health. Either then settles (its caches list).
	probe := map[string]string{"host": "/readyz", "fleet": "/healthz"}[mode]
	if err := awaitReady(ctx, "http://"+health+probe, exited, time.Minute); err != nil {
		if errors.Is(err, errExited) {
			err = fmt.Errorf("%w: %v", err, waitErr)
		}
		tail, _ := os.ReadFile(logFile.Name())
		return nil, fmt.Errorf("the --mode=%s manager: %w; its log ends:\n%s", mode, err, lastLines(string(tail), 20))
	}
	return m, nil
}

// sideConfig writes the stack's configuration file with the side manager's
// own endpoints and directories into dir: its metrics, probes and log
// endpoint on the given addresses, profiling on pprof or none, no log API
// (the stack's use their ports), and sessions and egress sockets of its own (a host
// removes the session directories none of its runs refers to).
func sideConfig(stackConfig, dir, metrics, health, logs, pprof string) (string, error) {
	data, err := os.ReadFile(stackConfig)
	if err != nil {
		return "", fmt.Errorf("reading the stack's configuration: %w", err)
	}
	var c map[string]any
	if err := yaml.Unmarshal(data, &c); err != nil {
		return "", fmt.Errorf("%s: %w", stackConfig, err)
	}
	section := func(parent map[string]any, name string) map[string]any {
		s, ok := parent[name].(map[string]any)
		if !ok {
			s = map[string]any{}
			parent[name] = s
		}
		return s
	}
	section(c, "metrics")["bindAddress"] = metrics
	section(c, "health")["bindAddress"] = health
	delete(c, "pprof")
	if pprof != "" {
		section(c, "pprof")["bindAddress"] = pprof
	}
	delete(section(c, "fleet"), "logsAPI")
	h := section(c, "host")
	section(h, "logs")["bindAddress"] = logs
	section(h, "sessions")["dir"] = filepath.Join(dir, "sessions")
	section(h, "egress")["socketDir"] = filepath.Join(dir, "egress")
	out, err := yaml.Marshal(c)
	if err != nil {
		return "", err
	}
	file := filepath.Join(dir, "manager.yaml")
	return file, os.WriteFile(file, out, 0o600)
}

// errExited says the manager exited before it was ready.
var errExited = errors.New("exited before it was ready")

// awaitReady waits until url answers 200, or the process exits.
func awaitReady(ctx context.Context, url string, exited <-chan struct{}, within time.Duration) error {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return errExited
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
	}
	return fmt.Errorf("not ready within %s", within)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
