package agentruns

import (
	"context"
	"fmt"
	"time"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

// MarkFinished stamps a run that reaches a terminal phase with its completion
// time (when the container's own end time was not recorded) and duration.
func MarkFinished(status *agentsv1alpha1.AgentRunStatus, now time.Time) {
	if status.CompletionTime == nil {
		status.CompletionTime = ptr.To(metav1.NewTime(now))
	}
	if status.StartTime != nil {
		status.Duration = formatDuration(status.StartTime.Time, status.CompletionTime.Time)
	}
}

// WriteStatus patches the status when this pass changed it. The patch
// carries the resourceVersion read: a pass that acted on a stale copy from
// the cache (an exit seen twice, say) gets a conflict instead of overwriting
// what a later pass wrote.
func WriteStatus(ctx context.Context, c client.Client, base, run *agentsv1alpha1.AgentRun) error {
	if equality.Semantic.DeepEqual(base.Status, run.Status) {
		return nil
	}
	if err := c.Status().Patch(ctx, run, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("writing status: %w", err)
	}
	return nil
}

// MaxEventNoteBytes is the API server's bound on an event's note: a longer
// one is refused, and the event lost.
const MaxEventNoteBytes = 1024

// TruncateUTF8 keeps at most n bytes of s without splitting a character.
func TruncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// formatDuration formats how long a finished run took, from its first start.
func formatDuration(firstStart, end time.Time) string {
	if firstStart.IsZero() || end.Before(firstStart) {
		return ""
	}
	return end.Sub(firstStart).Round(time.Second).String()
}

// Stale says a write was refused because what it was checked against changed
// or went away since it was read (a conflict, a not found): the object's
// watch brings the new version, and the pass it wakes acts on that, so the
// write is dropped rather than retried.
func Stale(err error) bool {
	return apierrors.IsConflict(err) || apierrors.IsNotFound(err)
}
