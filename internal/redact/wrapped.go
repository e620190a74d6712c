package redact

import "strings"

// maskWrapped masks the base64 forms of the values in every wrapped run of
// s, across its line breaks.
func (r *Redactor) maskWrapped(s string) string {
	if len(r.encoded) == 0 || !strings.Contains(s, "\n") {
		return s
	}
	var b strings.Builder
	kept := 0 // s[:kept] is in b
	for from := 0; ; {
		start, end := wrappedRun(s, from)
		if start < 0 {
			break
		}
		if masked, ok := r.maskRun(s[start:end]); ok {
			b.WriteString(s[kept:start])
			b.WriteString(masked)
			kept = end
		}
		from = end
	}
	if kept == 0 {
		return s
	}
	b.WriteString(s[kept:])
	return b.String()
}

// base64Bytes are the bytes of base64, both alphabets, and its padding.
var base64Bytes = func() (t [256]bool) {
	for c := range t {
		t[c] = isBase64(rune(c))
	}
	return t
}()

// wrappedRun finds the first run of base64 characters in s at or after from
// that goes on across line breaks ("\n" or "\r\n"), as base64 prints a
// long input (busybox's and coreutils' at 76 columns): a value's encoding
// may be split by a line break anywhere in it. It returns the run's bounds,
// or -1, -1. (A scan, not a regular expression: Go's takes most of the
// time of a body streamed through the proxy.)
func wrappedRun(s string, from int) (start, end int) {
	for i := from; i < len(s); {
		if !base64Bytes[s[i]] {
			i++
			continue
		}
		start, end = i, lineRunEnd(s, i)
		wrapped := false
		for {
			next := end
			if next < len(s) && s[next] == '\r' {
				next++
			}
			if next+1 >= len(s) || s[next] != '\n' || !base64Bytes[s[next+1]] {
				break
			}
			end, wrapped = lineRunEnd(s, next+1), true
		}
		if wrapped {
			return start, end
		}
		i = end
	}
	return -1, -1
}

// lineRunEnd is the end of the base64 characters from i on.
func lineRunEnd(s string, i int) int {
	for i < len(s) && base64Bytes[s[i]] {
		i++
	}
	return i
}

// maskRun masks each base64 form of a value in run, wherever its lines break
// it: the part on each line becomes a Mask, and the line breaks stay. It
// tells whether it found one.
func (r *Redactor) maskRun(run string) (string, bool) {
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
		return run, false
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
	return b.String(), true
}

// unwrap returns s without its line breaks, and where in s each of its bytes
// is.
func unwrap(s string) (string, []int) {
	b := make([]byte, 0, len(s))
	at := make([]int, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '\n' && s[i] != '\r' {
			b = append(b, s[i])
			at = append(at, i)
		}
	}
	return string(b), at
}
