// Package logserver is a host's log endpoint: it streams a run's container
// output from Podman, masked as status.output is, to the fleet only (a
// client certificate its CA signed, checked by the TLS handshake), as the
// kubelet serves a pod's logs to the API server. The fleet's aggregated API
// (internal/logapi) authorises users; no user's credential reaches a host.
package logserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/containers"
	"github.com/agentrun/agentrun/internal/redact"
	"github.com/agentrun/agentrun/internal/runoutput"
)

// route is the endpoint's one path, shaped like the API's own paths.
const route = "GET /namespaces/{namespace}/agentruns/{name}/log"

// Query parameters, named as kubectl logs names them for pods.
const (
	paramFollow       = "follow"
	paramTailLines    = "tailLines"
	paramSinceSeconds = "sinceSeconds"
)

// Request is what a client asks of the endpoint.
type Request struct {
	Namespace, Name string
	Follow          bool
	// TailLines is how many of the last lines to send; negative: all.
	TailLines int
	// Since is how far back to start; zero: from the beginning.
	Since time.Duration
}

// Query is the request's query parameters.
func (r Request) Query() url.Values {
	q := url.Values{}
	if r.Follow {
		q.Set(paramFollow, "true")
	}
	if r.TailLines >= 0 {
		q.Set(paramTailLines, strconv.Itoa(r.TailLines))
	}
	if r.Since > 0 {
		q.Set(paramSinceSeconds, strconv.Itoa(int(r.Since.Seconds())))
	}
	return q
}

// URL is the request's address at endpoint (a PodmanHost's
// status.logEndpoint).
func (r Request) URL(endpoint string) string {
	q := r.Query()
	u := fmt.Sprintf("%s/namespaces/%s/agentruns/%s/log", endpoint, url.PathEscape(r.Namespace), url.PathEscape(r.Name))
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}

// Server serves the output of this host's runs.
type Server struct {
	// Host is this host's name: only its runs (status.host) are served.
	Host    string
	Runtime containers.Runtime
	// Reader reads AgentRuns.
	Reader client.Reader
	// Readers, when set, counts the streams by container, for the
	// reconciler, which keeps a finished run's container while they read.
	Readers *Readers
	// Held, when set, returns the secret values the host read as a run's
	// container started, or nil when it holds none: Podman 5 shows a
	// secret's value as it is now, so a secret replaced during the run
	// would be masked with its new value, not the one the container has.
	Held func(run types.NamespacedName, containerID string) *redact.Redactor
	Log  logr.Logger
}

// Handler is the endpoint's HTTP handler.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(route, s.serveLog)
	return mux
}

func (s *Server) serveLog(w http.ResponseWriter, req *http.Request) {
	if req.TLS == nil || len(req.TLS.VerifiedChains) == 0 {
		// The endpoint's TLS settings require the fleet's certificate; this
		// holds even if they were ever loosened.
		http.Error(w, "only the fleet may call a host's log endpoint", http.StatusUnauthorized)
		return
	}
	r, err := ParseRequest(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.stream(w, req, r, s.Log.WithValues("agentrun", r.Namespace+"/"+r.Name))
}

// ParseRequest reads a Request from an HTTP request whose route names the
// {namespace} and {name}.
func ParseRequest(req *http.Request) (Request, error) {
	q := req.URL.Query()
	r := Request{Namespace: req.PathValue("namespace"), Name: req.PathValue("name"), TailLines: -1}
	var err error
	if v := q.Get(paramFollow); v != "" {
		if r.Follow, err = strconv.ParseBool(v); err != nil {
			return r, fmt.Errorf("%s=%q: not a boolean", paramFollow, v)
		}
	}
	if v := q.Get(paramTailLines); v != "" {
		if r.TailLines, err = strconv.Atoi(v); err != nil || r.TailLines < 0 {
			return r, fmt.Errorf("%s=%q: not a count of lines", paramTailLines, v)
		}
	}
	if v := q.Get(paramSinceSeconds); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return r, fmt.Errorf("%s=%q: not a positive number of seconds", paramSinceSeconds, v)
		}
		r.Since = time.Duration(n) * time.Second
	}
	return r, nil
}

// redactor masks the output of run's container c: with the values held
// since it started when there are, else with the values Podman shows now.
func (s *Server) redactor(ctx context.Context, run *agentsv1alpha1.AgentRun, c containers.Container) (*redact.Redactor, error) {
	if s.Held != nil {
		if held := s.Held(client.ObjectKeyFromObject(run), c.ID); held != nil {
			return held, nil
		}
	}
	return runoutput.Redactor(ctx, s.Runtime, run, c)
}

// stream sends the run's current container's output, masked.
func (s *Server) stream(w http.ResponseWriter, req *http.Request, r Request, log logr.Logger) {
	ctx := req.Context()
	run := &agentsv1alpha1.AgentRun{}
	if err := s.Reader.Get(ctx, client.ObjectKey{Namespace: r.Namespace, Name: r.Name}, run); err != nil {
		code := http.StatusServiceUnavailable
		if apierrors.IsNotFound(err) {
			code = http.StatusNotFound
		}
		http.Error(w, fmt.Sprintf("agentrun %s/%s: %v", r.Namespace, r.Name, err), code)
		return
	}
	if run.Status.Host != s.Host {
		http.Error(w, fmt.Sprintf("agentrun %s/%s does not run on host %s", r.Namespace, r.Name, s.Host), http.StatusNotFound)
		return
	}
	if run.Status.ContainerID == "" {
		http.Error(w, fmt.Sprintf("agentrun %s/%s has no container yet", r.Namespace, r.Name), http.StatusNotFound)
		return
	}
	c, err := s.Runtime.Inspect(ctx, run.Status.ContainerID)
	switch {
	case errors.Is(err, containers.ErrNotFound) || err == nil && c.Labels[agentsv1alpha1.LabelUID] != string(run.UID):
		// Gone: the client falls back to status.output.
		http.Error(w, fmt.Sprintf("the container of agentrun %s/%s is gone", r.Namespace, r.Name), http.StatusGone)
		return
	case err != nil:
		http.Error(w, "Podman: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	redactor, err := s.redactor(ctx, run, c)
	if err != nil {
		// Never unmasked: without the values there is no stream.
		log.Error(err, "Could not read the run's secret values to mask its output")
		http.Error(w, "the host could not read the run's secret values to mask them", http.StatusServiceUnavailable)
		return
	}
	opts := containers.LogOptions{Follow: r.Follow, TailLines: r.TailLines}
	if r.Since > 0 {
		opts.Since = time.Now().Add(-r.Since)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	_ = http.NewResponseController(w).Flush()
	out := runoutput.NewLineWriter(FlushWriter(w), redactor)
	defer s.Readers.Open(c.ID)()
	err = s.Runtime.StreamLogs(ctx, c.ID, opts, out)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil && ctx.Err() == nil {
		log.Error(err, "Streaming a run's output ended early")
	}
}

// FlushWriter flushes each write to the client, so lines arrive as printed.
func FlushWriter(w http.ResponseWriter) io.Writer { return flushWriter{w} }

type flushWriter struct{ w http.ResponseWriter }

func (f flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if err == nil {
		err = http.NewResponseController(f.w).Flush()
	}
	return n, err
}
