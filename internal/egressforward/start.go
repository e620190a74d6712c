package egressforward

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// readyTimeout bounds the wait for the forwarder to listen. It only guards
// against a forwarder that hangs: one that fails exits, and its exit ends the
// wait at once.
const readyTimeout = 30 * time.Second

// readyPrefix starts the line a forwarder writes on its readiness pipe once
// it listens, followed by the address it listens on; anything else it writes
// there is why it could not.
const readyPrefix = "ready "

// Start starts the forwarder (the serve role of the binary at self) as a
// process of its own and returns the address it listens on, once it listens.
// The forwarder runs in a session of its own, so that signals meant for the
// command's process group do not reach it, and is killed when the thread
// that started it ends: the caller locks its goroutine to its thread and
// replaces the process from that thread (Exec), so the forwarder lives
// exactly as long as the command.
func Start(self string, c Config) (string, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return "", err
	}
	defer r.Close()
	cmd := exec.Command(self, "serve", "--listen", c.Listen, "--socket", c.Socket,
		"--max-conns", strconv.Itoa(c.MaxConns), "--ready-fd", "3")
	cmd.ExtraFiles = []*os.File{w} // fd 3 in the child
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	err = cmd.Start()
	// Closed here before reading, so that the read ends when the child
	// closes its copy: after it said it is ready, or by exiting.
	_ = w.Close()
	if err != nil {
		return "", err
	}
	addr, err := awaitReady(r)
	if err != nil {
		_ = cmd.Process.Kill()
		_, _ = cmd.Process.Wait()
		return "", err
	}
	return addr, nil
}

// awaitReady reads what the forwarder writes on its readiness pipe until it
// closes it, and returns the address it listens on.
func awaitReady(r *os.File) (string, error) {
	if err := r.SetReadDeadline(time.Now().Add(readyTimeout)); err != nil {
		return "", err
	}
	msg, err := io.ReadAll(io.LimitReader(r, 4096))
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return "", fmt.Errorf("the forwarder did not listen within %s", readyTimeout)
	}
	if err != nil {
		return "", err
	}
	line := strings.TrimSpace(string(msg))
	if addr, ok := strings.CutPrefix(line, readyPrefix); ok {
		return addr, nil
	}
	if line == "" {
		return "", errors.New("the forwarder exited before it listened")
	}
	return "", errors.New(line)
}

// signalReady tells the process that started the forwarder (Start) where it
// listens, on the pipe at fd, and closes it.
func signalReady(fd int, addr string) error {
	f := os.NewFile(uintptr(fd), "ready")
	_, err := io.WriteString(f, readyPrefix+addr+"\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// signalFailure tells the process that started the forwarder why it could
// not listen, on the pipe at fd.
func signalFailure(fd int, cause error) {
	f := os.NewFile(uintptr(fd), "ready")
	_, _ = io.WriteString(f, cause.Error()+"\n")
	_ = f.Close()
}

// proxyVariables are the variables the agent's tools read their proxy from:
// curl, git, npm and Go read the lower-case names, Node and others the
// upper-case ones.
var proxyVariables = []string{"HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"}

// noProxyVariables name what must not go through the proxy: loopback,
// which the proxy would refuse anyway, and the forwarder itself.
var noProxyVariables = []string{"NO_PROXY", "no_proxy"}

// ProxyEnv returns environ with the proxy variables pointing at the forwarder
// at addr, replacing any the command was given: with no route but the
// forwarder, a proxy named elsewhere could not be reached anyway.
func ProxyEnv(environ []string, addr string) []string {
	set := map[string]string{}
	for _, name := range proxyVariables {
		set[name] = "http://" + addr
	}
	for _, name := range noProxyVariables {
		set[name] = "localhost,127.0.0.1"
	}
	env := make([]string, 0, len(environ)+len(set))
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if _, replaced := set[name]; !replaced {
			env = append(env, kv)
		}
	}
	for _, name := range append(append([]string{}, proxyVariables...), noProxyVariables...) {
		env = append(env, name+"="+set[name])
	}
	return env
}
