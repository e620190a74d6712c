package policy

import "testing"

func TestParseMemory(t *testing.T) {
	for in, want := range map[string]int64{"": 0, "100": 100, "100b": 100, "4k": 4096, "512m": 512 << 20, "2g": 2 << 30, "2G": 2 << 30} {
		if got, err := ParseMemory(in); err != nil || got != want {
			t.Errorf("ParseMemory(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"0", "-1", "1t", "1.5g", "99999999999999999999g", "m"} {
		if _, err := ParseMemory(in); err == nil {
			t.Errorf("ParseMemory(%q) should fail", in)
		}
	}
}

func TestParseCPUs(t *testing.T) {
	for in, want := range map[string]int64{"": 0, "1": 1e9, "0.5": 5e8, ".25": 25e7} {
		if got, err := ParseCPUs(in); err != nil || got != want {
			t.Errorf("ParseCPUs(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"0", "-1", "abc"} {
		if _, err := ParseCPUs(in); err == nil {
			t.Errorf("ParseCPUs(%q) should fail", in)
		}
	}
}
