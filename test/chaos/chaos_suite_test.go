// Package chaos_test is agentrun's fault suite (issue 13): each scenario runs
// AgentRuns on the local fleet (test/fleet: three hosts, each its own Podman
// service and manager in a network namespace of its own, the third Podman 5)
// while it injects one kind of fault, then counts, from Podman's own events
// and containers and from the runs' status, what went wrong: containers
// created twice for one attempt, exit codes that never reached status,
// containers left behind, runs that never finished, panics. Each figure must
// be zero.
//
// By default (go test ./..., make test) it runs a short form of every
// scenario, a few runs each; AGENTRUN_CHAOS=full (make chaos) runs them at
// full scale and writes the table to .local/chaos.json and .local/chaos.txt.
package chaos_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	configv1alpha1 "github.com/agentrun/agentrun/api/config/v1alpha1"
	"github.com/agentrun/agentrun/internal/testing/internet"
	"github.com/agentrun/agentrun/test/fleet"
)

// full is make chaos's scale; otherwise the short form.
var full = os.Getenv("AGENTRUN_CHAOS") == "full"

// scale picks the short form's figure or the full one.
func scale[T any](short, long T) T {
	if full {
		return long
	}
	return short
}

// gracePeriod is how long the fleet waits for a host's heartbeat (renewed
// every 2 s) before it declares the host lost and fails its runs over. Longer
// than a SIGKILLed manager takes to heartbeat again: its successor waits out
// the leader lease (15 s) after a restart that takes 5 to 15 s on this loaded
// 2-core machine (measured: 29 to 33 s from the kill to the next heartbeat),
// so that a kill is a crash the host survives; a cut longer than it is a lost
// host.
const gracePeriod = 45 * time.Second

var (
	f *fleet.Fleet
	// flagsDir is mounted into the retry scenario's runs (/flags): a run's
	// first attempt leaves a file there and fails, the next one finds it
	// and succeeds.
	flagsDir string
	// web is the simulated internet the runs' egress goes to (the egress
	// scenario).
	web *internet.Internet
	// table is every scenario's figures, in order.
	table      []*figures
	suiteStart time.Time
)

func TestChaos(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, fmt.Sprintf("chaos suite (%s form; the local fleet under faults)", scale("short", "full")))
}

var _ = BeforeSuite(func() {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter)))
	suiteStart = time.Now()
	dir, err := os.MkdirTemp("", "agentrun-chaos-")
	Expect(err).NotTo(HaveOccurred())
	flagsDir, err = os.MkdirTemp("", "agentrun-chaos-flags-")
	Expect(err).NotTo(HaveOccurred())
	// The containers run as 1000:1000.
	Expect(os.Chmod(flagsDir, 0o777)).To(Succeed())
	Expect(installSessionAgent()).To(Succeed())
	// Before the fleet, whose hosts' proxies resolve names with its DNS
	// and may reach its addresses (198.18.0.0/15, which they refuse by
	// default): each host's namespace routes it through the machine. Its
	// cleanup, registered first, runs after the fleet's.
	web = startInternet()
	// Names and addresses of its own, so that it runs beside make up's fleet
	// (local, 10.203) and test/fleet's (smoke, 10.204).
	f, err = fleet.New(fleet.Options{StateDir: dir, Hosts: 3, HostPrefix: "chaos", Net: "10.205",
		ManagerConfig: &configv1alpha1.Configuration{Host: configv1alpha1.HostConfiguration{
			Runs:      configv1alpha1.RunsConfiguration{DefaultCommand: []string{sessionAgent}},
			Heartbeat: configv1alpha1.HeartbeatConfiguration{Period: &metav1.Duration{Duration: 2 * time.Second}, GracePeriod: &metav1.Duration{Duration: gracePeriod}},
			Volumes:   configv1alpha1.VolumesConfiguration{AllowedPaths: []string{"/home/user/myrepo", flagsDir}},
			Egress: configv1alpha1.EgressConfiguration{Resolver: web.DNSAddr().String(), AllowedCIDRs: []string{web.Prefix().String()},
				Permitted: []string{allowedName}},
		}}})
	Expect(err).NotTo(HaveOccurred())
	// Registered before up: a fleet that came up halfway is brought down too.
	DeferCleanup(func() {
		if CurrentSpecReport().Failed() {
			f.PrintLogs(GinkgoWriter, 4000)
		}
		Expect(f.Down()).To(Succeed())
		Expect(os.RemoveAll(dir)).To(Succeed())
		Expect(os.RemoveAll(flagsDir)).To(Succeed())
	})
	start := time.Now()
	Expect(f.Up()).To(Succeed())
	say("chaos: fleet of %d hosts up in %s (%s form)", len(f.Hosts()), since(start), scale("short", "full"))
	c = k8sClient()
})

