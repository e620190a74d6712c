// Package testenv starts a real kube-apiserver and etcd (controller-runtime's
// envtest) with agentrun's CRDs installed, for the test suites and the local
// stack.
package testenv

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

// PodmanSocket is the Podman API socket the tests use: AGENTRUN_PODMAN_SOCKET.
// It has no default of its own, on purpose: the default is defined once, in
// hack/lib.sh, and the Makefile exports it to every test. A test run outside
// make without the variable stops here, naming the fix, rather than guessing
// a path that may not be where the service runs.
func PodmanSocket() string {
	s := os.Getenv("AGENTRUN_PODMAN_SOCKET")
	if s == "" {
		panic("AGENTRUN_PODMAN_SOCKET is not set: run the tests with `make test`, " +
			"or set the variables it sets first: eval \"$(make -s test-env)\"")
	}
	return s
}

// ManagerImage is the manager's image, as make image builds it:
// AGENTRUN_MANAGER_IMAGE, which the Makefile sets from its VERSION (the one
// place the version is written). No default here either, for the same reason.
func ManagerImage() string {
	s := os.Getenv("AGENTRUN_MANAGER_IMAGE")
	if s == "" {
		panic("AGENTRUN_MANAGER_IMAGE is not set: run the tests with `make test`, " +
			"or set the variables it sets first: eval \"$(make -s test-env)\"")
	}
	return s
}

// RepoRoot is the root of this repository, found from this file's location so
// that tests in any package can reach config/.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..")
}

// New describes a control plane with agentrun's CRDs and, when withWebhook is
// true, its ValidatingWebhookConfiguration pointed at a local serving address
// that envtest chooses (see ManagerOptions). Call Start on the result.
func New(withWebhook bool) (*envtest.Environment, error) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		return nil, errors.New("KUBEBUILDER_ASSETS is not set: run the tests with `make test`, " +
			"or set the variables it sets first: eval \"$(make -s test-env)\"")
	}
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(RepoRoot(), "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	if withWebhook {
		env.WebhookInstallOptions = envtest.WebhookInstallOptions{
			Paths: []string{filepath.Join(RepoRoot(), "config", "webhook")},
		}
	}
	return env, nil
}

// ManagerOptions returns manager options that serve webhooks where env's
// webhook configuration points and keep metrics off, so suites running side by
// side do not fight over ports. Controller name checks are off: a suite may
// run several managers (one per simulated host) in one process.
func ManagerOptions(env *envtest.Environment, scheme *k8sruntime.Scheme) ctrl.Options {
	wh := env.WebhookInstallOptions
	return ctrl.Options{
		Scheme:     scheme,
		Metrics:    metricsserver.Options{BindAddress: "0"},
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
		WebhookServer: webhook.NewServer(webhook.Options{
			Host:    wh.LocalServingHost,
			Port:    wh.LocalServingPort,
			CertDir: wh.LocalServingCertDir,
		}),
	}
}

// WaitForWebhookServer returns once env's webhook serving address accepts TLS
// connections, or an error after timeout.
func WaitForWebhookServer(env *envtest.Environment, timeout time.Duration) error {
	wh := env.WebhookInstallOptions
	addr := net.JoinHostPort(wh.LocalServingHost, strconv.Itoa(wh.LocalServingPort))
	dialer := &net.Dialer{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for {
		conn, err := tls.DialWithDialer(dialer, "tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // a readiness probe of our own test server
		if err == nil {
			return conn.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("webhook server at %s not ready after %s: %w", addr, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// StartWithClient starts a control plane as New(false) describes it, with
// config/default's admission policies (Start), and returns it with its admin
// configuration and a client that knows the core types and agentrun's. The
// caller stops it (env.Stop).
func StartWithClient() (*envtest.Environment, *rest.Config, client.Client, error) {
	env, err := New(false)
	if err != nil {
		return nil, nil, nil, err
	}
	return startWithClient(env)
}

// StartWithAggregator is StartWithClient with the API server a front proxy
// for aggregated APIs (EnableAggregator, its files in dir).
func StartWithAggregator(dir string) (*envtest.Environment, *rest.Config, client.Client, error) {
	env, err := New(false)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := EnableAggregator(env, dir); err != nil {
		return nil, nil, nil, err
	}
	return startWithClient(env)
}

func startWithClient(env *envtest.Environment) (*envtest.Environment, *rest.Config, client.Client, error) {
	scheme := k8sruntime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, nil, nil, err
	}
	if err := agentsv1alpha1.AddToScheme(scheme); err != nil {
		return nil, nil, nil, err
	}
	cfg, err := Start(env)
	if err != nil {
		return nil, nil, nil, err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		_ = env.Stop()
		return nil, nil, nil, err
	}
	return env, cfg, c, nil
}
