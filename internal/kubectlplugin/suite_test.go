package kubectlplugin_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/agentrun/agentrun/internal/containers/fake"
	"github.com/agentrun/agentrun/internal/kubectlplugin"
	"github.com/agentrun/agentrun/internal/logapi"
	"github.com/agentrun/agentrun/internal/logserver/logservertest"
	"github.com/agentrun/agentrun/internal/testing/testenv"
)

// The suite drives the plugin's commands, as a user runs them, against a real
// kube-apiserver with agentrun's CRDs; no host runs, so the specs write the
// runs' status themselves where a host would.
var (
	env        *envtest.Environment
	k8s        client.Client
	kubeconfig string
	// rt is the engine of logsHost, whose log endpoint the suite serves.
	rt = fake.New(testImage)
	// recorder is recordingHost's endpoint.
	recorder = &logservertest.Recorder{}
)

const (
	logsHost = "plugin-logs-host"
	// recordingHost is a hostile host: its endpoint keeps what it gets.
	recordingHost = "plugin-recording-host"
	testImage     = "localhost/agentrun-test:latest"
)

func TestKubectlPlugin(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "kubectl agentrun suite (envtest)")
}

var _ = BeforeSuite(func() {
	var cfg *rest.Config
	var err error
	env, cfg, k8s, err = testenv.StartWithAggregator(GinkgoT().TempDir())
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(env.Stop)
	kubeconfig = writeKubeconfig(envtest.User{Name: "admin", Groups: []string{"system:masters"}})

	// The cluster's log path: the host's endpoint, which serves the fleet
	// alone, and the fleet's aggregated API, which the API server proxies to.
	ctx, cancel := context.WithCancel(context.Background())
	DeferCleanup(cancel)
	log := zap.New(zap.WriteTo(GinkgoWriter))
	fleet, err := logservertest.NewFleet()
	Expect(err).NotTo(HaveOccurred())
	endpoint, ca, err := logservertest.ServeHost(ctx, k8s, logsHost, rt, fleet.CA.Pool(), log)
	Expect(err).NotTo(HaveOccurred())
	Expect(logservertest.PublishHost(ctx, k8s, logsHost, endpoint, ca)).To(Succeed())
	endpoint, ca, err = logservertest.ServeRecorder(ctx, recorder, log)
	Expect(err).NotTo(HaveOccurred())
	Expect(logservertest.PublishHost(ctx, k8s, recordingHost, endpoint, ca)).To(Succeed())
	_, err = logservertest.ServeAPI(ctx, cfg, k8s, fleet.Certificate, logapi.DefaultLimits, log)
	Expect(err).NotTo(HaveOccurred())
})

// writeKubeconfig writes a kubeconfig for a user of the control plane, as a
// person's ~/.kube/config.
func writeKubeconfig(u envtest.User) string {
	GinkgoHelper()
	user, err := env.AddUser(u, nil)
	Expect(err).NotTo(HaveOccurred())
	data, err := user.KubeConfig()
	Expect(err).NotTo(HaveOccurred())
	path := filepath.Join(GinkgoT().TempDir(), "kubeconfig")
	Expect(os.WriteFile(path, data, 0o600)).To(Succeed())
	return path
}

// result is what one command printed and its exit code.
type result struct {
	out, errOut string
	code        int
}

// plugin runs `kubectl agentrun ARGS...` as the admin.
func plugin(args ...string) result {
	return pluginAs(kubeconfig, args...)
}

func pluginAs(kubeconfig string, args ...string) result {
	var out, errOut testenv.SyncBuffer
	code := pluginTo(&out, &errOut, kubeconfig, args...)
	return result{out.String(), errOut.String(), code}
}

// pluginTo runs the plugin with its output going to out and errOut as it
// comes, for specs that read it while the command runs.
func pluginTo(out, errOut io.Writer, kubeconfig string, args ...string) int {
	streams := genericiooptions.IOStreams{In: &bytes.Buffer{}, Out: out, ErrOut: errOut}
	return kubectlplugin.Main(streams, append([]string{"--kubeconfig", kubeconfig}, args...))
}

// newNamespace makes a namespace for one spec.
func newNamespace() string {
	GinkgoHelper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "plugin-"}}
	Expect(k8s.Create(context.Background(), ns)).To(Succeed())
	return ns.Name
}

// envtestUser is a user in no group but the authenticated one.
func envtestUser(name string) envtest.User { return envtest.User{Name: name} }
