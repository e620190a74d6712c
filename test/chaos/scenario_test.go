package chaos_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/test/fleet"
)

// c is the suite's client of the fleet's API server.
var c client.WithWatch

func k8sClient() client.WithWatch {
	GinkgoHelper()
	cl, err := f.Client()
	Expect(err).NotTo(HaveOccurred())
	return cl
}

// scenarioLabel marks each run with its scenario, so that a scenario lists
// its own runs.
const scenarioLabel = "chaos.agentrun.dev/scenario"

// runTimeout is every run's spec.timeout: a run counts as stuck when it has
// not finished within it and a minute, after the time it may queue for a
// slot (the scenario's queue).
const runTimeout = 3 * time.Minute

// figures are one scenario's results, a row of the table.
type figures struct {
	Scenario  string `json:"scenario"`
	Runs      int    `json:"runs"`
	Succeeded int    `json:"succeeded"`
	// DuplicateContainers: containers created beyond the first for one
	// attempt of one run, from the create events of every host's Podman.
	DuplicateContainers int `json:"duplicate_containers"`
	// LostResults: runs whose last attempt's container exited (a died event)
	// without that exit code in status.exitCode, or that ended
	// ContainerLost.
	LostResults int `json:"lost_results"`
	// Orphans: agentrun containers of the scenario's runs left on a host
	// after the runs were deleted and their finalizers done.
	Orphans int `json:"orphans"`
	// Stuck: runs not finished within their timeout and a minute (after
	// their time in the queue), or whose deletion never completed.
	Stuck int `json:"stuck"`
	// Panics: lines with "panic" that the managers logged meanwhile.
	Panics int `json:"panics"`
	// Unchecked: connections that reached a destination the runs may not
	// reach (the simulated internet's servers count what they accepted):
	// each went past the egress proxy's check.
	Unchecked int `json:"unchecked_connections"`
	// Failovers: attempts that were given to another host after theirs was
	// declared lost (status.disruptedAttempts): legal, shown for context.
	Failovers int `json:"failovers"`
	// Reruns: attempts whose container exited 0 and yet were followed by
	// another attempt (their host was declared lost before it recorded the
	// exit): legal under failover, shown for context.
	Reruns int `json:"reruns"`
	// WrongOutputs: runs whose status.output is not what their container
	// printed (the kill-point scenarios, whose runs print what they know).
	WrongOutputs int `json:"wrong_outputs,omitempty"`
	// KillPointHits: the kill-point scenarios' runs that a kill caught at
	// the moment it aimed at.
	KillPointHits int      `json:"kill_point_hits,omitempty"`
	Seconds       float64  `json:"seconds"`
	Passed        bool     `json:"passed"`
	Problems      []string `json:"problems,omitempty"`
	Notes         []string `json:"notes,omitempty"`
}

func (r *figures) duration() time.Duration {
	return (time.Duration(r.Seconds*float64(time.Second)) + 50*time.Millisecond).Round(100 * time.Millisecond)
}

// scenario drives one scenario: it creates the runs, records each one's
// status once it finished and deletes it at once (so that finalizers run
// while the faults go on), and then counts.
type scenario struct {
	name  string
	queue time.Duration
	start time.Time
	// since is when Podman's events are read from (a second early: they
	// are read by whole seconds).
	since time.Time
	logs  map[string]int64

	mu    sync.Mutex
	runs  map[string]*agentsv1alpha1.AgentRun // as created, by name
	final map[string]*agentsv1alpha1.AgentRun // as last seen once finished
	stuck map[string]string                   // why, by name
	// wantAttempts are the attempts a run must end with (when not failed
	// over), by name.
	wantAttempts map[string]int32
	notes        []string
	problems     []string
	wg           sync.WaitGroup
	errs         []error
	// creates are the hosts that created a container for each attempt, once
	// finish has read the events.
	creates map[fleet.AttemptKey][]string
}

