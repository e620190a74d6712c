package controllers

import (
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf8"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

// maxResultBytes bounds status.agentResult.result.
const maxResultBytes = 4096

// claudeResult is the part of Claude Code's `--output-format json` result
// object that status records.
type claudeResult struct {
	Type      string   `json:"type"`
	IsError   bool     `json:"is_error"`
	Result    string   `json:"result"`
	SessionID string   `json:"session_id"`
	NumTurns  int32    `json:"num_turns"`
	CostUSD   *float64 `json:"total_cost_usd"`
}

// parseAgentResult finds the JSON result object that ends the output, if
// any: the last object starting at the beginning of a line and running to the
// end of the output. Anything else is left as plain output.
func parseAgentResult(output string) *agentsv1alpha1.AgentResult {
	text := strings.TrimRight(output, " \t\r\n")
	if !strings.HasSuffix(text, "}") {
		return nil
	}
	for end := len(text); end > 0; {
		i := strings.LastIndex(text[:end], "{")
		if i < 0 {
			return nil
		}
		end = i
		if i > 0 && text[i-1] != '\n' {
			continue
		}
		var r claudeResult
		if json.Unmarshal([]byte(text[i:]), &r) != nil || r.Type != "result" {
			continue
		}
		out := &agentsv1alpha1.AgentResult{
			Result:    truncateUTF8(r.Result, maxResultBytes),
			SessionID: truncateUTF8(r.SessionID, 256),
			NumTurns:  r.NumTurns,
			IsError:   r.IsError,
		}
		if r.CostUSD != nil {
			out.CostUSD = strconv.FormatFloat(*r.CostUSD, 'f', -1, 64)
		}
		return out
	}
	return nil
}

// truncateUTF8 keeps at most n bytes of s without splitting a character.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
