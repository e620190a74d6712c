package chaos_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"
	. "github.com/onsi/ginkgo/v2"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/controller/agentruns"
	"github.com/agentrun/agentrun/test/fleet"
)

// Kill points (issue 31): the manager-kills scenario kills at random, mostly
// while runs run. These kill a host's manager at the narrow moments where a
// crash could lose or duplicate work, found from outside the manager (no hook
// in product code): on its Podman's create and start events, on Podman's
// wait for a container's exit (the died event, without the 250 ms the file
// event log's polling adds), on its own status writes (a watch on the runs),
// on its container's removal, and on the session directory it makes. The
// test kills the manager by its pid the moment it sees one. Each kill is
// counted as a hit when, once the manager is dead, the moment shows: the
// container exists and the status does not name it, the container exited and
// the status has no exit code, the status has the result and the run still
// holds the host's finalizer, the fork's session is a partial copy. Beside the
// figures every scenario counts, each run's status.output must be what its
// container printed.

// printerLines is how many lines a printer run prints.
const printerLines = 40

// printer is a run pinned to host that, once /flags/GATE exists (at once when
// gate is empty), prints printerLines lines naming it and exits 0; want is
// what it prints.
func printer(prefix, host, gate string) (run *agentsv1alpha1.AgentRun, want string) {
	token := uuid.NewString()
	var b strings.Builder
	for i := 1; i <= printerLines; i++ {
		fmt.Fprintf(&b, "%s line %d\n", token, i)
	}
	wait := ""
	if gate != "" {
		wait = fmt.Sprintf("while [ ! -e /flags/%s ]; do sleep 0.1; done; ", gate)
	}
	run = fleet.NewRun(prefix, func(r *agentsv1alpha1.AgentRun) {
		r.Spec.HostName = host
		r.Spec.Podman.Volumes = []string{flagsDir + ":/flags"}
		r.Spec.Podman.Env = map[string]agentsv1alpha1.EnvValue{"TOKEN": agentsv1alpha1.EnvValue(token)}
		r.Spec.Command = []string{"sh", "-c", wait + fmt.Sprintf(`i=1; while [ $i -le %d ]; do echo "$TOKEN line $i"; i=$((i+1)); done`, printerLines)}
	})
	return run, b.String()
}

// killPoints is what a kill-point scenario keeps beside its scenario: the
// hits, and the output each run must show.
type killPoints struct {
	*scenario
	hits    int
	outputs map[string]func(*agentsv1alpha1.AgentRun) string // by run name
}

func beginKillPoints(name string) *killPoints {
	return &killPoints{scenario: begin(name, 2*time.Minute), outputs: map[string]func(*agentsv1alpha1.AgentRun) string{}}
}

// createPrinters creates n printer runs on host behind gate.
func (k *killPoints) createPrinters(ctx context.Context, prefix, host, gate string, n int) ([]*agentsv1alpha1.AgentRun, error) {
	var runs []*agentsv1alpha1.AgentRun
	for range n {
		run, want := printer(prefix, host, gate)
		runs = append(runs, run)
		if err := k.create(ctx, run); err != nil {
			return nil, err
		}
		k.mu.Lock()
		k.outputs[run.Name] = func(*agentsv1alpha1.AgentRun) string { return want }
		k.mu.Unlock()
	}
	return runs, nil
}

// killAt SIGKILLs host's manager once moment returns (it blocks until the
// moment comes), then counts with caught the runs the kill caught at their
// moment, and waits for the successor's heartbeat (its supervisor starts it
// again 2 s after the kill, as systemd's Restart=on-failure does).
func (k *killPoints) killAt(ctx context.Context, host, what string, moment func() (string, error), caught func() (int, error)) error {
	seen, err := moment()
	if err != nil {
		return fmt.Errorf("awaiting %s: %w", what, err)
	}
	killed, err := killManager(ctx, host)
	if err != nil {
		return err
	}
	// A write the manager had sent before it died is in by now; its
	// successor writes nothing before it leads, after the leader lease.
	sleep(ctx, time.Second)
	n, err := caught()
	if err != nil {
		return err
	}
	k.mu.Lock()
	k.hits += n
	k.mu.Unlock()
	if err := waitUntil(ctx, 2*time.Minute, host+"'s heartbeat after its restart", func() bool { return heartbeatSince(ctx, host, killed) }); err != nil {
		return err
	}
	k.note("%s: %s's manager killed on %s; %d run(s) caught at the moment; heartbeat again in %s", what, host, seen, n, since(killed))
	return nil
}

