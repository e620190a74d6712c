package credential

import (
	"fmt"
	"net/textproto"
	"strings"
	"unicode/utf8"
)

// MaxHeaderLength bounds a header's name.
const MaxHeaderLength = 128

// reservedHeaders are headers the proxy must not take from a credential:
// the hop-by-hop ones (RFC 9110 7.6.1; they are about one connection and
// removed on the way), and those that frame or route the message, which a
// value set by a user would corrupt or redirect.
var reservedHeaders = map[string]bool{
	"Connection":          true,
	"Keep-Alive":          true,
	"Proxy-Connection":    true,
	"Proxy-Authenticate":  true,
	"Proxy-Authorization": true,
	"Te":                  true,
	"Trailer":             true,
	"Transfer-Encoding":   true,
	"Upgrade":             true,
	"Host":                true,
	"Content-Length":      true,
	"Content-Encoding":    true,
	"Expect":              true,
}

// CheckHeader refuses a header name that is not an HTTP token (RFC 9110
// 5.6.2) or that the proxy must not set. Header names are case-insensitive;
// CanonicalHeader gives the form the proxy uses.
func CheckHeader(name string) error {
	if name == "" {
		return fmt.Errorf("the header name is empty: name the header the service reads, for example Authorization")
	}
	if len(name) > MaxHeaderLength {
		return fmt.Errorf("the header name is %d characters long, more than %d", len(name), MaxHeaderLength)
	}
	if i := strings.IndexFunc(name, func(r rune) bool { return !isTokenRune(r) }); i >= 0 {
		r, _ := utf8.DecodeRuneInString(name[i:])
		return fmt.Errorf("the header name %q has %q at byte %d: a header name is letters, digits and !#$%%&'*+-.^_`|~", name, r, i)
	}
	if c := CanonicalHeader(name); reservedHeaders[c] {
		return fmt.Errorf("the header %s is not one a credential may set: it is about the connection or the message's framing, not authentication", c)
	}
	return nil
}

// CanonicalHeader is name as net/http keys it.
func CanonicalHeader(name string) string { return textproto.CanonicalMIMEHeaderKey(name) }

// isTokenRune is a tchar of RFC 9110 5.6.2.
func isTokenRune(r rune) bool {
	return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' ||
		r < 0x80 && strings.ContainsRune("!#$%&'*+-.^_`|~", r)
}
