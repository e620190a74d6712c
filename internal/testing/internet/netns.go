package internet

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/agentrun/agentrun/internal/testing/testenv"
)

// block is where every simulated internet takes its addresses: 198.18.0.0/15,
// which RFC 2544 reserves for benchmarking and no network routes. The egress
// proxy refuses loopback, link-local, private and shared ranges unless told
// otherwise, so a "public" server must sit on an address it takes as public;
// these are, while nothing real can answer on them, and this machine's own
// network (192.0.2.0/24 here, TEST-NET-1) does not use them. Each internet
// has a /24 of its own: 512 can run at once.
var block = netip.MustParsePrefix("198.18.0.0/15")

const slots = 1 << (24 - 15)

// netns is one internet's network namespace and the veth pair that joins it
// to the machine: arinet-N and arinetN for slot N, names no fleet
// (agentrun-HOST, ar-HOST) or Podman (netns-UUID, cni-...) namespace takes.
type netns struct {
	slot int
	name string
	veth string
	// prefix is the slot's /24: .1 the machine's side, .2 the namespace's
	// eth0 (the DNS server), from .10 the sites'.
	prefix netip.Prefix
}

func slotNetns(i int) netns {
	base := block.Addr().As4()
	base[1] += byte(i >> 8)
	base[2] = byte(i)
	return netns{
		slot:   i,
		name:   "arinet-" + strconv.Itoa(i),
		veth:   "arinet" + strconv.Itoa(i),
		prefix: netip.PrefixFrom(netip.AddrFrom4(base), 24),
	}
}

func (ns netns) path() string { return "/var/run/netns/" + ns.name }

// owners is where each namespace's file names the test process that made
// it, so that the next internet removes what a test killed before its
// cleanup left behind (go test's -timeout ends the process without them).
const owners = "/run/agentrun-internet"

func (ns netns) owner() string { return filepath.Join(owners, ns.name) }

// reapOrphans removes the namespaces whose process is gone. A pid that was
// reused keeps an orphan until that process is gone too.
func reapOrphans() {
	files, _ := os.ReadDir(owners)
	for _, f := range files {
		i, err := strconv.Atoi(strings.TrimPrefix(f.Name(), "arinet-"))
		if err != nil || i < 0 || i >= slots {
			continue
		}
		ns := slotNetns(i)
		data, err := os.ReadFile(ns.owner())
		if err != nil {
			continue
		}
		if pid, err := strconv.Atoi(string(data)); err == nil && pid > 0 && unix.Kill(pid, 0) == unix.ESRCH {
			_ = ns.remove()
		}
	}
}

// host returns the slot's address .i.
func (ns netns) host(i byte) netip.Addr {
	a := ns.prefix.Addr().As4()
	a[3] = i
	return netip.AddrFrom4(a)
}

func (ns netns) machineAddr() netip.Addr { return ns.host(1) }
func (ns netns) innerAddr() netip.Addr   { return ns.host(2) }

// netnsScript runs hack/netns.sh, which the local fleet makes its hosts'
// namespaces with too.
func netnsScript(args ...string) error {
	out, err := exec.Command(filepath.Join(testenv.RepoRoot(), "hack", "netns.sh"), args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("hack/netns.sh %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// claim makes the namespace of a free slot, from a random one on, and
// returns it. A slot is free when no namespace or link has its names and
// none of the machine's addresses is in its /24; two tests that pick the
// same slot at once are told apart by hack/netns.sh add, which fails for
// the second.
func claim() (netns, error) {
	own, err := net.InterfaceAddrs()
	if err != nil {
		return netns{}, err
	}
	reapOrphans()
	start := rand.IntN(slots)
	for k := range slots {
		ns := slotNetns((start + k) % slots)
		if taken(ns, own) {
			continue
		}
		if err := netnsScript("add", ns.name); err != nil {
			if _, serr := os.Stat(ns.path()); serr == nil {
				continue // another test's since the check
			}
			return netns{}, err
		}
		if err := ns.own(); err != nil {
			_ = ns.remove()
			return netns{}, err
		}
		return ns, nil
	}
	return netns{}, fmt.Errorf("internet: every /24 of %s is taken: `ip netns list` shows the arinet-N namespaces that tests killed before their cleanup left", block)
}

func taken(ns netns, own []net.Addr) bool {
	if _, err := os.Stat(ns.path()); err == nil {
		return true
	}
	if _, err := net.InterfaceByName(ns.veth); err == nil {
		return true
	}
	for _, a := range own {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Overlaps(ns.prefix) {
			return true
		}
	}
	return false
}

func (ns netns) own() error {
	if err := os.MkdirAll(owners, 0o700); err != nil {
		return err
	}
	return os.WriteFile(ns.owner(), []byte(strconv.Itoa(os.Getpid())), 0o600)
}

// link joins the namespace to the machine: the /24 on both sides of the
// veth, which is the machine's route to it, and the namespace's default
// route back, so that it answers a container's forwarded packets too.
func (ns netns) link() error {
	bits := strconv.Itoa(ns.prefix.Bits())
	return netnsScript("link", ns.name, ns.veth, ns.machineAddr().String()+"/"+bits, ns.innerAddr().String()+"/"+bits)
}

// addAddress gives the namespace's eth0 one more address, a site's.
func (ns netns) addAddress(a netip.Addr) error {
	out, err := exec.Command("ip", "-n", ns.name, "addr", "add", a.String()+"/32", "dev", "eth0").CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip -n %s addr add %s: %w: %s", ns.name, a, err, out)
	}
	return nil
}

// remove deletes the pair and the namespace, and says whether either is
// still there: the namespace outlives its deletion while a socket in it is
// open.
func (ns netns) remove() error {
	if err := netnsScript("del", ns.name, ns.veth); err != nil {
		return err
	}
	var errs []error
	if err := os.Remove(ns.owner()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	if _, err := os.Stat(ns.path()); err == nil {
		errs = append(errs, fmt.Errorf("the namespace %s is still there", ns.name))
	}
	if _, err := net.InterfaceByName(ns.veth); err == nil {
		errs = append(errs, fmt.Errorf("the link %s is still there", ns.veth))
	}
	return errors.Join(errs...)
}

// do runs fn on an OS thread of its own that has entered the namespace.
// A socket belongs to the namespace of the thread that made it, for all
// its life and whichever thread uses it later: the servers' listeners are
// made here and served from ordinary goroutines, in this process, so a
// test's handlers are plain Go values with no child process to start,
// reach or reap. The thread is locked and never unlocked: when the
// goroutine ends, the runtime ends the thread rather than give another
// goroutine a thread in the wrong namespace (and it makes new threads from
// a clean template thread, never from a locked one).
func (ns netns) do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := ns.enter(); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

func (ns netns) enter() error {
	f, err := os.Open(ns.path())
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("setns %s: %w", ns.path(), err)
	}
	return nil
}
