package config

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	configv1alpha1 "github.com/agentrun/agentrun/api/config/v1alpha1"
)

// leaves flattens a configuration into its fields' paths (as the file
// writes them) and values.
func leaves(t *testing.T, c *configv1alpha1.Configuration) map[string]string {
	t.Helper()
	data, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var tree any
	if err := json.Unmarshal(data, &tree); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	var walk func(path string, v any)
	walk = func(path string, v any) {
		if m, ok := v.(map[string]any); ok {
			for k, child := range m {
				walk(strings.TrimPrefix(path+"."+k, "."), child)
			}
			return
		}
		out[path] = fmt.Sprint(v)
	}
	walk("", tree)
	return out
}

// Each deprecated flag sets the field its warning and the docs name, and
// that field only.
func TestEachDeprecatedFlagSetsTheFieldItNames(t *testing.T) {
	candidates := []string{"false", "true", "77", "13s", "/srv/x,/srv/y", "k=v", "3g", "0.5", "some-value"}
	seen := map[string]bool{}
	for _, f := range DeprecatedFlags {
		if seen[f.Name] {
			t.Errorf("--%s is listed twice", f.Name)
		}
		seen[f.Name] = true
		base := &configv1alpha1.Configuration{}
		Default(base)
		before := leaves(t, base)
		changed := false
		for _, v := range candidates {
			c := base.DeepCopy()
			if f.Apply(c, v) != nil {
				continue
			}
			after := leaves(t, c)
			var paths []string
			for p, val := range after {
				if before[p] != val {
					paths = append(paths, p)
				}
			}
			for p := range before {
				if _, ok := after[p]; !ok {
					paths = append(paths, p)
				}
			}
			if len(paths) == 0 {
				continue
			}
			changed = true
			for _, p := range paths {
				if p != f.Field && !strings.HasPrefix(p, f.Field+".") {
					t.Errorf("--%s=%s changed %s; it names %s", f.Name, v, p, f.Field)
				}
			}
			break
		}
		if !changed {
			t.Errorf("--%s: no value changed the configuration", f.Name)
		}
	}
}
