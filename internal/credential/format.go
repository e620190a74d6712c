// Package credential parses and renders the header a host adds to a run's
// requests for a credentialed destination: the header's name and the
// format its value is built from (spec.egress.credentials[].header and
// .format). It is pure and uses only the standard library, so the webhook,
// the CRD's tests and the host's proxy share one reading of a format.
//
// A format is text with exactly one {} where the secret's value goes:
//
//	Bearer {}                          Authorization: Bearer <value>
//	token {}                           Authorization: token <value>
//	{}                                 x-api-key: <value>
//	Basic base64(x-access-token:{})    Authorization: Basic <base64 of "x-access-token:<value>">
//
// base64(...) is the one function: HTTP basic authentication is
// "Basic " + base64("user:password"), and the form spells that out as the
// RFC and GitHub's documentation do, so a reader of kubectl explain sees
// what is sent, can put the value on either side of the colon
// (base64({}:) for services that take the token as the user), and needs no
// second syntax. Parentheses, braces and control characters have no other
// meaning, so they are refused rather than guessed at.
package credential

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Placeholder is where the secret's value goes in a format.
const Placeholder = "{}"

// MaxFormatLength bounds a format; a header value this long is already
// more than any service asks for.
const MaxFormatLength = 256

const fn = "base64("

// Format is a parsed format: Render builds the header's value from a
// secret's value.
type Format struct {
	// before and after surround the value, or the base64 of
	// innerBefore+value+innerAfter when encode is set.
	before, after           string
	encode                  bool
	innerBefore, innerAfter string
}

// ParseFormat reads a format as a user writes it. Its errors say what is
// wrong and how the format should look.
func ParseFormat(s string) (Format, error) {
	if s == "" {
		return Format{}, errors.New(`the format is empty: write where the secret's value goes as {}, for example "Bearer {}"`)
	}
	if len(s) > MaxFormatLength {
		return Format{}, fmt.Errorf("the format is %d characters long, more than %d", len(s), MaxFormatLength)
	}
	// Printable ASCII only: what services ask for is, and a byte of a
	// multi-byte character could join one of the value's to make a
	// control character.
	if i := strings.IndexFunc(s, func(r rune) bool { return r < 0x20 || r > 0x7e }); i >= 0 {
		r, _ := utf8.DecodeRuneInString(s[i:])
		return Format{}, fmt.Errorf("the format has %q at byte %d: a header value is one line of printable ASCII, with no control character", r, i)
	}
	if n := strings.Count(s, Placeholder); n != 1 {
		return Format{}, fmt.Errorf(`the format has %d {}, not exactly one: write where the secret's value goes as {}, for example "Bearer {}"`, n)
	}
	f, err := parseFunction(s)
	if err != nil {
		return Format{}, err
	}
	for _, part := range []string{f.before, f.after, f.innerBefore, f.innerAfter} {
		if strings.ContainsAny(part, "{}") {
			return Format{}, errors.New("the format has a { or } that is not the {}: braces mean only where the value goes")
		}
		if strings.ContainsAny(part, "()") {
			return Format{}, errors.New("the format has a ( or ) that is not part of base64(...): parentheses mean only that function")
		}
	}
	return f, nil
}

// parseFunction splits s around its base64(...), if it has one, and
// refuses any other name written like a function.
func parseFunction(s string) (Format, error) {
	open := strings.IndexByte(s, '(')
	if open < 0 {
		before, after, _ := strings.Cut(s, Placeholder)
		return Format{before: before, after: after}, nil
	}
	name := s[:open]
	name = name[strings.LastIndexFunc(name, func(r rune) bool { return !isNameRune(r) })+1:]
	if name != "base64" {
		if name == "" {
			name = "(...)"
		} else {
			name += "(...)"
		}
		return Format{}, fmt.Errorf("the format uses %s, which is not a function: the only one is base64(...), as in \"Basic base64(x-access-token:{})\"", name)
	}
	end := strings.IndexByte(s[open:], ')')
	if end < 0 {
		return Format{}, errors.New("the format's base64( has no closing )")
	}
	end += open
	inner := s[open+1 : end]
	innerBefore, innerAfter, ok := strings.Cut(inner, Placeholder)
	if !ok {
		return Format{}, errors.New("the format's base64(...) does not hold the {}: write the value inside it, as in \"Basic base64(x-access-token:{})\"")
	}
	return Format{
		before: s[:open-len("base64")], after: s[end+1:],
		encode: true, innerBefore: innerBefore, innerAfter: innerAfter,
	}, nil
}

// Render returns the header's value for a secret's value. A value stored
// with the line end echo adds (echo "$TOKEN" | podman secret create) has
// it trimmed; any other control character, a line break inside the value
// above all, is refused: it would end the header and start another.
func (f Format) Render(value string) (string, error) {
	value = strings.TrimRight(value, "\r\n")
	if value == "" {
		return "", errors.New("the secret's value is empty")
	}
	if strings.ContainsFunc(value, isControl) {
		return "", errors.New("the secret's value has a line break or another control character inside it: store the token alone")
	}
	if !utf8.ValidString(value) {
		return "", errors.New("the secret's value is not UTF-8 text: store the token alone")
	}
	v := value
	if f.encode {
		v = base64.StdEncoding.EncodeToString([]byte(f.innerBefore + value + f.innerAfter))
	}
	return f.before + v + f.after, nil
}

// String is the format as written.
func (f Format) String() string {
	if !f.encode {
		return f.before + Placeholder + f.after
	}
	return f.before + fn + f.innerBefore + Placeholder + f.innerAfter + ")" + f.after
}

func isNameRune(r rune) bool {
	return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '_'
}

// isControl is every C0 control character, DEL and C1 controls: none has a
// place in a header value (a tab would be legal, but no format needs one).
func isControl(r rune) bool {
	return r < 0x20 || 0x7f <= r && r < 0xa0
}
