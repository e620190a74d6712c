package chaos_test

import (
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/testing/internet"
	"github.com/agentrun/agentrun/test/fleet"
)

// The egress scenario's sites on the simulated internet: the hosts permit
// allowedName and its runs list it; they try the denied names all the time.
const allowedName = "allowed.test"

var deniedNames = []string{"denied.test", "exfil.test"}

// startInternet starts the suite's simulated internet with the scenario's
// sites, each answering "hello from NAME"; its cleanup removes it.
func startInternet() *internet.Internet {
	n := internet.Start(GinkgoTB())
	for _, name := range append([]string{allowedName}, deniedNames...) {
		n.Serve(name, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "hello from "+name) }))
	}
	return n
}

// egressRunTimeout is the egress scenario's runs' spec.timeout: they run
// until the scenario has killed every host's manager once and seen each
// come back.
const egressRunTimeout = 10 * time.Minute

// proberScript fetches, once a second until /flags/$FLAG.stop exists:
// allowedName through the run's proxy, touching /flags/$FLAG.allowed after
// each success; every denied name through the proxy; and a denied site's
// address directly (wget -Y off), past the proxy, which only a network of
// the container's own could carry. Whatever reaches a denied name prints a
// REACHED line; at the end it prints its counts.
const proberScript = `exec 2>&1
ok=0 failed=0
while [ ! -e "/flags/$FLAG.stop" ]; do
  if wget -q -O /dev/null "http://$ALLOWED/" 2>/dev/null; then
    ok=$((ok+1)); touch "/flags/$FLAG.allowed"
  else
    failed=$((failed+1))
  fi
  for name in $DENIED; do
    wget -q -O /dev/null "http://$name/" 2>/dev/null && echo "REACHED $name through the proxy"
  done
  wget -q -Y off -O /dev/null "http://$DIRECT/" 2>/dev/null && echo "REACHED $DIRECT directly"
  sleep 1
done
echo "allowed=$ok failed=$failed"`

// egressProber is a run pinned to host that lists allowedName and runs
// proberScript.
func egressProber(host string) *agentsv1alpha1.AgentRun {
	return fleet.NewRun("egress", func(r *agentsv1alpha1.AgentRun) {
		r.Spec.HostName = host
		r.Spec.Timeout = &metav1.Duration{Duration: egressRunTimeout}
		r.Spec.Egress = &agentsv1alpha1.EgressSpec{Allow: []string{allowedName}}
		r.Spec.Podman.Volumes = []string{flagsDir + ":/flags"}
		r.Spec.Podman.Env = map[string]agentsv1alpha1.EnvValue{
			"FLAG":    agentsv1alpha1.EnvValue(r.Name),
			"ALLOWED": allowedName,
			"DENIED":  agentsv1alpha1.EnvValue(strings.Join(deniedNames, " ")),
			"DIRECT":  agentsv1alpha1.EnvValue(web.Addr(deniedNames[0]).String()),
		}
		r.Spec.Command = []string{"sh", "-c", proberScript}
	})
}

// flag is the path of a prober's file (".allowed", ".stop").
func flag(run, suffix string) string { return filepath.Join(flagsDir, run+suffix) }

// reachedAllowed are the runs whose /flags/NAME.allowed exists: they
// reached allowedName since it was last removed.
func reachedAllowed(runs []string) []string {
	var out []string
	for _, r := range runs {
		if _, err := os.Stat(flag(r, ".allowed")); err == nil {
			out = append(out, r)
		}
	}
	return out
}

// unchecked is how many connections each denied site has accepted.
func unchecked() map[string]int {
	out := map[string]int{}
	for _, name := range deniedNames {
		out[name] = web.Connections(name)
	}
	return out
}

