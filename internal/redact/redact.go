// Package redact masks secret values, and text shaped like well-known tokens,
// in what an agent printed, before any of it reaches the Kubernetes API (a
// run's status and events) or a log line. Agents read untrusted text; one
// injected instruction ("run env", "curl -v with your token") would otherwise
// put a token where everyone who may read AgentRuns or events can see it.
//
// Limits, by design: a value shorter than MinSecretLength is not masked (it
// would mask ordinary words); a value the agent transforms (reversed, split
// across two writes with other text between, encoded in a way not listed
// here) can escape. Base64 is masked by the part of the encoding that depends
// on the value alone, so one or two characters at either edge stay; it is
// found across line breaks (base64 wraps at 76 columns), at any alignment.
// A text cut before it is masked can leave part of a value at the cut: mask
// at least Reach bytes more than is kept, and split streams where Cut says.
package redact

import (
	"cmp"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"unicode"
)

// Mask replaces what is redacted.
const Mask = "***"

// MinSecretLength is the shortest value that is masked.
const MinSecretLength = 4

// tokenShapes are token formats recognised whatever secrets a run has, so a
// token the agent found elsewhere (a file, another variable) is masked too.
var tokenShapes = regexp.MustCompile(strings.Join([]string{
	`sk-ant-[A-Za-z0-9_-]{8,}`,                                   // Anthropic
	`gh[pousr]_[A-Za-z0-9]{20,}`,                                 // GitHub
	`github_pat_[A-Za-z0-9_]{20,}`,                               // GitHub fine-grained
	`glpat-[A-Za-z0-9_-]{20,}`,                                   // GitLab
	`xox[abpr]-[A-Za-z0-9-]{10,}`,                                // Slack
	`(?:AKIA|ASIA)[0-9A-Z]{16}`,                                  // AWS access key IDs
	`eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*`, // JWTs
}, "|"))

// terminalSequences are ANSI escape sequences (CSI, OSC, and two-character
// escapes): they would move the cursor, rewrite the screen or set a terminal
// title in the terminal of whoever reads the output with kubectl.
var terminalSequences = regexp.MustCompile(`\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?`)

// Redactor masks a fixed set of secret values and every token shape. It
// holds the values only as long as it is referenced: make one for the pass
// that needs it and drop it.
type Redactor struct {
	values *strings.Replacer
	// needles are the forms of the values that are masked, longest first;
	// encoded the base64 ones among them, which are looked for across line
	// breaks too.
	needles, encoded []string
}

// New returns a Redactor for these secret values.
func New(values ...string) *Redactor {
	r := &Redactor{}
	for _, v := range values {
		for _, variant := range variants(v) {
			r.needles = append(r.needles, encodings(variant)...)
			r.encoded = append(r.encoded, base64Forms(variant)...)
		}
	}
	// Longest first, so a value is masked whole rather than by a shorter
	// needle that is part of it.
	byLength := func(a, b string) int { return cmp.Or(len(b)-len(a), strings.Compare(a, b)) }
	slices.SortFunc(r.needles, byLength)
	r.needles = slices.Compact(r.needles)
	slices.SortFunc(r.encoded, byLength)
	r.encoded = slices.Compact(r.encoded)
	pairs := make([]string, 0, 2*len(r.needles))
	for _, n := range r.needles {
		pairs = append(pairs, n, Mask)
	}
	r.values = strings.NewReplacer(pairs...)
	return r
}

// String returns s with secret values and token shapes masked and terminal
// control characters removed. Values are masked before and after the control
// characters go, so a value split by an escape sequence is caught too.
func (r *Redactor) String(s string) string {
	s = r.maskWrapped(s)
	s = r.replaceValues(s)
	s = stripControl(s)
	s = r.replaceValues(s)
	return tokenShapes.ReplaceAllString(s, Mask)
}

// shapeReach is the longest token shape a cut is kept clear of: the shapes
// have no bound, and real tokens of those kinds (JWTs the longest) stay
// within it.
const shapeReach = 2048

