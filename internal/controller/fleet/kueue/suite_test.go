package kueue_test

import (
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/agentrun/agentrun/internal/controller/controllertest"
	"github.com/agentrun/agentrun/internal/testing/testenv"
)

// The suite's specs run Kueue's own manager (built from the Go module proxy,
// hack/kueue.sh) beside controllertest's API server, fleet and two simulated
// hosts on the machine's Podman.
func TestKueue(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Kueue integration suite (envtest + Kueue + Podman "+testenv.PodmanVersion()+")")
}

var _ = BeforeSuite(func() { controllertest.StartWith("kueue", controllertest.Options{Kueue: true}) })

var _ = AfterSuite(controllertest.Stop)
