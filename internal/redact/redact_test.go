package redact

import (
	"encoding/base64"
	"encoding/json"
	"math/rand/v2"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const token = "s3cr3t-T0ken/with+odd&chars<>=="

func TestValueIsMaskedInEveryEncoding(t *testing.T) {
	r := New(token)
	jsonValue, _ := json.Marshal(map[string]string{"authorization": "token " + token})
	forms := map[string]string{
		"plain":       "GH_TOKEN=" + token + "\n",
		"url":         "https://x/?t=" + url.QueryEscape(token),
		"path":        "https://x/" + url.PathEscape(token) + "/y",
		"json":        string(jsonValue),
		"stderr-like": "curl: (22) Authorization: token " + token,
	}
	// base64 of the value at every alignment inside a longer text, in both
	// alphabets.
	for prefix := range 3 {
		text := strings.Repeat("x", prefix) + "Basic " + token + "!"
		forms["base64-std-"+string(rune('0'+prefix))] = base64.StdEncoding.EncodeToString([]byte(text))
		forms["base64-url-"+string(rune('0'+prefix))] = base64.URLEncoding.EncodeToString([]byte(text))
	}
	for name, text := range forms {
		got := r.String(text)
		if strings.Contains(got, token) || !strings.Contains(got, Mask) {
			t.Errorf("%s: %q -> %q", name, text, got)
		}
		// Of a base64 form, no run of the value's own encoding longer than
		// its edges may survive.
		if strings.HasPrefix(name, "base64") {
			for k := range 3 {
				whole := token[k:][:len(token[k:])/3*3]
				for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
					if e := enc.EncodeToString([]byte(whole)); strings.Contains(got, e) {
						t.Errorf("%s: the encoding %q survived in %q", name, e, got)
					}
				}
			}
		}
	}
}

func TestMultiLineValueIsMaskedLineByLine(t *testing.T) {
	key := "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END KEY-----\n"
	r := New(key)
	got := r.String("only the middle line leaked: MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n")
	if strings.Contains(got, "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC") {
		t.Fatalf("a line of a multi-line value survived: %q", got)
	}
}

func TestShortValuesAreNotMasked(t *testing.T) {
	r := New("abc", "")
	if got := r.String("abc is a common word"); got != "abc is a common word" {
		t.Fatalf("a value shorter than %d must not be masked: %q", MinSecretLength, got)
	}
}

func TestTokenShapesAreMaskedWithoutKnowingTheValue(t *testing.T) {
	r := New()
	for _, tok := range []string{
		"sk-ant-api03-AbCdEfGhIjKlMnOpQrSt",
		"ghp_0123456789abcdefghijABCDEFGHIJ012345",
		"gho_0123456789abcdefghijABCDEFGHIJ",
		"github_pat_11ABCDEFG0123456789_abcdefghij",
		"glpat-abcdefghij0123456789",
		"xoxb-1234567890-abcdefghij",
		"AKIAIOSFODNN7EXAMPLE",
		"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
	} {
		if got := r.String("found " + tok + " in a file"); strings.Contains(got, tok) || got != "found "+Mask+" in a file" {
			t.Errorf("%s -> %q", tok, got)
		}
	}
	for _, ordinary := range []string{"ghp_short", "the sk-ant- prefix", "AKIA lower", "eyJ.alone"} {
		if got := r.String(ordinary); got != ordinary {
			t.Errorf("ordinary text %q was changed to %q", ordinary, got)
		}
	}
}

func TestTerminalControlIsStripped(t *testing.T) {
	r := New(token)
	in := "\x1b[31mred\x1b[0m \x1b]0;pwned title\x07ok\rhidden\x07bell\x00nul\ttab\nnext\u009b2J"
	want := "red okhiddenbellnul\ttab\nnext2J"
	if got := r.String(in); got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	// A value split by an escape sequence is caught once the sequence goes.
	split := token[:5] + "\x1b[0m" + token[5:]
	if got := r.String(split); strings.Contains(got, token) {
		t.Fatalf("a value split by an escape sequence survived: %q", got)
	}
}

func TestRedactionIsLinearInTheOutput(t *testing.T) {
	values := make([]string, 50)
	for i := range values {
		values[i] = strings.Repeat(string(rune('a'+i%26)), 40) + "-secret"
	}
	r := New(values...)
	out := strings.Repeat("an ordinary line of agent output, with numbers 12345\n", 1<<14) // ~850 KiB
	got := r.String(out)
	if got != out {
		t.Fatal("ordinary output must pass through unchanged")
	}
}

// plainValue has no known token shape, so only knowing it masks it.
const plainValue = "Zq8wLm3vRt7yKp2nXc5bHj9dFg4sAe6u"

// A value stored with echo's newline is masked in the encodings of the
// value without it, as an agent prints it.
func TestValueStoredWithALineEndIsMaskedWithoutIt(t *testing.T) {
	r := New(plainValue + "\n")
	for prefix := range 3 {
		text := strings.Repeat("x", prefix) + "Basic " + plainValue
		for _, form := range []string{
			"https://x/?t=" + url.QueryEscape(plainValue+"/"),
			base64.StdEncoding.EncodeToString([]byte(text)),
		} {
			if got := r.String(form); !strings.Contains(got, Mask) || leaksBase64(got, plainValue) {
				t.Errorf("%q -> %q", form, got)
			}
		}
	}
}

