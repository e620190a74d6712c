// Command localstack runs a local Kubernetes control plane for agentrun's demo
// and end-to-end tests: etcd and kube-apiserver (through controller-runtime's
// envtest, with the binaries hack/k8s-binaries.sh builds), with the AgentRun
// CRD and the validating webhook configuration installed. The webhook points
// at 127.0.0.1, with a CA and serving certificate generated at start.
//
// Once ready it writes into --dir: kubeconfig (an admin user), webhook/tls.crt
// and webhook/tls.key (for the manager's webhook.certDir) and stack.env
// (WEBHOOK_PORT=...), then runs until SIGINT or SIGTERM and stops the control
// plane, removing its data. It also creates the namespace agentrun-system,
// where the hosts' heartbeat Leases and the fleet controller's election live.
//
// The API server fronts aggregated APIs (testenv.EnableAggregator) and routes
// the fleet's log API, logs.agentrun.dev, to 127.0.0.1:LOGS_API_PORT (an
// APIService and an ExternalName Service for localhost). It writes the
// certificates the manager needs for it into --dir: logs-api/ (the API's
// serving pair, which the APIService's caBundle signs) and logs-client/ (the
// fleet's client pair for hosts' log endpoints, and ca.crt, the CA that
// signs it, each host's host.logs.clientCAFile).
//
// With --kueue DIR (make up KUEUE=1), it also runs Kueue's controller
// manager from DIR (hack/kueue.sh) as the Kueue suite does
// (internal/testing/kueuetest), its CRDs and webhooks installed and AgentRun
// among its external frameworks; its log goes to kueue.log in --dir.
//
// The API server listens on 127.0.0.1, or on --bind-address: the local fleet
// (hack/local-stack.sh with AGENTRUN_HOSTS) gives it an address that the
// hosts' network namespaces reach over their veths. Its serving certificate
// then names that address too, so the kubeconfig works from either side.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/agentrun/agentrun/internal/testing/kueuetest"
	"github.com/agentrun/agentrun/internal/testing/testenv"
)

func main() {
	dir := flag.String("dir", ".local", "where to write the kubeconfig, the webhook certificate and stack.env")
	bind := flag.String("bind-address", "", "address the API server listens on (default: 127.0.0.1)")
	kueue := flag.String("kueue", "", "run Kueue's manager from this directory (hack/kueue.sh prints it)")
	flag.Parse()
	if err := run(*dir, *bind, *kueue); err != nil {
		fmt.Fprintln(os.Stderr, "localstack:", err)
		os.Exit(1)
	}
}

// systemNamespace holds the hosts' heartbeat Leases and the fleet
// controller's election (the default of the manager's leaseNamespace).
const systemNamespace = "agentrun-system"

func run(dir, bind, kueueDir string) error {
	env, err := testenv.New(true)
	if err != nil {
		return err
	}
	env.WebhookInstallOptions.LocalServingHost = "127.0.0.1"
	aggregator := filepath.Join(dir, "aggregator")
	if err := os.MkdirAll(aggregator, 0o700); err != nil {
		return err
	}
	if err := testenv.EnableAggregator(env, aggregator); err != nil {
		return err
	}
	if bind != "" {
		// envtest picks a free port on loopback unless given both an address
		// and a port; the address also goes into the serving certificate.
		port, err := freePort(bind)
		if err != nil {
			return err
		}
		secure := &env.ControlPlane.GetAPIServer().SecureServing
		secure.Address = bind
		secure.Port = strconv.Itoa(port)
	}
	if _, err := testenv.Start(env); err != nil {
		return fmt.Errorf("starting the control plane: %w", err)
	}
	defer func() { _ = env.Stop() }()

	c, err := client.New(env.Config, client.Options{})
	if err != nil {
		return err
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: systemNamespace}}
	if err := c.Create(context.Background(), ns); err != nil {
		return fmt.Errorf("creating the namespace %s: %w", systemNamespace, err)
	}

	logsAPIPort, err := freePort("127.0.0.1")
	if err != nil {
		return err
	}
	if err := setUpLogAPI(c, dir, logsAPIPort); err != nil {
		return err
	}
	if kueueDir != "" {
		stopKueue, err := startKueue(env, c, dir, kueueDir)
		if err != nil {
			return err
		}
		defer stopKueue()
	}
	if err := writeState(env, dir, logsAPIPort); err != nil {
		return err
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	fmt.Println("localstack: control plane ready; kubeconfig in", filepath.Join(dir, "kubeconfig"))
	<-stop
	fmt.Println("localstack: stopping")
	return nil
}

