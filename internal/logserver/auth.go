package logserver

import (
	"context"
	"fmt"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/apis/apiserver"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/authenticatorfactory"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/apiserver/pkg/authorization/authorizerfactory"
	"k8s.io/apiserver/pkg/server/dynamiccertificates"
	authenticationv1 "k8s.io/client-go/kubernetes/typed/authentication/v1"
	authorizationv1 "k8s.io/client-go/kubernetes/typed/authorization/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Auth decides who calls and whether they may: the API server's answer,
// never the host's own.
type Auth struct {
	Authenticator authenticator.Request
	Authorizer    authorizer.Authorizer
}

// webhookBackoff retries a TokenReview or SubjectAccessReview as
// k8s.io/apiserver's own options do (and controller-runtime's metrics
// filter, which copies them).
var webhookBackoff = wait.Backoff{Duration: 500 * time.Millisecond, Factor: 1.5, Jitter: 0.2, Steps: 5}

// NewDelegatingAuth authenticates callers by bearer token (TokenReview) or by
// a client certificate the cluster's client CA signed (clientCA, the API
// server's client-ca-file; nil: tokens only), and authorises them with
// SubjectAccessReviews, as controller-runtime's pkg/metrics/filters does for
// its metrics endpoint and the kubelet for its own. Anonymous requests are
// refused.
func NewDelegatingAuth(cfg *rest.Config, httpClient *http.Client, clientCA []byte) (Auth, error) {
	authn, err := authenticationv1.NewForConfigAndClient(cfg, httpClient)
	if err != nil {
		return Auth{}, err
	}
	authz, err := authorizationv1.NewForConfigAndClient(cfg, httpClient)
	if err != nil {
		return Auth{}, err
	}
	authnConfig := authenticatorfactory.DelegatingAuthenticatorConfig{
		Anonymous:                &apiserver.AnonymousAuthConfig{Enabled: false},
		CacheTTL:                 time.Minute,
		TokenAccessReviewClient:  authn,
		TokenAccessReviewTimeout: 10 * time.Second,
		WebhookRetryBackoff:      &webhookBackoff,
	}
	if len(clientCA) > 0 {
		ca, err := dynamiccertificates.NewStaticCAContent("cluster-client-ca", clientCA)
		if err != nil {
			return Auth{}, fmt.Errorf("the cluster's client CA: %w", err)
		}
		authnConfig.ClientCertificateCAContentProvider = ca
	}
	a, _, err := authnConfig.New()
	if err != nil {
		return Auth{}, fmt.Errorf("creating the authenticator: %w", err)
	}
	z, err := authorizerfactory.DelegatingAuthorizerConfig{
		SubjectAccessReviewClient: authz,
		AllowCacheTTL:             5 * time.Minute,
		// Short, so that a role just granted works within seconds.
		DenyCacheTTL:        5 * time.Second,
		WebhookRetryBackoff: &webhookBackoff,
	}.New()
	if err != nil {
		return Auth{}, fmt.Errorf("creating the authorizer: %w", err)
	}
	return Auth{Authenticator: a, Authorizer: z}, nil
}

// ClusterClientCA reads the CA that signs the cluster's client certificates
// from where the API server publishes it for servers that delegate to it
// (kube-system/extension-apiserver-authentication, readable with the
// built-in Role extension-apiserver-authentication-reader).
func ClusterClientCA(ctx context.Context, reader client.Reader) ([]byte, error) {
	cm := &corev1.ConfigMap{}
	if err := reader.Get(ctx, client.ObjectKey{Namespace: "kube-system", Name: "extension-apiserver-authentication"}, cm); err != nil {
		return nil, err
	}
	ca := cm.Data["client-ca-file"]
	if ca == "" {
		return nil, fmt.Errorf("kube-system/extension-apiserver-authentication has no client-ca-file")
	}
	return []byte(ca), nil
}
