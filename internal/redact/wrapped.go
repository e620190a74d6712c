package redact

import (
	"regexp"
	"strings"
)

// wrappedRun is a run of base64 characters that goes on across line breaks,
// as base64 prints a long input (busybox's and coreutils' at 76 columns): a
// value's encoding may be split by a line break anywhere in it.
var wrappedRun = regexp.MustCompile(`[A-Za-z0-9+/=_-]+(?:\r?\n[A-Za-z0-9+/=_-]+)+`)

// maskWrapped masks the base64 forms of the values in every wrapped run of
// s, across its line breaks.
func (r *Redactor) maskWrapped(s string) string {
	if len(r.encoded) == 0 || !strings.Contains(s, "\n") {
		return s
	}
	return wrappedRun.ReplaceAllStringFunc(s, r.maskRun)
}

// maskRun masks each base64 form of a value in run, wherever its lines break
// it: the part on each line becomes a Mask, and the line breaks stay.
func (r *Redactor) maskRun(run string) string {
	joined, at := unwrap(run)
	masked := make([]bool, len(run))
	found := false
	for _, n := range r.encoded {
		for from := 0; ; {
			i := strings.Index(joined[from:], n)
			if i < 0 {
				break
			}
			i += from
			for j := i; j < i+len(n); j++ {
				masked[at[j]] = true
			}
			found, from = true, i+1
		}
	}
	if !found {
		return run
	}
	var b strings.Builder
	for i := 0; i < len(run); i++ {
		if !masked[i] {
			b.WriteByte(run[i])
			continue
		}
		b.WriteString(Mask)
		for i+1 < len(run) && masked[i+1] {
			i++
		}
	}
	return b.String()
}

// unwrap returns s without its line breaks, and where in s each of its bytes
// is.
func unwrap(s string) (string, []int) {
	var b strings.Builder
	at := make([]int, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '\n' && s[i] != '\r' {
			b.WriteByte(s[i])
			at = append(at, i)
		}
	}
	return b.String(), at
}
