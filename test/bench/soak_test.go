package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
	"time"
)

func TestGaugeReadsOneSampleByName(t *testing.T) {
	body := `# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 212
go_goroutines_extra 5
process_open_fds 3.1e+01
`
	for name, want := range map[string]float64{"go_goroutines": 212, "process_open_fds": 31} {
		got, err := gauge(body, name)
		if err != nil || got != want {
			t.Errorf("gauge(%s) = %v, %v; want %v", name, got, err, want)
		}
	}
	if _, err := gauge(body, "process_max_fds"); err == nil {
		t.Error("a missing sample read without an error")
	}
}

func TestSummarizeIsGrowthFromTheFirstReadingToTheLast(t *testing.T) {
	s := summarize([]soakReading{
		{Runs: 1000, RSSMiB: 80, HeapInuseMiB: 20, Goroutines: 300, OpenFDs: 40, ContainersLeft: 1, SessionDirs: 2},
		{Runs: 2000, RSSMiB: 95, HeapInuseMiB: 30, Goroutines: 290, OpenFDs: 60},
		{Runs: 3000, RSSMiB: 86.25, HeapInuseMiB: 21, Goroutines: 303, OpenFDs: 39, SecretsLeft: 1},
	})
	if s.RSSGrowthMiB != 6.3 || s.HeapGrowthMiB != 1 || s.GoroutineGrowth != 3 || s.FDGrowth != -1 {
		t.Errorf("growth: %+v", s)
	}
	if s.ContainersLeft != 0 || s.SessionDirsLeft != 0 || s.SecretsLeft != 1 {
		t.Errorf("left behind is the last reading's: %+v", s)
	}
	want := "rss_growth_mib=6.3 heap_growth_mib=1.0 goroutine_growth=3 fd_growth=-1 containers_left=0 secrets_left=1 session_dirs_left=0"
	if !strings.HasPrefix(s.keyValues(), want) {
		t.Errorf("keyValues() = %q, want it to start with %q", s.keyValues(), want)
	}
}

func TestTheIdleReadingIsGrowthFromTheFirst(t *testing.T) {
	s := summarize([]soakReading{{Runs: 1000, RSSMiB: 80, HeapInuseMiB: 20}, {Runs: 2000, RSSMiB: 90, HeapInuseMiB: 26}})
	if strings.Contains(s.keyValues(), "idle") {
		t.Errorf("no idle reading, yet keyValues() = %q", s.keyValues())
	}
	s.withIdle(soakReading{Runs: 2000, RSSMiB: 78.5, HeapInuseMiB: 21}, 13*time.Minute)
	if !strings.HasSuffix(s.keyValues(), " idle_rss_growth_mib=-1.5 idle_heap_growth_mib=1.0") {
		t.Errorf("keyValues() = %q", s.keyValues())
	}
	if s.RSSGrowthMiB != 10 {
		t.Errorf("the idle reading changed the growth to the last reading: %+v", s)
	}
}

func TestMissedNamesEachGoalPastItsBound(t *testing.T) {
	ok := soakSummary{RSSGrowthMiB: 10, GoroutineGrowth: 5, FDGrowth: 5, Callbacks: 100}
	if m := ok.missed(100); len(m) != 0 {
		t.Errorf("at the bounds: missed %v", m)
	}
	bad := soakSummary{RSSGrowthMiB: 10.1, GoroutineGrowth: 6, FDGrowth: 6, ContainersLeft: 1, SecretsLeft: 1, SessionDirsLeft: 1, Failed: 1, Callbacks: 99, BadSignatures: 1}
	m := bad.missed(100)
	for _, key := range []string{"rss_growth_mib", "goroutine_growth", "fd_growth", "containers_left", "secrets_left", "session_dirs_left", "failed", "callbacks", "bad_signatures"} {
		if !strings.Contains(strings.Join(m, "; "), key) {
			t.Errorf("missed %v does not name %s", m, key)
		}
	}
}

func TestValidSignatureAsTheDocumentationSaysAReceiverChecks(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"name":"r"}`)
	sign := func(key, ts string, body []byte) string {
		mac := hmac.New(sha256.New, []byte(key))
		mac.Write([]byte(ts + "." + string(body)))
		return "sha256=" + hex.EncodeToString(mac.Sum(nil))
	}
	ts := "1800000000"
	if !validSignature("k", ts, sign("k", ts, body), body, now) {
		t.Error("a good signature refused")
	}
	for name, c := range map[string]struct {
		ts, sig string
		body    []byte
	}{
		"other key":  {ts, sign("other", ts, body), body},
		"other body": {ts, sign("k", ts, body), []byte(`{"name":"s"}`)},
		"replayed":   {"1799999000", sign("k", "1799999000", body), body},
		"no header":  {"", "", body},
	} {
		if validSignature("k", c.ts, c.sig, c.body, now) {
			t.Errorf("%s: accepted", name)
		}
	}
}
