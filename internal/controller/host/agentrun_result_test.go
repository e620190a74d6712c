package host

import (
	"runtime"
	"strings"
	"testing"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

func TestParseAgentResult(t *testing.T) {
	for _, tc := range []struct {
		name, output string
		want         *agentsv1alpha1.AgentResult
	}{
		{"plain output", "hello\nworld\n", nil},
		{"json not a result", `{"type":"message"}`, nil},
		{"result after logs", "log line {not json}\n" + `{"type":"result","is_error":false,"num_turns":2,"result":"done","session_id":"abc","total_cost_usd":1.5}`,
			&agentsv1alpha1.AgentResult{Result: "done", SessionID: "abc", NumTurns: 2, CostUSD: "1.5"}},
		{"pretty printed", "{\n  \"type\": \"result\",\n  \"is_error\": true,\n  \"result\": \"x\"\n}\n", &agentsv1alpha1.AgentResult{Result: "x", IsError: true}},
		{"result then more output", `{"type":"result","result":"done"}` + "\ntrailing\n", nil},
		{"braces inside the result", `{"type":"result","result":"use {x}\n{y}","session_id":"s"}`, &agentsv1alpha1.AgentResult{Result: "use {x}\n{y}", SessionID: "s"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := parseAgentResult(tc.output)
			if (got == nil) != (tc.want == nil) || got != nil && *got != *tc.want {
				t.Fatalf("parseAgentResult = %+v, want %+v", got, tc.want)
			}
		})
	}
	long := `{"type":"result","result":"` + strings.Repeat("é", 3000) + `"}`
	if r := parseAgentResult(long); r == nil || len(r.Result) > maxResultBytes || !strings.HasSuffix(r.Result, "é") {
		t.Fatalf("a long result must be cut to %d bytes on a character boundary", maxResultBytes)
	}
}

// allocatedBy reports the bytes f allocates: a measure of its work that,
// unlike time, does not depend on what else the machine is doing.
func allocatedBy(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func TestParseAgentResultIsLinear(t *testing.T) {
	// 10 MiB of JSON lines, each a complete object with nested objects but
	// not a result, then a result: every line is a candidate start.
	line := `{"type":"assistant","message":{"content":[{"type":"text","text":"{x}"}],"usage":{"in":1,"out":2}}}` + "\n"
	var b strings.Builder
	for b.Len() < 10<<20 {
		b.WriteString(line)
	}
	b.WriteString(`{"type":"result","result":"ok","session_id":"s"}`)
	output := b.String()
	var r *agentsv1alpha1.AgentResult
	if n := allocatedBy(func() { r = parseAgentResult(output) }); n > 1<<20 {
		t.Errorf("finding a result at the end of 10 MiB allocated %d bytes; it should read only the last lines", n)
	}
	if r == nil || r.Result != "ok" {
		t.Fatalf("result = %+v", r)
	}
	// Unclosed objects on every line: each candidate reads to the end, so
	// only a bounded number of candidates may be tried.
	unclosed := strings.Repeat(`{"a":`+"\n", 1<<20) + "}"
	if n := allocatedBy(func() { r = parseAgentResult(unclosed) }); n > uint64(4*maxResultCandidates*len(unclosed)) || r != nil {
		t.Errorf("unclosed objects: allocated %d bytes for %d of output, result %+v", n, len(unclosed), r)
	}
}