// Base64 wrapped at 76 columns, as busybox and coreutils print it, is masked
// across its line breaks, at every alignment and wrap position.
func TestWrappedBase64IsMasked(t *testing.T) {
	r := New(plainValue)
	for prefix := range 80 {
		text := "Authorization: Basic " + strings.Repeat("y", prefix) + plainValue
		got := r.String("printed:\n" + wrap(base64.StdEncoding.EncodeToString([]byte(text)), 76) + "done\n")
		if !strings.Contains(got, Mask) || leaksBase64(got, plainValue) {
			t.Errorf("prefix %d: %q", prefix, got)
		}
	}
}

// wrap breaks s into lines of n characters.
func wrap(s string, n int) string {
	var b strings.Builder
	for len(s) > n {
		b.WriteString(s[:n] + "\n")
		s = s[n:]
	}
	return b.String() + s + "\n"
}

// leaksBase64 tells whether any run of base64 characters in text, its line
// breaks removed, decodes (at any of its four alignments) to bytes holding 8
// bytes of value in a row.
func leaksBase64(text, value string) bool {
	joined := strings.NewReplacer("\r", "", "\n", "").Replace(text)
	for _, run := range regexp.MustCompile(`[A-Za-z0-9+/_-]{11,}`).FindAllString(joined, -1) {
		for k := range 4 {
			part := run[k:]
			part = part[:len(part)/4*4]
			for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
				decoded, _ := enc.DecodeString(part)
				for i := 0; i+8 <= len(value); i++ {
					if strings.Contains(string(decoded), value[i:i+8]) {
						return true
					}
				}
			}
		}
	}
	return false
}

// Cut never splits a value so that each half is masked alone: a value in
// the text, one that the text to come may complete, one wrapped across
// lines, and a token shape.
func TestCutKeepsValuesWhole(t *testing.T) {
	r := New(plainValue)
	encoded := wrap(base64.StdEncoding.EncodeToString([]byte("Authorization: Basic "+strings.Repeat("x", 19)+plainValue)), 76)
	for name, tc := range map[string]struct {
		text string
		end  int
	}{
		"value in the text":     {"abc " + plainValue + " def", 10},
		"value begun":           {"abc " + plainValue[:10], 8},
		"wrapped base64":        {encoded[:90], 77},
		"token shape":           {"x sk-ant-api03-AbCdEfGhIjKlMnOpQrSt y", 12},
		"wrapped base64, whole": {encoded + "next\n", len(encoded) - 5},
	} {
		c := r.Cut(tc.text, tc.end)
		got := r.String(tc.text[:c])
		if strings.Contains(got, plainValue[:4]) || leaksBase64(got, plainValue) || strings.Contains(got, "sk-ant") || c > tc.end {
			t.Errorf("%s: cut at %d of %d leaves %q", name, c, tc.end, got)
		}
	}
	if c := r.Cut("ordinary text\nmore of it\n", 25); c != 25 {
		t.Errorf("ordinary text is cut at %d, not 25", c)
	}
}

// CutValues, for a stream masked with Values, holds back a value the text
// to come may complete but not a token shape, which Values never masks: a
// streamed answer is passed on at once.
func TestCutValuesHoldsBackValuesNotTokenShapes(t *testing.T) {
	r := New(plainValue)
	shape := "x sk-ant-api03-AbCdEfGhIjKlMnOpQrSt y"
	if c := r.CutValues(shape, 12); c != 12 {
		t.Errorf("a token shape is cut at %d, not 12", c)
	}
	if c := r.CutValues("abc "+plainValue[:10], 8); c > 4 {
		t.Errorf("a value begun is cut at %d, after its start at 4", c)
	}
}

// The scan for wrapped base64 runs finds what the pattern it replaces
// found: runs of base64 characters going on across "\n" or "\r\n".
func TestWrappedRunsAreFoundAsThePatternFindsThem(t *testing.T) {
	pattern := regexp.MustCompile(`[A-Za-z0-9+/=_-]+(?:\r?\n[A-Za-z0-9+/=_-]+)+`)
	rnd := rand.New(rand.NewPCG(1, 2))
	const alphabet = "aZ9+/=_-\r\n .:\x00\xff"
	for range 20000 {
		b := make([]byte, rnd.IntN(40))
		for i := range b {
			b[i] = alphabet[rnd.IntN(len(alphabet))]
		}
		s := string(b)
		var got [][]int
		for from := 0; ; {
			start, end := wrappedRun(s, from)
			if start < 0 {
				break
			}
			got, from = append(got, []int{start, end}), end
		}
		if want := pattern.FindAllStringIndex(s, -1); !slices.EqualFunc(got, want, slices.Equal) {
			t.Fatalf("in %q: found %v, the pattern %v", s, got, want)
		}
	}
}

func TestValuesMasksOnlyTheValuesAndKeepsAllElse(t *testing.T) {
	r := New("s3cr3t-value")
	in := "\x1b[31mghp_abcdefghijklmnopqrstuvwxyz s3cr3t-value czNjcjN0LXZhbHVl\x00"
	want := "\x1b[31mghp_abcdefghijklmnopqrstuvwxyz *** ***\x00"
	if got := r.Values(in); got != want {
		t.Errorf("Values(%q) = %q; want %q", in, got, want)
	}
}
