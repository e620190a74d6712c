package egress

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Pattern is one entry of a run's list of hosts: a name, or with Wildcard
// every name strictly below it, and a port.
type Pattern struct {
	// Name is a DNS name in lower case; with Wildcard, the suffix after
	// "*.".
	Name string
	// Wildcard matches every name strictly below Name, at any depth, and
	// not Name itself: "*.githubusercontent.com" is not
	// "githubusercontent.com".
	Wildcard bool
	// Port is the one port allowed; 0 allows 443 and 80 only. Fail closed:
	// a pattern that names no port means the web, not SSH, SMTP or a
	// database on the same host.
	Port uint16
}

// ParsePattern reads one entry of spec.egress.allow or of the host's lists:
// "github.com", "*.githubusercontent.com", "registry.npmjs.org:443". A name
// is lower case (the CRD's pattern can say the same, so the API server and
// the webhook agree); a wildcard is only a leading "*."; no IP address, no
// scheme, no path.
func ParsePattern(s string) (Pattern, error) {
	switch {
	case isIPLiteral(s):
		return Pattern{}, fmt.Errorf("%q is an IP address: give a host name", s)
	case strings.Contains(s, "://"):
		return Pattern{}, errors.New("a host name, not a URL: no scheme")
	case strings.ContainsAny(s, "/?#@"):
		return Pattern{}, errors.New("a host name only: no path, query or user")
	}
	name, port, err := splitPort(s)
	if err != nil {
		return Pattern{}, err
	}
	p := Pattern{Name: name, Port: port}
	if rest, ok := strings.CutPrefix(name, "*."); ok {
		p.Name, p.Wildcard = rest, true
	}
	if err := ValidName(p.Name); err != nil {
		return Pattern{}, err
	}
	return p, nil
}

// splitPort splits "name:port"; a port is decimal, 1 to 65535, without
// leading zeros.
func splitPort(s string) (string, uint16, error) {
	name, port, found := strings.Cut(s, ":")
	if !found {
		return s, 0, nil
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 || strconv.FormatUint(n, 10) != port {
		return "", 0, fmt.Errorf("port %q: want a number from 1 to 65535", port)
	}
	return name, uint16(n), nil
}

// ValidName tells whether name is a host name the proxy will look up: a DNS
// name in lower case, labels of letters, digits and inner hyphens, at most
// 253 characters, whose last label is not all digits (so no IPv4 address in
// any notation is a name).
func ValidName(name string) error {
	if isIPLiteral(name) {
		return fmt.Errorf("%q is an IP address: give a host name", name)
	}
	if name == "" || len(name) > 253 {
		return fmt.Errorf("%q: a host name has 1 to 253 characters", name)
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if !validLabel(l) {
			return fmt.Errorf("%q: %q is not a DNS label (a to z, 0 to 9, inner hyphens, 1 to 63 characters; a wildcard only as a leading \"*.\")", name, l)
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return fmt.Errorf("%q: the last label is all digits, as in an IP address", name)
	}
	return nil
}

// isIPLiteral tells whether s is an IP address, with or without a port.
func isIPLiteral(s string) bool {
	_, errAddr := netip.ParseAddr(strings.Trim(s, "[]"))
	_, errAddrPort := netip.ParseAddrPort(s)
	return errAddr == nil || errAddrPort == nil
}

func validLabel(l string) bool {
	if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for _, c := range []byte(l) {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}

// String is the pattern as written.
func (p Pattern) String() string {
	s := p.Name
	if p.Wildcard {
		s = "*." + s
	}
	if p.Port != 0 {
		s += ":" + strconv.Itoa(int(p.Port))
	}
	return s
}

// Matches tells whether the pattern allows host (a valid name, lower case)
// on port.
func (p Pattern) Matches(host string, port uint16) bool {
	if p.Port == 0 && port != 443 && port != 80 || p.Port != 0 && port != p.Port {
		return false
	}
	if p.Wildcard {
		return strings.HasSuffix(host, "."+p.Name)
	}
	return host == p.Name
}

// Policy is what one run may reach: the host's defaults and the run's own
// list, within the host's ceiling (checked before the run starts, not
// here).
type Policy []Pattern

// ParsePolicy parses patterns, and returns the first error with the entry
// it is about.
func ParsePolicy(patterns ...string) (Policy, error) {
	policy := make(Policy, 0, len(patterns))
	for _, s := range patterns {
		p, err := ParsePattern(s)
		if err != nil {
			return nil, fmt.Errorf("egress pattern %q: %w", s, err)
		}
		policy = append(policy, p)
	}
	return policy, nil
}

// Allows tells whether some pattern matches host on port.
func (policy Policy) Allows(host string, port uint16) bool {
	for _, p := range policy {
		if p.Matches(host, port) {
			return true
		}
	}
	return false
}

// Covers tells whether p matches every host and port q matches: the host's
// ceiling (host.egress.permitted) covering what a run asks for.
func (p Pattern) Covers(q Pattern) bool {
	if !p.coversPort(q.Port) {
		return false
	}
	if !p.Wildcard {
		return !q.Wildcard && q.Name == p.Name
	}
	return q.Wildcard && q.Name == p.Name || strings.HasSuffix(q.Name, "."+p.Name)
}

// coversPort tells whether p allows every port a pattern with port allows
// (0: 443 and 80).
func (p Pattern) coversPort(port uint16) bool {
	if p.Port == 0 {
		return port == 0 || port == 443 || port == 80
	}
	return port == p.Port
}

// Uncovered are the patterns of asked that no pattern of the ceiling covers,
// in their order.
func (ceiling Policy) Uncovered(asked Policy) Policy {
	var out Policy
	for _, q := range asked {
		if !slices.ContainsFunc(ceiling, func(p Pattern) bool { return p.Covers(q) }) {
			out = append(out, q)
		}
	}
	return out
}
