package egressgate

import "github.com/agentrun/agentrun/internal/intercept"

// CredentialStats are the run's credentials' counts by host since this
// process began serving it; nil when it does not, or the run has none.
// TODO(i28): stub for the host's side; the proxy's part replaces it.
func (g *Gate) CredentialStats(uid string) map[string]intercept.Counts { return nil }
