package v1alpha1

import (
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

func TestValidateEnvName(t *testing.T) {
	for _, tc := range []struct {
		name     string
		wantRule string // empty: valid
	}{
		{"GH_TOKEN", ""},
		{"_private", ""},
		{"a1", ""},
		{"1ABC", "env var format"},
		{"MY-VAR", "env var format"},
		{"MY VAR", "env var format"},
		{"", "env var format"},
		{"ÜBER", "env var format"},
		{"LD_PRELOAD", "blocked vars"},
		{"LD_LIBRARY_PATH", "blocked vars"},
		{"ld_preload", ""},
		{"AGENT_PROMPT", "reserved vars"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assertRule(t, ValidateEnvName(field.NewPath("env").Key(tc.name), tc.name), tc.wantRule)
		})
	}
}

func TestValidateSecretName(t *testing.T) {
	for _, tc := range []struct {
		desc, name string
		wantRule   string
	}{
		{"plain", "github-token", ""},
		{"dot, underscore, digit", "gh.token_2", ""},
		{"leading digit", "0token", ""},
		{"one character", "a", ""},
		{"253 characters", strings.Repeat("a", 253), ""},
		{"empty", "", "secret name"},
		{"254 characters", strings.Repeat("a", 254), "secret name"},
		{"comma smuggles --secret options", "tok,type=mount", "Podman secret name"},
		{"equals", "a=b", "Podman secret name"},
		{"slash", "team/token", "Podman secret name"},
		{"space", "my token", "Podman secret name"},
		{"tab", "my\ttoken", "Podman secret name"},
		{"NUL", "tok\x00en", "Podman secret name"},
		{"semicolon", "a;b", "Podman secret name"},
		{"command substitution", "$(id)", "Podman secret name"},
		{"backquote", "a`id`", "Podman secret name"},
		{"newline inside", "a\nb", "Podman secret name"},
		{"trailing newline", "token\n", "Podman secret name"},
		{"DEL control character", "tok\x7f", "Podman secret name"},
		{"non-ASCII letter", "tökén", "Podman secret name"},
		{"leading dash", "-leading-dash", "Podman secret name"},
		{"leading dot", ".hidden", "Podman secret name"},
		{"leading underscore", "_token", "Podman secret name"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			p := field.NewPath("spec", "podman", "secretsEnv").Key("GH_TOKEN")
			errs := ValidateSecretName(p, tc.name)
			assertRule(t, errs, tc.wantRule)
			if len(errs) == 1 && errs[0].Field != "spec.podman.secretsEnv[GH_TOKEN]" {
				t.Fatalf("the violation names %q, want the variable's field spec.podman.secretsEnv[GH_TOKEN]", errs[0].Field)
			}
		})
	}
}

