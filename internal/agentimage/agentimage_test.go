package agentimage

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The script derives the image from this package's source; ask the script
// itself, so that a change to either side that breaks the reading fails here.
func TestScriptBuildsImage(t *testing.T) {
	cmd := exec.Command("bash", filepath.Join("..", "..", "hack", "agent-image.sh"), "--print-image")
	// The script honours overrides; the test is about its default.
	cmd.Env = append(os.Environ(), "CLAUDE_CODE_VERSION=", "AGENTRUN_AGENT_IMAGE=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("hack/agent-image.sh --print-image: %v\n%s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != Image {
		t.Errorf("hack/agent-image.sh builds %q, the manager's default image is %q", got, Image)
	}
}

// The documentation names the image in several places; each must be the one
// the code uses.
func TestDocsNameImage(t *testing.T) {
	files := []string{filepath.Join("..", "..", "README.md")}
	docs, err := filepath.Glob(filepath.Join("..", "..", "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, docs...)
	mention := regexp.MustCompile(`agentrun-claude:[0-9][0-9A-Za-z.+-]*[0-9A-Za-z]`)
	found := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range mention.FindAllString(string(data), -1) {
			found++
			if "localhost/"+m != Image {
				t.Errorf("%s names %s; the image is %s", f, m, Image)
			}
		}
	}
	if found == 0 {
		t.Errorf("no agentrun-claude:VERSION in %v: the test no longer checks what it should", files)
	}
}
