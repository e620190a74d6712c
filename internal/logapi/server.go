// Package logapi is the fleet's aggregated API for runs' live output
// (logs.agentrun.dev/v1alpha1, namespaces/{ns}/agentruns/{name}/log), the
// way Kubernetes serves a pod's logs: users talk to the API server only, it
// proxies to this server (an APIService), which authorises them with a
// SubjectAccessReview and fetches the stream from the run's host with the
// fleet's own client certificate. No credential the API server accepts ever
// reaches a host.
//
// Its own API group, not the CRD's agents.agentrun.dev: the API server owns
// every path of a group served by CRDs, so an APIService can only claim a
// group of its own.
package logapi

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/logserver"
)

// The aggregated API's group and version.
const (
	Group   = "logs.agentrun.dev"
	Version = "v1alpha1"
)

// GroupVersion is Group and Version together.
var GroupVersion = schema.GroupVersion{Group: Group, Version: Version}

// agentRuns is what a Forbidden or NotFound answer names.
var agentRuns = schema.GroupResource{Group: agentsv1alpha1.GroupVersion.Group, Resource: "agentruns"}

// Server serves the aggregated API.
type Server struct {
	// Reader reads AgentRuns and PodmanHosts.
	Reader client.Reader
	Auth   Auth
	// ClientCertificate is the fleet's identity to the hosts' log
	// endpoints.
	ClientCertificate tls.Certificate
	Limits            Limits
	Log               logr.Logger
}

// Handler is the API's HTTP handler.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	// Discovery answers anyone who reaches the server: it says only that
	// the API exists, and the aggregator's availability check asks for
	// /apis/<group>/<version> without a user.
	mux.HandleFunc("GET /apis", s.serveGroups)
	mux.HandleFunc("GET /apis/"+Group, s.serveGroup)
	mux.HandleFunc("GET /apis/"+Group+"/"+Version, s.serveResources)
	open := newStreams(s.Limits)
	mux.HandleFunc("GET /apis/"+Group+"/"+Version+"/namespaces/{namespace}/agentruns/{name}/log", func(w http.ResponseWriter, req *http.Request) {
		s.serveLog(w, req, open)
	})
	return mux
}

func (s *Server) group() metav1.APIGroup {
	v := metav1.GroupVersionForDiscovery{GroupVersion: GroupVersion.String(), Version: Version}
	return metav1.APIGroup{
		TypeMeta: metav1.TypeMeta{Kind: "APIGroup", APIVersion: "v1"},
		Name:     Group, Versions: []metav1.GroupVersionForDiscovery{v}, PreferredVersion: v,
	}
}

func (s *Server) serveGroups(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, metav1.APIGroupList{TypeMeta: metav1.TypeMeta{Kind: "APIGroupList", APIVersion: "v1"}, Groups: []metav1.APIGroup{s.group()}})
}

func (s *Server) serveGroup(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.group())
}

func (s *Server) serveResources(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, metav1.APIResourceList{
		TypeMeta:     metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"},
		GroupVersion: GroupVersion.String(),
		APIResources: []metav1.APIResource{{Name: "agentruns/log", Namespaced: true, Kind: "AgentRunLog", Verbs: metav1.Verbs{"get"}}},
	})
}

func (s *Server) serveLog(w http.ResponseWriter, req *http.Request, open *streams) {
	ns, name := req.PathValue("namespace"), req.PathValue("name")
	log := s.Log.WithValues("agentrun", ns+"/"+name)
	res, ok, err := s.Auth.Authenticator.AuthenticateRequest(req)
	if err != nil || !ok {
		// Not proxied by the API server's aggregator.
		log.V(1).Info("Refused a log request: not authenticated", "error", err)
		writeStatus(w, apierrors.NewUnauthorized("only the API server's aggregator may call this API: use the API server"))
		return
	}
	user := res.User
	decision, _, err := s.Auth.Authorizer.Authorize(req.Context(), authorizer.AttributesRecord{
		User: user, Verb: "get", Namespace: ns, Name: name, ResourceRequest: true,
		APIGroup: agentsv1alpha1.GroupVersion.Group, APIVersion: agentsv1alpha1.GroupVersion.Version,
		Resource: "agentruns", Subresource: "log",
	})
	switch {
	case err != nil:
		log.Error(err, "Could not authorise a log request", "user", user.GetName())
		writeStatus(w, apierrors.NewServiceUnavailable("the fleet could not check the caller's permission with the API server"))
		return
	case decision != authorizer.DecisionAllow:
		//nolint:staticcheck // ST1005: the API server's own wording for a refusal ("User \"x\" cannot get ..."), which kubectl shows as it is.
		writeStatus(w, apierrors.NewForbidden(agentRuns, name, fmt.Errorf("User %q cannot get agentruns/log in the namespace %q", user.GetName(), ns)))
		return
	}
	r, err := logserver.ParseRequest(req)
	if err != nil {
		writeStatus(w, apierrors.NewBadRequest(err.Error()))
		return
	}
	host, statusErr := s.hostOf(req, r)
	if statusErr != nil {
		writeStatus(w, statusErr)
		return
	}
	release, over := open.open(user.GetName(), host.Name)
	if over != "" {
		writeStatus(w, apierrors.NewTooManyRequests(tooManyMessage(over, user.GetName(), host.Name, s.Limits), 5))
		return
	}
	defer release()
	s.proxy(w, req, r, host, log)
}