// freePort asks the kernel for a port that is free on addr.
func freePort(addr string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		return 0, fmt.Errorf("finding a free port on %s: %w", addr, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// writeState writes what clients and the manager need; stack.env comes last,
// so its presence means the stack is ready.
func writeState(env *envtest.Environment, dir string, logsAPIPort int) error {
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
	stackEnv := fmt.Sprintf("WEBHOOK_HOST=%s\nWEBHOOK_PORT=%d\nAPI_SERVER=%s\nLOGS_API_PORT=%d\n", wh.LocalServingHost, wh.LocalServingPort, env.Config.Host, logsAPIPort)
	// Whole or not at all: hack/local-stack.sh reads it as soon as it exists.
	tmp := filepath.Join(dir, "stack.env.tmp")
	if err := os.WriteFile(tmp, []byte(stackEnv), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, "stack.env"))
}

// The fleet's log API's Service, as config/default names it.
const (
	logsAPIService = "agentrun-logs"
)

// setUpLogAPI makes the certificates of the fleet's log API and of the
// fleet's identity to hosts, writes them into dir, and registers the API
// at 127.0.0.1:port with the API server.
func setUpLogAPI(c client.Client, dir string, port int) error {
	apiCA, err := testenv.NewCA("agentrun-logs-api-ca")
	if err != nil {
		return err
	}
	cert, key, err := apiCA.Issue(logsAPIService, testenv.ServiceName(systemNamespace, logsAPIService))
	if err != nil {
		return err
	}
	if err := writeFiles(filepath.Join(dir, "logs-api"), map[string][]byte{"tls.crt": cert, "tls.key": key}); err != nil {
		return err
	}
	fleetCA, err := testenv.NewCA("agentrun-fleet-ca")
	if err != nil {
		return err
	}
	cert, key, err = fleetCA.Issue("agentrun-fleet")
	if err != nil {
		return err
	}
	if err := writeFiles(filepath.Join(dir, "logs-client"), map[string][]byte{"tls.crt": cert, "tls.key": key, "ca.crt": fleetCA.CertPEM}); err != nil {
		return err
	}
	return testenv.RegisterAPIService(context.Background(), c, testenv.APIServiceTarget{
		Group: "logs.agentrun.dev", Version: "v1alpha1", Port: port, CABundle: apiCA.CertPEM,
		Namespace: systemNamespace, Name: logsAPIService,
	})
}

// writeFiles writes files (name: content) into dir, readable by the owner.
func writeFiles(dir string, files map[string][]byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// startKueue installs Kueue and runs its manager until the returned function
// is called.
func startKueue(env *envtest.Environment, c client.Client, dir, kueueDir string) (func(), error) {
	port, err := freePort("127.0.0.1")
	if err != nil {
		return nil, err
	}
	k := &kueuetest.Kueue{Dir: kueueDir, Port: port}
	ctx := context.Background()
	if err := k.Install(ctx, env.Config, c); err != nil {
		return nil, fmt.Errorf("installing Kueue: %w", err)
	}
	work := filepath.Join(dir, "kueue")
	if err := os.MkdirAll(work, 0o700); err != nil {
		return nil, err
	}
	logs, err := os.Create(filepath.Join(dir, "kueue.log"))
	if err != nil {
		return nil, err
	}
	stop, err := k.Start(ctx, env.Config, c, work, logs)
	if err != nil {
		_ = logs.Close()
		return nil, fmt.Errorf("starting Kueue (its log: %s): %w", logs.Name(), err)
	}
	return func() {
		stop()
		_ = logs.Close()
	}, nil
}
