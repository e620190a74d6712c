package policy

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

var memoryPattern = regexp.MustCompile(`^([1-9][0-9]*)([bkmgBKMG]?)$`)

// ParseMemory reads Podman's memory notation (512m, 2g; b, k, m, g are
// powers of 1024). Empty means no limit.
func ParseMemory(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	m := memoryPattern.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("%q is not a number with an optional unit b, k, m or g", s)
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q: %w", s, err)
	}
	shift := map[string]uint{"": 0, "b": 0, "k": 10, "m": 20, "g": 30}[strings.ToLower(m[2])]
	if n > (1<<62)>>shift {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return n << shift, nil
}

// ParseCPUs reads Podman's --cpus notation (1, 0.5). Empty means no limit.
func ParseCPUs(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f <= 0 || f > 1e6 {
		return 0, fmt.Errorf("%q is not a positive number of CPUs", s)
	}
	return int64(f * 1e9), nil
}
