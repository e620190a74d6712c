// Package kueuetest runs Kueue's own controller manager beside envtest, for
// the suites of agentrun's Kueue integration: the manager built from the Go
// module proxy (hack/kueue.sh, cached like the Kubernetes binaries), its CRDs
// and webhook configurations from the same module, its certificates made
// and injected by its own cert management as in a cluster. Tests only.
package kueuetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/testing/testenv"
)

// Namespace is where Kueue's manager keeps its certificate Secret, and where
// its webhook Service is: kueue-system, as Kueue's release manifests have it.
const Namespace = "kueue-system"

// serviceName is the webhook Service Kueue's cert management names in its
// certificate (kueue-webhook-service.kueue-system.svc).
const serviceName = "kueue-webhook-service"

// certSecret holds Kueue's webhook certificate, which its cert management
// writes and reads back from its certDir.
const certSecret = "kueue-webhook-server-cert"

// ExternalFramework is how Kueue's configuration names AgentRun among the
// kinds whose Workloads an external controller manages.
var ExternalFramework = "AgentRun." + agentsv1alpha1.GroupVersion.Version + "." + agentsv1alpha1.GroupVersion.Group

// Kueue is Kueue's build and where its webhook server listens.
type Kueue struct {
	// Dir holds the manager, crds/ and webhooks/ (hack/kueue.sh).
	Dir string
	// Port is the webhook server's, on the loopback.
	Port int
}

// Build builds Kueue's manager, or finds it in the cache (hack/kueue.sh,
// whose progress goes to progress), and picks a free port for its webhooks.
func Build(progress io.Writer) (*Kueue, error) {
	cmd := exec.Command(filepath.Join(testenv.RepoRoot(), "hack", "kueue.sh"))
	cmd.Stderr = progress
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("hack/kueue.sh: %w", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return nil, err
	}
	return &Kueue{Dir: strings.TrimSpace(string(out)), Port: port}, nil
}

// converted are the CRDs Kueue serves more than one version of through its
// conversion webhook, as its release manifests set them up (and its cert
// management injects its CA into them, waiting for all of them).
var converted = []string{"localqueues", "clusterqueues", "workloads", "cohorts", "multikueueclusters"}

// crds reads Kueue's CRDs, their conversion webhooks pointed at the webhook
// Service.
func (k *Kueue) crds() ([]*apiextensionsv1.CustomResourceDefinition, error) {
	files, err := filepath.Glob(filepath.Join(k.Dir, "crds", "*.yaml"))
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("no CRDs in %s/crds: %v", k.Dir, err)
	}
	var out []*apiextensionsv1.CustomResourceDefinition
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := yaml.Unmarshal(data, crd); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		for _, plural := range converted {
			if crd.Name == plural+".kueue.x-k8s.io" {
				crd.Spec.Conversion = &apiextensionsv1.CustomResourceConversion{
					Strategy: apiextensionsv1.WebhookConverter,
					Webhook: &apiextensionsv1.WebhookConversion{
						ClientConfig:             &apiextensionsv1.WebhookClientConfig{Service: k.service("/convert")},
						ConversionReviewVersions: []string{"v1"},
					},
				}
			}
		}
		out = append(out, crd)
	}
	return out, nil
}

func (k *Kueue) service(path string) *apiextensionsv1.ServiceReference {
	return &apiextensionsv1.ServiceReference{Namespace: Namespace, Name: serviceName, Path: ptr.To(path), Port: ptr.To(int32(k.Port))}
}

// Install creates what Kueue's manager expects of its cluster: its CRDs,
// its namespace, its certificate Secret, its webhook Service (an ExternalName
// one for localhost: there is no kube-proxy here, and Endpoints may not name
// the loopback; the API server dials an ExternalName Service's name, and
// checks the certificate against the Service's DNS name, which Kueue's
// certificate carries) and its webhook configurations, named as Kueue's cert
// management expects. The CRDs are installed here, not through
// envtest.Environment.CRDs: an environment with webhooks of its own drops the
// conversion webhooks of CRDs whose types its scheme cannot convert.
func (k *Kueue) Install(ctx context.Context, cfg *rest.Config, c client.Client) error {
	crds, err := k.crds()
	if err != nil {
		return err
	}
	if _, err := envtest.InstallCRDs(cfg, envtest.CRDInstallOptions{CRDs: crds}); err != nil {
		return fmt.Errorf("installing Kueue's CRDs: %w", err)
	}
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}}); err != nil {
		return err
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: serviceName},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "localhost"},
	}
	if err := c.Create(ctx, svc); err != nil {
		return err
	}
	// Kueue's cert management fills this Secret; its release manifests
	// create it empty.
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: certSecret}}
	if err := c.Create(ctx, secret); err != nil {
		return err
	}
	data, err := os.ReadFile(filepath.Join(k.Dir, "webhooks", "manifests.yaml"))
	if err != nil {
		return err
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		doc := &unstructured.Unstructured{}
		if err := dec.Decode(&doc.Object); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return err
		}
		obj, err := k.webhookConfiguration(doc)
		if err != nil {
			return err
		}
		if err := c.Create(ctx, obj); err != nil {
			return fmt.Errorf("creating %s %s: %w", doc.GetKind(), obj.GetName(), err)
		}
	}
}

