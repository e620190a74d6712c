package egressforward

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// asBinary, in the environment, makes the test binary act as agentrun-forward
// (Main with its arguments): Start and the exec role run their own binary
// again for the serve role, and in these tests that binary is this one.
const asBinary = "EGRESSFORWARD_TEST_AS_BINARY"

func TestMain(m *testing.M) {
	if os.Getenv(asBinary) == "1" {
		os.Exit(Main(os.Args[1:], os.Stderr))
	}
	os.Exit(m.Run())
}

// binary runs the test binary as agentrun-forward with args.
func binary(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), asBinary+"=1")
	// Bounds Wait should the forwarder outlive the command (it holds the
	// command's stderr): a failure, reported instead of a hang.
	cmd.WaitDelay = ioBound
	return cmd
}

func TestProxyEnvPointsEveryToolAtTheForwarder(t *testing.T) {
	got := ProxyEnv([]string{"PATH=/bin", "https_proxy=http://elsewhere:8080", "NO_PROXY=*", "HOME=/home/agent"}, "127.0.0.1:3128")
	want := []string{
		"PATH=/bin", "HOME=/home/agent",
		"HTTPS_PROXY=http://127.0.0.1:3128", "HTTP_PROXY=http://127.0.0.1:3128",
		"https_proxy=http://127.0.0.1:3128", "http_proxy=http://127.0.0.1:3128",
		"NO_PROXY=localhost,127.0.0.1", "no_proxy=localhost,127.0.0.1",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("ProxyEnv =\n  %q\nwant\n  %q", got, want)
	}
}

// That the forwarder ends with the thread that started it is proven through
// the exec role (TestExecRunsTheCommandWithTheProxyEnvironmentAndItsExitCode),
// where the thread ends with the process: a goroutine that exits locked to
// the process's main thread does not end that thread (the runtime parks it),
// so a test here would see it only on the other threads.
func TestStartReturnsOnceListening(t *testing.T) {
	t.Setenv(asBinary, "1")
	socket := listenUnix(t, echoLines)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	addr, err := Start(os.Args[0], Config{Listen: "127.0.0.1:0", Socket: socket, MaxConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	// No retry: once Start returns, the forwarder listens.
	if got := roundTrip(t, dial(t, addr), "through the forwarder"); got != "through the forwarder" {
		t.Fatalf("the socket answered %q", got)
	}
}

// waitRefused waits until nothing listens at addr any more.
func waitRefused(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(ioBound)
	for {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return
		}
		_ = c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("the forwarder still listens at %s after the thread that started it ended", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// occupied returns a loopback address something else listens on already.
func occupied(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l.Addr().String()
}

func TestStartSaysWhyTheForwarderCouldNotListen(t *testing.T) {
	t.Setenv(asBinary, "1")
	_, err := Start(os.Args[0], Config{Listen: occupied(t), Socket: "/absent.sock", MaxConns: 4})
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("Start on a port in use = %v, want an error saying why", err)
	}
}

func TestExecRunsTheCommandWithTheProxyEnvironmentAndItsExitCode(t *testing.T) {
	socket := listenUnix(t, echoLines)
	cmd := binary("exec", "--listen", "127.0.0.1:0", "--socket", socket, "--",
		"sh", "-c", `echo "$HTTPS_PROXY $HTTP_PROXY $https_proxy $http_proxy $NO_PROXY $no_proxy"; read line; exit 3`)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the command's environment: %v (stderr %q)", err, stderr.String())
	}
	env := strings.Fields(line)
	proxy := strings.TrimPrefix(env[0], "http://")
	want := strings.Repeat("http://"+proxy+" ", 4) + "localhost,127.0.0.1 localhost,127.0.0.1"
	if strings.Join(env, " ") != want {
		t.Fatalf("the command's proxy variables = %q, want %q", line, want)
	}
	// While the command runs, its proxy is the forwarder.
	if got := roundTrip(t, dial(t, proxy), "from the command's proxy"); got != "from the command's proxy" {
		t.Fatalf("the socket answered %q", got)
	}
	_ = stdin.Close()
	err = cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 3 {
		t.Fatalf("exec's exit = %v, want the command's own code 3 (stderr %q)", err, stderr.String())
	}
	waitRefused(t, proxy)
}

func TestExecDoesNotRunTheCommandWithoutTheForwarder(t *testing.T) {
	cmd := binary("exec", "--listen", occupied(t), "--", "sh", "-c", "echo ran")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != ExitNoForwarder {
		t.Fatalf("exec with a forwarder that cannot listen = %v, want exit code %d", err, ExitNoForwarder)
	}
	if stdout.Len() != 0 {
		t.Errorf("the command ran without its forwarder: it printed %q", stdout.String())
	}
	if msg := stderr.String(); !strings.Contains(msg, "did not start") || !strings.Contains(msg, "address already in use") {
		t.Errorf("stderr = %q, want it to say the forwarder did not start and why", msg)
	}
}

func TestExecDoesNotRunTheCommandWhenNoProxyAnswers(t *testing.T) {
	cmd := binary("exec", "--listen", "127.0.0.1:0", "--socket", t.TempDir()+"/egress.sock", "--proxy-wait", "500ms", "--", "sh", "-c", "echo ran")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != ExitNoForwarder {
		t.Fatalf("exec with no proxy on its socket = %v, want exit code %d", err, ExitNoForwarder)
	}
	if stdout.Len() != 0 {
		t.Errorf("the command ran with no proxy: it printed %q", stdout.String())
	}
	if msg := stderr.String(); !strings.Contains(msg, "no egress proxy answers") {
		t.Errorf("stderr = %q, want it to say no proxy answers", msg)
	}
}

// A container started just before its host's manager restarted finds no
// proxy for a while: it waits for the new one, and runs the command only
// once the socket answers.
func TestExecWaitsForAProxyThatComesLate(t *testing.T) {
	socket := t.TempDir() + "/egress.sock"
	cmd := binary("exec", "--listen", "127.0.0.1:0", "--socket", socket, "--", "sh", "-c", "echo ran")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // the command must not have run by now
	if stdout.Len() != 0 {
		t.Fatalf("the command ran before any proxy answered: %q", stdout.String())
	}
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exec with a proxy that came late: %v\n%s", err, stderr.String())
	}
	if got := stdout.String(); got != "ran\n" {
		t.Errorf("stdout = %q, want the command's output", got)
	}
}