// say prints a line to the spec's log and to stdout, where make chaos shows
// it as the suite goes.
func say(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	GinkgoWriter.Println(line)
	fmt.Println(line)
}

func since(t time.Time) time.Duration { return time.Since(t).Round(100 * time.Millisecond) }

// The table, to stdout, the log and (make chaos) .local/chaos.json and
// .local/chaos.txt, after the scenarios and before the fleet goes down.
var _ = AfterSuite(func() {
	if len(table) == 0 {
		return
	}
	text := render(table, time.Since(suiteStart))
	GinkgoWriter.Print(text)
	fmt.Print(text)
	if !full {
		return
	}
	local := filepath.Join(repoRoot(), ".local")
	Expect(os.MkdirAll(local, 0o755)).To(Succeed())
	data, err := json.MarshalIndent(map[string]any{"scale": "full", "seconds": time.Since(suiteStart).Seconds(), "scenarios": table}, "", "  ")
	Expect(err).NotTo(HaveOccurred())
	Expect(os.WriteFile(filepath.Join(local, "chaos.json"), data, 0o644)).To(Succeed())
	Expect(os.WriteFile(filepath.Join(local, "chaos.txt"), []byte(text), 0o644)).To(Succeed())
})

// render is the table, one row a scenario, then one key=value line with the
// totals.
func render(rows []*figures, took time.Duration) string {
	var b strings.Builder
	b.WriteString("\n")
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "scenario\truns\tsucceeded\tduplicate_containers\tlost_results\torphans\tstuck\tpanics\tunchecked\tfailovers\treruns\tduration\tresult\t")
	var t figures
	failed := 0
	for _, r := range rows {
		result := "ok"
		if !r.Passed {
			result = "FAIL"
			failed++
		}
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t\n", r.Scenario, r.Runs, r.Succeeded, r.DuplicateContainers,
			r.LostResults, r.Orphans, r.Stuck, r.Panics, r.Unchecked, r.Failovers, r.Reruns, r.duration(), result)
		t.Runs += r.Runs
		t.Succeeded += r.Succeeded
		t.DuplicateContainers += r.DuplicateContainers
		t.LostResults += r.LostResults
		t.Orphans += r.Orphans
		t.Stuck += r.Stuck
		t.Panics += r.Panics
		t.Unchecked += r.Unchecked
		t.Failovers += r.Failovers
		t.Reruns += r.Reruns
	}
	_ = w.Flush()
	fmt.Fprintf(&b, "chaos: scale=%s scenarios=%d failed=%d runs=%d succeeded=%d duplicate_containers=%d lost_results=%d orphans=%d stuck=%d panics=%d unchecked_connections=%d failovers=%d reruns=%d duration=%s\n",
		scale("short", "full"), len(rows), failed, t.Runs, t.Succeeded, t.DuplicateContainers, t.LostResults, t.Orphans, t.Stuck, t.Panics, t.Unchecked, t.Failovers, t.Reruns,
		took.Round(time.Second))
	return b.String()
}

// repoRoot is the repository's root, found from this file's location.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}
