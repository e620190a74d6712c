package agentruns

import (
	"errors"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

func TestStaleIsAConflictOrAnObjectGone(t *testing.T) {
	runs := schema.GroupResource{Group: "agents.agentrun.dev", Resource: "agentruns"}
	for _, tc := range []struct {
		err   error
		stale bool
	}{
		{apierrors.NewConflict(runs, "a", errors.New("changed")), true},
		{apierrors.NewNotFound(runs, "a"), true},
		{apierrors.NewForbidden(runs, "a", errors.New("no")), false},
		{apierrors.NewServiceUnavailable("down"), false},
		{nil, false},
	} {
		if got := Stale(tc.err); got != tc.stale {
			t.Errorf("Stale(%v) = %v, want %v", tc.err, got, tc.stale)
		}
	}
}
