package runoutput

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/agentrun/agentrun/internal/containers"
	"github.com/agentrun/agentrun/internal/containers/fake"
	"github.com/agentrun/agentrun/internal/redact"
)

func TestLineWriterMasksWholeLines(t *testing.T) {
	const secret = "hunter2-secret-value"
	for _, tt := range []struct {
		name   string
		writes []string
		// want is what the reader has seen after each write, then after
		// Close.
		want []string
	}{
		{"a line per write", []string{"one\n", "two " + secret + "\n"}, []string{"one\n", "one\ntwo ***\n", "one\ntwo ***\n"}},
		{"a value split across two frames", []string{"token=hunter2-se", "cret-value\n"}, []string{"", "token=***\n", "token=***\n"}},
		{"a last line without its newline", []string{"done " + secret}, []string{"", "done ***"}},
		{"two lines in one write, the second partial", []string{"a\nb", "c\n"}, []string{"a\n", "a\nbc\n", "a\nbc\n"}},
		{"terminal sequences removed, as in status", []string{"\x1b[2Jclear\n"}, []string{"clear\n", "clear\n"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out strings.Builder
			w := NewLineWriter(&out, redact.New(secret))
			for i, s := range tt.writes {
				if n, err := w.Write([]byte(s)); err != nil || n != len(s) {
					t.Fatalf("Write(%q) = %d, %v", s, n, err)
				}
				if out.String() != tt.want[i] {
					t.Errorf("after write %d: %q, want %q", i, out.String(), tt.want[i])
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if got, want := out.String(), tt.want[len(tt.want)-1]; got != want {
				t.Errorf("after Close: %q, want %q", got, want)
			}
		})
	}
}

func TestLineWriterSendsALongLineInPieces(t *testing.T) {
	var out strings.Builder
	w := NewLineWriter(&out, redact.New())
	long := strings.Repeat("x", maxLine)
	if _, err := w.Write([]byte(long)); err != nil {
		t.Fatal(err)
	}
	if want := maxLine - redact.New().Reach(); out.Len() != want {
		t.Errorf("a line of %d bytes without a newline sent %d bytes; want all but the redactor's reach, %d", maxLine, out.Len(), want)
	}
}

// plainValue has no known token shape, so only knowing it masks it.
const plainValue = "Zq8wLm3vRt7yKp2nXc5bHj9dFg4sAe6u"

// A value that straddles where a long line is cut, or that base64 wraps
// across lines written one at a time, reaches the reader masked whole.
func TestLineWriterNeverSplitsAValue(t *testing.T) {
	// Wrapped at 76 columns, the value's encoding spans the line break.
	encoded := base64.StdEncoding.EncodeToString([]byte("Authorization: Basic " + strings.Repeat("x", 19) + plainValue))
	for name, writes := range map[string][]string{
		"across the long-line cut":       {strings.Repeat("x", maxLine-redact.New(plainValue).Reach()-10) + plainValue[:20], plainValue[20:] + strings.Repeat("y", 100) + "\n"},
		"base64 wrapped, a line a write": {"printed:\n", encoded[:76] + "\n", encoded[76:] + "\n", "done\n"},
	} {
		var out strings.Builder
		w := NewLineWriter(&out, redact.New(plainValue))
		for _, s := range writes {
			if _, err := w.Write([]byte(s)); err != nil {
				t.Fatal(err)
			}
			if got := out.String(); strings.Contains(got, plainValue[:4]) || strings.Contains(got, encoded[60:64]) {
				t.Errorf("%s: %q leaks part of the value", name, got[max(0, len(got)-200):])
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if got := out.String(); !strings.Contains(got, redact.Mask) || !strings.HasSuffix(got, "\n") {
			t.Errorf("%s: %q", name, got[max(0, len(got)-200):])
		}
	}
}

// Ordinary lines reach the reader whole as they are written, whatever they
// end with: only what may begin a value waits for the next line.
func TestLineWriterHoldsBackNoOrdinaryLine(t *testing.T) {
	var out strings.Builder
	w := NewLineWriter(&out, redact.New(plainValue))
	want := ""
	for _, line := range []string{"Done\n", "step 1 of 3: ok\n", "Zq\n", "QmFzaWMg\n", strings.Repeat("ab", 40) + "!\n"} {
		if _, err := w.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
		if want += line; out.String() != want {
			t.Fatalf("after %q: %q", line, out.String())
		}
	}
}

// The tail kept of a run's output starts with no part of a value the cut
// went through.
func TestTailMasksBeforeItCuts(t *testing.T) {
	ctx := context.Background()
	rt := fake.New("img")
	id, err := rt.Create(ctx, containers.Spec{Name: "c", Image: "img"})
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Print(id, "start "+plainValue+" end\n"); err != nil {
		t.Fatal(err)
	}
	for n := range len(plainValue) + 10 {
		got, err := Tail(ctx, rt, id, redact.New(plainValue), n)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) > n || strings.Contains(got, plainValue[len(plainValue)-8:]) {
			t.Errorf("the last %d bytes: %q", n, got)
		}
	}
}
