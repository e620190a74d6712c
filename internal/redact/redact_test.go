package redact

import (
	"encoding/base64"
	"encoding/json"
	"net/url"
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