func TestParseVolume(t *testing.T) {
	for _, tc := range []struct {
		spec     string
		want     Volume
		wantRule string
	}{
		{spec: "/home/user/repo:/workspace", want: Volume{HostPath: "/home/user/repo", ContainerPath: "/workspace"}},
		{spec: "/data:/data:ro,Z", want: Volume{HostPath: "/data", ContainerPath: "/data", Options: []string{"ro", "Z"}}},
		{spec: "/data:/data:nosuid,nodev,noexec,rprivate", want: Volume{HostPath: "/data", ContainerPath: "/data", Options: []string{"nosuid", "nodev", "noexec", "rprivate"}}},
		{spec: "/data", wantRule: "volume format"},
		{spec: "/a:/b:ro:extra", wantRule: "volume format"},
		{spec: "relative:/data", wantRule: "volume format"},
		{spec: "/data:relative", wantRule: "volume format"},
		{spec: "/data:/", wantRule: "volume format"},
		{spec: "named-volume:/data", wantRule: "volume format"},
		{spec: "/home/user/../../etc:/data", wantRule: "clean paths"},
		{spec: "/data/:/data", wantRule: "clean paths"},
		{spec: "/data:/work//space", wantRule: "clean paths"},
		{spec: "/data:/data:rw,ro", wantRule: "one option of each kind"},
		{spec: "/data:/data:z,Z", wantRule: "one option of each kind"},
		{spec: "/data:/data:suid", wantRule: "volume options"},
		{spec: "/data:/data:dev", wantRule: "volume options"},
		{spec: "/data:/data:", wantRule: "volume options"},
		{spec: "/data:/data:RO", wantRule: "volume options"},
	} {
		t.Run(tc.spec, func(t *testing.T) {
			got, err := ParseVolume(tc.spec)
			if tc.wantRule == "" {
				if err != nil {
					t.Fatalf("ParseVolume(%q) = %v, want no error", tc.spec, err)
				}
				if got.HostPath != tc.want.HostPath || got.ContainerPath != tc.want.ContainerPath || strings.Join(got.Options, ",") != strings.Join(tc.want.Options, ",") {
					t.Fatalf("ParseVolume(%q) = %+v, want %+v", tc.spec, got, tc.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "(rule: "+tc.wantRule+")") {
				t.Fatalf("ParseVolume(%q) error = %v, want rule %q", tc.spec, err, tc.wantRule)
			}
		})
	}
}

func TestVolumeHostChanges(t *testing.T) {
	for _, tc := range []struct {
		spec string
		want []string // the options named, in order
	}{
		{"/data:/data", nil},
		{"/data:/data:ro,nosuid,nodev", nil},
		{"/data:/data:U", []string{"option U changes the owner"}},
		{"/data:/data:ro,z", []string{"option z relabels"}},
		{"/data:/data:Z,U", []string{"option Z relabels", "option U changes the owner"}},
	} {
		t.Run(tc.spec, func(t *testing.T) {
			v, err := ParseVolume(tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			got := v.HostChanges()
			if len(got) != len(tc.want) {
				t.Fatalf("HostChanges() = %q, want %d entries starting %q", got, len(tc.want), tc.want)
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tc.want[i]) || !strings.Contains(got[i], "host path") {
					t.Errorf("HostChanges()[%d] = %q, want it to start %q and say what happens to the host path", i, got[i], tc.want[i])
				}
			}
		})
	}
}

func validRun() *AgentRun {
	return &AgentRun{Spec: AgentRunSpec{
		Prompt:  "Review the open PRs using gh CLI",
		Workdir: "/workspace",
		Podman: PodmanSpec{
			Volumes:    []string{"/home/user/myrepo:/workspace"},
			SecretsEnv: map[string]SecretName{"GH_TOKEN": "github-token", "GITLAB_TOKEN": "gitlab-token"},
		},
	}}
}

func TestValidateAgentRunReportsEveryViolation(t *testing.T) {
	if errs := ValidateAgentRun(validRun()); len(errs) != 0 {
		t.Fatalf("the reference example must be valid, got %v", errs)
	}

	run := validRun()
	run.Spec.Prompt = ""
	run.Spec.Workdir = "workspace"
	run.Spec.Podman.SecretsEnv = map[string]SecretName{"1BAD": "tok", "LD_PRELOAD": "tok", "GOOD": "a,b", "SHARED": "tok"}
	run.Spec.Podman.Env = map[string]EnvValue{"SHARED": "x", "LD_LIBRARY_PATH": "/tmp"}
	run.Spec.Podman.Volumes = []string{"/a:/data", "/b:/data", "/c:/x:bogus"}

	got := map[string]string{}
	for _, e := range ValidateAgentRun(run) {
		got[e.Field] = e.Error()
	}
	want := map[string]string{
		"spec.prompt":                        "prompt required",
		"spec.workdir":                       "absolute paths",
		"spec.podman.secretsEnv[1BAD]":       "env var format",
		"spec.podman.secretsEnv[LD_PRELOAD]": "blocked vars",
		"spec.podman.secretsEnv[GOOD]":       "Podman secret name",
		"spec.podman.env[SHARED]":            "one source per variable",
		"spec.podman.env[LD_LIBRARY_PATH]":   "blocked vars",
		"spec.podman.volumes[1]":             "unique container paths",
		"spec.podman.volumes[2]":             "volume options",
	}
	for path, ruleName := range want {
		if !strings.Contains(got[path], "(rule: "+ruleName+")") {
			t.Errorf("%s: got %q, want rule %q", path, got[path], ruleName)
		}
	}
	if len(got) != len(want) {
		t.Errorf("got %d violations %v, want %d", len(got), got, len(want))
	}
}

func TestValidateAgentRunLimitsSecretsPerRun(t *testing.T) {
	run := validRun()
	run.Spec.Podman.SecretsEnv = map[string]SecretName{}
	for i := range MaxSecretsPerRun {
		run.Spec.Podman.SecretsEnv[envName(i)] = "tok"
	}
	if errs := ValidateAgentRun(run); len(errs) != 0 {
		t.Fatalf("%d secrets must be allowed, got %v", MaxSecretsPerRun, errs)
	}
	run.Spec.Podman.SecretsEnv[envName(MaxSecretsPerRun)] = "tok"
	assertRule(t, ValidateAgentRun(run), "max per run")
}

func TestValidateAgentRunUpdate(t *testing.T) {
	old := validRun()

	cancelled := old.DeepCopy()
	cancelled.Spec.Cancel = true
	if errs := ValidateAgentRunUpdate(old, cancelled); len(errs) != 0 {
		t.Fatalf("setting cancel must be allowed, got %v", errs)
	}
	assertRule(t, ValidateAgentRunUpdate(cancelled, old), "cancel is final")

	changed := old.DeepCopy()
	changed.Spec.Podman.SecretsEnv["OTHER"] = "other-token"
	assertRule(t, ValidateAgentRunUpdate(old, changed), "immutable spec")

	relabelled := old.DeepCopy()
	relabelled.Labels = map[string]string{"team": "a"}
	if errs := ValidateAgentRunUpdate(old, relabelled); len(errs) != 0 {
		t.Fatalf("metadata changes must be allowed, got %v", errs)
	}

	queued := old.DeepCopy()
	queued.Labels = map[string]string{LabelQueueName: "team-queue"}
	assertRule(t, ValidateAgentRunUpdate(old, queued), "immutable queue")
	assertRule(t, ValidateAgentRunUpdate(queued, old), "immutable queue")
	moved := queued.DeepCopy()
	moved.Labels[LabelQueueName] = "other-queue"
	assertRule(t, ValidateAgentRunUpdate(queued, moved), "immutable queue")
	queuedAndRelabelled := queued.DeepCopy()
	queuedAndRelabelled.Labels["team"] = "a"
	assertRule(t, ValidateAgentRunUpdate(queued, queuedAndRelabelled), "")
}

// A run stored before a rule was tightened breaks today's create rules; it
// must still be cancellable and lose its finalizer, or it could never be
// deleted.
func TestValidateAgentRunUpdateIgnoresCreateRules(t *testing.T) {
	stored := validRun()
	stored.Spec.Podman.SecretsEnv["GH_TOKEN"] = "gh;token"
	stored.Spec.Podman.Volumes = []string{"/home/user/../repo:/workspace:ro,rw"}
	stored.Finalizers = []string{"agents.agentrun.dev/container"}
	if errs := ValidateAgentRun(stored); len(errs) == 0 {
		t.Fatal("the stored run must break today's create rules for this test to mean anything")
	}

	cancelled := stored.DeepCopy()
	cancelled.Spec.Cancel = true
	if errs := ValidateAgentRunUpdate(stored, cancelled); len(errs) != 0 {
		t.Fatalf("cancelling a run stored under older rules must be allowed, got %v", errs)
	}
	released := cancelled.DeepCopy()
	released.Finalizers = nil
	if errs := ValidateAgentRunUpdate(cancelled, released); len(errs) != 0 {
		t.Fatalf("removing the finalizer of a run stored under older rules must be allowed, got %v", errs)
	}
	changed := stored.DeepCopy()
	changed.Spec.Prompt = "Something else"
	assertRule(t, ValidateAgentRunUpdate(stored, changed), "immutable spec")
}

func envName(i int) string { return "VAR_" + strings.Repeat("X", i) }

// assertRule checks that errs holds exactly one violation and that it names
// wantRule, or that errs is empty when wantRule is.
func assertRule(t *testing.T, errs field.ErrorList, wantRule string) {
	t.Helper()
	if wantRule == "" {
		if len(errs) != 0 {
			t.Fatalf("want no violation, got %v", errs)
		}
		return
	}
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "(rule: "+wantRule+")") {
		t.Fatalf("want one violation of rule %q, got %v", wantRule, errs)
	}
}

func TestValidateAgentRunChecksTheHostSelector(t *testing.T) {
	for _, tc := range []struct {
		desc     string
		selector *metav1.LabelSelector
		wantRule string
	}{
		{"labels", &metav1.LabelSelector{MatchLabels: map[string]string{"gpu": "true"}}, ""},
		{"expression", &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "zone", Operator: metav1.LabelSelectorOpIn, Values: []string{"a"}}}}, ""},
		{"bad key", &metav1.LabelSelector{MatchLabels: map[string]string{"bad key": "x"}}, "label selector"},
		{"In without values", &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "zone", Operator: metav1.LabelSelectorOpIn}}}, "label selector"},
		{"unknown operator", &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "zone", Operator: "Near"}}}, "label selector"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			run := &AgentRun{Spec: AgentRunSpec{Prompt: "p", HostSelector: tc.selector}}
			errs := ValidateAgentRun(run)
			assertRule(t, errs, tc.wantRule)
			if tc.wantRule != "" && !strings.HasPrefix(errs[0].Field, "spec.hostSelector") {
				t.Errorf("error names %s, want spec.hostSelector...", errs[0].Field)
			}
		})
	}
}

