package logserver_test

import (
	"context"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/agentrun/agentrun/internal/containers/fake"
	"github.com/agentrun/agentrun/internal/logserver/logservertest"
	"github.com/agentrun/agentrun/internal/testing/testenv"
)

// The suite serves one host's log endpoint as the manager does (the fleet's
// CA the only one it accepts client certificates from, the self-made serving
// certificate) over the in-memory engine, and calls it as the fleet.
const (
	hostName  = "host-a"
	testImage = "localhost/agentrun-test:latest"
)

var (
	env      *envtest.Environment
	k8s      client.Client
	rt       *fake.Runtime
	fleet    *logservertest.Fleet
	endpoint string
	caBundle []byte
)

func TestLogServer(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Log endpoint suite (envtest)")
}

var _ = BeforeSuite(func() {
	var err error
	env, _, k8s, err = testenv.StartWithClient()
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(env.Stop)
	rt = fake.New(testImage)
	fleet, err = logservertest.NewFleet()
	Expect(err).NotTo(HaveOccurred())
	ctx, cancel := context.WithCancel(context.Background())
	DeferCleanup(cancel)
	endpoint, caBundle, err = logservertest.ServeHost(ctx, k8s, hostName, rt, fleet.CA.Pool(), zap.New(zap.WriteTo(GinkgoWriter)))
	Expect(err).NotTo(HaveOccurred())
})
