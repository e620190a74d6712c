package logapi

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/apis/apiserver"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/authenticatorfactory"
	"k8s.io/apiserver/pkg/authentication/request/headerrequest"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/apiserver/pkg/authorization/authorizerfactory"
	"k8s.io/apiserver/pkg/server/dynamiccertificates"
	authorizationv1 "k8s.io/client-go/kubernetes/typed/authorization/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Auth decides who calls and whether they may.
type Auth struct {
	// Authenticator accepts only requests the API server's aggregator
	// proxied: a client certificate from its front-proxy CA, with one of
	// the allowed names, saying who the user is in request headers.
	Authenticator authenticator.Request
	// Authorizer asks the API server with SubjectAccessReviews.
	Authorizer authorizer.Authorizer
}

// webhookBackoff retries a SubjectAccessReview as k8s.io/apiserver's own
// options do.
var webhookBackoff = wait.Backoff{Duration: 500 * time.Millisecond, Factor: 1.5, Jitter: 0.2, Steps: 5}

// NewAuth authenticates the aggregator's proxied requests with the
// requestheader settings the API server publishes in
// kube-system/extension-apiserver-authentication (read once: a restart
// picks up a rotated front-proxy CA), and authorises users with
// SubjectAccessReviews, as metrics-server does. There is no other way in: no
// bearer tokens, no users' own certificates, no anonymous requests, so a
// caller that goes around the API server is refused.
func NewAuth(ctx context.Context, cfg *rest.Config, reader client.Reader) (Auth, error) {
	header, err := requestHeaderConfig(ctx, reader)
	if err != nil {
		return Auth{}, err
	}
	a, _, err := authenticatorfactory.DelegatingAuthenticatorConfig{
		Anonymous:           &apiserver.AnonymousAuthConfig{Enabled: false},
		RequestHeaderConfig: header,
	}.New()
	if err != nil {
		return Auth{}, fmt.Errorf("creating the authenticator: %w", err)
	}
	authz, err := authorizationv1.NewForConfig(cfg)
	if err != nil {
		return Auth{}, err
	}
	z, err := authorizerfactory.DelegatingAuthorizerConfig{
		SubjectAccessReviewClient: authz,
		AllowCacheTTL:             10 * time.Second,
		// Short, so that a role just granted works within seconds.
		DenyCacheTTL:        5 * time.Second,
		WebhookRetryBackoff: &webhookBackoff,
	}.New()
	if err != nil {
		return Auth{}, fmt.Errorf("creating the authorizer: %w", err)
	}
	return Auth{Authenticator: a, Authorizer: z}, nil
}

// requestHeaderConfig reads how the API server's aggregator says who a user
// is (readable with the built-in Role extension-apiserver-authentication-reader).
func requestHeaderConfig(ctx context.Context, reader client.Reader) (*authenticatorfactory.RequestHeaderConfig, error) {
	cm := &corev1.ConfigMap{}
	if err := reader.Get(ctx, client.ObjectKey{Namespace: "kube-system", Name: "extension-apiserver-authentication"}, cm); err != nil {
		return nil, fmt.Errorf("reading the API server's front-proxy settings: %w", err)
	}
	ca := cm.Data["requestheader-client-ca-file"]
	if ca == "" {
		return nil, fmt.Errorf("kube-system/extension-apiserver-authentication has no requestheader-client-ca-file: the API server runs without --requestheader-client-ca-file, so it cannot proxy to aggregated APIs")
	}
	caContent, err := dynamiccertificates.NewStaticCAContent("front-proxy-ca", []byte(ca))
	if err != nil {
		return nil, fmt.Errorf("the front-proxy CA: %w", err)
	}
	lists := map[string]headerrequest.StaticStringSlice{}
	for _, key := range []string{"requestheader-allowed-names", "requestheader-username-headers", "requestheader-uid-headers",
		"requestheader-group-headers", "requestheader-extra-headers-prefix"} {
		var l []string
		if v := cm.Data[key]; v != "" {
			if err := json.Unmarshal([]byte(v), &l); err != nil {
				return nil, fmt.Errorf("extension-apiserver-authentication's %s: %w", key, err)
			}
		}
		lists[key] = l
	}
	if len(lists["requestheader-username-headers"]) == 0 {
		return nil, fmt.Errorf("kube-system/extension-apiserver-authentication names no requestheader-username-headers")
	}
	return &authenticatorfactory.RequestHeaderConfig{
		CAContentProvider:   caContent,
		AllowedClientNames:  lists["requestheader-allowed-names"],
		UsernameHeaders:     lists["requestheader-username-headers"],
		UIDHeaders:          lists["requestheader-uid-headers"],
		GroupHeaders:        lists["requestheader-group-headers"],
		ExtraHeaderPrefixes: lists["requestheader-extra-headers-prefix"],
	}, nil
}
