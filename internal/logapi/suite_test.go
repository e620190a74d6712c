package logapi_test

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
	"github.com/agentrun/agentrun/internal/logapi"
	"github.com/agentrun/agentrun/internal/logserver/logservertest"
	"github.com/agentrun/agentrun/internal/testing/testenv"
)

// The suite runs a cluster's log path: a kube-apiserver that fronts
// aggregated APIs, the fleet's API registered with it as an APIService, one
// host's log endpoint over the in-memory engine, and a hostile host that
// records every request it gets. Users call the API server only, with their
// own credentials.
const (
	hostName  = "host-a"
	testImage = "localhost/agentrun-test:latest"
)

// limits are small, so the caps are reached with a few streams.
var limits = logapi.Limits{PerUser: 2, PerHost: 3}

var (
	env   *envtest.Environment
	admin *rest.Config
	k8s   client.Client
	rt    *fake.Runtime
	fleet *logservertest.Fleet
	// apiAddress is where the fleet's API listens.
	apiAddress string
)

func TestLogAPI(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Aggregated log API suite (envtest with the aggregator)")
}

var _ = BeforeSuite(func() {
	dir, err := os.MkdirTemp("", "logapi-")
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(os.RemoveAll, dir)
	env, admin, k8s, err = testenv.StartWithAggregator(dir)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(env.Stop)
	installRoles()
	rt = fake.New(testImage)
	fleet, err = logservertest.NewFleet()
	Expect(err).NotTo(HaveOccurred())
	ctx, cancel := context.WithCancel(context.Background())
	DeferCleanup(cancel)
	log := zap.New(zap.WriteTo(GinkgoWriter))
	endpoint, ca, err := logservertest.ServeHost(ctx, k8s, hostName, rt, fleet.CA.Pool(), log)
	Expect(err).NotTo(HaveOccurred())
	Expect(logservertest.PublishHost(ctx, k8s, hostName, endpoint, ca)).To(Succeed())
	apiAddress, err = logservertest.ServeAPI(ctx, admin, k8s, fleet.Certificate, limits, log)
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
