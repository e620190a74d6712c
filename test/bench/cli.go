package main

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/containers/podman/v5/pkg/bindings/system"
	"golang.org/x/sys/unix"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/policy"
)

// The HTTP service agentrun replaces runs each request as one `podman run`
// process. The CLI baseline does the same for the bench's containers: the
// same image, user, limits and hardening as rawOne's, the output read from
// the process, the container removed by --rm.

// cliArgs are the arguments of `podman run` for one of the bench's
// containers running command.
func cliArgs(image, name string, command ...string) []string {
	args := []string{"run", "--rm", "--name", name, "--init", "--user", policy.DefaultUser,
		"--cap-drop", "all", "--security-opt", "no-new-privileges",
		"--memory", "512m", "--cpu-quota", "100000", "--cpu-period", "100000", "--pids-limit", "1024"}
	for _, c := range policy.DefaultCapabilities {
		args = append(args, "--cap-add", c)
	}
	return append(append(args, image), command...)
}

// cliOne runs one container through the CLI and returns its output.
func cliOne(ctx context.Context, cli, image, name string, command ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, cli, cliArgs(image, name, command...)...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s run: %w: %s", cli, err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// sameStorage refuses a CLI that would not use the storage of the API
// service the other steps use: its figures would compare two Podmans.
func sameStorage(conn context.Context, cli string) error {
	info, err := system.Info(conn, nil)
	if err != nil {
		return fmt.Errorf("reading the Podman service's info: %w", err)
	}
	out, err := exec.Command(cli, "info", "--format", "{{.Store.GraphRoot}}").Output()
	if err != nil {
		return fmt.Errorf("%s info: %w", cli, err)
	}
	if got := strings.TrimSpace(string(out)); got != info.Store.GraphRoot {
		return fmt.Errorf("%s stores containers in %s, the Podman service at the bench's socket in %s: the CLI baseline needs the same Podman (-podman-cli)",
			cli, got, info.Store.GraphRoot)
	}
	return nil
}

// cliBaseline runs n containers of `true` through the CLI, c at a time.
func cliBaseline(cfg config) (rawResult, error) {
	start := time.Now()
	err := atOnce(cfg.n, cfg.c, func(i int) error {
		_, err := cliOne(context.Background(), cfg.podmanCLI, cfg.image, fmt.Sprintf("agentrun-bench-cli-%d-%d", start.UnixNano(), i), "true")
		return err
	})
	return rawResult{wall: time.Since(start)}, err
}

// Launch latency is from the call that asks for a run (the AgentRun's
// create, the CLI's exec) to the container's first output line, one run at
// a time on an idle host. The container prints /proc/uptime first thing:
// the kernel's boot-time clock, which the bench reads too, so the line
// says when it was written, to the centisecond /proc/uptime gives.

// launchCommand prints the boot-time clock, in seconds. agentrun appends
// the prompt to a run's command: the shell takes it as its $0. The CLI
// runs the same.
var launchCommand = []string{"sh", "-c", "cat /proc/uptime", "bench"}

// uptime is the boot-time clock now.
func uptime() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts) // cannot fail for a valid clock id
	return time.Duration(ts.Nano())
}

// printedAt reads the boot-time clock the container printed.
func printedAt(output string) (time.Duration, error) {
	first, _, _ := strings.Cut(strings.TrimSpace(output), " ")
	s, err := strconv.ParseFloat(first, 64)
	if err != nil {
		return 0, fmt.Errorf("the container printed %q, not /proc/uptime", output)
	}
	return time.Duration(s * float64(time.Second)), nil
}

// launchResult is the launch latency of each path, n runs each.
type launchResult struct {
	cli, agentrun []time.Duration
}

// launchStep measures launches through the CLI and through agentrun, one at
// a time, alternating, so that both see the same machine.
func launchStep(ctx context.Context, k8s client.WithWatch, cfg config) (launchResult, error) {
	var res launchResult
	tag := fmt.Sprintf("launch-%d", time.Now().Unix())
	defer cleanup(k8s, tag)
	for i := range cfg.launchN {
		t0 := uptime()
		out, err := cliOne(ctx, cfg.podmanCLI, cfg.image, fmt.Sprintf("agentrun-bench-launch-%d-%d", time.Now().UnixNano(), i), launchCommand...)
		if err != nil {
			return res, err
		}
		at, err := printedAt(out)
		if err != nil {
			return res, err
		}
		res.cli = append(res.cli, at-t0)

		d, err := launchThroughAgentrun(ctx, k8s, cfg, tag, i)
		if err != nil {
			return res, err
		}
		res.agentrun = append(res.agentrun, d)
	}
	return res, nil
}

// launchThroughAgentrun creates one run of launchCommand and reads, from
// its recorded output, how long after the create call its container
// printed.
func launchThroughAgentrun(ctx context.Context, k8s client.WithWatch, cfg config, tag string, i int) (time.Duration, error) {
	w, err := k8s.Watch(ctx, &agentsv1alpha1.AgentRunList{}, client.InNamespace("default"), client.MatchingLabels{benchLabel: tag})
	if err != nil {
		return 0, err
	}
	defer w.Stop()
	run := &agentsv1alpha1.AgentRun{}
	run.Name, run.Namespace = fmt.Sprintf("bench-%s-%d", tag, i), "default"
	run.Labels = map[string]string{benchLabel: tag}
	run.Spec = agentsv1alpha1.AgentRunSpec{Prompt: "bench", HostName: cfg.host, Command: launchCommand[:3]}
	t0 := uptime()
	if err := k8s.Create(ctx, run); err != nil {
		return 0, fmt.Errorf("creating %s: %w", run.Name, err)
	}
	timeout := time.After(time.Minute)
	for {
		select {
		case <-timeout:
			return 0, fmt.Errorf("%s did not finish in a minute", run.Name)
		case ev, ok := <-w.ResultChan():
			if !ok {
				return 0, fmt.Errorf("the watch ended before %s finished", run.Name)
			}
			got, ok := ev.Object.(*agentsv1alpha1.AgentRun)
			if !ok || got.Name != run.Name || !got.Status.Phase.IsFinished() {
				continue
			}
			if got.Status.Phase != agentsv1alpha1.PhaseSucceeded {
				return 0, fmt.Errorf("run %s ended %s: %s", got.Name, got.Status.Phase, got.Status.Message)
			}
			at, err := printedAt(got.Status.Output)
			if err != nil {
				return 0, err
			}
			return at - t0, nil
		}
	}
}