func tooManyMessage(over, user, host string, l Limits) string {
	if over == "user" {
		return fmt.Sprintf("user %q already follows %d streams, the most one user may at once", user, l.PerUser)
	}
	return fmt.Sprintf("host %s already serves %d streams, the most the fleet opens to one host at once", host, l.PerHost)
}

// hostOf is the PodmanHost that runs r's run, or the answer to give.
func (s *Server) hostOf(req *http.Request, r logserver.Request) (*agentsv1alpha1.PodmanHost, *apierrors.StatusError) {
	ctx := req.Context()
	run := &agentsv1alpha1.AgentRun{}
	if err := s.Reader.Get(ctx, client.ObjectKey{Namespace: r.Namespace, Name: r.Name}, run); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, apierrors.NewNotFound(agentRuns, r.Name)
		}
		return nil, apierrors.NewServiceUnavailable(fmt.Sprintf("reading agentrun %s/%s: %v", r.Namespace, r.Name, err))
	}
	if run.Status.Host == "" {
		return nil, apierrors.NewNotFound(agentRuns, r.Name+" (on no host yet)")
	}
	host := &agentsv1alpha1.PodmanHost{}
	if err := s.Reader.Get(ctx, client.ObjectKey{Name: run.Status.Host}, host); err != nil {
		return nil, apierrors.NewServiceUnavailable(fmt.Sprintf("reading host %s: %v", run.Status.Host, err))
	}
	if host.Status.LogEndpoint == "" {
		return nil, apierrors.NewServiceUnavailable(fmt.Sprintf("host %s serves no live output (its manager runs without --logs-bind-address)", host.Name))
	}
	return host, nil
}

// maxHostMessage bounds what of a host's error answer is passed on.
const maxHostMessage = 1024

// proxy copies the stream from the host to the caller, flushing each piece
// so lines arrive as printed.
func (s *Server) proxy(w http.ResponseWriter, req *http.Request, r logserver.Request, host *agentsv1alpha1.PodmanHost, log logr.Logger) {
	hc, err := hostClient(host.Status.LogEndpoint, host.Status.LogCABundle, s.ClientCertificate)
	if err != nil {
		writeStatus(w, apierrors.NewServiceUnavailable(fmt.Sprintf("host %s: %v", host.Name, err)))
		return
	}
	defer hc.CloseIdleConnections()
	hreq, err := http.NewRequestWithContext(req.Context(), http.MethodGet, r.URL(host.Status.LogEndpoint), nil)
	if err != nil {
		writeStatus(w, apierrors.NewInternalError(err))
		return
	}
	resp, err := hc.Do(hreq)
	if err != nil {
		writeStatus(w, apierrors.NewServiceUnavailable(fmt.Sprintf("host %s: %v", host.Name, err)))
		return
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusGone:
		//nolint:staticcheck // SA1019: its replacement, NewResourceExpired, says reason Expired; the plugin reads reason Gone (apierrors.IsGone) as the container being gone.
		writeStatus(w, apierrors.NewGone(fmt.Sprintf("the container of agentrun %s/%s is gone", r.Namespace, r.Name)))
		return
	default:
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, maxHostMessage))
		writeStatus(w, apierrors.NewServiceUnavailable(fmt.Sprintf("host %s: %s: %s", host.Name, http.StatusText(resp.StatusCode), strings.TrimSpace(string(msg)))))
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	_ = http.NewResponseController(w).Flush()
	if _, err := io.Copy(logserver.FlushWriter(w), resp.Body); err != nil && req.Context().Err() == nil {
		log.Error(err, "Proxying a run's output ended early", "host", host.Name)
	}
}

// writeStatus answers with a Status, as the API server does: kubectl and
// client-go show its message.
func writeStatus(w http.ResponseWriter, err *apierrors.StatusError) {
	st := err.ErrStatus
	st.TypeMeta = metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}
	if st.Details != nil && st.Details.RetryAfterSeconds > 0 {
		w.Header().Set("Retry-After", fmt.Sprint(st.Details.RetryAfterSeconds))
	}
	writeJSON(w, int(st.Code), st)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
