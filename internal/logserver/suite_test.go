package logserver_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	rbacv1 "k8s.io/api/rbac/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/agentrun/agentrun/internal/containers/fake"
	"github.com/agentrun/agentrun/internal/logserver/logservertest"
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
)

func TestLogServer(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Log endpoint suite (envtest)")
}

var _ = BeforeSuite(func() {
	var cfg *rest.Config
	var err error
	env, cfg, k8s, err = testenv.StartWithClient()
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(env.Stop)
	installRoles()

	rt = fake.New(testImage)
	ctx, cancel := context.WithCancel(context.Background())
	DeferCleanup(cancel)
	endpoint, caBundle, err = logservertest.Serve(ctx, cfg, k8s, hostName, rt, zap.New(zap.WriteTo(GinkgoWriter)))
	Expect(err).NotTo(HaveOccurred())
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
