package logserver

import (
	"net/http"

	"k8s.io/client-go/rest"
)

// Client is an HTTP client for a host's log endpoint that presents the
// caller's own credentials (client certificate, token, exec plugin, as in
// caller) and trusts the host's certificate only if ca signed it.
func Client(caller *rest.Config, ca []byte) (*http.Client, error) {
	cfg := rest.CopyConfig(caller)
	cfg.TLSClientConfig.Insecure = false
	cfg.TLSClientConfig.CAFile, cfg.TLSClientConfig.CAData = "", ca
	// The API server's name is not the host's: verify against the URL.
	cfg.TLSClientConfig.ServerName = ""
	// A stream lasts as long as the run.
	cfg.Timeout = 0
	return rest.HTTPClientFor(cfg)
}
