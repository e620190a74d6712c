package agentruns

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/claudecli"
)

// SessionSource checks the earlier run whose session run continues. It
// returns that run when its session can be continued now, or else
// the state run waits (the earlier run has not finished) or fails in. What
// the earlier run's status says of its session is checked before any use:
// a host's identity can write any status, and the session ID comes from the
// agent's own output.
func SessionSource(ctx context.Context, c client.Reader, run *agentsv1alpha1.AgentRun) (*agentsv1alpha1.AgentRun, *State, error) {
	name := run.Spec.ContinueFrom
	unavailable := func(format string, args ...any) (*agentsv1alpha1.AgentRun, *State, error) {
		return nil, &State{agentsv1alpha1.PhaseFailed, agentsv1alpha1.ReasonSessionUnavailable, fmt.Sprintf(format, args...)}, nil
	}
	earlier := &agentsv1alpha1.AgentRun{}
	err := c.Get(ctx, client.ObjectKey{Namespace: run.Namespace, Name: name}, earlier)
	switch {
	case apierrors.IsNotFound(err):
		return unavailable("AgentRun %s, whose Claude session this run continues, does not exist", name)
	case err != nil:
		return nil, nil, err
	case !earlier.Status.Phase.IsFinished():
		return nil, &State{agentsv1alpha1.PhasePending, agentsv1alpha1.ReasonWaitingForSession,
			fmt.Sprintf("waiting for AgentRun %s to finish, to continue its Claude session", name)}, nil
	case earlier.Status.SessionDir == "" || earlier.Status.Host == "" || earlier.Status.AgentResult == nil || earlier.Status.AgentResult.SessionID == "":
		return unavailable("AgentRun %s ended (%s) without a Claude session to continue", name, earlier.Status.Phase)
	case earlier.Status.SessionDir != string(earlier.UID) || !IsRunUID(earlier.Status.SessionDir):
		return unavailable("AgentRun %s's status.sessionDir %q is not its UID %s, as every session directory's name is", name, earlier.Status.SessionDir, earlier.UID)
	case !claudecli.IsSessionID(earlier.Status.AgentResult.SessionID):
		return unavailable("AgentRun %s's session ID %q is not a UUID, as Claude Code's are", name, earlier.Status.AgentResult.SessionID)
	}
	return earlier, nil, nil
}

// IsRunUID tells whether s has the form of the UIDs the API server gives:
// a UUID in its canonical form, which is safe to name a directory.
func IsRunUID(s string) bool {
	u, err := uuid.Parse(s)
	return err == nil && u.String() == s
}
