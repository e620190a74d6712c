package podman

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containers/podman/v5/pkg/bindings"
	"github.com/containers/podman/v5/pkg/bindings/containers"
	"github.com/containers/podman/v5/pkg/bindings/secrets"
	"k8s.io/apimachinery/pkg/util/rand"

	rt "github.com/agentrun/agentrun/internal/containers"
	"github.com/agentrun/agentrun/internal/testing/testenv"
)

// These tests drive the machine's real Podman API service (started by
// hack/podman-setup.sh) with the local test image.
const testImage = "localhost/agentrun-test:latest"

func newRuntime(t *testing.T) *Runtime {
	t.Helper()
	r := New(testenv.PodmanSocket())
	if err := r.Ping(context.Background()); err != nil {
		t.Fatalf("the Podman API service must answer (run hack/podman-setup.sh): %v", err)
	}
	return r
}

// run creates and starts a container running sh -c script with a unique
// name and label, removed when the test ends.
func run(t *testing.T, r *Runtime, script string, edit func(*rt.Spec)) (string, rt.Spec) {
	t.Helper()
	ctx := context.Background()
	s := rt.Spec{
		Name:    "agentrun-podman-test-" + rand.String(8),
		Image:   testImage,
		Command: []string{"sh", "-c", script},
		Labels:  map[string]string{"agentrun-test": t.Name()},
	}
	if edit != nil {
		edit(&s)
	}
	id, err := r.Create(ctx, s)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() { _ = r.Remove(context.Background(), id) })
	if err := r.Start(ctx, id); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return id, s
}