// begin starts a scenario whose runs may wait up to queue for a slot.
func begin(name string, queue time.Duration) *scenario {
	s := &scenario{name: name, queue: queue, start: time.Now(), since: time.Now().Add(-time.Second), logs: map[string]int64{},
		runs: map[string]*agentsv1alpha1.AgentRun{}, final: map[string]*agentsv1alpha1.AgentRun{}, stuck: map[string]string{},
		wantAttempts: map[string]int32{}}
	for _, p := range managerLogs() {
		if st, err := os.Stat(p); err == nil {
			s.logs[p] = st.Size()
		}
	}
	say("chaos: scenario %s starting at %s", name, s.start.UTC().Format(time.TimeOnly))
	// Whatever happens to the spec, its runs go (the next scenario starts
	// clean).
	DeferCleanup(func(ctx SpecContext) {
		_ = c.DeleteAllOf(ctx, &agentsv1alpha1.AgentRun{}, client.InNamespace("default"), client.MatchingLabels{scenarioLabel: name})
	})
	return s
}

func managerLogs() []string {
	paths := []string{f.ManagerLog("")}
	for _, h := range f.Hosts() {
		paths = append(paths, f.ManagerLog(h))
	}
	return paths
}

// note says what happened, for the table's notes; problem says what fails
// the scenario.
func (s *scenario) note(format string, args ...any) { s.record(&s.notes, "", format, args...) }

func (s *scenario) problem(format string, args ...any) {
	s.record(&s.problems, "PROBLEM: ", format, args...)
}

func (s *scenario) record(to *[]string, tag, format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	s.mu.Lock()
	*to = append(*to, line)
	s.mu.Unlock()
	say("chaos:   %s: %s%s", s.name, tag, line)
}

// goFn runs fn beside the scenario (a fault, a creator); finish waits for
// it, and its error fails the scenario.
func (s *scenario) goFn(what string, fn func() error) {
	s.wg.Add(1)
	go func() {
		defer GinkgoRecover()
		defer s.wg.Done()
		if err := fn(); err != nil {
			s.mu.Lock()
			s.errs = append(s.errs, fmt.Errorf("%s: %w", what, err))
			s.mu.Unlock()
		}
	}()
}

// create creates the run with the scenario's label and runTimeout, retrying
// for a minute while the API server does not answer.
func (s *scenario) create(ctx context.Context, run *agentsv1alpha1.AgentRun) error {
	if run.Labels == nil {
		run.Labels = map[string]string{}
	}
	run.Labels[scenarioLabel] = s.name
	if run.Spec.Timeout == nil {
		run.Spec.Timeout = &metav1.Duration{Duration: runTimeout}
	}
	deadline := time.Now().Add(time.Minute)
	for {
		err := fleet.Create(ctx, c, run)
		if err == nil {
			break
		}
		if apierrors.IsInvalid(err) || apierrors.IsAlreadyExists(err) || time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("creating run %s: %w", run.Name, err)
		}
		sleep(ctx, time.Second)
	}
	s.mu.Lock()
	s.runs[run.Name] = run
	s.mu.Unlock()
	return nil
}

// createAll creates the runs, 8 at a time.
func (s *scenario) createAll(ctx context.Context, runs []*agentsv1alpha1.AgentRun) error {
	var wg sync.WaitGroup
	errs := make([]error, len(runs))
	sem := make(chan struct{}, 8)
	for i, r := range runs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			errs[i] = s.create(ctx, r)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// list returns the scenario's runs as the API server has them now.
func (s *scenario) list(ctx context.Context) ([]agentsv1alpha1.AgentRun, error) {
	l := &agentsv1alpha1.AgentRunList{}
	if err := c.List(ctx, l, client.InNamespace("default"), client.MatchingLabels{scenarioLabel: s.name}); err != nil {
		return nil, err
	}
	return l.Items, nil
}

// created is how many runs the scenario created so far.
func (s *scenario) created() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.runs)
}