// killManager SIGKILLs the host's manager from this process (the script's
// kill-host, a shell's start, would come long after the moment), leaving its
// supervisor to start it again, and waits until it is dead. It returns when
// it killed.
func killManager(ctx context.Context, host string) (time.Time, error) {
	pid, err := f.ManagerPID(host)
	if err != nil {
		return time.Time{}, err
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return time.Time{}, fmt.Errorf("killing %s's manager (pid %d): %w", host, pid, err)
	}
	killed := time.Now()
	// Dead once gone or a zombie: its connections closed as it exited.
	return killed, waitUntil(ctx, 10*time.Second, fmt.Sprintf("%s's manager (pid %d) dying", host, pid), func() bool {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		return err != nil || strings.Contains(string(stat), ") Z ")
	})
}

// onEvent waits for the first of the host's Podman events with one of the
// actions for a container of runs.
func onEvent(ctx context.Context, events <-chan fleet.ContainerEvent, runs []*agentsv1alpha1.AgentRun, actions ...string) (string, error) {
	uids := map[string]bool{}
	for _, r := range runs {
		uids[string(r.UID)] = true
	}
	timeout := time.After(3 * time.Minute)
	for {
		select {
		case e, ok := <-events:
			if !ok {
				return "", errors.New("the Podman event stream ended")
			}
			for _, a := range actions {
				if e.Action == a && uids[e.UID] {
					return fmt.Sprintf("Podman's %s event of %s", e.Action, e.Name), nil
				}
			}
		case <-timeout:
			return "", fmt.Errorf("no %v event within 3 minutes", actions)
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
}

// watchEvents follows the host's Podman events until the kill point's spec
// ends.
func watchEvents(ctx context.Context, host string) (<-chan fleet.ContainerEvent, func(), error) {
	ctx, cancel := context.WithCancel(ctx)
	events, err := f.WatchContainerEvents(ctx, host)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	return events, cancel, nil
}

// states are the runs as the API server has them now, and the host's
// containers of them, by run UID.
func (k *killPoints) states(ctx context.Context, host string) (map[string]agentsv1alpha1.AgentRun, map[string][]fleet.Container, error) {
	list, err := k.list(ctx)
	if err != nil {
		return nil, nil, err
	}
	runs := map[string]agentsv1alpha1.AgentRun{}
	for _, r := range list {
		runs[string(r.UID)] = r
	}
	cs, err := f.Containers(host)
	if err != nil {
		return nil, nil, err
	}
	byUID := map[string][]fleet.Container{}
	for _, c := range cs {
		byUID[c.UID] = append(byUID[c.UID], c)
	}
	return runs, byUID, nil
}

// caughtBy counts the runs for which the predicate holds of their status and
// containers on host.
func (k *killPoints) caughtBy(ctx context.Context, host string, runs []*agentsv1alpha1.AgentRun, at func(agentsv1alpha1.AgentRun, []fleet.Container) bool) func() (int, error) {
	return func() (int, error) {
		now, cs, err := k.states(ctx, host)
		if err != nil {
			return 0, err
		}
		n := 0
		for _, r := range runs {
			if st, ok := now[string(r.UID)]; ok && at(st, cs[string(r.UID)]) {
				n++
			}
		}
		return n, nil
	}
}

// finishKillPoints counts the scenario (finish), then checks each run's
// output and, at full scale, that the kills hit their moment.
func (k *killPoints) finishKillPoints(ctx context.Context) {
	GinkgoHelper()
	r := k.finish(ctx)
	wrong := 0
	for name, run := range k.final {
		want, ok := k.outputs[name]
		if !ok {
			continue
		}
		if w := want(run); run.Status.Output != w {
			wrong++
			k.problem("run %s: status.output is %q, its container printed %q", name, run.Status.Output, w)
		}
	}
	r.WrongOutputs, r.KillPointHits = wrong, k.hits
	if full && k.hits == 0 {
		k.problem("no kill caught a run at its moment")
	}
	k.note("%d run(s) caught at their moment; %d of %d outputs differ from what the containers printed", k.hits, wrong, len(k.outputs))
	r.Notes, r.Problems = k.notes, k.problems
	r.Passed = r.Passed && len(r.Problems) == 0
	check(r)
}

// killsPerPoint is how many kills each kill-point scenario makes.
var killsPerPoint = scale(1, 3)

// eachKill runs the kill-point scenario name: killsPerPoint kills, the i-th
// on host i%3+1, each made by kill (what names it in the notes), then the
// scenario's figures and checks.
func eachKill(ctx context.Context, name string, kill func(k *killPoints, i int, host, what string) error) {
	GinkgoHelper()
	k := beginKillPoints(name)
	k.goFn("kills", func() error {
		for i := range killsPerPoint {
			if err := kill(k, i, f.Host(i%3+1), fmt.Sprintf("kill %d/%d", i+1, killsPerPoint)); err != nil {
				return err
			}
		}
		return nil
	})
	k.finishKillPoints(ctx)
}

var _ = Describe("At the moments a crash could lose or duplicate work, agentrun", Ordered, ContinueOnFailure, func() {
	It("runs every run once when the host's manager is SIGKILLed between a container's create (or start) and the status write that records it", func(ctx SpecContext) {
		eachKill(ctx, "kill-at-create", func(k *killPoints, i int, host, what string) error {
			action := []string{"create", "start"}[i%2]
			events, stop, err := watchEvents(ctx, host)
			if err != nil {
				return err
			}
			defer stop()
			runs, err := k.createPrinters(ctx, "kp-create", host, "", 3)
			if err != nil {
				return err
			}
			// Caught: its container exists, and the status does not name it.
			caught := k.caughtBy(ctx, host, runs, func(st agentsv1alpha1.AgentRun, cs []fleet.Container) bool {
				return len(cs) > 0 && st.Status.ContainerName != strings.TrimPrefix(cs[0].Name, "/")
			})
			return k.killAt(ctx, host, what, func() (string, error) { return onEvent(ctx, events, runs, action) }, caught)
		})
	}, SpecTimeout(20*time.Minute))

	It("records every result when the host's manager is SIGKILLed between a container's exit and the write of its result", func(ctx SpecContext) {
		eachKill(ctx, "kill-at-exit", func(k *killPoints, _ int, host, what string) error {
			runs, open, err := k.gatedPrinters(ctx, "kp-exit", host)
			if err != nil {
				return err
			}
			// The moment: Podman's wait on a container returns (the died
			// event, without the event log's 250 ms polling).
			exited, err := k.awaitExits(ctx, host, runs)
			if err != nil {
				return err
			}
			if err := open(); err != nil {
				return err
			}
			// Caught: its container exited, and the status has no exit code.
			caught := k.caughtBy(ctx, host, runs, func(st agentsv1alpha1.AgentRun, cs []fleet.Container) bool {
				return len(cs) > 0 && cs[0].State == "exited" && st.Status.ExitCode == nil
			})
			return k.killAt(ctx, host, what, exited, caught)
		})
	}, SpecTimeout(20*time.Minute))

	It("lets every finished run go, its container removed, when the host's manager is SIGKILLed between the result's write and the finalizer's removal", func(ctx SpecContext) {
		eachKill(ctx, "kill-at-finalizer", func(k *killPoints, i int, host, what string) error {
			runs, open, err := k.gatedPrinters(ctx, "kp-final", host)
			if err != nil {
				return err
			}
			// The moment: the status write with the result (a watch on the
			// runs sees it), or the container's removal that follows it,
			// before the finalizer goes. Podman's remove event comes up to
			// 250 ms late (its file event log is polled): the removal is
			// looked for every 2 ms instead.
			moment := firstGone(ctx, host, runs)
			if i%2 == 0 {
				if moment, err = k.awaitResultWritten(ctx, runs); err != nil {
					return err
				}
			}
			if err := open(); err != nil {
				return err
			}
			// Caught: its result is recorded, and it still holds the host's
			// finalizer.
			caught := k.caughtBy(ctx, host, runs, func(st agentsv1alpha1.AgentRun, _ []fleet.Container) bool {
				return st.Status.ExitCode != nil && controllerutil.ContainsFinalizer(&st, agentruns.Finalizer)
			})
			return k.killAt(ctx, host, what, moment, caught)
		})
	}, SpecTimeout(20*time.Minute))

	It("forks a session whole when the host's manager is SIGKILLed while it copies the session", func(ctx SpecContext) {
		if !full {
			// The three others take about a minute of make test already.
			Skip("make chaos only: the session's 128 MiB and its copy")
		}
		eachKill(ctx, "kill-in-session-copy", func(k *killPoints, _ int, host, what string) error {
			return k.killInSessionCopy(ctx, host, what)
		})
	}, SpecTimeout(20*time.Minute))
})

// gatedPrinters creates 3 printers on host behind a gate and waits until
// they run (their status says so, naming their containers); open opens the
// gate: the containers exit together.
func (k *killPoints) gatedPrinters(ctx context.Context, prefix, host string) (runs []*agentsv1alpha1.AgentRun, open func() error, err error) {
	gate := "gate-" + uuid.NewString()
	if runs, err = k.createPrinters(ctx, prefix, host, gate, 3); err != nil {
		return nil, nil, err
	}
	if err := waitUntil(ctx, 2*time.Minute, "the runs running", func() bool {
		now, err := k.list(ctx)
		running := 0
		for _, r := range now {
			for _, ours := range runs {
				if r.UID == ours.UID && r.Status.Phase == agentsv1alpha1.PhaseRunning {
					ours.Status = r.Status
					running++
				}
			}
		}
		return err == nil && running == len(runs)
	}); err != nil {
		return nil, nil, err
	}
	return runs, func() error { return os.WriteFile(filepath.Join(flagsDir, gate), nil, 0o644) }, nil
}

// awaitExits waits on the runs' containers; the moment it returns comes
// when the first has exited.
func (k *killPoints) awaitExits(ctx context.Context, host string, runs []*agentsv1alpha1.AgentRun) (func() (string, error), error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	exited := make(chan string, len(runs))
	for _, r := range runs {
		name := r.Status.ContainerName
		go func() {
			if f.WaitExited(ctx, host, name) == nil {
				exited <- name
			}
		}()
	}
	return func() (string, error) {
		defer cancel()
		select {
		case name := <-exited:
			return "Podman's wait on " + name + " returning", nil
		case <-ctx.Done():
			return "", errors.New("no container exited within 3 minutes")
		}
	}, nil
}

// firstGone is a moment that comes when the host's Podman no longer has
// one of the runs' containers (their status names them).
func firstGone(ctx context.Context, host string, runs []*agentsv1alpha1.AgentRun) func() (string, error) {
	return func() (string, error) {
		gone := ""
		err := waitEvery(ctx, 3*time.Minute, 2*time.Millisecond, "a container's removal", func() bool {
			for _, r := range runs {
				if ok, err := f.ContainerExists(host, r.Status.ContainerName); err == nil && !ok {
					gone = r.Status.ContainerName
					return true
				}
			}
			return false
		})
		return "the removal of " + gone, err
	}
}

// awaitResultWritten watches the runs; the moment it returns comes when the
// watch sees one of runs with its result written and the host's finalizer
// still on.
func (k *killPoints) awaitResultWritten(ctx context.Context, runs []*agentsv1alpha1.AgentRun) (func() (string, error), error) {
	uids := map[string]bool{}
	for _, r := range runs {
		uids[string(r.UID)] = true
	}
	w, err := c.Watch(ctx, &agentsv1alpha1.AgentRunList{}, client.InNamespace("default"), client.MatchingLabels{scenarioLabel: k.name})
	if err != nil {
		return nil, err
	}
	return func() (string, error) {
		defer w.Stop()
		timeout := time.After(3 * time.Minute)
		for {
			select {
			case e, ok := <-w.ResultChan():
				if !ok {
					return "", errors.New("the watch on the runs ended")
				}
				r, isRun := e.Object.(*agentsv1alpha1.AgentRun)
				if e.Type != watch.Modified || !isRun || !uids[string(r.UID)] {
					continue
				}
				if r.Status.ExitCode != nil && controllerutil.ContainsFinalizer(r, agentruns.Finalizer) {
					return fmt.Sprintf("the status write of %s's result (phase %s)", r.Name, r.Status.Phase), nil
				}
			case <-timeout:
				return "", errors.New("no result written within 3 minutes")
			case <-ctx.Done():
				return "", ctx.Err()
			}
		}
	}, nil
}

// sessionAgent is the chaos fleet's default command: test/image's fake-agent
// under the name of Claude Code's CLI, for which alone a host keeps sessions,
// in flagsDir, which the runs of it (the session scenario's) mount at /flags.
const sessionAgent = "/flags/claude"

// installSessionAgent puts sessionAgent in flagsDir.
func installSessionAgent() error {
	data, err := os.ReadFile(filepath.Join(repoRoot(), "test", "image", "bin", "fake-agent"))
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(flagsDir, filepath.Base(sessionAgent)), data, 0o755)
}

// transcriptFiles and transcriptBytes size the session a fork copies: large
// enough that the copy takes a while.
const (
	transcriptFiles = 16
	transcriptBytes = 8 << 20
)

// killInSessionCopy runs a session (the default command) on host, gives it
// transcripts, forks it, and kills the manager while it copies the session
// into the fork's directory (<uid>.partial, renamed once complete). The fork
// must get the whole session.
func (k *killPoints) killInSessionCopy(ctx context.Context, host, what string) error {
	source := fleet.NewRun("kp-session", func(r *agentsv1alpha1.AgentRun) {
		r.Spec.HostName, r.Spec.Command = host, nil
		r.Spec.Podman.Volumes = []string{flagsDir + ":/flags"}
		// Counted apart: deleted only once its fork has copied it.
		r.Labels = map[string]string{scenarioLabel: k.name + "-source"}
	})
	if err := fleet.Create(ctx, c, source); err != nil {
		return err
	}
	defer func() { _ = c.Delete(context.WithoutCancel(ctx), source) }()
	if err := waitUntil(ctx, 2*time.Minute, "the session's run finishing", func() bool {
		return c.Get(ctx, client.ObjectKeyFromObject(source), source) == nil && source.Status.Phase.IsFinished()
	}); err != nil {
		return err
	}
	sessions := f.SessionDir(host)
	if source.Status.Phase != agentsv1alpha1.PhaseSucceeded || source.Status.SessionDir == "" {
		return fmt.Errorf("the session's run %s ended %s (%s), session directory %q", source.Name, source.Status.Phase, source.Status.Message, source.Status.SessionDir)
	}
	if err := writeTranscripts(filepath.Join(sessions, source.Status.SessionDir)); err != nil {
		return err
	}

	prompt := "fork of " + source.Name
	fork := fleet.NewRun("kp-fork", func(r *agentsv1alpha1.AgentRun) {
		r.Spec.Command, r.Spec.Prompt = nil, prompt
		r.Spec.Podman.Volumes = []string{flagsDir + ":/flags"}
		r.Spec.ContinueFrom, r.Spec.Fork = source.Name, true
	})
	if err := k.create(ctx, fork); err != nil {
		return err
	}
	k.mu.Lock()
	k.outputs[fork.Name] = func(run *agentsv1alpha1.AgentRun) string { return fakeAgentOutput(prompt, run) }
	k.mu.Unlock()
	partial, whole := filepath.Join(sessions, string(fork.UID)+".partial"), filepath.Join(sessions, string(fork.UID))
	moment := func() (string, error) {
		// Looked for every millisecond: the copy takes a few hundred. The
		// directory under its own name counts too: a copy made in place
		// would be caught in the middle all the same.
		err := waitEvery(ctx, 3*time.Minute, time.Millisecond, "the fork's copy", func() bool {
			_, errPartial := os.Lstat(partial)
			_, errWhole := os.Lstat(whole)
			return errPartial == nil || errWhole == nil
		})
		return "the fork's session directory appearing", err
	}
	caught := func() (int, error) {
		_, errPartial := os.Lstat(partial)
		_, errWhole := os.Lstat(whole)
		if errPartial == nil && errors.Is(errWhole, os.ErrNotExist) {
			return 1, nil
		}
		return 0, nil
	}
	if err := k.killAt(ctx, host, what, moment, caught); err != nil {
		return err
	}
	// The fork's copy is whole once it ran; its source goes after that.
	if err := waitUntil(ctx, 3*time.Minute, "the fork finishing", func() bool {
		k.mu.Lock()
		defer k.mu.Unlock()
		_, done := k.final[fork.Name]
		return done
	}); err != nil {
		return err
	}
	return sameTranscripts(filepath.Join(sessions, source.Status.SessionDir), whole)
}

// writeTranscripts writes transcriptFiles transcripts of transcriptBytes
// into a session directory's project.
func writeTranscripts(dir string) error {
	project := filepath.Join(dir, "projects", "-work-chaos")
	if err := os.MkdirAll(project, 0o700); err != nil {
		return err
	}
	line := []byte(`{"type":"user","message":"` + strings.Repeat("x", 1000) + `"}` + "\n")
	data := make([]byte, 0, transcriptBytes)
	for len(data)+len(line) <= transcriptBytes {
		data = append(data, line...)
	}
	for range transcriptFiles {
		if err := os.WriteFile(filepath.Join(project, uuid.NewString()+".jsonl"), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// sameTranscripts: the fork's session has every transcript of the source's,
// each of the same size.
func sameTranscripts(source, fork string) error {
	want, err := filepath.Glob(filepath.Join(source, "projects", "*", "*.jsonl"))
	if err != nil || len(want) == 0 {
		return fmt.Errorf("the source's transcripts in %s: %d, %v", source, len(want), err)
	}
	for _, w := range want {
		rel, _ := filepath.Rel(source, w)
		ws, err := os.Stat(w)
		if err != nil {
			return err
		}
		got, err := os.Stat(filepath.Join(fork, rel))
		if err != nil {
			return fmt.Errorf("the fork's session: %w", err)
		}
		if got.Size() != ws.Size() {
			return fmt.Errorf("the fork's session: %s has %d bytes, the source's %d", rel, got.Size(), ws.Size())
		}
	}
	return nil
}

// fakeAgentOutput is what test/image's fake-agent prints for the prompt,
// with the session ID the run reported.
func fakeAgentOutput(prompt string, run *agentsv1alpha1.AgentRun) string {
	session := ""
	if run.Status.AgentResult != nil {
		session = run.Status.AgentResult.SessionID
	}
	return fmt.Sprintf("fake-agent: working on: %s\n"+
		`{"type":"result","subtype":"success","is_error":false,"duration_ms":0,"num_turns":1,"result":"Done: %s","session_id":"%s","total_cost_usd":0.0012}`+"\n",
		prompt, prompt, session)
}
