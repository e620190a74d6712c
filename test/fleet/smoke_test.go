package fleet_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/util/rand"

	"github.com/agentrun/agentrun/internal/podman/podmantest"
)

// info is what the specs read of a Podman service's /libpod/info.
type info struct {
	Store struct {
		GraphRoot string `json:"graphRoot"`
	} `json:"store"`
}

func podmanInfo(host string) (info, error) {
	var i info
	resp, err := f.HTTPClient(host).Get("http://d/v4.0.0/libpod/info")
	if err != nil {
		return i, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return i, fmt.Errorf("GET /libpod/info: %s", resp.Status)
	}
	return i, json.NewDecoder(resp.Body).Decode(&i)
}

// apiServerAnswers: the API server answers /readyz from inside the host's
// namespace, over its veth (anonymous access to /readyz is allowed).
func apiServerAnswers(host string) error {
	url, err := f.APIServer()
	if err != nil {
		return err
	}
	out, err := f.InNetns(host, "curl", "-fsSk", "--max-time", "2", url+"/readyz").CombinedOutput()
	if err != nil {
		return fmt.Errorf("curl %s/readyz in %s: %w: %s", url, f.Netns(host), err, out)
	}
	return nil
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil && !zombie(pid) }

func zombie(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	rest := string(data[strings.LastIndexByte(string(data), ')')+1:])
	return strings.HasPrefix(strings.TrimSpace(rest), "Z")
}