// unfinished are the names of the runs created and not finished yet.
func (s *scenario) unfinished() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for name := range s.runs {
		if _, done := s.final[name]; done {
			continue
		}
		if _, stuck := s.stuck[name]; stuck {
			continue
		}
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// waitUntil polls cond (every half second) until it holds, or fails after
// within.
func waitUntil(ctx context.Context, within time.Duration, what string, cond func() bool) error {
	return waitEvery(ctx, within, 500*time.Millisecond, what, cond)
}

// waitEvery polls cond every interval until it holds, or fails after within.
func waitEvery(ctx context.Context, within, interval time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not happen within %s", what, within)
		}
		if !sleep(ctx, interval) {
			return ctx.Err()
		}
	}
	return nil
}

// sleep waits d, or less when ctx ends; it says whether it waited d.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// between is a random duration in [lo, hi).
func between(lo, hi time.Duration) time.Duration { return lo + rand.N(hi-lo) }

// onHost counts the scenario's runs the host holds now by what they are
// doing: the point of a run's life a fault on that host hits.
func (s *scenario) onHost(ctx context.Context, host string) string {
	runs, err := s.list(ctx)
	if err != nil {
		return "runs unknown: " + err.Error()
	}
	counts := map[string]int{}
	for _, r := range runs {
		if r.Status.Host != host {
			continue
		}
		switch {
		case r.DeletionTimestamp != nil:
			counts["finalizing"]++
		case r.Status.Phase.IsFinished():
			counts["finished"]++
		case r.Status.Phase == agentsv1alpha1.PhaseRunning:
			counts["running"]++
		default:
			counts["claimed"]++
		}
	}
	var parts []string
	for _, k := range []string{"claimed", "running", "finished", "finalizing"} {
		if counts[k] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[k], k))
		}
	}
	if len(parts) == 0 {
		return "no runs"
	}
	return strings.Join(parts, ", ")
}

// runningOn is how many of the scenario's runs are Running on the host (0
// while the API server does not answer).
func (s *scenario) runningOn(ctx context.Context, host string) int {
	runs, _ := s.list(ctx)
	n := 0
	for _, r := range runs {
		if r.Status.Phase == agentsv1alpha1.PhaseRunning && (host == "" || r.Status.Host == host) {
			n++
		}
	}
	return n
}

// collect records each run once it finished and deletes it, until the
// goroutines are done and every run created finished or is stuck.
func (s *scenario) collect(ctx context.Context) {
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	deleted := map[string]bool{}
	for {
		runs, err := s.list(ctx)
		if err == nil {
			for i := range runs {
				r := &runs[i]
				s.mu.Lock()
				created, ours := s.runs[r.Name]
				_, recorded := s.final[r.Name]
				_, stuck := s.stuck[r.Name]
				s.mu.Unlock()
				if !ours || created.UID != r.UID {
					continue
				}
				if !recorded && !stuck {
					switch {
					case r.Status.Phase.IsFinished():
						s.mu.Lock()
						s.final[r.Name] = r.DeepCopy()
						s.mu.Unlock()
					case time.Since(r.CreationTimestamp.Time) > s.queue+runTimeout+time.Minute:
						s.mu.Lock()
						s.stuck[r.Name] = fmt.Sprintf("%s on %q after %s: %s", r.Status.Phase, r.Status.Host, since(r.CreationTimestamp.Time), r.Status.Message)
						s.mu.Unlock()
					default:
						continue
					}
				}
				if !deleted[r.Name] && c.Delete(ctx, r) == nil {
					deleted[r.Name] = true
				}
			}
		}
		select {
		case <-done:
			if len(s.unfinished()) == 0 {
				return
			}
		default:
		}
		if !sleep(ctx, 500*time.Millisecond) {
			return
		}
	}
}

