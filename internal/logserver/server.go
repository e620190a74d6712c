// Package logserver is a host's log endpoint: it streams a run's container
// output from Podman, masked as status.output is, to callers the API server
// authenticates and allows to get agentruns/log in the run's namespace, as
// the kubelet serves a pod's logs.
package logserver

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/containers"
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

// URL is the request's address at endpoint (a PodmanHost's
// status.logEndpoint).
func (r Request) URL(endpoint string) string {
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
	Auth   Auth
	Log    logr.Logger
}

// Handler is the endpoint's HTTP handler.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(route, s.serveLog)
	return mux
}

func (s *Server) serveLog(w http.ResponseWriter, req *http.Request) {
	ns, name := req.PathValue("namespace"), req.PathValue("name")
	log := s.Log.WithValues("agentrun", ns+"/"+name)
	res, ok, err := s.Auth.Authenticator.AuthenticateRequest(req)
	if err != nil || !ok {
		// A bad certificate or token, or none, or an API server the host
		// cannot reach to check them: refused all the same.
		log.V(1).Info("Refused a log request: not authenticated", "error", err)
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
		return
	}
	user := res.User
	decision, reason, err := s.Auth.Authorizer.Authorize(req.Context(), authorizer.AttributesRecord{
		User: user, Verb: "get", Namespace: ns, Name: name, ResourceRequest: true,
		APIGroup: agentsv1alpha1.GroupVersion.Group, APIVersion: agentsv1alpha1.GroupVersion.Version,
		Resource: "agentruns", Subresource: "log",
	})
	switch {
	case err != nil:
		log.Error(err, "Could not authorise a log request", "user", user.GetName())
		http.Error(w, "the host could not check the caller's permission with the API server", http.StatusServiceUnavailable)
		return
	case decision != authorizer.DecisionAllow:
		log.V(1).Info("Refused a log request: forbidden", "user", user.GetName(), "reason", reason)
		http.Error(w, fmt.Sprintf("User %q cannot get agentruns/log in the namespace %q", user.GetName(), ns), http.StatusForbidden)
		return
	}
	r, err := parseRequest(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.stream(w, req, r, log)
}

func parseRequest(req *http.Request) (Request, error) {
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
	redactor, err := runoutput.Redactor(ctx, s.Runtime, run, c)
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
	out := runoutput.NewLineWriter(flushWriter{w}, redactor)
	err = s.Runtime.StreamLogs(ctx, c.ID, opts, out)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil && ctx.Err() == nil {
		log.Error(err, "Streaming a run's output ended early")
	}
}

// flushWriter flushes each write to the client, so lines arrive as printed.
type flushWriter struct{ w http.ResponseWriter }

func (f flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if err == nil {
		err = http.NewResponseController(f.w).Flush()
	}
	return n, err
}
