// Package argocdhealth runs an Argo CD resource health script the way Argo CD
// does: in gopher-lua, with the resource as the global obj, the safe
// standard libraries only, and a table {status, message} as the answer. The
// tests use it to check config/gitops/argocd/health.lua against real
// AgentRuns.
package argocdhealth

import (
	"fmt"
	"slices"

	lua "github.com/yuin/gopher-lua"
)

// Health is a script's verdict.
type Health struct {
	// Status is one of Argo CD's health statuses: Healthy, Progressing,
	// Degraded, Suspended, Missing or Unknown.
	Status  string
	Message string
}

var statuses = []string{"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}

// Evaluate runs script against obj (an object as unstructured JSON).
func Evaluate(script string, obj map[string]any) (Health, error) {
	state := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer state.Close()
	// Argo CD gives health scripts these libraries and no os or io.
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{{lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}, {lua.StringLibName, lua.OpenString}, {lua.MathLibName, lua.OpenMath}} {
		state.Push(state.NewFunction(lib.open))
		state.Push(lua.LString(lib.name))
		state.Call(1, 0)
	}
	state.SetGlobal("obj", toLua(state, obj))
	if err := state.DoString(script); err != nil {
		return Health{}, err
	}
	table, ok := state.Get(-1).(*lua.LTable)
	if !ok {
		return Health{}, fmt.Errorf("the script returned %s, not a table", state.Get(-1).Type())
	}
	h := Health{Status: lua.LVAsString(table.RawGetString("status")), Message: lua.LVAsString(table.RawGetString("message"))}
	if !slices.Contains(statuses, h.Status) {
		return Health{}, fmt.Errorf("the script returned status %q, which Argo CD does not know", h.Status)
	}
	return h, nil
}

// toLua converts unstructured JSON (maps, slices, strings, numbers, bools) to
// Lua values; lists become 1-based tables, as in Argo CD.
func toLua(state *lua.LState, v any) lua.LValue {
	switch v := v.(type) {
	case map[string]any:
		t := state.NewTable()
		for k, e := range v {
			t.RawSetString(k, toLua(state, e))
		}
		return t
	case []any:
		t := state.NewTable()
		for _, e := range v {
			t.Append(toLua(state, e))
		}
		return t
	case string:
		return lua.LString(v)
	case bool:
		return lua.LBool(v)
	case int64:
		return lua.LNumber(v)
	case int32:
		return lua.LNumber(v)
	case int:
		return lua.LNumber(v)
	case float64:
		return lua.LNumber(v)
	default:
		return lua.LNil
	}
}