// The specs share one fleet, in this order; a failure does not skip the
// others, and the last one brings the fleet down.
var _ = Describe("the local fleet", Ordered, ContinueOnFailure, func() {
	It("runs one Podman service per host, each with its own storage", func() {
		roots := map[string]string{}
		for _, h := range f.Hosts() {
			i, err := podmanInfo(h)
			Expect(err).NotTo(HaveOccurred(), "host %s", h)
			root := i.Store.GraphRoot
			if h == f.Podman5Host() {
				// Podman 5 runs in a root file system of its own, with the
				// host's storage folder bound in at the usual place.
				Expect(root).To(Equal("/var/lib/containers/storage"))
				pid, err := os.ReadFile(filepath.Join(f.HostDir(h), "service.pid"))
				Expect(err).NotTo(HaveOccurred())
				mounts, err := os.ReadFile("/proc/" + strings.TrimSpace(string(pid)) + "/mountinfo")
				Expect(err).NotTo(HaveOccurred())
				root = filepath.Join(f.HostDir(h), "storage")
				// mountinfo: id, parent, device, the source's path, the mount point.
				Expect(string(mounts)).To(MatchRegexp(`(?m)^\S+ \S+ \S+ ` + regexp.QuoteMeta(root) + ` /var/lib/containers/storage `))
			}
			Expect(root).To(HavePrefix(f.HostDir(h)+"/"), "host %s", h)
			roots[root] = h
		}
		Expect(roots).To(HaveLen(3))
	})

	It("runs Podman 5 on its Podman 5 host and 4.3 on the others", func() {
		for _, h := range f.Hosts() {
			c, err := podmantest.Connect(context.Background(), f.Socket(h))
			Expect(err).NotTo(HaveOccurred())
			if h == f.Podman5Host() {
				Expect(c.Version()).To(HavePrefix("5."), "host %s", h)
			} else {
				Expect(c.Version()).To(HavePrefix("4."), "host %s", h)
			}
		}
		Expect(f.Podman5Host()).To(Equal(f.Host(3)))
	})

	It("has each host's manager publish its PodmanHost, with the host's labels", func() {
		Eventually(func(g Gomega) {
			out, err := f.Kubectl("get", "podmanhosts", "-o",
				`jsonpath={range .items[*]}{.metadata.name} {.metadata.labels.host} {.metadata.labels.podman}{"\n"}{end}`)
			g.Expect(err).NotTo(HaveOccurred(), out)
			want := []string{}
			for _, h := range f.Hosts() {
				podman := "4"
				if h == f.Podman5Host() {
					podman = "5"
				}
				want = append(want, h+" "+h+" "+podman)
			}
			g.Expect(strings.Split(strings.TrimSpace(out), "\n")).To(ConsistOf(want))
		}).WithTimeout(30 * time.Second).Should(Succeed())
	})

	It("keeps a secret created on one host off the others (with the podman CLI, as docs/fleet.md says)", func() {
		for _, h := range []string{f.Host(2), f.Podman5Host()} {
			name := "smoke-" + rand.String(6)
			out, err := f.Podman(h, "not-a-real-token", "secret", "create", name, "-")
			Expect(err).NotTo(HaveOccurred(), out)
			DeferCleanup(func() { _, _ = f.Podman(h, "", "secret", "rm", name) })
			for _, other := range f.Hosts() {
				c, err := podmantest.Connect(context.Background(), f.Socket(other))
				Expect(err).NotTo(HaveOccurred())
				Expect(c.SecretExists(name)).To(Equal(other == h), "secret %s made on %s, looked up on %s", name, h, other)
			}
		}
	})

	It("runs a container on the default bridge network inside its host's namespace", func() {
		for _, h := range []string{f.Host(1), f.Podman5Host()} {
			name := "smoke-" + rand.String(6)
			out, err := f.Podman(h, "", "run", "-d", "--name", name, "localhost/agentrun-test:latest", "sleep", "60")
			Expect(err).NotTo(HaveOccurred(), out)
			DeferCleanup(func() { _, _ = f.Podman(h, "", "rm", "--force", "--time", "0", name) })
			out, err = f.Podman(h, "", "inspect", "--format", "{{.State.Pid}}", name)
			Expect(err).NotTo(HaveOccurred(), out)
			pid := strings.TrimSpace(out)
			// The container's eth0 is one end of a veth whose other end is in
			// the host's namespace (on the bridge there): ip says which
			// namespace holds the peer.
			link, err := exec.Command("nsenter", "--net=/proc/"+pid+"/ns/net", "--", "ip", "-o", "link", "show", "eth0").CombinedOutput()
			Expect(err).NotTo(HaveOccurred(), string(link))
			Expect(string(link)).To(ContainSubstring("link-netns "+f.Netns(h)), "host %s", h)
			route, err := exec.Command("nsenter", "--net=/proc/"+pid+"/ns/net", "--", "ip", "route", "show", "default").CombinedOutput()
			Expect(err).NotTo(HaveOccurred(), string(route))
			Expect(string(route)).To(HavePrefix("default via "))
			// The bridge's gateway address is the host namespace's, not the
			// machine's.
			gw := strings.Fields(string(route))[2]
			hostAddrs, err := f.InNetns(h, "ip", "-o", "addr").CombinedOutput()
			Expect(err).NotTo(HaveOccurred(), string(hostAddrs))
			Expect(string(hostAddrs)).To(ContainSubstring(" "+gw+"/"), "host %s", h)
		}
	})

	It("cuts a host off the API server and restores it", func() {
		h1, h2 := f.Host(1), f.Host(2)
		Expect(apiServerAnswers(h1)).To(Succeed())
		Expect(f.Cut(h1)).To(Succeed())
		restored := false
		DeferCleanup(func() {
			if !restored {
				_ = f.Restore(h1)
			}
		})
		Expect(apiServerAnswers(h1)).NotTo(Succeed())
		Expect(apiServerAnswers(h2)).To(Succeed(), "only the cut host loses the API server")
		// Its Podman keeps running: the socket is a file on the machine.
		_, err := podmanInfo(h1)
		Expect(err).NotTo(HaveOccurred())

		Expect(f.Restore(h1)).To(Succeed())
		restored = true
		Eventually(func() error { return apiServerAnswers(h1) }).WithTimeout(15 * time.Second).Should(Succeed())
	})

	It("kills one host's manager, and up restarts that one only", func() {
		h1 := f.Host(1)
		pids := map[string]int{}
		for _, h := range f.Hosts() {
			pid, err := f.ManagerPID(h)
			Expect(err).NotTo(HaveOccurred())
			Expect(alive(pid)).To(BeTrue(), "host %s's manager", h)
			pids[h] = pid
		}
		Expect(f.KillHost(h1)).To(Succeed())
		Eventually(func() bool { return alive(pids[h1]) }).WithTimeout(5 * time.Second).Should(BeFalse())
		_, err := podmanInfo(h1)
		Expect(err).NotTo(HaveOccurred(), "the host's Podman keeps running")

		Expect(f.Up()).To(Succeed())
		for _, h := range f.Hosts() {
			pid, err := f.ManagerPID(h)
			Expect(err).NotTo(HaveOccurred())
			Expect(alive(pid)).To(BeTrue(), "host %s's manager", h)
			if h == h1 {
				Expect(pid).NotTo(Equal(pids[h]))
			} else {
				Expect(pid).To(Equal(pids[h]), "up restarts only what is down")
			}
		}
	})

	It("leaves no namespace, veth, address or Podman service behind after down", func() {
		servicePIDs := map[string]int{}
		for _, h := range f.Hosts() {
			for _, name := range []string{"podman.pid", "service.pid"} {
				data, err := os.ReadFile(filepath.Join(f.HostDir(h), name))
				if err == nil {
					var pid int
					_, err = fmt.Sscan(string(data), &pid)
					Expect(err).NotTo(HaveOccurred())
					servicePIDs[h] = pid
				}
			}
		}
		Expect(servicePIDs).To(HaveLen(3))

		Expect(f.Down()).To(Succeed())

		netns, err := exec.Command("ip", "netns", "list").CombinedOutput()
		Expect(err).NotTo(HaveOccurred())
		links, err := exec.Command("ip", "-o", "link").CombinedOutput()
		Expect(err).NotTo(HaveOccurred())
		lo, err := exec.Command("ip", "-o", "addr", "show", "dev", "lo").CombinedOutput()
		Expect(err).NotTo(HaveOccurred())
		for _, h := range f.Hosts() {
			Expect(string(netns)).NotTo(ContainSubstring(f.Netns(h)))
			Expect(string(links)).NotTo(ContainSubstring(" " + f.Veth(h) + "@"))
			Expect(alive(servicePIDs[h])).To(BeFalse(), "host %s's Podman service", h)
			Expect(f.Socket(h)).NotTo(BeAnExistingFile())
		}
		Expect(string(lo)).NotTo(ContainSubstring(" " + f.APIServerAddress() + "/"))
		// Nothing runs that names the state folder (managers, services,
		// conmon, the control plane).
		matches, _ := filepath.Glob("/proc/[0-9]*/cmdline")
		for _, m := range matches {
			data, err := os.ReadFile(m)
			if err != nil || m == fmt.Sprintf("/proc/%d/cmdline", os.Getpid()) {
				continue
			}
			Expect(string(data)).NotTo(ContainSubstring(f.StateDir()+"/"), "process %s", m)
		}
		// The suite's other containers run in random order, some after
		// this one: they get the fleet back.
		Expect(f.Up()).To(Succeed())
	})
})
