package host_test

import (
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/agentrun/agentrun/internal/controller/controllertest"
	"github.com/agentrun/agentrun/internal/testing/testenv"
)

// The suite's specs run against controllertest's API server, fleet and two
// simulated hosts on the machine's Podman.
func TestHost(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Host reconciler suite (envtest + Podman "+testenv.PodmanVersion()+")")
}

var _ = BeforeSuite(func() { controllertest.Start("host") })

var _ = AfterSuite(controllertest.Stop)
