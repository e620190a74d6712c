// Package logservertest serves runs' live output for tests as a cluster
// does: a host's log endpoint that serves the fleet alone, and the fleet's
// aggregated API registered with the test's API server (which must run
// with testenv.EnableAggregator), on 127.0.0.1.
package logservertest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/containers"
	"github.com/agentrun/agentrun/internal/logapi"
	"github.com/agentrun/agentrun/internal/logserver"
	"github.com/agentrun/agentrun/internal/testing/testenv"
)

// Fleet is the fleet's identity to hosts: hosts trust CA, the fleet shows
// Certificate.
type Fleet struct {
	CA          *testenv.CA
	Certificate tls.Certificate
}

// NewFleet makes a CA for the fleet and a client certificate it signs.
func NewFleet() (*Fleet, error) {
	ca, err := testenv.NewCA("agentrun-fleet-ca")
	if err != nil {
		return nil, err
	}
	cert, err := ca.IssueTLS("agentrun-fleet")
	if err != nil {
		return nil, err
	}
	return &Fleet{CA: ca, Certificate: cert}, nil
}

// ServeHost serves host's endpoint over rt until ctx ends, accepting only
// certificates clientCAs signed, and returns its URL and CA bundle once it
// accepts connections.
func ServeHost(ctx context.Context, reader client.Reader, host string, rt containers.Runtime, clientCAs *x509.CertPool, log logr.Logger) (string, []byte, error) {
	cert, ca, err := logserver.ServingCertificate("", "127.0.0.1")
	if err != nil {
		return "", nil, err
	}
	srv := &logserver.Server{Host: host, Runtime: rt, Reader: reader, Log: log}
	addr, err := serve(ctx, &logserver.Endpoint{Certificate: cert, ClientCAs: clientCAs, Handler: srv.Handler()}, log)
	return "https://" + addr, ca, err
}

// The aggregated API's Service, as config/ names it.
const (
	apiNamespace = "agentrun-system"
	apiService   = "agentrun-logs"
)

// ServeAPI serves the fleet's aggregated API as cfg's identity with
// certificate fleet and limits until ctx ends, registers it with the API
// server, and returns its address once the API server routes to it.
func ServeAPI(ctx context.Context, cfg *rest.Config, c client.Client, fleet tls.Certificate, limits logapi.Limits, log logr.Logger) (string, error) {
	auth, err := logapi.NewAuth(ctx, cfg, c)
	if err != nil {
		return "", err
	}
	ca, err := testenv.NewCA("agentrun-logs-api-ca")
	if err != nil {
		return "", err
	}
	serving, err := ca.IssueTLS(apiService, testenv.ServiceName(apiNamespace, apiService))
	if err != nil {
		return "", err
	}
	srv := &logapi.Server{Reader: c, Auth: auth, ClientCertificate: fleet, Limits: limits, Log: log}
	addr, err := serve(ctx, &logserver.Endpoint{Certificate: serving, Handler: srv.Handler()}, log)
	if err != nil {
		return "", err
	}
	_, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	err = testenv.RegisterAPIService(ctx, c, testenv.APIServiceTarget{
		Group: logapi.Group, Version: logapi.Version, Port: p, CABundle: ca.CertPEM, Namespace: apiNamespace, Name: apiService,
	})
	if err != nil {
		return "", err
	}
	wait, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return addr, waitRouted(wait, cfg)
}

// waitRouted returns once the API server answers the API's discovery.
func waitRouted(ctx context.Context, cfg *rest.Config) error {
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return err
	}
	url := strings.TrimSuffix(cfg.Host, "/") + "/apis/" + logapi.Group + "/" + logapi.Version
	last := ""
	for {
		resp, err := hc.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, body)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the API server did not route to the log API (last answer: %s): %w", last, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// serve runs e on a free port of 127.0.0.1 until ctx ends and returns its
// address once it accepts connections.
func serve(ctx context.Context, e *logserver.Endpoint, log logr.Logger) (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	e.BindAddress = l.Addr().String()
	l.Close()
	go func() {
		if err := e.Start(ctx); err != nil {
			log.Error(err, "A test endpoint stopped")
		}
	}()
	for {
		c, err := net.Dial("tcp", e.BindAddress)
		if err == nil {
			c.Close()
			return e.BindAddress, nil
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// PublishHost creates the PodmanHost name with the log endpoint it
// publishes, as a host's agent writes it.
func PublishHost(ctx context.Context, c client.Client, name, endpoint string, ca []byte) error {
	host := &agentsv1alpha1.PodmanHost{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := c.Create(ctx, host); err != nil {
		return err
	}
	host.Status.LogEndpoint, host.Status.LogCABundle = endpoint, ca
	return c.Status().Update(ctx, host)
}

// Recorder is a hostile host's log endpoint: it accepts any caller, keeps
// every request it gets, and answers with a line.
type Recorder struct {
	mu       sync.Mutex
	requests []*http.Request
}

// Requests are the requests the recorder got, bodies dropped.
func (r *Recorder) Requests() []*http.Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.requests)
}

func (r *Recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	r.requests = append(r.requests, req.Clone(context.Background()))
	r.mu.Unlock()
	_, _ = io.WriteString(w, "recorded\n")
}

// ServeRecorder serves a Recorder over HTTPS until ctx ends, asking every
// caller for a client certificate and accepting any, and returns its URL
// and CA bundle.
func ServeRecorder(ctx context.Context, rec *Recorder, log logr.Logger) (string, []byte, error) {
	cert, ca, err := logserver.ServingCertificate("", "127.0.0.1")
	if err != nil {
		return "", nil, err
	}
	addr, err := serve(ctx, &logserver.Endpoint{Certificate: cert, Handler: rec}, log)
	return "https://" + addr, ca, err
}
