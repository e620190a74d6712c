package host

import (
	"encoding/json"
	"strconv"
	"strings"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/controller/agentruns"
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

// maxResultCandidates bounds how many line starts parseAgentResult tries,
// from the end, so its cost stays linear in the output's size whatever the
// agent printed; Claude's result is one line, or one object whose nested
// lines are indented.
const maxResultCandidates = 16

// parseAgentResult finds the JSON result object that ends the output, if
// any: the last object starting at the beginning of a line and running to the
// end of the output. Anything else is left as plain output.
func parseAgentResult(output string) *agentsv1alpha1.AgentResult {
	text := strings.TrimRight(output, " \t\r\n")
	if !strings.HasSuffix(text, "}") {
		return nil
	}
	for start, tries := len(text), 0; tries < maxResultCandidates; tries++ {
		i := strings.LastIndex(text[:start], "\n{") + 1 // 0: the text's start
		if i == 0 && !strings.HasPrefix(text, "{") {
			return nil
		}
		if r, ok := decodeResultAtEnd(text[i:]); ok {
			return r
		}
		if i == 0 {
			return nil
		}
		start = i - 1
	}
	return nil
}

// decodeResultAtEnd decodes a Claude result object that is the whole of
// text. The decoder stops after one value, so a candidate that is a complete
// object followed by more output costs only its own length.
func decodeResultAtEnd(text string) (*agentsv1alpha1.AgentResult, bool) {
	var r claudeResult
	dec := json.NewDecoder(strings.NewReader(text))
	if dec.Decode(&r) != nil || dec.InputOffset() != int64(len(text)) || r.Type != "result" {
		return nil, false
	}
	out := &agentsv1alpha1.AgentResult{
		Result:    agentruns.TruncateUTF8(r.Result, maxResultBytes),
		SessionID: agentruns.TruncateUTF8(r.SessionID, 256),
		NumTurns:  r.NumTurns,
		IsError:   r.IsError,
	}
	if r.CostUSD != nil {
		out.CostUSD = strconv.FormatFloat(*r.CostUSD, 'f', -1, 64)
	}
	return out, true
}