// finish waits for the goroutines and the runs (collect), then for the runs
// to be gone (their finalizers done) and the hosts to hold none of their
// containers, counts, and adds the row to the table.
func (s *scenario) finish(ctx context.Context) *figures {
	GinkgoHelper()
	s.collect(ctx)
	r := &figures{Scenario: s.name}
	s.mu.Lock()
	r.Runs = len(s.runs)
	for name, why := range s.stuck {
		s.problems = append(s.problems, fmt.Sprintf("run %s stuck: %s", name, why))
	}
	s.mu.Unlock()
	r.Stuck = len(s.stuck)

	// Deletions complete (finalizers done) within 3 minutes.
	var left []agentsv1alpha1.AgentRun
	var listErr error
	if err := waitUntil(ctx, 3*time.Minute, "the runs' deletion", func() bool {
		left, listErr = s.list(ctx)
		return listErr == nil && len(left) == 0
	}); err != nil && listErr != nil {
		// The runs left are unknown: no count of them can be trusted.
		s.problem("%v: the last list of the runs failed: %v", err, listErr)
	}
	for _, run := range left {
		r.Stuck++
		s.problem("run %s not gone 3 minutes after its deletion (finalizers %v, phase %s on %q)", run.Name, run.Finalizers, run.Status.Phase, run.Status.Host)
	}

	uids := map[string]*agentsv1alpha1.AgentRun{}
	for _, run := range s.runs {
		uids[string(run.UID)] = run
	}
	// Orphans: a host may still be fencing (a cut host removes what it ran
	// once it is back): a minute for that.
	var orphans []fleet.Container
	_ = waitUntil(ctx, time.Minute, "no containers left", func() bool {
		orphans = nil
		for _, h := range f.Hosts() {
			cs, err := f.Containers(h)
			if err != nil {
				orphans = append(orphans, fleet.Container{Host: h, Name: "(unknown: " + err.Error() + ")"})
				continue
			}
			for _, ct := range cs {
				if _, ours := uids[ct.UID]; ours {
					orphans = append(orphans, ct)
				}
			}
		}
		return len(orphans) == 0
	})
	r.Orphans = len(orphans)
	for _, o := range orphans {
		s.problem("orphan container %s on %s (%s)", o.Name, o.Host, o.State)
	}

	s.countAttempts(r, uids, s.events(ctx))
	r.Panics = s.panics()
	for _, err := range s.errs {
		s.problem("%v", err)
	}
	r.Seconds = time.Since(s.start).Seconds()
	r.Notes, r.Problems = s.notes, s.problems
	r.Passed = len(r.Problems) == 0 && r.Succeeded == r.Runs && r.DuplicateContainers+r.LostResults+r.Orphans+r.Stuck+r.Panics == 0
	table = append(table, r)
	say("chaos: scenario %s took %s: runs=%d succeeded=%d duplicate_containers=%d lost_results=%d orphans=%d stuck=%d panics=%d failovers=%d reruns=%d",
		s.name, r.duration(), r.Runs, r.Succeeded, r.DuplicateContainers, r.LostResults, r.Orphans, r.Stuck, r.Panics, r.Failovers, r.Reruns)
	return r
}