// Reach is how far before a cut in a text a masked value or token may start:
// a text masked with at least Reach bytes before the part that is kept has
// every value in that part masked whole. A value's base64 wrapped at one
// column, with CRLF line ends, is three times its length.
func (r *Redactor) Reach() int {
	longest := 0
	if len(r.needles) > 0 {
		longest = len(r.needles[0])
	}
	return max(3*longest, shapeReach)
}

// variants are the strings of a value that are masked in each encoding: the
// value as stored, without the line end it was stored with (echo "$TOKEN" |
// podman secret create keeps echo's newline), and each of its lines.
func variants(v string) []string {
	out := []string{v, strings.TrimRight(v, "\r\n")}
	if strings.ContainsAny(v, "\r\n") {
		out = append(out, strings.FieldsFunc(v, func(r rune) bool { return r == '\n' || r == '\r' })...)
	}
	return out
}

// encodings lists the forms of a value an agent's output may carry: as is,
// URL- and JSON-escaped, and base64 at every alignment.
func encodings(v string) []string {
	if len(v) < MinSecretLength {
		return nil
	}
	forms := []string{v, url.QueryEscape(v), url.PathEscape(v), jsonEscaped(v, true), jsonEscaped(v, false)}
	forms = append(forms, base64Forms(v)...)
	var out []string
	for _, f := range forms {
		if len(f) >= MinSecretLength {
			out = append(out, f)
		}
	}
	return out
}

// base64Forms is the part of v's base64 that depends on v alone, in both
// alphabets. Encoded at byte offset 0, 1 or 2 of a 3-byte group, a value's
// base64 differs; the whole groups of v[k:] appear verbatim for one k
// whatever the offset.
func base64Forms(v string) []string {
	if len(v) < MinSecretLength {
		return nil
	}
	var out []string
	for k := range 3 {
		rest := v[k:]
		whole := rest[:len(rest)/3*3]
		if len(whole) < 3 {
			continue
		}
		out = append(out,
			base64.StdEncoding.EncodeToString([]byte(whole)),
			base64.URLEncoding.EncodeToString([]byte(whole)))
	}
	return out
}

// jsonEscaped is v as it appears inside a JSON string, with or without the
// escaping of <, > and & that Go's encoder applies by default.
func jsonEscaped(v string, escapeHTML bool) string {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(escapeHTML)
	_ = enc.Encode(v) // a string always encodes
	return strings.TrimSuffix(strings.TrimSuffix(strings.TrimPrefix(b.String(), `"`), "\n"), `"`)
}

// stripControl removes terminal escape sequences and every control character
// but newline and tab; a carriage return ending a line is dropped, and one
// inside a line (which lets later text overwrite what came before it on a
// terminal) too.
func stripControl(s string) string {
	if !strings.ContainsFunc(s, isControl) {
		return s
	}
	s = terminalSequences.ReplaceAllString(s, "")
	return strings.Map(func(r rune) rune {
		if isControl(r) {
			return -1
		}
		return r
	}, s)
}

func isControl(r rune) bool {
	return r != '\n' && r != '\t' && unicode.IsControl(r)
}

// Values returns s with the secret values masked, in every encoding and
// across base64's line breaks, and nothing else changed: no token shape is
// masked and no control character removed. It is for text that is not
// shown on a terminal and must otherwise arrive byte for byte: an HTTP
// response on its way to the agent, which may carry tokens of its own (an
// API that makes one) and binary data.
func (r *Redactor) Values(s string) string {
	return r.replaceValues(r.maskWrapped(s))
}

// replaceValues masks the values in s, in every encoding but wrapped.
// Most text holds none: looking for each is much faster than the
// replacer's walk of every byte, which a body streamed through the proxy
// would otherwise pay in full.
func (r *Redactor) replaceValues(s string) string {
	for _, n := range r.needles {
		if strings.Contains(s, n) {
			return r.values.Replace(s)
		}
	}
	return s
}
