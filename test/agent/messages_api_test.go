package agent

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// apiRequest is what the stand-in records of a request: whether the key was
// right, never the key.
type apiRequest struct {
	Method, Host, Path string
	Stream, KeyOK      bool
}

// messagesAPI stands in for the Anthropic Messages API. It answers a
// streaming POST /v1/messages carrying the expected x-api-key with one fixed
// assistant message, as server-sent events in the order the API sends them.
// It is also the container's HTTP(S) proxy, so a request for any other host
// lands here too (as CONNECT or with a foreign Host), is refused and shows in
// the record.
type messagesAPI struct {
	Addr  string // host:port served, on loopback
	key   string
	reply string

	mu       sync.Mutex
	requests []apiRequest
	// userText is the text of the user turns the CLI sent, in order.
	userText []string
	// models are the models the CLI asked for, in order.
	models []string
	// conversations are the user turns of each POST, in order.
	conversations [][]string
	// tool, when set, is the tool call the stand-in answers with until a
	// request carries the tool's result; toolResults counts those requests.
	tool        *toolCall
	toolResults int
	// inputTokens is the input token count each answer reports, from which
	// the CLI prices the call.
	inputTokens int
}

// toolCall is a tool_use block the stand-in asks the CLI to run.
type toolCall struct {
	Name  string
	Input map[string]any
}

// serveMessagesAPI starts a stand-in on a free loopback port until the spec
// ends.
func serveMessagesAPI(key, reply string) *messagesAPI {
	GinkgoHelper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	api := &messagesAPI{Addr: l.Addr().String(), key: key, reply: reply, inputTokens: 12}
	srv := &http.Server{Handler: api}
	go func() { _ = srv.Serve(l) }()
	DeferCleanup(srv.Close)
	return api
}

// UserText returns the text of every user turn sent so far.
func (a *messagesAPI) UserText() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.userText...)
}

// Conversations returns the user turns of every POST so far, a list each.
func (a *messagesAPI) Conversations() [][]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([][]string(nil), a.conversations...)
}

// Models returns the model of every POST so far.
func (a *messagesAPI) Models() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.models...)
}

// AskTool makes the stand-in answer each request with a call of the tool,
// until one carries the tool's result: the CLI's next turn.
func (a *messagesAPI) AskTool(name string, input map[string]any) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.tool = &toolCall{Name: name, Input: input}
}

// ReportInputTokens makes each later answer report n input tokens: a call
// then costs what the CLI charges for them.
func (a *messagesAPI) ReportInputTokens(n int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.inputTokens = n
}

// ToolResults returns how many requests carried a tool's result.
func (a *messagesAPI) ToolResults() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.toolResults
}

// Requests returns what was asked so far.
func (a *messagesAPI) Requests() []apiRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]apiRequest(nil), a.requests...)
}

func (a *messagesAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Model    string `json:"model"`
		Stream   bool   `json:"stream"`
		Messages []struct {
			Role string `json:"role"`
			// Content is a string or a list of blocks; only text blocks
			// matter here.
			Content json.RawMessage `json:"content"`
		} `json:"messages"`
	}
	if r.Method == http.MethodPost {
		_ = json.NewDecoder(r.Body).Decode(&body) // a bad body is answered below
	}
	req := apiRequest{
		Method: r.Method, Host: r.Host, Path: r.URL.Path, Stream: body.Stream,
		KeyOK: subtle.ConstantTimeCompare([]byte(r.Header.Get("x-api-key")), []byte(a.key)) == 1,
	}
	a.mu.Lock()
	a.requests = append(a.requests, req)
	var turns []string
	answered := false
	for _, m := range body.Messages {
		if m.Role == "user" {
			turns = append(turns, textOf(m.Content))
			answered = answered || carriesToolResult(m.Content)
		}
	}
	if answered {
		a.toolResults++
	}
	tool, inputTokens := a.tool, a.inputTokens
	if answered {
		tool = nil
	}
	a.userText = append(a.userText, turns...)
	if r.Method == http.MethodPost {
		a.models = append(a.models, body.Model)
		a.conversations = append(a.conversations, turns)
	}
	a.mu.Unlock()

	switch {
	case r.Method == http.MethodConnect || r.Host != a.Addr:
		http.Error(w, "this proxy reaches no other host", http.StatusForbidden)
	case !req.KeyOK:
		apiError(w, http.StatusUnauthorized, "authentication_error", "invalid x-api-key")
	case r.Method != http.MethodPost || r.URL.Path != "/v1/messages":
		apiError(w, http.StatusNotFound, "not_found_error", "the stand-in serves POST /v1/messages only")
	case body.Model == "" || !body.Stream:
		apiError(w, http.StatusBadRequest, "invalid_request_error", "the stand-in answers streaming requests with a model only")
	default:
		a.stream(w, body.Model, tool, inputTokens)
	}
}

// stream sends the reply as the Messages API streams one text block, or the
// tool call as it streams a tool_use block.
func (a *messagesAPI) stream(w http.ResponseWriter, model string, tool *toolCall, inputTokens int) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	usage := map[string]int{"input_tokens": inputTokens, "output_tokens": 1}
	block := map[string]any{"type": "text", "text": ""}
	delta := map[string]any{"type": "text_delta", "text": a.reply}
	stop := "end_turn"
	if tool != nil {
		input, _ := json.Marshal(tool.Input) // a map of plain values: cannot fail
		block = map[string]any{"type": "tool_use", "id": "toolu_agentrun_test", "name": tool.Name, "input": map[string]any{}}
		delta = map[string]any{"type": "input_json_delta", "partial_json": string(input)}
		stop = "tool_use"
	}
	for _, e := range []struct {
		name string
		data map[string]any
	}{
		{"message_start", map[string]any{"message": map[string]any{
			"id": "msg_agentrun_test", "type": "message", "role": "assistant", "model": model,
			"content": []any{}, "stop_reason": nil, "stop_sequence": nil, "usage": usage,
		}}},
		{"content_block_start", map[string]any{"index": 0, "content_block": block}},
		{"content_block_delta", map[string]any{"index": 0, "delta": delta}},
		{"content_block_stop", map[string]any{"index": 0}},
		{"message_delta", map[string]any{
			"delta": map[string]any{"stop_reason": stop, "stop_sequence": nil},
			"usage": map[string]int{"output_tokens": 8},
		}},
		{"message_stop", map[string]any{}},
	} {
		e.data["type"] = e.name
		data, _ := json.Marshal(e.data) // strings, numbers and maps only: cannot fail
		fmt.Fprintf(w, "event: %s\ndata: %s\n\n", e.name, data)
	}
}

// textOf joins the text of a message's content, a string or a list of blocks.
func textOf(content json.RawMessage) string {
	var s string
	if json.Unmarshal(content, &s) == nil {
		return s
	}
	var blocks []struct {
		Type, Text string
	}
	_ = json.Unmarshal(content, &blocks)
	var parts []string
	for _, b := range blocks {
		if b.Type == "text" {
			parts = append(parts, b.Text)
		}
	}
	return strings.Join(parts, "\n")
}

// carriesToolResult tells whether a message's content holds a tool_result
// block: the CLI's answer to a tool call.
func carriesToolResult(content json.RawMessage) bool {
	var blocks []struct{ Type string }
	_ = json.Unmarshal(content, &blocks) // a plain string holds none
	for _, b := range blocks {
		if b.Type == "tool_result" {
			return true
		}
	}
	return false
}

// apiError answers as the Messages API does when it refuses a request.
func apiError(w http.ResponseWriter, status int, kind, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"type": "error", "error": map[string]string{"type": kind, "message": message},
	})
}
