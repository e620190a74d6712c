package host

import (
	"reflect"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/controller/agentruns/agentrunstest"
)

func TestContainerName(t *testing.T) {
	run := &agentsv1alpha1.AgentRun{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "review", UID: "0123abcd-ef01-2345-6789-abcdef012345"}}
	if got, want := containerName(run, 1), "agentrun-team-review-0123abcd-1"; got != want {
		t.Errorf("containerName = %q, want %q", got, want)
	}
	if containerName(run, 2) == containerName(run, 1) {
		t.Errorf("attempts must get different names")
	}
	long := run.DeepCopy()
	long.Name = strings.Repeat("a", 253)
	if got := containerName(long, 1); len(got) > 110 || !strings.HasSuffix(got, "-0123abcd-1") {
		t.Errorf("a long run name gives %q (%d chars)", got, len(got))
	}
}

func TestContainerSpecUsesRunOverDefaults(t *testing.T) {
	d := Defaults{Image: "default:1", Command: []string{"claude", "-p"}}
	run := agentrunstest.Run("spec")

	spec, err := containerSpec(run, d, "h1", 1)
	if err != nil {
		t.Fatal(err)
	}
	if spec.Image != "default:1" || strings.Join(spec.Command, "|") != "claude|-p|Review the open PRs" {
		t.Errorf("defaults not applied: %q %q", spec.Image, spec.Command)
	}
	if spec.MemoryBytes != 512<<20 || spec.NanoCPUs != 1_500_000_000 {
		t.Errorf("limits = %d bytes, %d nanoCPUs", spec.MemoryBytes, spec.NanoCPUs)
	}
	if len(spec.Mounts) != 1 || spec.Mounts[0].Source != "/srv/repo" || spec.Mounts[0].Destination != "/workspace" || spec.Mounts[0].Options[0] != "ro" {
		t.Errorf("mounts = %+v", spec.Mounts)
	}
	for k, v := range map[string]string{agentsv1alpha1.LabelNamespace: "team", agentsv1alpha1.LabelName: "spec", agentsv1alpha1.LabelUID: string(run.UID), agentsv1alpha1.LabelHost: "h1", agentsv1alpha1.LabelAttempt: "1"} {
		if spec.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, spec.Labels[k], v)
		}
	}

	run.Spec.Image, run.Spec.Command = "mine:2", []string{"sh", "-c", `echo "$1"`, "sh"}
	spec, _ = containerSpec(run, d, "h1", 1)
	if spec.Image != "mine:2" || strings.Join(spec.Command, "|") != `sh|-c|echo "$1"|sh|Review the open PRs` {
		t.Errorf("the run's own image and command must win: %q %q", spec.Image, spec.Command)
	}
	if d.Command[len(d.Command)-1] != "-p" {
		t.Errorf("building a spec modified the defaults: %q", d.Command)
	}
}

func TestContainerSpecRefusesBadVolume(t *testing.T) {
	run := agentrunstest.Run("bad")
	run.Spec.Podman.Volumes = []string{"/a/../etc:/data"}
	if _, err := containerSpec(run, Defaults{Image: "i", Command: []string{"c"}}, "h", 1); err == nil || !strings.Contains(err.Error(), "spec.podman.volumes[0]") {
		t.Fatalf("want an error naming the volume, got %v", err)
	}
}

func TestSecretUsesNameEachSecretOnceWithTheFieldsThatNameIt(t *testing.T) {
	run := agentrunstest.Run("s")
	run.Spec.Podman.SecretsEnv = map[string]agentsv1alpha1.SecretName{"A": "zeta", "B": "alpha", "C": "zeta"}
	run.Spec.Egress = &agentsv1alpha1.EgressSpec{Credentials: []agentsv1alpha1.EgressCredential{{Host: "api.test", SecretName: "zeta"}}}
	want := map[string][]string{
		"alpha": {"spec.podman.secretsEnv[B]"},
		"zeta":  {"spec.podman.secretsEnv[A]", "spec.podman.secretsEnv[C]", "spec.egress.credentials[0].secretName"},
	}
	if got := secretUses(run); !reflect.DeepEqual(got, want) {
		t.Errorf("secretUses = %v, want %v", got, want)
	}
}

func TestShellQuoteKeepsOneWord(t *testing.T) {
	for in, want := range map[string]string{
		"github-token": `'github-token'`,
		"a'b;$(id)":    `'a'\''b;$(id)'`,
		"":             `''`,
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestContainerSpecRefusesASecretNamePodmanWouldNot(t *testing.T) {
	run := agentrunstest.Run("bad-secret")
	run.Spec.Podman.SecretsEnv = map[string]agentsv1alpha1.SecretName{"GH_TOKEN": "tok;rm -rf /"}
	_, err := containerSpec(run, Defaults{Image: agentrunstest.Image}, agentrunstest.Host, 1)
	if err == nil || !strings.Contains(err.Error(), "spec.podman.secretsEnv[GH_TOKEN]") {
		t.Fatalf("containerSpec = %v, want an error naming the secret's field", err)
	}
}
