package testenv

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// frontProxyClient is the name the API server's proxy client certificate
// carries, the one aggregated APIs accept (--requestheader-allowed-names).
const frontProxyClient = "front-proxy-client"

// EnableAggregator makes env's kube-apiserver a front proxy for aggregated
// APIs, as a real cluster's is: a front-proxy CA and the proxy's client
// certificate in dir, and the requestheader flags that publish them in
// kube-system/extension-apiserver-authentication. Call before env.Start.
func EnableAggregator(env *envtest.Environment, dir string) error {
	ca, err := NewCA("front-proxy-ca")
	if err != nil {
		return err
	}
	cert, key, err := ca.Issue(frontProxyClient)
	if err != nil {
		return err
	}
	files := map[string][]byte{"front-proxy-ca.crt": ca.CertPEM, "front-proxy-client.crt": cert, "front-proxy-client.key": key}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return err
		}
	}
	args := env.ControlPlane.GetAPIServer().Configure()
	args.Set("requestheader-client-ca-file", filepath.Join(dir, "front-proxy-ca.crt"))
	args.Set("requestheader-allowed-names", frontProxyClient)
	args.Set("requestheader-username-headers", "X-Remote-User")
	args.Set("requestheader-group-headers", "X-Remote-Group")
	args.Set("requestheader-extra-headers-prefix", "X-Remote-Extra-")
	args.Set("proxy-client-cert-file", filepath.Join(dir, "front-proxy-client.crt"))
	args.Set("proxy-client-key-file", filepath.Join(dir, "front-proxy-client.key"))
	return nil
}

// APIServiceTarget is where a local aggregated API listens.
type APIServiceTarget struct {
	Group, Version string
	// Port is on localhost.
	Port int
	// CABundle signs the API's serving certificate, which names
	// ServiceName(Namespace, Name).
	CABundle []byte
	// Namespace and Name are the Service's.
	Namespace, Name string
}

// ServiceName is the name the API server expects an aggregated API's
// serving certificate to carry.
func ServiceName(namespace, name string) string { return name + "." + namespace + ".svc" }

// RegisterAPIService points the API server at an aggregated API on this
// machine. There is no kube-proxy here, and a Service's Endpoints may not
// name a loopback address, so the Service is an ExternalName one for
// localhost, which the aggregator dials directly (without
// --enable-aggregator-routing it resolves ExternalName Services by their
// name and the APIService's port).
func RegisterAPIService(ctx context.Context, c client.Client, t APIServiceTarget) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: t.Namespace}}
	if err := c.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: t.Namespace, Name: t.Name},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "localhost"},
	}
	if err := c.Create(ctx, svc); err != nil {
		return fmt.Errorf("creating the Service of the aggregated API: %w", err)
	}
	apiService := &unstructured.Unstructured{Object: map[string]any{
		"metadata": map[string]any{"name": t.Version + "." + t.Group},
		"spec": map[string]any{
			"group": t.Group, "version": t.Version,
			"groupPriorityMinimum": int64(1000), "versionPriority": int64(15),
			"caBundle": base64.StdEncoding.EncodeToString(t.CABundle),
			"service":  map[string]any{"namespace": t.Namespace, "name": t.Name, "port": int64(t.Port)},
		},
	}}
	apiService.SetGroupVersionKind(schema.GroupVersionKind{Group: "apiregistration.k8s.io", Version: "v1", Kind: "APIService"})
	if err := c.Create(ctx, apiService); err != nil {
		return fmt.Errorf("creating the APIService %s: %w", apiService.GetName(), err)
	}
	return nil
}
