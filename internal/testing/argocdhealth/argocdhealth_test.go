package argocdhealth

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

const scriptPath = "../../../config/gitops/argocd/health.lua"

func shippedScript(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(scriptPath)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func run(generation, observed int64, phase, message string) map[string]any {
	obj := map[string]any{
		"apiVersion": "agents.agentrun.dev/v1alpha1",
		"kind":       "AgentRun",
		"metadata":   map[string]any{"name": "r", "generation": generation},
	}
	if phase != "" || observed > 0 {
		obj["status"] = map[string]any{"observedGeneration": observed, "phase": phase, "message": message}
	}
	return obj
}

func TestShippedScriptMapsEveryPhase(t *testing.T) {
	script := shippedScript(t)
	for _, tc := range []struct {
		desc string
		obj  map[string]any
		want Health
	}{
		{"just created", run(1, 0, "", ""), Health{"Progressing", "Waiting for a Podman host to take the run"}},
		{"pending", run(1, 1, "Pending", "secret github-token does not exist"), Health{"Progressing", "secret github-token does not exist"}},
		{"running", run(1, 1, "Running", "container c is running"), Health{"Progressing", "container c is running"}},
		{"succeeded", run(1, 1, "Succeeded", "exited 0"), Health{"Healthy", "exited 0"}},
		{"failed", run(1, 1, "Failed", "exited 3"), Health{"Degraded", "exited 3"}},
		{"cancelled", run(2, 2, "Cancelled", "cancelled by kubectl"), Health{"Degraded", "cancelled by kubectl"}},
		{"cancel not yet seen", run(2, 1, "Running", "container c is running"), Health{"Progressing", "Waiting for the controller to observe generation 2"}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			got, err := Evaluate(script, tc.obj)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("health = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestEvaluateRefusesWhatArgoCDWould(t *testing.T) {
	for _, script := range []string{
		`return "Healthy"`,
		`return { status = "Fine" }`,
		`os.exit(1)`,
		`return {`,
	} {
		if h, err := Evaluate(script, run(1, 1, "Running", "")); err == nil {
			t.Errorf("%q gave %+v, want an error", script, h)
		}
	}
}

// The component installs exactly the shipped script under the key Argo CD
// reads (resource.customizations.health.<group>_<kind>) in argocd-cm.
func TestComponentMergesTheScriptIntoArgoCDConfig(t *testing.T) {
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set: run through make test (it builds kubectl there)")
	}
	dir := t.TempDir()
	abs, err := filepath.Abs(filepath.Dir(scriptPath))
	if err != nil {
		t.Fatal(err)
	}
	// kustomize takes components by relative path only.
	component, err := filepath.Rel(dir, abs)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"kustomization.yaml": "resources: [argocd-cm.yaml]\ncomponents: [" + component + "]\n",
		// As in Argo CD's install manifest.
		"argocd-cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: argocd-cm\n  namespace: argocd\ndata:\n  url: https://argocd.example.com\n",
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command(filepath.Join(assets, "kubectl"), "kustomize", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl kustomize: %v\n%s", err, out)
	}
	var cm struct {
		Metadata struct{ Name, Namespace string }
		Data     map[string]string
	}
	if err := yaml.Unmarshal(out, &cm); err != nil {
		t.Fatal(err)
	}
	if cm.Metadata.Name != "argocd-cm" || cm.Metadata.Namespace != "argocd" || cm.Data["url"] != "https://argocd.example.com" {
		t.Errorf("the component changed argocd-cm's identity or data:\n%s", out)
	}
	if got := cm.Data["resource.customizations.health.agents.agentrun.dev_AgentRun"]; strings.TrimSpace(got) != strings.TrimSpace(shippedScript(t)) {
		t.Errorf("argocd-cm's AgentRun health check is not health.lua:\n%s", out)
	}
}
