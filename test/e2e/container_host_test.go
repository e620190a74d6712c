package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/containers/podman/v5/pkg/bindings"
	"github.com/containers/podman/v5/pkg/bindings/containers"
	"github.com/containers/podman/v5/pkg/specgen"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	spec "github.com/opencontainers/runtime-spec/specs-go"
	"k8s.io/apimachinery/pkg/util/rand"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/testing/testenv"
)

// containerHostName is the Podman host whose manager runs in a container.
const containerHostName = "e2e-container"

// The socket, kubeconfig and configuration paths inside the manager's
// container, as in config/host/agentrun-host.container.
const (
	containerSocket     = "/run/podman/podman.sock"
	containerKubeconfig = "/etc/agentrun/kubeconfig"
	containerConfig     = "/etc/agentrun/agentrun-host.yaml"
)

// startContainerHost starts a second host's manager the way the Quadlet unit
// config/host/agentrun-host.container does: from the image make image builds,
// as root with only the capabilities to manage session directories, no new
// privileges and a read-only root file system, with the Podman socket, the
// kubeconfig and the session directory mounted, through the
// Podman API of the service under test. Network=host: the local control plane
// listens on 127.0.0.1 (the unit's comment says when a host needs that too).
// It returns the container's ID and the probe address; the container is
// stopped and removed when the spec ends.
func startContainerHost(conn context.Context) (id, probeAddr string) {
	GinkgoHelper()
	probeAddr = fmt.Sprintf("127.0.0.1:%d", freePort())
	// The session directory, at the same path inside and out, as the unit
	// mounts /var/lib/agentrun/sessions (here under /tmp, which the Podman 5
	// service sees too).
	sessions := GinkgoT().TempDir()
	// The egress sockets' directory and the forwarder, likewise, as the
	// unit mounts /var/lib/agentrun/egress and the forwarder; the
	// directory's path is short, for the sockets' paths below it.
	egressDir, err := os.MkdirTemp("/tmp", "e2e-egress-")
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(os.RemoveAll, egressDir)
	forwarder, err := testenv.Forwarder()
	Expect(err).NotTo(HaveOccurred())
	config := hostConfig(probeAddr, sessions, egressDir, forwarder)
	sg := specgen.NewSpecGenerator(testenv.ManagerImage(), false)
	sg.Name = "agentrun-e2e-host-" + rand.String(6)
	// The unit's Exec= line.
	sg.Command = []string{
		"--mode=host",
		"--config=" + containerConfig,
		"--host-name=" + containerHostName,
		"--kubeconfig=" + containerKubeconfig,
	}
	yes := true
	sg.User = "0"
	sg.CapDrop = []string{"ALL"}
	sg.CapAdd = []string{"CHOWN", "DAC_OVERRIDE"}
	sg.NoNewPrivileges = &yes
	sg.ReadOnlyFilesystem = &yes
	sg.ReadWriteTmpfs = &yes // ReadOnly=true in a unit is podman run --read-only, whose default this is
	sg.SelinuxOpts = []string{"disable"}
	sg.NetNS = specgen.Namespace{NSMode: specgen.Host}
	sg.Mounts = []spec.Mount{
		// The service under test's own socket: the runs this manager
		// starts go to the service that started it, as on a real host.
		{Type: "bind", Source: testenv.PodmanSocket(), Destination: containerSocket, Options: []string{"rbind"}},
		{Type: "bind", Source: filepath.Join(stateDir, "kubeconfig"), Destination: containerKubeconfig, Options: []string{"rbind", "ro"}},
		{Type: "bind", Source: config, Destination: containerConfig, Options: []string{"rbind", "ro"}},
		{Type: "bind", Source: sessions, Destination: sessions, Options: []string{"rbind"}},
		{Type: "bind", Source: egressDir, Destination: egressDir, Options: []string{"rbind"}},
		{Type: "bind", Source: forwarder, Destination: forwarder, Options: []string{"rbind", "ro"}},
	}
	sg.Labels = map[string]string{"agentrun.e2e": "container-host"}

	resp, err := containers.CreateWithSpec(conn, sg, nil)
	Expect(err).NotTo(HaveOccurred(), "creating the manager's container from %s on %s "+
		"(make image builds it for the host's Podman, make podman5 copies it into Podman 5)", testenv.ManagerImage(), testenv.PodmanSocket())
	id = resp.ID
	DeferCleanup(func() {
		if CurrentSpecReport().Failed() {
			GinkgoWriter.Printf("--- logs of the manager's container %s\n%s\n", sg.Name, containerLogs(conn, id))
		}
		// The manager leaves on SIGTERM, releasing what it holds; 10 s, then SIGKILL.
		_ = containers.Stop(conn, id, new(containers.StopOptions).WithTimeout(10))
		_, err := containers.Remove(conn, id, new(containers.RemoveOptions).WithForce(true))
		Expect(err).NotTo(HaveOccurred())
	})
	Expect(containers.Start(conn, id, nil)).To(Succeed())

	// Ready once its probe answers; a container that stopped says why in its logs.
	Eventually(func(g Gomega) {
		data, err := containers.Inspect(conn, id, nil)
		g.Expect(err).NotTo(HaveOccurred())
		if !data.State.Running {
			StopTrying(fmt.Sprintf("the manager's container is %s (exit code %d); its logs:\n%s",
				data.State.Status, data.State.ExitCode, containerLogs(conn, id))).Now()
		}
		resp, err := http.Get("http://" + probeAddr + "/readyz")
		g.Expect(err).NotTo(HaveOccurred())
		_ = resp.Body.Close()
		g.Expect(resp.StatusCode).To(Equal(http.StatusOK))
	}).WithTimeout(60 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())
	return id, probeAddr
}

