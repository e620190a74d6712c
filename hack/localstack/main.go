// Command localstack runs a local Kubernetes control plane for agentrun's demo
// and end-to-end tests: etcd and kube-apiserver (through controller-runtime's
// envtest, with the binaries hack/k8s-binaries.sh builds), with the AgentRun
// CRD and the validating webhook configuration installed. The webhook points
// at 127.0.0.1, with a CA and serving certificate generated at start.
//
// Once ready it writes into --dir: kubeconfig (an admin user), webhook/tls.crt
// and webhook/tls.key (for the manager's --webhook-cert-dir) and stack.env
// (WEBHOOK_PORT=...), then runs until SIGINT or SIGTERM and stops the control
// plane, removing its data.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/agentrun/agentrun/internal/testenv"
)

func main() {
	dir := flag.String("dir", ".local", "where to write the kubeconfig, the webhook certificate and stack.env")
	flag.Parse()
	if err := run(*dir); err != nil {
		fmt.Fprintln(os.Stderr, "localstack:", err)
		os.Exit(1)
	}
}

func run(dir string) error {
	env, err := testenv.New(true)
	if err != nil {
		return err
	}
	env.WebhookInstallOptions.LocalServingHost = "127.0.0.1"
	if _, err := env.Start(); err != nil {
		return fmt.Errorf("starting the control plane: %w", err)
	}
	defer func() { _ = env.Stop() }()

	if err := writeState(env, dir); err != nil {
		return err
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	fmt.Println("localstack: control plane ready; kubeconfig in", filepath.Join(dir, "kubeconfig"))
	<-stop
	fmt.Println("localstack: stopping")
	return nil
}

// writeState writes what clients and the manager need; stack.env comes last,
// so its presence means the stack is ready.
func writeState(env *envtest.Environment, dir string) error {
	user, err := env.AddUser(envtest.User{Name: "admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return fmt.Errorf("adding the admin user: %w", err)
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		return err
	}
	wh := env.WebhookInstallOptions
	certDir := filepath.Join(dir, "webhook")
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		return err
	}
	for _, f := range []string{"tls.crt", "tls.key"} {
		data, err := os.ReadFile(filepath.Join(wh.LocalServingCertDir, f))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(certDir, f), data, 0o600); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "kubeconfig"), kubeconfig, 0o600); err != nil {
		return err
	}
	stackEnv := fmt.Sprintf("WEBHOOK_HOST=%s\nWEBHOOK_PORT=%d\n", wh.LocalServingHost, wh.LocalServingPort)
	return os.WriteFile(filepath.Join(dir, "stack.env"), []byte(stackEnv), 0o600)
}