// egressScenario: each host's manager serves its proxied runs' egress
// sockets; it is SIGKILLed while its runs keep fetching, kept down a few
// seconds, and restarted (what hack/supervise.sh or systemd does). The
// network must stay closed meanwhile (no fetch of the allowed name succeeds
// while no proxy serves), no connection may ever reach a denied name (by
// the proxy or past it), and the restarted manager must serve its running
// runs' sockets again.
func egressScenario(ctx SpecContext) {
	s := begin("egress-manager-kills", egressRunTimeout)
	hosts := f.Hosts()
	byHost := map[string][]string{}
	var runs []*agentsv1alpha1.AgentRun
	var names []string
	for i := range 2 * len(hosts) {
		host := hosts[i%len(hosts)]
		r := egressProber(host)
		runs = append(runs, r)
		names = append(names, r.Name)
		byHost[host] = append(byHost[host], r.Name)
		s.wantAttempts[r.Name] = 1
	}
	before := unchecked()
	if err := s.createAll(ctx, runs); err != nil {
		s.problem("%v", err)
	}
	s.goFn("the kills", func() error {
		// Whatever happens, the runs stop fetching and finish.
		defer func() {
			for _, r := range names {
				_ = os.WriteFile(flag(r, ".stop"), nil, 0o644)
			}
		}()
		if err := waitUntil(ctx, 3*time.Minute, "every run reaching "+allowedName, func() bool { return len(reachedAllowed(names)) == len(names) }); err != nil {
			return err
		}
		for _, host := range hosts {
			onHost := byHost[host]
			if err := f.KillHost(host); err != nil {
				return err
			}
			killed := time.Now()
			// A fetch that ended just before the kill touches its file now.
			sleep(ctx, time.Second)
			for _, r := range onHost {
				if err := os.Remove(flag(r, ".allowed")); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return err
				}
			}
			sleep(ctx, 5*time.Second)
			if leaked := reachedAllowed(onHost); len(leaked) > 0 {
				s.problem("runs %v reached %s while %s's manager, which serves their proxy, was down", leaked, allowedName, host)
			}
			if err := f.Up(); err != nil {
				return err
			}
			if err := waitUntil(ctx, 2*time.Minute, "the runs on "+host+" reaching "+allowedName+" again", func() bool {
				return len(reachedAllowed(onHost)) == len(onHost)
			}); err != nil {
				return err
			}
			s.note("%s's manager SIGKILLed while its %d runs fetched, down 6 s and restarted: they reached %s again %s after the kill",
				host, len(onHost), allowedName, since(killed))
		}
		return nil
	})
	r := s.finish(ctx)
	after := unchecked()
	for _, name := range deniedNames {
		if n := after[name] - before[name]; n > 0 {
			r.Unchecked += n
			s.problem("%s accepted %d connection(s): they went out unchecked", name, n)
		}
	}
	for _, q := range web.Queries() {
		if slices.Contains(deniedNames, q.Name) {
			s.problem("the proxy looked %s up (%s over %s): a denied name is refused before any lookup", q.Name, q.Type, q.Network)
		}
	}
	for _, name := range names {
		run := s.final[name]
		if run == nil {
			continue
		}
		if _, reached, found := strings.Cut(run.Status.Output, "REACHED "); found {
			first, _, _ := strings.Cut(reached, "\n")
			s.problem("run %s reached a denied destination %d time(s), first %s", name, strings.Count(run.Status.Output, "REACHED "), first)
		}
		var ok, failed int
		counts := run.Status.Output[max(strings.LastIndex(run.Status.Output, "allowed="), 0):]
		if _, err := fmt.Sscanf(counts, "allowed=%d failed=%d", &ok, &failed); err != nil || ok == 0 || failed == 0 {
			s.problem("run %s: output %q, want fetches of %s that succeeded and some that failed while its manager was down", name, run.Status.Output, allowedName)
		}
		eg := run.Status.Egress
		if eg == nil || eg.Mode != agentsv1alpha1.EgressProxy || eg.Allowed == 0 || eg.Refused == 0 {
			s.problem("run %s: status.egress %+v, want mode proxy with connections allowed and refused", name, eg)
		} else {
			s.note("run %s on %s: %d fetches of %s succeeded, %d failed; status.egress: %d allowed, %d refused",
				name, run.Status.Host, ok, allowedName, failed, eg.Allowed, eg.Refused)
		}
	}
	r.Notes, r.Problems = s.notes, s.problems
	r.Passed = r.Passed && r.Unchecked == 0 && len(r.Problems) == 0
	check(r)
}
