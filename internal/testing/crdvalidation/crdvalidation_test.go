package crdvalidation

import (
	"context"
	"strings"
	"testing"
)

// The repository's AgentRun CRD, read as the fuzz targets read it.
const agentRunCRD = "../../../config/crd/bases/agents.agentrun.dev_agentruns.yaml"

func run(spec map[string]any) map[string]any {
	return map[string]any{
		"apiVersion": "agents.agentrun.dev/v1alpha1",
		"kind":       "AgentRun",
		"metadata":   map[string]any{"name": "r", "namespace": "default"},
		"spec":       spec,
	}
}

func TestValidator(t *testing.T) {
	v, err := LoadFile(agentRunCRD, "v1alpha1")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	valid := map[string]any{"prompt": "p", "podman": map[string]any{"secretsEnv": map[string]any{"GH_TOKEN": "github-token"}}}
	cancelled := map[string]any{"prompt": "p", "cancel": true}
	for _, tc := range []struct {
		name      string
		obj, old  map[string]any
		wantError string // empty: accepted
	}{
		{"valid run", run(valid), nil, ""},
		{"OpenAPI pattern", run(map[string]any{"prompt": "p", "podman": map[string]any{"memory": "lots"}}), nil, "spec.podman.memory"},
		{"OpenAPI minLength", run(map[string]any{"prompt": ""}), nil, "spec.prompt"},
		{"CEL rule", run(map[string]any{"prompt": "p", "podman": map[string]any{"secretsEnv": map[string]any{"T": "a,b"}}}), nil, "(rule: Podman secret name)"},
		{"CEL rule on a key", run(map[string]any{"prompt": "p", "podman": map[string]any{"env": map[string]any{"LD_PRELOAD": "x"}}}), nil, "(rule: blocked vars)"},
		{"cancel set, podman dropped", run(cancelled), run(valid), "(rule: immutable spec)"},
		{"transition rule", run(map[string]any{"prompt": "q"}), run(map[string]any{"prompt": "p"}), "(rule: immutable spec)"},
		{"cancel set", run(cancelled), run(map[string]any{"prompt": "p"}), ""},
		{"cancel cleared", run(map[string]any{"prompt": "p", "cancel": false}), run(cancelled), "(rule: cancel is final)"},
		{"unchanged invalid value ratchets", run(map[string]any{"prompt": "p", "cancel": true, "podman": map[string]any{"memory": "lots"}}),
			run(map[string]any{"prompt": "p", "podman": map[string]any{"memory": "lots"}}), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v.Admit(tc.obj)
			errs := v.ValidateCreate(ctx, tc.obj)
			if tc.old != nil {
				v.Admit(tc.old)
				errs = v.ValidateUpdate(ctx, tc.obj, tc.old)
			}
			got := errs.ToAggregate()
			switch {
			case tc.wantError == "" && got != nil:
				t.Errorf("refused: %v", got)
			case tc.wantError != "" && (got == nil || !strings.Contains(got.Error(), tc.wantError)):
				t.Errorf("got %v, want an error with %q", got, tc.wantError)
			}
		})
	}
}
