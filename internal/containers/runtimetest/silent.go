package runtimetest

import (
	"context"

	"github.com/agentrun/agentrun/internal/containers"
)

// SilentEvents is rt with event streams that stay open and say nothing, as
// Podman's do when its event log lags far behind (a died event 30 s late at
// the 95th percentile was measured under load): what a controller sees of
// its containers then comes from its other calls only.
func SilentEvents(rt containers.Runtime) containers.Runtime {
	return silentEvents{rt}
}

type silentEvents struct{ containers.Runtime }

func (silentEvents) Events(ctx context.Context, _ map[string]string) (<-chan containers.Event, <-chan error) {
	events, errs := make(chan containers.Event), make(chan error)
	context.AfterFunc(ctx, func() {
		close(events)
		close(errs)
	})
	return events, errs
}
