// Package scripts_test holds the hack scripts that start and stop Podman API
// services to what their callers rely on: a service that is alive is never
// replaced or killed, however slow it is, and a pid that outlived its service
// never names a stranger.
//
// Both failed in CI at stop 34: under make test-podman5 the e2e suite's
// hack/podman-setup.sh took a Podman 5 service that answered late for a dead
// one, removed its socket and started a Podman 4 service there, and every suite
// using Podman 5 at that moment lost it.
package scripts_test

import (
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// root is the checkout: the scripts are run from it as the Makefile does.
func root(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the scripts drive rootful Podman services: run as root")
	}
}

// socketDir is a directory as the scripts demand for a socket: under /run,
// root's alone.
func socketDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/run", "agentrun-scripts-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// podman5Env points hack/podman5.sh at an instance of the test's own: its
// directory, its storage, and a network namespace made for it, so that
// nothing the script does (even when the protection under test is missing)
// touches the suites' instance or the machine's network.
func podman5Env(t *testing.T, dir string) []string {
	t.Helper()
	name := filepath.Base(dir)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "delete", name).Run() })
	storage := t.TempDir()
	return append(os.Environ(),
		"AGENTRUN_PODMAN5_RUN_DIR="+dir,
		"AGENTRUN_PODMAN5_STORAGE="+storage,
		"AGENTRUN_PODMAN5_NETNS=/var/run/netns/"+name)
}

// alive: the process runs (a zombie, killed and not yet waited for, does not).
func alive(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	return err == nil && !strings.Contains(string(b), ") Z ")
}

// slowService listens on socket and answers Podman's _ping only from slow on:
// a live service on a loaded machine. It returns how many pings it answered.
func slowService(t *testing.T, socket string, slow time.Duration) func() int {
	t.Helper()
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	ready := time.Now().Add(slow)
	answered := make(chan struct{}, 100)
	srv := &http.Server{
		ReadHeaderTimeout: time.Minute,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(time.Until(ready))
			_, _ = w.Write([]byte("OK"))
			answered <- struct{}{}
		}),
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return func() int { return len(answered) }
}

// sameListener fails unless the file at socket is still the one the test's
// service listens on (a script that replaced it removed it first).
func sameListener(t *testing.T, socket string, want os.FileInfo) {
	t.Helper()
	got, err := os.Lstat(socket)
	if err != nil {
		t.Fatalf("the live service's socket is gone: %v", err)
	}
	if !os.SameFile(want, got) {
		t.Fatalf("%s was replaced: another service listens there now", socket)
	}
}

// killServicesOn ends any Podman service a script started on socket (only
// when the protection under test is missing), so a failing run leaves
// nothing behind.
func killServicesOn(socket string) {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range procs {
		b, err := os.ReadFile(f)
		if err != nil || !strings.Contains(string(b), "unix://"+socket) {
			continue
		}
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(f)))
		if err == nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func TestStartKeepsAServiceThatAnswersLate(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		name string
		cmd  func(t *testing.T, dir string) *exec.Cmd
	}{{
		name: "podman-setup.sh (Podman 4)",
		cmd: func(t *testing.T, dir string) *exec.Cmd {
			cmd := exec.Command("hack/podman-setup.sh")
			cmd.Env = append(os.Environ(), "AGENTRUN_PODMAN_SOCKET="+filepath.Join(dir, "podman.sock"))
			return cmd
		},
	}, {
		name: "podman5.sh start (Podman 5)",
		cmd: func(t *testing.T, dir string) *exec.Cmd {
			cmd := exec.Command("hack/podman5.sh", "start")
			cmd.Env = podman5Env(t, dir)
			return cmd
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := socketDir(t)
			// Where both scripts put the socket in dir.
			socket := filepath.Join(dir, "podman.sock")
			// Longer than the scripts' two-second ping, so the old scripts
			// took it for dead.
			answered := slowService(t, socket, 5*time.Second)
			t.Cleanup(func() { killServicesOn(socket) })
			before, err := os.Lstat(socket)
			if err != nil {
				t.Fatal(err)
			}

			cmd := tc.cmd(t, dir)
			cmd.Dir = root(t)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("%s: %v\n%s", tc.name, err, stderr.String())
			}
			if got := strings.TrimSpace(string(out)); got != socket {
				t.Errorf("printed %q, want the socket %q", got, socket)
			}
			if strings.Contains(stderr.String(), "starting") {
				t.Errorf("started a service where one was alive:\n%s", stderr.String())
			}
			sameListener(t, socket, before)
			if answered() == 0 {
				t.Error("the script returned before the live service answered")
			}
		})
	}
}

// A pid file that outlived its service: the pid now belongs to a stranger in
// a mount namespace of its own, which stop would otherwise empty (and it
// runs podman rm --all there first).
func TestPodman5StopLeavesAStrangerWithTheRecordedPid(t *testing.T) {
	requireRoot(t)
	dir := socketDir(t)
	stranger := exec.Command("unshare", "--mount", "--propagation", "private", "--", "sleep", "300")
	if err := stranger.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = stranger.Process.Kill()
		_ = stranger.Wait()
	})
	// unshare execs sleep: the pid is the stranger's.
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(stranger.Process.Pid), "cmdline"))
		if strings.HasPrefix(string(b), "sleep\x00") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stranger did not start: %q", b)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := os.WriteFile(filepath.Join(dir, "service.pid"), []byte(strconv.Itoa(stranger.Process.Pid)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command("hack/podman5.sh", "stop")
	cmd.Dir = root(t)
	cmd.Env = podman5Env(t, dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("hack/podman5.sh stop: %v\n%s", err, out)
	}
	if !alive(stranger.Process.Pid) {
		t.Fatal("stop killed a process that only had the recorded pid")
	}
}
