package budget

import "testing"

func TestParseUSD(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want USD
		str  string
	}{
		{"0", 0, "0"},
		{"5", 5_000_000, "5"},
		{"0.05", 50_000, "0.05"},
		{"0.0012", 1_200, "0.0012"},
		{"007.500", 7_500_000, "7.5"},
		// Past the millionth, a cost rounds up: never counted as less.
		{"0.0000001", 1, "0.000001"},
		{"0.1234560", 123_456, "0.123456"},
	} {
		got, err := ParseUSD(tc.in)
		if err != nil || got != tc.want || got.String() != tc.str {
			t.Errorf("ParseUSD(%q) = %d (%s), %v; want %d (%s)", tc.in, got, got, err, tc.want, tc.str)
		}
	}
	for _, bad := range []string{"", "-1", "1e3", ".5", "5.", "1.2.3", "99999999999999999999"} {
		if got, err := ParseUSD(bad); err == nil {
			t.Errorf("ParseUSD(%q) = %s, want an error", bad, got)
		}
	}
}
