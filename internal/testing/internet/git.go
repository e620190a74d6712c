package internet

import (
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// gitBinary is git's path; it skips t when git is not installed, naming
// what the test needs it for.
func gitBinary(t testing.TB) string {
	t.Helper()
	git, err := exec.LookPath("git")
	if err != nil {
		t.Skip("internet: git is not installed: the git server runs git http-backend, and the repository is made with git")
	}
	return git
}

// GitHandler serves the bare repositories under root over git's smart HTTP
// protocol, through git http-backend as CGI: ROOT/NAME.git is cloned from
// https://SITE/NAME.git when a site serves the handler (Serve). Read only:
// pushes are refused. The backend runs in the test's own network namespace,
// which it has no use for. Skips t when git is not installed.
func GitHandler(t testing.TB, root string) http.Handler {
	return &cgi.Handler{
		Path: gitBinary(t),
		Args: []string{"http-backend"},
		Root: "/",
		Env:  []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"},
	}
}

// NewGitRepo makes ROOT/NAME.git, a bare repository whose branch main has
// one commit holding files (path: content), and returns its path. Skips t
// when git is not installed.
func NewGitRepo(t testing.TB, root, name string, files map[string]string) string {
	t.Helper()
	git := gitBinary(t)
	work := t.TempDir()
	for path, content := range files {
		p := filepath.Join(work, path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bare := filepath.Join(root, name+".git")
	run := func(dir string, args ...string) {
		t.Helper()
		// The machine's and the user's git settings stay out of it.
		cmd := exec.Command(git, append([]string{"-c", "user.name=agentrun test", "-c", "user.email=test@agentrun.invalid"}, args...)...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run(work, "init", "--quiet", "--initial-branch=main")
	run(work, "add", "--all")
	run(work, "commit", "--quiet", "--message=The simulated internet's repository")
	run(root, "clone", "--quiet", "--bare", work, bare)
	return bare
}