// The rules that repeat the CRD's schema (lengths, counts, patterns, ranges),
// each at its boundary. The fuzz targets in internal/webhook/v1alpha1 hold
// them against the generated CRD.
func TestValidateAgentRunAppliesTheSchemaRules(t *testing.T) {
	int32p := func(n int32) *int32 { return &n }
	for _, tc := range []struct {
		desc     string
		mutate   func(*AgentRunSpec)
		field    string
		wantRule string
	}{
		{"workdir of 4096 characters", func(s *AgentRunSpec) { s.Workdir = "/" + strings.Repeat("é", 4095) }, "", ""},
		{"workdir of 4097 characters", func(s *AgentRunSpec) { s.Workdir = "/" + strings.Repeat("w", 4096) }, "spec.workdir", "size limits"},
		{"image of 513 characters", func(s *AgentRunSpec) { s.Image = strings.Repeat("i", 513) }, "spec.image", "size limits"},
		{"65 arguments", func(s *AgentRunSpec) { s.Command = make([]string, 65) }, "spec.command", "size limits"},
		{"argument of 4097 characters", func(s *AgentRunSpec) { s.Command = []string{strings.Repeat("a", 4097)} }, "spec.command[0]", "size limits"},
		{"host name", func(s *AgentRunSpec) { s.HostName = "host-1.example" }, "", ""},
		{"host name with a capital", func(s *AgentRunSpec) { s.HostName = "Host-1" }, "spec.hostName", "host name"},
		{"host name ending with '-'", func(s *AgentRunSpec) { s.HostName = "host-" }, "spec.hostName", "host name"},
		{"zero timeout", func(s *AgentRunSpec) { s.Timeout = &metav1.Duration{} }, "spec.timeout", "positive timeout"},
		{"backoffLimit 20", func(s *AgentRunSpec) { s.BackoffLimit = int32p(20) }, "", ""},
		{"backoffLimit 21", func(s *AgentRunSpec) { s.BackoffLimit = int32p(21) }, "spec.backoffLimit", "backoff limit"},
		{"backoffLimit -1", func(s *AgentRunSpec) { s.BackoffLimit = int32p(-1) }, "spec.backoffLimit", "backoff limit"},
		{"ttl 0", func(s *AgentRunSpec) { s.TTLSecondsAfterFinished = int32p(0) }, "", ""},
		{"ttl -1", func(s *AgentRunSpec) { s.TTLSecondsAfterFinished = int32p(-1) }, "spec.ttlSecondsAfterFinished", "non-negative ttl"},
		{"33 volumes", func(s *AgentRunSpec) {
			s.Podman.Volumes = nil
			for i := range 33 {
				s.Podman.Volumes = append(s.Podman.Volumes, "/h:/c/"+envName(i))
			}
		}, "spec.podman.volumes", "size limits"},
		{"volume of 2049 characters", func(s *AgentRunSpec) { s.Podman.Volumes = []string{"/" + strings.Repeat("h", 2045) + ":/c"} }, "spec.podman.volumes[0]", "size limits"},
		{"129 env variables", func(s *AgentRunSpec) {
			s.Podman.Env = map[string]EnvValue{}
			for i := range 129 {
				s.Podman.Env[envName(i)] = "x"
			}
		}, "spec.podman.env", "size limits"},
		{"env value of 32769 characters", func(s *AgentRunSpec) { s.Podman.Env = map[string]EnvValue{"V": EnvValue(strings.Repeat("v", 32769))} }, "spec.podman.env[V]", "size limits"},
		{"memory 512m", func(s *AgentRunSpec) { s.Podman.Memory = "512m" }, "", ""},
		{"memory 0", func(s *AgentRunSpec) { s.Podman.Memory = "0" }, "spec.podman.memory", "memory format"},
		{"memory 1.5g", func(s *AgentRunSpec) { s.Podman.Memory = "1.5g" }, "spec.podman.memory", "memory format"},
		{"cpus .5", func(s *AgentRunSpec) { s.Podman.CPUs = ".5" }, "", ""},
		{"cpus 1e3", func(s *AgentRunSpec) { s.Podman.CPUs = "1e3" }, "spec.podman.cpus", "cpus format"},
		{"cpus 0.0", func(s *AgentRunSpec) { s.Podman.CPUs = "0.0" }, "spec.podman.cpus", "positive cpus"},
		{"network bridge", func(s *AgentRunSpec) { s.Podman.Network = "bridge" }, "", ""},
		{"network container:x", func(s *AgentRunSpec) { s.Podman.Network = "container:x" }, "spec.podman.network", "network name"},
		{"claude options", func(s *AgentRunSpec) {
			s.Claude = &ClaudeSpec{Model: "claude-sonnet-4-5[1m]", MaxTurns: int32p(10000), MaxBudgetUSD: "0.50",
				AllowedTools: []string{"Read", "Bash(git diff:*)", "mcp__github"}, DisallowedTools: []string{"WebFetch"},
				PermissionMode: "acceptEdits", AppendSystemPrompt: strings.Repeat("s", 16384)}
		}, "", ""},
		{"claude options with a command", func(s *AgentRunSpec) {
			s.Command = []string{"claude", "-p"}
			s.Claude = &ClaudeSpec{Model: "opus"}
		}, "spec.claude", "claude options need the default command"},
		{"model that is a flag", func(s *AgentRunSpec) { s.Claude = &ClaudeSpec{Model: "--dangerously-skip-permissions"} }, "spec.claude.model", "model name"},
		{"model of 129 characters", func(s *AgentRunSpec) { s.Claude = &ClaudeSpec{Model: strings.Repeat("m", 129)} }, "spec.claude.model", "size limits"},
		{"0 turns", func(s *AgentRunSpec) { s.Claude = &ClaudeSpec{MaxTurns: int32p(0)} }, "spec.claude.maxTurns", "max turns"},
		{"10001 turns", func(s *AgentRunSpec) { s.Claude = &ClaudeSpec{MaxTurns: int32p(10001)} }, "spec.claude.maxTurns", "max turns"},
		{"budget 5", func(s *AgentRunSpec) { s.Claude = &ClaudeSpec{MaxBudgetUSD: "5"} }, "", ""},
		{"budget -1", func(s *AgentRunSpec) { s.Claude = &ClaudeSpec{MaxBudgetUSD: "-1"} }, "spec.claude.maxBudgetUSD", "budget format"},
		{"budget 1e3", func(s *AgentRunSpec) { s.Claude = &ClaudeSpec{MaxBudgetUSD: "1e3"} }, "spec.claude.maxBudgetUSD", "budget format"},
		{"budget 0.00", func(s *AgentRunSpec) { s.Claude = &ClaudeSpec{MaxBudgetUSD: "0.00"} }, "spec.claude.maxBudgetUSD", "positive budget"},
		{"tool that is a flag", func(s *AgentRunSpec) { s.Claude = &ClaudeSpec{AllowedTools: []string{"--mcp-config=/x"}} }, "spec.claude.allowedTools[0]", "tool rule"},
		{"tool with a newline", func(s *AgentRunSpec) {
			s.Claude = &ClaudeSpec{DisallowedTools: []string{"Bash(rm\\n:*)", "Bash(x\ny)"}}
		}, "spec.claude.disallowedTools[1]", "tool rule"},
		{"65 tools", func(s *AgentRunSpec) { s.Claude = &ClaudeSpec{AllowedTools: slices.Repeat([]string{"Read"}, 65)} }, "spec.claude.allowedTools", "size limits"},
		{"permission mode", func(s *AgentRunSpec) { s.Claude = &ClaudeSpec{PermissionMode: "yolo"} }, "spec.claude.permissionMode", "permission mode"},
		{"continue a session", func(s *AgentRunSpec) { s.ContinueFrom = "review-prs-1"; s.Fork = true }, "", ""},
		{"continue a session with a command", func(s *AgentRunSpec) {
			s.ContinueFrom, s.Command = "review-prs-1", []string{"claude", "-p"}
		}, "spec.continueFrom", "sessions need the default command"},
		{"continue a run of a bad name", func(s *AgentRunSpec) { s.ContinueFrom = "Review_PRs" }, "spec.continueFrom", "run name"},
		{"fork nothing", func(s *AgentRunSpec) { s.Fork = true }, "spec.fork", "fork needs continueFrom"},
		{"notify https", func(s *AgentRunSpec) {
			s.Notify = &NotifySpec{URL: "https://ci.example.com/hooks/agentrun?job=7", SecretName: "hook-key"}
		}, "", ""},
		{"notify http loopback", func(s *AgentRunSpec) {
			s.Notify = &NotifySpec{URL: "http://127.0.0.1:8080/done", SecretName: "hook-key"}
		}, "", ""},
		{"notify http elsewhere", func(s *AgentRunSpec) { s.Notify = &NotifySpec{URL: "http://ci.example.com/done", SecretName: "k"} }, "spec.notify.url", "notify url"},
		{"notify http to a name that starts like localhost", func(s *AgentRunSpec) {
			s.Notify = &NotifySpec{URL: "http://localhost.example.com/", SecretName: "k"}
		}, "spec.notify.url", "notify url"},
		{"notify with user information", func(s *AgentRunSpec) { s.Notify = &NotifySpec{URL: "https://user@ci.example.com/", SecretName: "k"} }, "spec.notify.url", "notify url"},
		{"notify without a key", func(s *AgentRunSpec) { s.Notify = &NotifySpec{URL: "https://ci.example.com/"} }, "spec.notify.secretName", "secret name"},
		{"image with an escape sequence", func(s *AgentRunSpec) { s.Image = "registry.example.com/agent\x1b[2J:latest" }, "spec.image", "no control characters"},
		{"image with a C1 control", func(s *AgentRunSpec) { s.Image = "registry.example.com/agent\u009b2J" }, "spec.image", "no control characters"},
		{"image with a newline", func(s *AgentRunSpec) { s.Image = "agent\nlatest" }, "spec.image", "no control characters"},
		{"image of non-ASCII letters", func(s *AgentRunSpec) { s.Image = "registry.example.com/agënt" }, "", ""},
		{"notify url with an escape sequence", func(s *AgentRunSpec) {
			s.Notify = &NotifySpec{URL: "https://ci.example.com/done\x1b]8;;https://evil.example/\x07", SecretName: "k"}
		}, "spec.notify.url", "no control characters"},
		{"notify url with DEL", func(s *AgentRunSpec) { s.Notify = &NotifySpec{URL: "https://ci.example.com/\x7f", SecretName: "k"} }, "spec.notify.url", "no control characters"},
		{"system prompt addition of 16385 characters", func(s *AgentRunSpec) { s.Claude = &ClaudeSpec{AppendSystemPrompt: strings.Repeat("s", 16385)} }, "spec.claude.appendSystemPrompt", "size limits"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			run := validRun()
			tc.mutate(&run.Spec)
			errs := ValidateAgentRun(run)
			assertRule(t, errs, tc.wantRule)
			if tc.wantRule != "" && errs[0].Field != tc.field {
				t.Errorf("error names %s, want %s", errs[0].Field, tc.field)
			}
		})
	}
}
