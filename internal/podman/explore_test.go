package podman

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/containers/podman/v5/pkg/bindings/containers"
	"github.com/containers/podman/v5/pkg/errorhandling"
	"github.com/containers/podman/v5/pkg/specgen"
	"k8s.io/apimachinery/pkg/util/rand"
)

func TestExplore(t *testing.T) {
	r := newRuntime(t)
	c, _ := r.connect(context.Background())
	name := "explore-" + rand.String(5)
	sg := specgen.NewSpecGenerator(testImage, false)
	sg.Name = name
	sg.Command = []string{"sleep", "300"}
	sg.Init = ptr(true)
	_, err := containers.CreateWithSpec(c, sg, nil)
	fmt.Println("create1", err)
	defer containers.Remove(c, name, new(containers.RemoveOptions).WithForce(true))
	_, err = containers.CreateWithSpec(c, sg, nil)
	var m *errorhandling.ErrorModel
	fmt.Printf("dup: %v %T as=%v %q %d\n", err, err, errors.As(err, &m), m.Because, m.ResponseCode)
	sg2 := specgen.NewSpecGenerator("localhost/nope:1", false)
	sg2.Name = name + "x"
	_, err = containers.CreateWithSpec(c, sg2, nil)
	m = nil
	fmt.Printf("noimg: %v %T as=%v %q %d\n", err, err, errors.As(err, &m), m.Because, m.ResponseCode)
	sg3 := specgen.NewSpecGenerator(testImage, false)
	sg3.Name = name + "y"
	sg3.Command = []string{"true"}
	sg3.EnvSecrets = map[string]string{"X": "nosuchsecret"}
	_, err = containers.CreateWithSpec(c, sg3, nil)
	m = nil
	fmt.Printf("nosecret: %v as=%v %q %d\n", err, errors.As(err, &m), m.Because, m.ResponseCode)
	sg3.EnvSecrets = nil
	sg3.NetNS, sg3.Networks, sg3.NetworkOptions, _ = specgen.ParseNetworkFlag([]string{"nosuchnet"})
	_, err = containers.CreateWithSpec(c, sg3, nil)
	m = nil
	fmt.Printf("nonet: %v as=%v %q %d\n", err, errors.As(err, &m), m.Because, m.ResponseCode)
	containers.Remove(c, name+"y", new(containers.RemoveOptions).WithForce(true))

	err = containers.Stop(c, name, new(containers.StopOptions).WithTimeout(1))
	m = nil
	fmt.Printf("stop created: %v\n", err)
	err = containers.Start(c, name, nil)
	fmt.Println("start", err)
	err = containers.Start(c, name, nil)
	m = nil
	fmt.Printf("start again: %v\n", err)
	t0 := time.Now()
	_, err = containers.Remove(c, name, new(containers.RemoveOptions).WithForce(true))
	fmt.Println("remove running", err, time.Since(t0))
}
