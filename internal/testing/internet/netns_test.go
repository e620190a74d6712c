package internet

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
)

func TestStartRemovesWhatAKilledTestLeft(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("internet: needs root")
	}
	orphan, err := claim()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = orphan.remove() })
	if err := orphan.link(); err != nil {
		t.Fatal(err)
	}
	// Its owner is a process that has exited, as a test killed by go
	// test's -timeout has.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(orphan.owner(), []byte(strconv.Itoa(dead.Process.Pid)), 0o600); err != nil {
		t.Fatal(err)
	}
	// And one whose owner runs: this test.
	alive, err := claim()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = alive.remove() })

	Start(t)
	if _, err := os.Stat(orphan.path()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the orphan namespace %s is still there (%v)", orphan.name, err)
	}
	if _, err := net.InterfaceByName(orphan.veth); err == nil {
		t.Errorf("the orphan's link %s is still there", orphan.veth)
	}
	if _, err := os.Stat(orphan.owner()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the orphan's owner file is still there (%v)", err)
	}
	if _, err := os.Stat(alive.path()); err != nil {
		t.Errorf("the namespace of a running test was removed: %v", err)
	}
}
