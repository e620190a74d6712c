package logserver_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/containers/fake"
	"github.com/agentrun/agentrun/internal/logserver"
	"github.com/agentrun/agentrun/internal/testenv"
)

// The suite serves one host's log endpoint, as the manager does (the
// delegating authentication and authorisation against a real kube-apiserver,
// the self-made certificate), over the in-memory engine, and calls it as
// users of the cluster with their own credentials.
const (
	hostName  = "host-a"
	testImage = "localhost/agentrun-test:latest"
)

var (
	env      *envtest.Environment
	k8s      client.Client
	rt       *fake.Runtime
	endpoint string
	caBundle []byte
	scheme   = runtime.NewScheme()
)

func TestLogServer(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Log endpoint suite (envtest)")
}

var _ = BeforeSuite(func() {
	Expect(clientgoscheme.AddToScheme(scheme)).To(Succeed())
	Expect(agentsv1alpha1.AddToScheme(scheme)).To(Succeed())
	var err error
	env, err = testenv.New(false)
	Expect(err).NotTo(HaveOccurred())
	cfg, err := env.Start()
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(env.Stop)
	k8s, err = client.New(cfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())
	installRoles()

	clientCA, err := logserver.ClusterClientCA(context.Background(), k8s)
	Expect(err).NotTo(HaveOccurred())
	httpClient, err := rest.HTTPClientFor(cfg)
	Expect(err).NotTo(HaveOccurred())
	auth, err := logserver.NewDelegatingAuth(cfg, httpClient, clientCA)
	Expect(err).NotTo(HaveOccurred())
	rt = fake.New(testImage)
	srv := &logserver.Server{Host: hostName, Runtime: rt, Reader: k8s, Auth: auth, Log: zap.New(zap.WriteTo(GinkgoWriter))}

	addr := freeAddress()
	cert, ca, err := logserver.ServingCertificate("", "127.0.0.1")
	Expect(err).NotTo(HaveOccurred())
	caBundle, endpoint = ca, "https://"+addr
	ctx, cancel := context.WithCancel(context.Background())
	DeferCleanup(cancel)
	go func() {
		defer GinkgoRecover()
		Expect((&logserver.Endpoint{BindAddress: addr, Certificate: cert, Handler: srv.Handler()}).Start(ctx)).To(Succeed())
	}()
	Eventually(func() error {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	}).Should(Succeed())
})

// installRoles creates the ClusterRoles config/rbac ships for users.
func installRoles() {
	GinkgoHelper()
	f, err := os.Open(filepath.Join(testenv.RepoRoot(), "config", "rbac", "agentrun_log_viewer_role.yaml"))
	Expect(err).NotTo(HaveOccurred())
	defer f.Close()
	dec := utilyaml.NewYAMLOrJSONDecoder(f, 4096)
	for {
		role := &rbacv1.ClusterRole{}
		if err := dec.Decode(role); err != nil {
			break
		}
		Expect(k8s.Create(context.Background(), role)).To(Succeed())
	}
}

func freeAddress() string {
	GinkgoHelper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	defer l.Close()
	return l.Addr().String()
}

// userConfig is the client configuration of a user of the cluster, as
// their kubeconfig gives it (a client certificate).
func userConfig(name string) *rest.Config {
	GinkgoHelper()
	user, err := env.AddUser(envtest.User{Name: name}, nil)
	Expect(err).NotTo(HaveOccurred())
	data, err := user.KubeConfig()
	Expect(err).NotTo(HaveOccurred())
	cfg, err := clientcmd.RESTConfigFromKubeConfig(data)
	Expect(err).NotTo(HaveOccurred())
	cfg.Timeout = 30 * time.Second
	return cfg
}
