package runoutput

import (
	"strings"
	"testing"

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
	if out.Len() != maxLine {
		t.Errorf("a line of %d bytes without a newline sent %d bytes; want it sent whole at the limit", maxLine, out.Len())
	}
}