// hostConfig writes the manager's configuration file: the shipped
// config/host/agentrun-host.yaml, with what this test needs merged over it
// (the test image and its fake agent, its own probe port, session and
// egress socket directories and forwarder, no metrics), and returns its path.
func hostConfig(probeAddr, sessions, egressDir, forwarder string) string {
	GinkgoHelper()
	patch := fmt.Sprintf(`{"metrics":{"bindAddress":"0"},"health":{"bindAddress":%q},`+
		`"host":{"runs":{"defaultImage":"localhost/agentrun-test:latest","defaultCommand":["fake-agent"]},"sessions":{"dir":%q},`+
		`"egress":{"socketDir":%q,"forwarder":%q}}}`, probeAddr, sessions, egressDir, forwarder)
	var stderr strings.Builder
	cmd := exec.Command(filepath.Join(stateDir, "bin", "kubectl"), "patch", "--local", "-f", filepath.Join(root, "config", "host", "agentrun-host.yaml"),
		"--type", "merge", "-p", patch, "-o", "yaml")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	Expect(err).NotTo(HaveOccurred(), "merging the test's settings over config/host/agentrun-host.yaml: %s", stderr.String())
	file := filepath.Join(GinkgoT().TempDir(), "agentrun-host.yaml")
	Expect(os.WriteFile(file, out, 0o644)).To(Succeed())
	return file
}

// containerLogs returns a container's stdout and stderr, interleaved.
func containerLogs(conn context.Context, id string) string {
	lines := make(chan string, 64)
	done := make(chan string)
	go func() {
		var b strings.Builder
		for l := range lines {
			b.WriteString(l)
		}
		done <- b.String()
	}()
	err := containers.Logs(conn, id, new(containers.LogOptions).WithStdout(true).WithStderr(true), lines, lines)
	close(lines)
	out := <-done
	if err != nil {
		out += fmt.Sprintf("\n(reading the logs failed: %v)", err)
	}
	return out
}