// countAttempts counts, from the hosts' container events, what each run's
// attempts did: duplicate containers, lost results and reruns, and the
// finished runs' outcomes. Every final attempt must show exactly one create
// and one died event: an event read that came back short (a host's Podman
// restarted, a read cut off) would otherwise count as no duplicate and no
// lost result.
func (s *scenario) countAttempts(r *figures, uids map[string]*agentsv1alpha1.AgentRun, events []fleet.ContainerEvent) {
	creates := fleet.CreatesByAttempt(events)
	s.creates = creates
	died := map[fleet.AttemptKey][]fleet.ContainerEvent{}
	for _, e := range events {
		if _, ours := uids[e.UID]; ours && e.Action == "died" {
			died[e.Key()] = append(died[e.Key()], e)
		}
	}
	for key, hosts := range creates {
		run, ours := uids[key.UID]
		if !ours || len(hosts) < 2 {
			continue
		}
		r.DuplicateContainers += len(hosts) - 1
		s.problem("run %s attempt %d: %d containers created (on %v)", run.Name, key.Attempt, len(hosts), hosts)
	}

	for key, es := range died {
		if run := s.final[uids[key.UID].Name]; run != nil && es[0].ExitCode == 0 && key.Attempt < int(run.Status.Attempts) {
			r.Reruns++
			s.note("run %s attempt %d exited 0 on %s, and the run went on to attempt %d", run.Name, key.Attempt, es[0].Host, run.Status.Attempts)
		}
	}
	for name, run := range s.final {
		st := run.Status
		r.Failovers += int(st.DisruptedAttempts)
		if st.Phase == agentsv1alpha1.PhaseSucceeded {
			r.Succeeded++
		} else {
			s.problem("run %s ended %s on %q after %d attempt(s): %s", name, st.Phase, st.Host, st.Attempts, st.Message)
		}
		key := fleet.AttemptKey{UID: string(run.UID), Attempt: int(st.Attempts)}
		if n, d := len(creates[key]), len(died[key]); n != 1 || d != 1 {
			s.problem("run %s attempt %d: %d create and %d died event(s) read from the hosts, want one of each", name, key.Attempt, n, d)
		}
		lost := false
		if es := died[key]; len(es) > 0 && (st.ExitCode == nil || int(*st.ExitCode) != es[0].ExitCode) {
			lost = true
			s.problem("run %s attempt %d: its container %s exited %d on %s, status.exitCode is %s", name, key.Attempt, es[0].Name, es[0].ExitCode, es[0].Host, exitCode(st.ExitCode))
		}
		if fin := meta.FindStatusCondition(st.Conditions, agentsv1alpha1.ConditionFinished); !lost && fin != nil && fin.Reason == agentsv1alpha1.ReasonContainerLost {
			lost = true
			s.problem("run %s ended ContainerLost: %s", name, fin.Message)
		}
		if lost {
			r.LostResults++
		}
		if want, ok := s.wantAttempts[name]; ok && st.Attempts-st.DisruptedAttempts != want {
			s.problem("run %s: %d attempt(s) (%d disrupted), want %d", name, st.Attempts, st.DisruptedAttempts, want)
		}
	}
}

func exitCode(p *int32) string {
	if p == nil {
		return "unset"
	}
	return fmt.Sprint(*p)
}

// events reads every host's container events since the scenario began
// (retrying for a minute: a host's Podman may be starting again).
func (s *scenario) events(ctx context.Context) []fleet.ContainerEvent {
	var evs []fleet.ContainerEvent
	err := waitUntil(ctx, time.Minute, "reading every host's events", func() bool {
		var err error
		evs, err = f.AllContainerEvents(s.since)
		return err == nil
	})
	if err != nil {
		s.problem("%v", err)
	}
	return evs
}

// panics counts the lines with "panic" the managers logged since the
// scenario began.
func (s *scenario) panics() int {
	n := 0
	for _, p := range managerLogs() {
		data, err := readFrom(p, s.logs[p])
		if err != nil {
			// A log that cannot be read could hide a panic.
			s.problem("reading %s for panics: %v", p, err)
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			if strings.Contains(line, "panic") {
				n++
				s.problem("%s: %s", p, line)
			}
		}
	}
	return n
}

// readFrom reads the file at path from offset on.
func readFrom(path string, offset int64) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	if _, err := fh.Seek(offset, io.SeekStart); err != nil {
		return nil, err
	}
	return io.ReadAll(fh)
}

// check fails the spec when a figure is not zero (the suite goes on).
func check(r *figures) {
	GinkgoHelper()
	Expect(r.Problems).To(BeEmpty(), "scenario %s", r.Scenario)
	Expect(r.Passed).To(BeTrue(), "scenario %s: %+v", r.Scenario, *r)
}
