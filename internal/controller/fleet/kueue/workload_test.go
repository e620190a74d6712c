package kueue

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/kueueapi"
)

func TestWorkloadNameFitsAndStaysUnique(t *testing.T) {
	if got := WorkloadName("fix-bug"); got != "agentrun-fix-bug" {
		t.Errorf("WorkloadName(fix-bug) = %q", got)
	}
	a, b := WorkloadName(strings.Repeat("a", 253)), WorkloadName(strings.Repeat("a", 252)+"b")
	if len(a) > 253 || len(b) > 253 || a == b {
		t.Errorf("long names: %d and %d characters, equal: %v", len(a), len(b), a == b)
	}
}

func TestRequestsAreOneRunAndWhatTheRunSets(t *testing.T) {
	for _, tc := range []struct {
		cpus, memory string
		want         corev1.ResourceList
		wantErr      bool
	}{
		{want: corev1.ResourceList{agentsv1alpha1.ResourceRun: resource.MustParse("1")}},
		{cpus: "1.5", memory: "512m", want: corev1.ResourceList{
			agentsv1alpha1.ResourceRun: resource.MustParse("1"), corev1.ResourceCPU: resource.MustParse("1500m"), corev1.ResourceMemory: resource.MustParse("512Mi"),
		}},
		{cpus: "lots", wantErr: true},
	} {
		run := &agentsv1alpha1.AgentRun{Spec: agentsv1alpha1.AgentRunSpec{Podman: agentsv1alpha1.PodmanSpec{CPUs: tc.cpus, Memory: tc.memory}}}
		got, err := requests(run)
		if (err != nil) != tc.wantErr {
			t.Fatalf("cpus %q memory %q: error %v", tc.cpus, tc.memory, err)
		}
		for name, q := range tc.want {
			if g := got[name]; g.Cmp(q) != 0 {
				t.Errorf("cpus %q memory %q: %s = %s, want %s", tc.cpus, tc.memory, name, g.String(), q.String())
			}
		}
		if len(got) != len(tc.want) {
			t.Errorf("cpus %q memory %q: %v, want %v", tc.cpus, tc.memory, got, tc.want)
		}
	}
}

func cond(t string, s metav1.ConditionStatus) metav1.Condition {
	return metav1.Condition{Type: t, Status: s, Reason: "R", Message: "m"}
}

func TestDecideReadsKueuesConditions(t *testing.T) {
	admission := &kueueapi.Admission{ClusterQueue: "cq"}
	for _, tc := range []struct {
		name      string
		conds     []metav1.Condition
		admission *kueueapi.Admission
		want      verdict
	}{
		{name: "new", want: waiting},
		{name: "no quota", conds: []metav1.Condition{cond(kueueapi.WorkloadQuotaReserved, metav1.ConditionFalse)}, want: waiting},
		{name: "admitted", conds: []metav1.Condition{cond(kueueapi.WorkloadAdmitted, metav1.ConditionTrue)}, admission: admission, want: admitted},
		{name: "evicted, quota held", conds: []metav1.Condition{cond(kueueapi.WorkloadAdmitted, metav1.ConditionTrue), cond(kueueapi.WorkloadEvicted, metav1.ConditionTrue)}, admission: admission, want: evicted},
		{name: "evicted, quota released", conds: []metav1.Condition{cond(kueueapi.WorkloadAdmitted, metav1.ConditionFalse), cond(kueueapi.WorkloadEvicted, metav1.ConditionTrue)}, want: waiting},
		{name: "admitted again", conds: []metav1.Condition{cond(kueueapi.WorkloadAdmitted, metav1.ConditionTrue), cond(kueueapi.WorkloadEvicted, metav1.ConditionFalse)}, admission: admission, want: admitted},
	} {
		wl := &kueueapi.Workload{Status: kueueapi.WorkloadStatus{Conditions: tc.conds, Admission: tc.admission}}
		if got := decide(wl); got != tc.want {
			t.Errorf("%s: decide = %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestReleaseQuotaRequeuesAsKueuesJobControllersDo(t *testing.T) {
	wl := &kueueapi.Workload{Status: kueueapi.WorkloadStatus{
		Conditions: []metav1.Condition{
			cond(kueueapi.WorkloadQuotaReserved, metav1.ConditionTrue), cond(kueueapi.WorkloadAdmitted, metav1.ConditionTrue),
			{Type: kueueapi.WorkloadEvicted, Status: metav1.ConditionTrue, Reason: "Preempted", Message: "preempted by a higher priority workload"},
		},
		Admission: &kueueapi.Admission{ClusterQueue: "cq"},
	}}
	releaseQuota(wl, metav1.Now())
	if wl.Status.Admission != nil || meta.IsStatusConditionTrue(wl.Status.Conditions, kueueapi.WorkloadQuotaReserved) ||
		meta.IsStatusConditionTrue(wl.Status.Conditions, kueueapi.WorkloadAdmitted) {
		t.Errorf("quota still held: %+v", wl.Status)
	}
	if c := meta.FindStatusCondition(wl.Status.Conditions, kueueapi.WorkloadRequeued); c == nil || c.Status != metav1.ConditionTrue || c.Reason != "Preempted" {
		t.Errorf("Requeued = %+v, want True, reason Preempted", c)
	}
	if decide(wl) != waiting {
		t.Errorf("a released Workload is not waiting")
	}
}
