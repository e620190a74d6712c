package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The configuration files the repository ships load without error, for the
// processes that read them, and say what their comments promise.
func TestShippedFilesAreValid(t *testing.T) {
	for file, s := range map[string]Sections{
		"host/agentrun-host.yaml":     {Host: true},
		"manager/manager_config.yaml": {Fleet: true},
		"logapi/logapi_config.yaml":   {Fleet: true},
	} {
		cfg, err := Load(filepath.Join("..", "..", "config", file))
		if err != nil {
			t.Errorf("%s: %v", file, err)
			continue
		}
		Default(cfg)
		if errs := Validate(cfg, s); len(errs) > 0 {
			t.Errorf("%s: %v", file, errs.ToAggregate())
		}
	}
	host, err := Load(filepath.Join("..", "..", "config", "host", "agentrun-host.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	Default(host)
	if p := Policy(&host.Host); len(p.AllowedVolumePaths) != 0 || len(p.Capabilities) != 0 || strings.Join(p.ForbiddenVolumePaths, ",") != "/run/podman" {
		t.Errorf("the shipped host policy allows volumes %v, keeps capabilities %v, forbids %v; want none, none and the socket's directory",
			p.AllowedVolumePaths, p.Capabilities, p.ForbiddenVolumePaths)
	}
}

// unitArgs are the manager's flags on a unit's Exec line (ExecStart= in the
// .service, Exec= in the .container), continuation lines joined.
func unitArgs(t *testing.T, unit, key string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "config", "host", unit))
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(data), "\\\n", " ")
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, key+"="); ok {
			return slices.DeleteFunc(strings.Fields(v), func(a string) bool { return !strings.HasPrefix(a, "--") })
		}
	}
	t.Fatalf("%s has no %s=", unit, key)
	return nil
}

// Both host units start the manager from the shipped file, with only the
// flags an operator passes per machine; the container reads it read-only.
func TestHostUnitsReadTheConfigFile(t *testing.T) {
	const file = "/etc/agentrun/agentrun-host.yaml"
	for unit, key := range map[string]string{"agentrun-host.service": "ExecStart", "agentrun-host.container": "Exec"} {
		args := unitArgs(t, unit, key)
		if !slices.Contains(args, "--config="+file) {
			t.Errorf("%s: %v; want --config=%s", unit, args, file)
		}
		for _, a := range args {
			name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
			if !slices.Contains([]string{"mode", "config", "host-name", "kubeconfig"}, name) {
				t.Errorf("%s passes %s: a setting of the file, not a flag", unit, a)
			}
		}
	}
	data, err := os.ReadFile(filepath.Join("..", "..", "config", "host", "agentrun-host.container"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "\nVolume="+file+":"+file+":ro\n") {
		t.Errorf("agentrun-host.container does not mount %s read-only", file)
	}
}