// webhookConfiguration is one of Kueue's webhook configurations, named and
// pointed at its Service as its release manifests (kustomize) have it.
func (k *Kueue) webhookConfiguration(doc *unstructured.Unstructured) (client.Object, error) {
	data, err := doc.MarshalJSON()
	if err != nil {
		return nil, err
	}
	point := func(cc *admissionv1.WebhookClientConfig) {
		path := ""
		if cc.Service != nil && cc.Service.Path != nil {
			path = *cc.Service.Path
		}
		cc.Service = &admissionv1.ServiceReference{Namespace: Namespace, Name: serviceName, Path: ptr.To(path), Port: ptr.To(int32(k.Port))}
	}
	switch doc.GetKind() {
	case "MutatingWebhookConfiguration":
		obj := &admissionv1.MutatingWebhookConfiguration{}
		if err := yaml.Unmarshal(data, obj); err != nil {
			return nil, err
		}
		obj.Name = "kueue-mutating-webhook-configuration"
		for i := range obj.Webhooks {
			point(&obj.Webhooks[i].ClientConfig)
		}
		return obj, nil
	case "ValidatingWebhookConfiguration":
		obj := &admissionv1.ValidatingWebhookConfiguration{}
		if err := yaml.Unmarshal(data, obj); err != nil {
			return nil, err
		}
		obj.Name = "kueue-validating-webhook-configuration"
		for i := range obj.Webhooks {
			point(&obj.Webhooks[i].ClientConfig)
		}
		return obj, nil
	}
	return nil, fmt.Errorf("unexpected %s in Kueue's webhook manifests", doc.GetKind())
}

// configuration is Kueue's manager configuration: its own cert management,
// AgentRun as an external framework, no leader election, no metrics or
// health ports (suites run side by side), and no visibility server (it would
// take a fixed port).
const configuration = `apiVersion: config.kueue.x-k8s.io/v1beta2
kind: Configuration
namespace: %s
health:
  healthProbeBindAddress: "0"
metrics:
  bindAddress: "0"
webhook:
  host: 127.0.0.1
  port: %d
  certDir: %s
leaderElection:
  leaderElect: false
internalCertManagement:
  enable: true
featureGates:
  VisibilityOnDemand: false
integrations:
  frameworks: []
  externalFrameworks: [%q]
`

// Start runs Kueue's manager against cfg's API server, with its files in
// workDir and its log written to logs, until ctx ends; it returns once
// Kueue's webhooks answer, and the stop function, which returns once the
// manager has exited.
func (k *Kueue) Start(ctx context.Context, cfg *rest.Config, c client.Client, workDir string, logs io.Writer) (stop func(), err error) {
	kubeconfig := filepath.Join(workDir, "kubeconfig")
	if err := WriteKubeconfig(cfg, kubeconfig); err != nil {
		return nil, err
	}
	config := filepath.Join(workDir, "kueue.yaml")
	content := fmt.Sprintf(configuration, Namespace, k.Port, filepath.Join(workDir, "certs"), ExternalFramework)
	if err := os.WriteFile(config, []byte(content), 0o600); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	cmd := exec.CommandContext(ctx, filepath.Join(k.Dir, "manager"), "--config", config, "--zap-log-level=2")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, err
	}
	exited := make(chan struct{})
	var exitErr error
	go func() {
		exitErr = cmd.Wait()
		close(exited)
	}()
	stop = func() {
		cancel()
		<-exited
	}
	if err := waitForWebhooks(ctx, c, filepath.Join(workDir, "certs"), exited); err != nil {
		stop()
		return nil, fmt.Errorf("%w (the manager's exit: %v)", err, exitErr)
	}
	return stop, nil
}

// waitForWebhooks returns once Kueue's mutating webhook answers a dry run
// (its certificate made, its CA injected, its server up), or an error if the
// manager exits or two minutes pass. Meanwhile it does what a kubelet does
// for Kueue's pod: it copies the certificate Secret into certDir, where
// Kueue's cert management waits for it before it serves.
func waitForWebhooks(ctx context.Context, c client.Client, certDir string, exited <-chan struct{}) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if err := mountCertificate(ctx, c, certDir); err != nil {
			return err
		}
		flavor := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor",
			"metadata": map[string]any{"name": "readiness-probe"},
		}}
		err := c.Create(ctx, flavor, client.DryRunAll)
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("the Kueue manager exited before its webhooks answered (last answer: %w)", err)
		case <-time.After(500 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the webhooks of Kueue did not answer within 2m: %w", err)
		}
	}
}

// mountCertificate writes the keys of Kueue's certificate Secret into dir,
// once the Secret has them, as the kubelet updates a Secret volume: each
// file whole or not at all. Kueue reads them while this runs again every
// half second; a file rewritten in place is empty for a moment, and Kueue,
// reading it then, exits with "tls: failed to find any PEM data" (seen in
// CI). So a file is written beside its name and renamed over it, and only
// when its content changed.
func mountCertificate(ctx context.Context, c client.Client, dir string) error {
	secret := &corev1.Secret{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: Namespace, Name: certSecret}, secret); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for name, data := range secret.Data {
		path := filepath.Join(dir, name)
		if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
			continue
		}
		tmp := filepath.Join(dir, "."+name+".tmp")
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			return err
		}
		if err := os.Rename(tmp, path); err != nil {
			return err
		}
	}
	return nil
}

// WriteKubeconfig writes cfg (envtest's admin, with client certificates) as
// a kubeconfig file, for Kueue's manager and for kubectl.
func WriteKubeconfig(cfg *rest.Config, path string) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	kc.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "admin"}
	kc.CurrentContext = "envtest"
	return clientcmd.WriteToFile(*kc, path)
}
