package controllers

import (
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
