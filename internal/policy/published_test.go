package policy

import (
	"reflect"
	"testing"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

// What a host publishes is, read back by placement, every rule Admit
// applies: a rule left out of status.policy would let placement send runs
// the host refuses.
func TestThePublishedPolicyIsEveryRuleAdmitApplies(t *testing.T) {
	p := Policy{
		AllowedVolumePaths: []string{"/srv"}, ForbiddenVolumePaths: []string{"/run/podman"}, AllowVolumeRelabel: true,
		BlockedContainerPaths: []string{"/usr"}, AllowedImages: []string{"localhost/*"}, AllowedNetworks: []string{"none", "bridge"},
		DefaultMemoryBytes: 512 << 20, MaxMemoryBytes: 8 << 30, DefaultNanoCPUs: 5e8, MaxNanoCPUs: 4e9,
		// Imposed, not admission rules: not published.
		User: "1000:1000", UserNS: "auto", PidsLimit: 1024, LogMaxBytes: 64 << 20, Capabilities: []string{"CHOWN"},
	}
	got := FromPublished(p.Published(true))
	want := p
	want.User, want.UserNS, want.PidsLimit, want.LogMaxBytes, want.Capabilities = "", "", 0, 0, nil
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("FromPublished(Published()) = %+v; want %+v", got, want)
	}
	if !p.Published(true).KeepsSessions || p.Published(false).KeepsSessions {
		t.Errorf("KeepsSessions is not the host's word")
	}
	if zero := FromPublished(Policy{}.Published(false)); !reflect.DeepEqual(zero, Policy{}) {
		t.Errorf("no limits published: read back as %+v", zero)
	}
	// Every field of Policy is published, named above as imposed, or
	// ResolveHostPath (the host's file system, which placement cannot see).
	if n := reflect.TypeOf(Policy{}).NumField(); n != 16 {
		t.Errorf("Policy has %d fields, not 16: publish the new one in status.policy (Published, FromPublished) if it refuses runs", n)
	}
}

func TestARunThatContinuesASessionNeedsAHostThatKeepsThem(t *testing.T) {
	run := &agentsv1alpha1.AgentRun{Spec: agentsv1alpha1.AgentRunSpec{ContinueFrom: "earlier"}}
	if AdmitSession(true, run) != nil {
		t.Errorf("a host that keeps sessions refuses a run that continues one")
	}
	if refused := AdmitSession(false, run); refused == nil || refused.Reason != agentsv1alpha1.ReasonSessionUnavailable {
		t.Errorf("a host that keeps no sessions: %v; want SessionUnavailable", refused)
	}
	if AdmitSession(false, &agentsv1alpha1.AgentRun{}) != nil {
		t.Errorf("a run that continues nothing is refused")
	}
}