// waitOutput waits until the container's output ends with want.
func waitOutput(t *testing.T, r *Runtime, id, want string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err := r.Logs(context.Background(), id, 4096)
		if err != nil {
			t.Fatalf("Logs: %v", err)
		}
		if strings.HasSuffix(out, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s printed %q, never %q", id, out, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func waitExited(t *testing.T, r *Runtime, id string) rt.Container {
	t.Helper()
	return waitExitedWithin(t, r, id, 20*time.Second)
}

// waitExitedWithin waits up to d for the container to exit.
func waitExitedWithin(t *testing.T, r *Runtime, id string, d time.Duration) rt.Container {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		c, err := r.Inspect(context.Background(), id)
		// Podman 4.3.1's inspect reads the cgroup of the container's process
		// and fails when that process ends during the call ("read
		// /proc/PID/cgroup: no such process", seen in CI): the next one
		// finds the container exited.
		if err != nil && strings.Contains(err.Error(), "no such process") && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if err != nil {
			t.Fatalf("Inspect: %v", err)
		}
		if c.State == rt.StateExited {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s still %s", id, c.State)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The contract (contract_test.go) covers exit codes, Inspect and the cut of
// Logs; what only a real process shows is that both streams are kept.
func TestLogsCombineStdoutAndStderr(t *testing.T) {
	r := newRuntime(t)
	id, _ := run(t, r, "echo out; echo err >&2; echo é-end", nil)
	waitExited(t, r, id)
	out, err := r.Logs(context.Background(), id, 4096)
	if err != nil {
		t.Fatal(err)
	}
	// conmon reads stdout and stderr from two pipes, so their relative order
	// is not kept; each stream's own order is.
	if len(out) != len("out\nerr\né-end\n") || !strings.Contains(out, "out\n") || !strings.Contains(out, "err\n") || !strings.Contains(out, "é-end\n") ||
		strings.Index(out, "out\n") > strings.Index(out, "é-end\n") {
		t.Errorf("Logs = %q, want both streams", out)
	}
}

// The contract checks that Inspect and List never carry the environment;
// this checks that the secret does reach the process.
func TestEnvSecretReachesTheContainer(t *testing.T) {
	r := newRuntime(t)
	name, value := "agentrun-test-"+rand.String(8), "agentrun-secret-value-"+rand.String(16)
	addSecret(t, r, name, value)

	// The container prints a hash of what it received: the value itself must
	// appear in no command line or log.
	script := `printf %s "$TOKEN" | sha256sum | cut -d' ' -f1; echo "plain=$PLAIN"`
	id, _ := run(t, r, script, func(s *rt.Spec) {
		s.SecretEnv = map[string]string{"TOKEN": name}
		s.Env = map[string]string{"PLAIN": "visible"}
	})
	waitExited(t, r, id)
	out, err := r.Logs(context.Background(), id, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if out != fmt.Sprintf("%x\nplain=visible\n", sha256.Sum256([]byte(value))) {
		t.Fatalf("output = %q: the secret did not arrive as $TOKEN", out)
	}
}

// What Podman's own inspect output shows of an env secret differs by
// version, and so does where SecretValues reads the values from: 5.x masks
// it in inspect, listed under the secret's name (SECRET=*******), and shows
// it through the secrets API;
// 4.3.1 shows it in inspect (once the container has started) and not through
// the secrets API. Either way SecretValues gives the value, never the mask.
func TestEnvSecretInInspectAndSecretValuesByVersion(t *testing.T) {
	r := newRuntime(t)
	name, value := "agentrun-test-"+rand.String(8), "agentrun-secret-value-"+rand.String(16)
	addSecret(t, r, name, value)
	id, _ := run(t, r, "true", func(s *rt.Spec) { s.SecretEnv = map[string]string{"TOKEN": name} })
	waitExited(t, r, id)

	c, v5, err := r.connectV(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	data, err := containers.Inspect(c, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, kv := range data.Config.Env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	version := bindings.ServiceVersion(c)
	if v5 {
		// 5.x lists the secret under its own name, masked, and the variable
		// not at all.
		if env[name] != maskedValue || slices.Contains(slices.Collect(maps.Values(env)), value) {
			t.Errorf("Podman %s inspect shows %s=%q, want it masked as %q and the value nowhere",
				version, name, strings.ReplaceAll(env[name], value, "<the value>"), maskedValue)
		}
		info, err := secrets.Inspect(c, name, &secrets.InspectOptions{ShowSecret: ptr(true)})
		if err != nil || info.SecretData != value {
			t.Errorf("Podman %s secrets API with showsecret does not give the value (err %v)", version, err)
		}
	} else if env["TOKEN"] != value {
		t.Errorf("Podman %s inspect no longer shows the env secret's value as TOKEN: SecretValues's fallback for 4.x needs another source", version)
	}
	t.Logf("Podman %s: inspect shows %s=%q, TOKEN=%q", version, name,
		strings.ReplaceAll(env[name], value, "<the value>"), strings.ReplaceAll(env["TOKEN"], value, "<the value>"))

	values, err := r.SecretValues(t.Context(), id, map[string]string{"TOKEN": name})
	if err != nil {
		t.Fatal(err)
	}
	if len(values) != 1 || values[0] != value {
		t.Errorf("SecretValues gave %d values (the mask among them: %v), want exactly the secret's value", len(values), slices.Contains(values, maskedValue))
	}
}

func TestStopIsPromptWithInit(t *testing.T) {
	r := newRuntime(t)
	// A SIGTERM that reaches the init process before it has set up its
	// forwarding is lost, and the grace runs out: stop once the command runs.
	id, _ := run(t, r, "echo ready; exec sleep 300", nil)
	waitOutput(t, r, id, "ready\n")
	if err := r.Stop(context.Background(), id, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// SIGTERM ended it (128+15), not the SIGKILL that ends the grace
	// (128+9): the exit code says which, however loaded the machine.
	if c, _ := r.Inspect(context.Background(), id); c.State != rt.StateExited || c.ExitCode != 143 {
		t.Errorf("after Stop: %s, exit code %d; want exited by SIGTERM (143): with an init process SIGTERM reaches sleep", c.State, c.ExitCode)
	}
}

func TestStopKillsAfterGraceAndRemoveKillsAtOnce(t *testing.T) {
	r := newRuntime(t)
	// Children inherit the ignored SIGTERM, so only SIGKILL ends these. The
	// script says when the trap is set: a SIGTERM before that would end it.
	const script = `trap "" TERM; echo trapped; sleep 300`
	id, _ := run(t, r, script, nil)
	waitOutput(t, r, id, "trapped\n")
	start := time.Now()
	if err := r.Stop(context.Background(), id, time.Second); err != nil {
		t.Fatal(err)
	}
	// At least the grace period, and far less than the script's 300 s: the
	// SIGKILL came after the grace. (Not a speed check: a loaded machine
	// takes seconds more.)
	if took := time.Since(start); took < time.Second || took > time.Minute {
		t.Errorf("Stop with 1s grace took %s", took)
	}
	if c, _ := r.Inspect(context.Background(), id); c.State != rt.StateExited || c.ExitCode != 137 {
		t.Errorf("after Stop: %s, exit code %d; want exited by SIGKILL (137)", c.State, c.ExitCode)
	}

	// A Remove that asked the container to stop first would give it its
	// grace: the TERM handler would leave a file. Remove kills at once, so
	// the handler never runs, however long the removal takes.
	flags := t.TempDir()
	id, _ = run(t, r, `trap "touch /flags/term" TERM; echo trapped; sleep 300 & wait; wait`, func(s *rt.Spec) {
		s.Mounts = []rt.Mount{{Source: flags, Destination: "/flags"}}
	})
	waitOutput(t, r, id, "trapped\n")
	if err := r.Remove(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(flags, "term")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the container was sent SIGTERM before its removal (stat: %v); want SIGKILL at once", err)
	}
	if _, err := r.Inspect(context.Background(), id); !errors.Is(err, rt.ErrNotFound) {
		t.Errorf("Inspect after Remove = %v, want ErrNotFound", err)
	}
}

func TestSpecAppliesWorkdirMountsAndLimits(t *testing.T) {
	r := newRuntime(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "in.txt"), []byte("from host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	script := `pwd; cat /data/in.txt; touch /data/x 2>/dev/null || echo read-only; ` +
		`cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max 2>/dev/null; ` +
		`cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu.max 2>/dev/null; cat /proc/1/comm`
	id, _ := run(t, r, script, func(s *rt.Spec) {
		s.Workdir = "/tmp"
		s.Mounts = []rt.Mount{{Source: dir, Destination: "/data", Options: []string{"ro"}}}
		s.MemoryBytes = 64 << 20
		s.NanoCPUs = 500_000_000
		s.Network = "none"
	})
	waitExited(t, r, id)
	out, err := r.Logs(context.Background(), id, 4096)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"/tmp\n", "from host", "read-only", fmt.Sprint(64 << 20), "50000", "podman-init"} {
		if !strings.Contains(out, want) {
			t.Errorf("output %q lacks %q", out, want)
		}
	}
}

func TestUnreachableServiceIsUnavailable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "podman.sock")
	r := New(path)
	// A bound for the whole test, not a speed check: the bindings retry a
	// dead socket, and a loaded machine answers slowly.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := r.Ping(ctx); !errors.Is(err, rt.ErrUnavailable) || !strings.Contains(err.Error(), path) {
		t.Fatalf("Ping = %v, want ErrUnavailable naming the socket", err)
	}

	// The same Runtime works once the service answers at that path, and
	// again after the service went away and came back.
	stop := forward(t, path, testenv.PodmanSocket())
	if err := r.Ping(ctx); err != nil {
		t.Fatalf("Ping once the service answers = %v", err)
	}
	stop()
	if err := r.Ping(ctx); !errors.Is(err, rt.ErrUnavailable) {
		t.Fatalf("Ping after the service went away = %v, want ErrUnavailable", err)
	}
	forward(t, path, testenv.PodmanSocket())
	if _, err := r.Inspect(ctx, "agentrun-absent-"+rand.String(6)); !errors.Is(err, rt.ErrNotFound) {
		t.Fatalf("Inspect once the service is back = %v, want ErrNotFound", err)
	}
}

// forward serves path by relaying each connection to the real service's
// socket, until the returned stop (also run at cleanup) closes the listener
// and every relayed connection, as a stopped service would.
func forward(t *testing.T, path, target string) (stop func()) {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("unix", target)
			if err != nil {
				in.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, in, out)
			mu.Unlock()
			go func() { _, _ = io.Copy(out, in); out.Close() }()
			go func() { _, _ = io.Copy(in, out); in.Close() }()
		}
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			l.Close()
			mu.Lock()
			defer mu.Unlock()
			for _, c := range conns {
				c.Close()
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func TestTail(t *testing.T) {
	for _, tc := range []struct {
		in   string
		max  int
		want string
	}{
		{"hello", 10, "hello"},
		{"hello", 3, "llo"},
		{"aé", 1, ""},
		{"aéb", 2, "b"},
		{"", 0, ""},
		{"abc", 0, ""},
		{"one\ntwo\n", 4, "two\n"},
		{"one\ntwo\nthree\n", 12, "two\nthree\n"},
		{"a long first line\nend\n", 20, "long first line\nend\n"},
	} {
		if got := tail(tc.in, tc.max); got != tc.want {
			t.Errorf("tail(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
		}
	}
}

// A container that prints without end must not fill the host's storage, nor
// make the read of its output's end grow with what it printed: its log is
// bounded (LogMaxBytes), and what it printed last is still there.
func TestLogIsBoundedAndKeepsItsEnd(t *testing.T) {
	r := newRuntime(t)
	const limit = 1 << 20
	// 300 MiB in lines of a kilobyte, then a last line.
	script := `yes "$(printf %01023d 0)" | head -c 314572800; echo END-OF-OUTPUT`
	id, _ := run(t, r, script, func(s *rt.Spec) { s.LogMaxBytes = limit })
	c := waitExitedWithin(t, r, id, 5*time.Minute)
	if c.ExitCode != 0 {
		t.Fatalf("exit code %d", c.ExitCode)
	}
	all, err := r.Logs(context.Background(), id, 1<<30)
	if err != nil {
		t.Fatalf("Logs: %v", err)
	}
	if len(all) > limit {
		t.Fatalf("the log holds %d bytes, more than its bound of %d", len(all), limit)
	}
	if !strings.HasSuffix(all, "\nEND-OF-OUTPUT\n") && all != "END-OF-OUTPUT\n" {
		t.Fatalf("the log's end is lost: %q", all[max(0, len(all)-100):])
	}
}

// A follow sends every line up to the container's exit, the one printed
// right before it too: Podman's own follow may stop without it (see
// StreamLogs), which a fresh clone's e2e run saw once on Podman 5. Several
// containers at once, each printing its last line as it exits, make the
// race Podman loses likely; the assertion holds whatever the timing.
func TestFollowSendsTheLastLineBeforeTheExit(t *testing.T) {
	r := newRuntime(t)
	const followers = 6
	errs := make(chan error, followers)
	for i := range followers {
		id, _ := run(t, r, fmt.Sprintf("echo first %d; sleep 1; echo last %d", i, i), nil)
		go func() {
			var out strings.Builder
			if err := r.StreamLogs(context.Background(), id, rt.LogOptions{Follow: true, TailLines: -1}, &out); err != nil {
				errs <- err
				return
			}
			if want := fmt.Sprintf("first %d\nlast %d\n", i, i); out.String() != want {
				errs <- fmt.Errorf("followed %q, want %q", out.String(), want)
				return
			}
			errs <- nil
		}()
	}
	for range followers {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
