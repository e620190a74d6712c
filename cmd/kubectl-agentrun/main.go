// Command kubectl-agentrun is the kubectl plugin for AgentRuns: on PATH, it
// runs as `kubectl agentrun`. Its logic is in internal/kubectlplugin.
package main

import (
	"os"

	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/agentrun/agentrun/internal/kubectlplugin"
)

func main() {
	os.Exit(kubectlplugin.Main(genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}, os.Args[1:]))
}
