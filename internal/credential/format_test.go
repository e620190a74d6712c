package credential

import (
	"encoding/base64"
	"strings"
	"testing"
)

func TestFormatsRenderTheHeaderServicesExpect(t *testing.T) {
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("x-access-token:ghp_abc"))
	for _, c := range []struct{ format, value, want string }{
		{"Bearer {}", "ghp_abc", "Bearer ghp_abc"},
		{"token {}", "ghp_abc", "token ghp_abc"},
		{"{}", "sk-ant-xyz", "sk-ant-xyz"},
		{"Basic base64(x-access-token:{})", "ghp_abc", basic},
		{"Basic base64(x-access-token:{})", "ghp_abc\n", basic}, // echo's line end
		{"Basic base64({}:)", "tok", "Basic " + base64.StdEncoding.EncodeToString([]byte("tok:"))},
	} {
		f, err := ParseFormat(c.format)
		if err != nil {
			t.Fatalf("ParseFormat(%q): %v", c.format, err)
		}
		if f.String() != c.format {
			t.Errorf("ParseFormat(%q).String() = %q", c.format, f.String())
		}
		got, err := f.Render(c.value)
		if err != nil || got != c.want {
			t.Errorf("%q.Render(%q) = %q, %v; want %q", c.format, c.value, got, err, c.want)
		}
	}
}

func TestParseFormatRefusesWhatItCannotReadAndSaysWhy(t *testing.T) {
	for _, c := range []struct{ format, says string }{
		{"", "empty"},
		{"Bearer", "0 {}"},
		{"Bearer {} {}", "2 {}"},
		{"Bearer {}\n", `'\n' at byte 9`},
		{"Bearer {}\r\nX-Evil: 1", "no control character"},
		{"Bearer ö{}", "printable ASCII"},
		{"Bearer\t{}", "no control character"},
		{"Basic sha256({})", "sha256(...), which is not a function"},
		{"Basic Base64({})", "Base64(...), which is not a function"},
		{"Bearer ({})", "(...), which is not a function"},
		{"Basic base64(x-access-token:{}", "no closing )"},
		{"Basic base64(x-access-token:) {}", "does not hold the {}"},
		{"Basic base64({}) base64(x)", "parentheses"},
		{"Basic base64({}))", "parentheses"},
		{"Bearer {x}{}", "braces"},
		{"Bearer {{}}", "braces"},
		{strings.Repeat("a", MaxFormatLength) + "{}", "more than"},
	} {
		_, err := ParseFormat(c.format)
		if err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("ParseFormat(%q) = %v; want an error saying %q", c.format, err, c.says)
		}
	}
}

func TestRenderRefusesAValueThatWouldBreakTheHeader(t *testing.T) {
	f, err := ParseFormat("Bearer {}")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"", "\n", "a\nb", "a\r\nX-Evil: 1", "a\x00b", "a\x7fb", "a\u0085b", "\x85"} {
		if got, err := f.Render(v); err == nil {
			t.Errorf("Render(%q) = %q; want an error", v, got)
		}
	}
}

func TestCheckHeaderTakesTokensButNotConnectionHeaders(t *testing.T) {
	for _, ok := range []string{"Authorization", "x-api-key", "PRIVATE-TOKEN", "X-Auth_Token"} {
		if err := CheckHeader(ok); err != nil {
			t.Errorf("CheckHeader(%q): %v", ok, err)
		}
	}
	for _, c := range []struct{ name, says string }{
		{"", "empty"},
		{"Authorization:", "has ':'"},
		{"X Auth", "has ' '"},
		{"X-Auth\r\n", `has '\r'`},
		{"Authörization", "has 'ö'"},
		{"connection", "Connection is not one"},
		{"HOST", "Host is not one"},
		{"content-length", "Content-Length is not one"},
		{"Transfer-Encoding", "not one"},
		{"Proxy-Authorization", "not one"},
		{"te", "Te is not one"},
		{strings.Repeat("x", MaxHeaderLength+1), "more than"},
	} {
		err := CheckHeader(c.name)
		if err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("CheckHeader(%q) = %v; want an error saying %q", c.name, err, c.says)
		}
	}
}

// FuzzFormat checks that ParseFormat never panics, that what it accepts
// reads back as written, and that a rendered value never holds a line
// break or a control character: the value is checked too, so neither a
// format nor a secret can add a header.
func FuzzFormat(f *testing.F) {
	for _, s := range []string{"Bearer {}", "{}", "Basic base64(x-access-token:{})", "base64({}:)", "a(b", "{}{}", "\r\n"} {
		f.Add(s, "ghp_abc")
	}
	f.Add("Bearer {}", "a\r\nX: y")
	f.Fuzz(func(t *testing.T, format, value string) {
		p, err := ParseFormat(format)
		if err != nil {
			return
		}
		if p.String() != format {
			t.Fatalf("ParseFormat(%q).String() = %q", format, p.String())
		}
		out, err := p.Render(value)
		if err != nil {
			return
		}
		if strings.ContainsFunc(out, isControl) {
			t.Fatalf("%q.Render(%q) = %q holds a control character", format, value, out)
		}
		if v := strings.TrimRight(value, "\r\n"); !p.encode && !strings.Contains(out, v) {
			t.Fatalf("%q.Render(%q) = %q does not hold the value", format, value, out)
		}
	})
}
