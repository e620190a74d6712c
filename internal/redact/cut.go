package redact

import "strings"

// Cut tells where a stream's buffered text s may be split, at end or before
// it, so that s[:c] is masked now and s[c:] later with the text still to
// come, and no value is split in two halves that are each masked alone (and
// so not at all). It is end moved back before every value, base64 form or
// token shape found in s that spans it, and before every end of s that the
// text to come could complete into a value, across base64's line breaks too.
// It is for a stream masked with String.
func (r *Redactor) Cut(s string, end int) int { return r.cut(s, end, true) }

// CutValues is Cut for a stream masked with Values, which masks no token
// shape: the cut is not kept clear of them. Looking for the shapes around
// every cut costs a body streamed through the proxy most of its speed.
func (r *Redactor) CutValues(s string, end int) int { return r.cut(s, end, false) }

func (r *Redactor) cut(s string, end int, shapes bool) int {
	for {
		c := r.cutBefore(s, end, shapes)
		if c == end {
			return c
		}
		end = c
	}
}

// cutBefore moves c once before what spans it, token shapes included when
// shapes is true.
func (r *Redactor) cutBefore(s string, c int, shapes bool) int {
	if c <= 0 {
		return 0
	}
	c = min(c, spanStart(s, c, r.needles), partialStart(s, c, r.needles))
	if shapes && s[c-1] != '\n' {
		lo := max(0, c-shapeReach)
		for _, m := range tokenShapes.FindAllStringIndex(s[lo:min(len(s), c+shapeReach)], -1) {
			if lo+m[0] < c && c < lo+m[1] {
				c = lo + m[0]
			}
		}
	}
	if len(r.encoded) == 0 {
		return c
	}
	// Only the text within reach of c can hold a value that spans it.
	lo := max(0, c-r.Reach())
	window := s[lo:min(len(s), c+r.Reach())]
	if !strings.ContainsAny(window, "\r\n") {
		// Unbroken, the base64 forms are among the needles looked for
		// above.
		return c
	}
	joined, at := unwrap(window)
	j := len(joined) // the first byte of joined at or after c
	for k, i := range at {
		if lo+i >= c {
			j = k
			break
		}
	}
	k := spanStart(joined, j, r.encoded)
	if endsWrappedLine(s[:c]) {
		k = min(k, partialStart(joined, j, r.encoded))
	}
	if k < j {
		c = lo + at[k]
	}
	return c
}

// minWrapWidth is the shortest line taken for one of a wrapped base64 run:
// base64 tools wrap at 76 (busybox, coreutils) or 64 (openssl) columns.
// Shorter lines, and lines with other characters, are let through whole at
// once, not held back in case the next line continues them.
const minWrapWidth = 32

// endsWrappedLine tells whether s ends with a line of base64 characters
// long enough to be part of a wrapped run that the next line may continue.
func endsWrappedLine(s string) bool {
	line, ok := strings.CutSuffix(s, "\n")
	if !ok {
		return false
	}
	line = strings.TrimSuffix(line, "\r")
	line = line[strings.LastIndexByte(line, '\n')+1:]
	return len(line) >= minWrapWidth && !strings.ContainsFunc(line, func(r rune) bool { return !isBase64(r) })
}

func isBase64(r rune) bool {
	return 'A' <= r && r <= 'Z' || 'a' <= r && r <= 'z' || '0' <= r && r <= '9' || strings.ContainsRune("+/=_-", r)
}

// spanStart is the start of the first of needles found in s that spans c,
// or c.
func spanStart(s string, c int, needles []string) int {
	start := c
	for _, n := range needles {
		lo := max(0, c-len(n)+1)
		w := s[lo:min(len(s), c+len(n)-1)]
		if i := strings.Index(w, n); i >= 0 && lo+i < c {
			start = min(start, lo+i)
		}
	}
	return start
}

// partialStart is the first i before c from which the rest of s begins one
// of needles, which what follows s may complete; or c.
func partialStart(s string, c int, needles []string) int {
	longest := 0
	for _, n := range needles {
		longest = max(longest, len(n))
	}
	for i := max(0, len(s)-longest+1); i < min(c, len(s)); i++ {
		for _, n := range needles {
			if len(n) > len(s)-i && strings.HasPrefix(n, s[i:]) {
				return i
			}
		}
	}
	return c
}
