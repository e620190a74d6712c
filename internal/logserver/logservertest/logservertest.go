// Package logservertest serves a host's log endpoint for tests, wired as the
// manager wires it: the delegating authentication and authorisation against
// the test's API server, the self-made certificate, on 127.0.0.1.
package logservertest

import (
	"context"
	"net"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/agentrun/agentrun/internal/containers"
	"github.com/agentrun/agentrun/internal/logserver"
)

// Serve serves host's endpoint over rt until ctx ends, as the identity of
// cfg, and returns its URL and CA bundle once it accepts connections.
func Serve(ctx context.Context, cfg *rest.Config, reader client.Reader, host string, rt containers.Runtime, log logr.Logger) (string, []byte, error) {
	clientCA, err := logserver.ClusterClientCA(ctx, reader)
	if err != nil {
		return "", nil, err
	}
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return "", nil, err
	}
	auth, err := logserver.NewDelegatingAuth(cfg, httpClient, clientCA)
	if err != nil {
		return "", nil, err
	}
	cert, ca, err := logserver.ServingCertificate("", "127.0.0.1")
	if err != nil {
		return "", nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	addr := l.Addr().String()
	l.Close()
	srv := &logserver.Server{Host: host, Runtime: rt, Reader: reader, Auth: auth, Log: log}
	go func() {
		if err := (&logserver.Endpoint{BindAddress: addr, Certificate: cert, Handler: srv.Handler()}).Start(ctx); err != nil {
			log.Error(err, "The test log endpoint stopped")
		}
	}()
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return "https://" + addr, ca, nil
		}
		select {
		case <-ctx.Done():
			return "", nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