// removeHostContainers removes whatever containers the host made that are
// still there (the manager removes a finished run's, so normally none).
func removeHostContainers(conn context.Context, host string) {
	GinkgoHelper()
	list, err := containers.List(conn, new(containers.ListOptions).WithAll(true).
		WithFilters(map[string][]string{"label": {agentsv1alpha1.LabelHost + "=" + host}}))
	Expect(err).NotTo(HaveOccurred())
	for _, c := range list {
		GinkgoWriter.Printf("removing %s, left by host %s\n", c.ID, host)
		_, _ = containers.Remove(conn, c.ID, new(containers.RemoveOptions).WithForce(true).WithTimeout(0))
	}
}

var _ = Describe("A Podman host whose manager runs in a container (as agentrun-host.container)", func() {
	It("joins the fleet from the manager's image and runs a run pinned to it", func() {
		conn, err := bindings.NewConnection(context.Background(), "unix://"+testenv.PodmanSocket())
		Expect(err).NotTo(HaveOccurred())
		// Registered first, so they run last: after the manager has gone.
		DeferCleanup(func() { removeHostContainers(conn, containerHostName) })
		// The host leaves the fleet for good, as an operator retires one:
		// otherwise its PodmanHost would stay Ready until the fleet declares
		// it lost, and the fleet could place the next specs' runs on it.
		DeferCleanup(func() {
			kubectlOK("delete", "podmanhost", containerHostName, "--ignore-not-found")
			kubectlOK("delete", "lease", "-n", "agentrun-system", containerHostName, "--ignore-not-found")
		})

		id, _ := startContainerHost(conn)
		data, err := containers.Inspect(conn, id, nil)
		Expect(err).NotTo(HaveOccurred())
		// What the Quadlet unit asks for, as the service applied it.
		Expect(data.Config.User).To(Equal("0"))
		Expect(data.HostConfig.ReadonlyRootfs).To(BeTrue())
		Expect(data.HostConfig.NetworkMode).To(Equal("host"))
		Expect(data.HostConfig.SecurityOpt).To(ContainElement("no-new-privileges"))
		Expect(data.EffectiveCaps).To(ConsistOf("CAP_CHOWN", "CAP_DAC_OVERRIDE"), "the session directories' capabilities and no other")

		// It joins the fleet: its PodmanHost is Ready and reports the
		// Podman service it reaches through the mounted socket.
		Eventually(func(g Gomega) {
			out, err := kubectl("get", "podmanhost", containerHostName, "-o",
				`jsonpath={.status.conditions[?(@.type=="Ready")].status} {.status.podmanVersion}`)
			g.Expect(err).NotTo(HaveOccurred(), out)
			g.Expect(out).To(Equal("True " + testenv.PodmanVersion()))
		}).WithTimeout(30 * time.Second).WithPolling(250 * time.Millisecond).Should(Succeed())

		ns := newNamespace()
		kubectlApply(ns, `apiVersion: agents.agentrun.dev/v1alpha1
kind: AgentRun
metadata:
  name: on-the-container-host
spec:
  prompt: run on the host whose manager is a container
  hostName: `+containerHostName+`
`)
		// Deleted while the manager still runs, so that it removes its
		// finalizer (cleanups run last-registered first).
		DeferCleanup(func() { _, _ = kubectl("delete", "agentrun", "on-the-container-host", "-n", ns, "--timeout=60s") })
		kubectlOK("wait", "-n", ns, "--for=condition=Succeeded", "agentrun/on-the-container-host", "--timeout=90s")
		Expect(kubectlOK("get", "agentrun", "on-the-container-host", "-n", ns, "-o", "jsonpath={.status.host} {.status.phase}")).
			To(Equal(containerHostName + " Succeeded"))
		Expect(kubectlOK("get", "agentrun", "on-the-container-host", "-n", ns, "-o", "jsonpath={.status.output}")).
			To(ContainSubstring("fake-agent: working on: run on the host whose manager is a container"))
	})
})
