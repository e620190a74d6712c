package fleet_test

import (
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/agentrun/agentrun/internal/controller/controllertest"
	"github.com/agentrun/agentrun/internal/testing/testenv"
)

// The suite's specs run against controllertest's API server, fleet and two
// simulated hosts on the machine's Podman.
func TestFleet(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Fleet controllers suite (envtest + Podman "+testenv.PodmanVersion()+")")
}

var _ = BeforeSuite(func() { controllertest.Start("fleet") })

var _ = AfterSuite(controllertest.Stop)
