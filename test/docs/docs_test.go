// Package docs checks the README and the manual in docs/ as a reader meets
// them: the README stays a front door, and every link between the pages
// leads somewhere.
package docs

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

const (
	root = "../.."
	// The README is what a newcomer reads in five minutes; reference,
	// results and design live in docs/ (issue 26).
	readmeMaxLines = 250
)

// notYetWritten are link targets another change of issue 26 generates;
// each goes once it exists.
var notYetWritten = map[string]bool{
	"docs/configuration.md": true, // generated from the configuration types (issue 26, section 1)
}

func TestTheREADMEIsShort(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(data), "\n"); n > readmeMaxLines {
		t.Errorf("README.md has %d lines, at most %d: move the detail to docs/", n, readmeMaxLines)
	}
}

func TestEveryLinkBetweenThePagesResolves(t *testing.T) {
	pages := markdownPages(t)
	if len(pages) < 2 {
		t.Fatalf("found %d pages: the test no longer checks what it should", len(pages))
	}
	anchors := map[string]map[string]bool{}
	checked := 0
	for _, page := range pages {
		for _, target := range links(t, page) {
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			checked++
			file, anchor, _ := strings.Cut(target, "#")
			dest := page
			if file != "" {
				dest = filepath.ToSlash(filepath.Join(filepath.Dir(page), file))
			}
			if notYetWritten[dest] {
				continue
			}
			if _, err := os.Stat(filepath.Join(root, dest)); err != nil {
				t.Errorf("%s links to %s: %s does not exist", page, target, dest)
				continue
			}
			if anchor == "" {
				continue
			}
			if anchors[dest] == nil {
				anchors[dest] = headingAnchors(t, dest)
			}
			if !anchors[dest][anchor] {
				t.Errorf("%s links to %s: %s has no heading with the anchor #%s", page, target, dest, anchor)
			}
		}
	}
	if checked == 0 {
		t.Error("no relative link found: the test no longer checks what it should")
	}
}

// markdownPages are README.md and every .md file under docs/, relative to
// the repository's root.
func markdownPages(t *testing.T) []string {
	t.Helper()
	pages := []string{"README.md"}
	err := filepath.WalkDir(filepath.Join(root, "docs"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".md") {
			return err
		}
		rel, err := filepath.Rel(root, path)
		pages = append(pages, filepath.ToSlash(rel))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return pages
}

var (
	inlineCode = regexp.MustCompile("`[^`]*`")
	link       = regexp.MustCompile(`\[[^\]]*\]\(([^)\s]+)\)`)
)

// links returns the targets of a page's Markdown links, outside code.
func links(t *testing.T, page string) []string {
	t.Helper()
	var targets []string
	for _, line := range prose(t, page) {
		for _, m := range link.FindAllStringSubmatch(inlineCode.ReplaceAllString(line, ""), -1) {
			targets = append(targets, m[1])
		}
	}
	return targets
}

// headingAnchors are the anchors GitHub gives a page's headings: lower
// case, punctuation dropped, spaces turned to hyphens, and -1, -2, ... on
// repeats.
func headingAnchors(t *testing.T, page string) map[string]bool {
	t.Helper()
	anchors := map[string]bool{}
	seen := map[string]int{}
	for _, line := range prose(t, page) {
		text, ok := strings.CutPrefix(strings.TrimLeft(line, "#"), " ")
		if !ok || !strings.HasPrefix(line, "#") {
			continue
		}
		slug := strings.Map(func(r rune) rune {
			switch {
			case r == ' ':
				return '-'
			case r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r > 127:
				return r
			}
			return -1
		}, strings.ToLower(text))
		if n := seen[slug]; n > 0 {
			anchors[slug+"-"+strconv.Itoa(n)] = true
		} else {
			anchors[slug] = true
		}
		seen[slug]++
	}
	return anchors
}

// prose is a page's lines outside fenced code blocks.
func prose(t *testing.T, page string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, page))
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	fenced := false
	for line := range strings.SplitSeq(string(data), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
			continue
		}
		if !fenced {
			lines = append(lines, line)
		}
	}
	return lines
}
