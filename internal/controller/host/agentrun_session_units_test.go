package host

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/agentrun/agentrun/internal/controller/agentruns/agentrunstest"
)

// The shipped host units must let the manager make, copy, give away and
// remove session directories: the containers' user owns them, 0700.

// unitSettings reads a systemd unit (or Quadlet) file: each key's values in
// order, continuation lines joined.
func unitSettings(t *testing.T, name string) map[string][]string {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "..", "config", "host", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	settings := map[string][]string{}
	line := ""
	for sc := bufio.NewScanner(f); sc.Scan(); {
		text := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(text, "#") || (line == "" && text == "") {
			continue
		}
		if cont, ok := strings.CutSuffix(text, `\`); ok {
			line += cont + " "
			continue
		}
		line += text
		if key, value, ok := strings.Cut(line, "="); ok {
			settings[key] = append(settings[key], value)
		}
		line = ""
	}
	return settings
}

// unitSessionDir is the --session-dir of the manager's command line.
func unitSessionDir(exec []string) string {
	for _, arg := range strings.Fields(strings.Join(exec, " ")) {
		if dir, ok := strings.CutPrefix(arg, "--session-dir="); ok {
			return dir
		}
	}
	return DefaultSessionDir
}

func TestTheBinaryUnitLetsTheManagerWriteTheSessionDirectory(t *testing.T) {
	unit := unitSettings(t, "agentrun-host.service")
	dir := unitSessionDir(unit["ExecStart"])
	if slices.Contains(unit["ProtectSystem"], "strict") {
		var writable []string
		for _, paths := range unit["ReadWritePaths"] {
			writable = append(writable, strings.Fields(paths)...)
		}
		for _, state := range unit["StateDirectory"] {
			for _, d := range strings.Fields(state) {
				writable = append(writable, filepath.Join("/var/lib", d))
			}
		}
		if !slices.ContainsFunc(writable, func(w string) bool { return dir == w || strings.HasPrefix(dir, strings.TrimSuffix(w, "/")+"/") }) {
			t.Errorf("ProtectSystem=strict leaves --session-dir %s read-only: writable are %q", dir, writable)
		}
	}
	if chown := syscallsAllowed(unit["SystemCallFilter"], "@chown"); !chown {
		t.Errorf("SystemCallFilter %q denies @chown (EPERM): session directories cannot be given to the containers' user", unit["SystemCallFilter"])
	}
}

// syscallsAllowed tells whether a list of SystemCallFilter= settings, in
// order, leaves group allowed: the first says whether the filter is an
// allow or a deny list, the later ones add to or take from it.
func syscallsAllowed(filters []string, group string) bool {
	allowed := map[string]bool{}
	denyList := len(filters) > 0 && strings.HasPrefix(filters[0], "~")
	// @system-service holds @chown; @privileged does too.
	holds := func(set string) bool { return set == group || set == "@system-service" || set == "@privileged" }
	for _, f := range filters {
		deny := strings.HasPrefix(f, "~")
		for _, set := range strings.Fields(strings.TrimPrefix(f, "~")) {
			if holds(set) {
				allowed[group] = !deny
			}
		}
	}
	if v, said := allowed[group]; said {
		return v
	}
	return denyList
}

// unitCapabilities are the capabilities the manager keeps under a unit: the
// binary unit's bounding set (it runs as root), or the capabilities the
// container unit adds after dropping all.
func unitCapabilities(t *testing.T, name string) []string {
	unit := unitSettings(t, name)
	var caps []string
	for _, key := range []string{"CapabilityBoundingSet", "AddCapability"} {
		for _, v := range unit[key] {
			for _, c := range strings.Fields(v) {
				caps = append(caps, strings.ToLower(strings.TrimPrefix(c, "CAP_")))
			}
		}
	}
	return caps
}

func TestTheHostUnitsCapabilitiesLetTheManagerHandleSessions(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("emulating a unit's capability set needs root")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("setpriv (util-linux) is not installed")
	}
	for _, unit := range []string{"agentrun-host.service", "agentrun-host.container"} {
		caps := unitCapabilities(t, unit)
		t.Run(unit, func(t *testing.T) {
			if out, err := sessionOpsWith(t, setpriv, caps); err != nil {
				t.Errorf("with the unit's capabilities %q, session handling fails: %v\n%s", caps, err, out)
			}
		})
		for _, c := range caps {
			t.Run(unit+" without "+c, func(t *testing.T) {
				if _, err := sessionOpsWith(t, setpriv, slices.DeleteFunc(slices.Clone(caps), func(x string) bool { return x == c })); err == nil {
					t.Errorf("session handling works without %s: the unit need not give it", c)
				}
			})
		}
	}
}

// sessionOpsWith runs TestSessionOpsUnderCapabilities in a process whose
// bounding set is caps (root keeps exactly those), on a session directory
// owned by the containers' user, as a run left it.
func sessionOpsWith(t *testing.T, setpriv string, caps []string) ([]byte, error) {
	dir := t.TempDir()
	earlier := filepath.Join(dir, testEarlierUID)
	writeFiles(t, earlier, map[string]string{transcript(sessionOne): "conversation", "cache/deep/file": "x"})
	if err := filepath.WalkDir(earlier, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, 1000, 1000)
	}); err != nil {
		t.Fatal(err)
	}
	bounding := "-all"
	for _, c := range caps {
		bounding += ",+" + c
	}
	cmd := exec.Command(setpriv, "--bounding-set", bounding, "--inh-caps", "-all", "--",
		os.Args[0], "-test.run", "^TestSessionOpsUnderCapabilities$", "-test.count=1")
	cmd.Env = append(os.Environ(), sessionOpsDirEnv+"="+dir)
	return cmd.CombinedOutput()
}

const (
	sessionOpsDirEnv = "AGENTRUN_TEST_SESSION_OPS_DIR"
	testEarlierUID   = "0123abcd-0000-0000-0000-00000000000e"
)

// TestSessionOpsUnderCapabilities is the child of
// TestTheHostUnitsCapabilitiesLetTheManagerHandleSessions: it forks the
// earlier run's session into a new directory given to the containers'
// user, then removes the earlier one, as the collector does.
func TestSessionOpsUnderCapabilities(t *testing.T) {
	dir := os.Getenv(sessionOpsDirEnv)
	if dir == "" {
		t.Skip("run by TestTheHostUnitsCapabilitiesLetTheManagerHandleSessions")
	}
	r := &AgentRunReconciler{HostConfig: HostConfig{SessionDir: dir}}
	r.Policy.User = "1000:1000"
	earlier := agentrunstest.PlainRun("first", nil)
	earlier.UID, earlier.Status.SessionDir = testEarlierUID, testEarlierUID
	if _, st, err := r.makeSessionDir("c0ffee00-0000-0000-0000-000000000001", earlier); err != nil || st != nil {
		t.Fatalf("copying the session: %v %+v", err, st)
	}
	sessions, err := r.openSessions()
	if err != nil {
		t.Fatal(err)
	}
	defer sessions.Close()
	if err := sessions.RemoveAll(testEarlierUID); err != nil {
		t.Fatalf("removing the session: %v", err)
	}
}
