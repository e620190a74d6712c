package logapi

import (
	"context"
	"io"

	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"

	"github.com/agentrun/agentrun/internal/logserver"
)

// Stream asks the API server for r's output as the user of cfg: the API
// server authenticates them and proxies to the fleet. Errors are the API's
// Status (apierrors.IsGone: the container is gone).
func Stream(ctx context.Context, cfg *rest.Config, r logserver.Request) (io.ReadCloser, error) {
	c := rest.CopyConfig(cfg)
	c.APIPath = "/apis"
	c.GroupVersion = &GroupVersion
	c.NegotiatedSerializer = scheme.Codecs.WithoutConversion()
	// A stream lasts as long as the run.
	c.Timeout = 0
	rc, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, err
	}
	req := rc.Get().Namespace(r.Namespace).Resource("agentruns").Name(r.Name).SubResource("log")
	for k, v := range r.Query() {
		req = req.Param(k, v[0])
	}
	// A stream refused over a cap answers 429 with Retry-After, which
	// client-go would otherwise retry ten times: the user would wait 50 s in
	// silence for the refusal. It is theirs to read at once.
	return req.MaxRetries(0).Stream(ctx)
}
