package host

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/logserver"
)

// A finished run's container stays while a log stream reads its last
// lines, for a bounded while; with no stream, or no log endpoint, it goes
// at once.
func TestLogStreamGrace(t *testing.T) {
	now := time.Date(2026, 12, 6, 4, 0, 0, 0, time.UTC)
	readers := &logserver.Readers{}
	release := readers.Open("read")
	defer release()
	for _, tt := range []struct {
		name      string
		readers   *logserver.Readers
		container string
		finished  time.Duration
		want      bool
	}{
		{"read, just finished", readers, "read", time.Second, true},
		{"read for too long", readers, "read", maxLogStreamGrace + time.Second, false},
		{"not read", readers, "other", time.Second, false},
		{"no log endpoint", nil, "read", time.Second, false},
	} {
		r := &AgentRunReconciler{HostConfig: HostConfig{Clock: clocktesting.NewFakeClock(now)}, logReaders: tt.readers}
		run := &agentsv1alpha1.AgentRun{Status: agentsv1alpha1.AgentRunStatus{
			ContainerID: tt.container, CompletionTime: &metav1.Time{Time: now.Add(-tt.finished)},
		}}
		if got := r.logStreamGrace(run) > 0; got != tt.want {
			t.Errorf("%s: waits %v, want %v", tt.name, got, tt.want)
		}
	}
}
