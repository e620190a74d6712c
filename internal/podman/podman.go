// Package podman implements containers.Runtime over Podman's REST API service
// (a Unix socket), using Podman's Go bindings.
//
// Podman 4.x puts the values of env secrets in inspect output; nothing here
// copies a container's environment anywhere.
package podman

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/containers/podman/v5/pkg/bindings"
	"github.com/containers/podman/v5/pkg/bindings/containers"
	"github.com/containers/podman/v5/pkg/bindings/images"
	"github.com/containers/podman/v5/pkg/bindings/secrets"
	"github.com/containers/podman/v5/pkg/bindings/system"
	entitiestypes "github.com/containers/podman/v5/pkg/domain/entities/types"
	"github.com/containers/podman/v5/pkg/errorhandling"
	"github.com/containers/podman/v5/pkg/specgen"
	spec "github.com/opencontainers/runtime-spec/specs-go"

	rt "github.com/agentrun/agentrun/internal/containers"
)

// Runtime talks to one Podman API service.
type Runtime struct {
	socket string

	mu   sync.Mutex
	conn context.Context // the bindings' connection, made on first use
}

var _ rt.Runtime = &Runtime{}

// New returns a Runtime for the API service at the Unix socket path. It does
// not connect: the manager starts, and reports Podman as unavailable, while
// the service is down.
func New(socket string) *Runtime {
	return &Runtime{socket: socket}
}

// call is the context the bindings need: the caller's deadline and
// cancellation, with the connection the bindings look up among its values.
type call struct {
	context.Context
	conn context.Context
}

func (c call) Value(key any) any {
	if v := c.conn.Value(key); v != nil {
		return v
	}
	return c.Context.Value(key)
}

// connect returns a bindings context for one call. Making the connection
// pings the service, so it is made once; the bindings dial the socket for
// each request, so it outlives restarts of the service.
func (r *Runtime) connect(ctx context.Context) (context.Context, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conn == nil {
		conn, err := bindings.NewConnection(context.WithoutCancel(ctx), "unix://"+r.socket)
		if err != nil {
			return nil, r.unavailable(err)
		}
		r.conn = conn
	}
	return call{Context: ctx, conn: r.conn}, nil
}

func (r *Runtime) unavailable(err error) error {
	return fmt.Errorf("podman API at %s: %w: %w", r.socket, rt.ErrUnavailable, err)
}

// classify maps a bindings error to the containers package's errors.
func (r *Runtime) classify(err error, what string) error {
	if err == nil {
		return nil
	}
	var model *errorhandling.ErrorModel
	var opErr *net.OpError
	var connErr bindings.ConnectError
	switch {
	case errors.As(err, &model) && model.ResponseCode == http.StatusNotFound:
		return fmt.Errorf("%s: %w", what, rt.ErrNotFound)
	case errors.As(err, &model) && model.ResponseCode == http.StatusConflict:
		return fmt.Errorf("%s: %w", what, rt.ErrAlreadyExists)
	case errors.As(err, &opErr), errors.As(err, &connErr):
		return r.unavailable(err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// Ping checks that the service answers.
func (r *Runtime) Ping(ctx context.Context) error {
	c, err := r.connect(ctx)
	if err != nil {
		return err
	}
	_, err = system.Version(c, nil)
	return r.classify(err, "ping")
}

// ImageExists tells whether the image is in local storage; nothing is pulled.
func (r *Runtime) ImageExists(ctx context.Context, image string) (bool, error) {
	c, err := r.connect(ctx)
	if err != nil {
		return false, err
	}
	ok, err := images.Exists(c, image, nil)
	return ok, r.classify(err, "image "+image)
}

// SecretExists inspects the secret's metadata (never its value). Podman 4's
// exists endpoint always answers 404, so a 404 from inspect is the answer.
func (r *Runtime) SecretExists(ctx context.Context, name string) (bool, error) {
	c, err := r.connect(ctx)
	if err != nil {
		return false, err
	}
	_, err = secrets.Inspect(c, name, nil)
	err = r.classify(err, "secret "+name)
	if errors.Is(err, rt.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// Create creates the container with an init process as PID 1, so SIGTERM
// stops it promptly, and the secrets as Podman env secrets.
func (r *Runtime) Create(ctx context.Context, s rt.Spec) (string, error) {
	c, err := r.connect(ctx)
	if err != nil {
		return "", err
	}
	if ok, err := images.Exists(c, s.Image, nil); err != nil {
		return "", r.classify(err, "image "+s.Image)
	} else if !ok {
		return "", fmt.Errorf("image %s is not in local storage: %w", s.Image, rt.ErrNotFound)
	}
	sg, err := specGenerator(s)
	if err != nil {
		return "", err
	}
	resp, err := containers.CreateWithSpec(c, sg, nil)
	if err != nil {
		if strings.Contains(err.Error(), "already in use") {
			return "", fmt.Errorf("container name %s: %w", s.Name, rt.ErrAlreadyExists)
		}
		return "", r.classify(err, "creating container "+s.Name)
	}
	return resp.ID, nil
}

func specGenerator(s rt.Spec) (*specgen.SpecGenerator, error) {
	sg := specgen.NewSpecGenerator(s.Image, false)
	sg.Name = s.Name
	sg.Command = s.Command
	sg.WorkDir = s.Workdir
	sg.Env = s.Env
	sg.EnvSecrets = s.SecretEnv
	sg.Labels = s.Labels
	sg.Init = ptr(true)
	for _, m := range s.Mounts {
		sg.Mounts = append(sg.Mounts, spec.Mount{Type: "bind", Source: m.Source, Destination: m.Destination, Options: m.Options})
	}
	if s.MemoryBytes > 0 || s.NanoCPUs > 0 {
		sg.ResourceLimits = &spec.LinuxResources{}
		if s.MemoryBytes > 0 {
			sg.ResourceLimits.Memory = &spec.LinuxMemory{Limit: ptr(s.MemoryBytes)}
		}
		if s.NanoCPUs > 0 {
			const period = 100_000 // microseconds, as podman run --cpus uses
			sg.ResourceLimits.CPU = &spec.LinuxCPU{Period: ptr(uint64(period)), Quota: ptr(s.NanoCPUs * period / 1e9)}
		}
	}
	if s.Network != "" {
		ns, networks, opts, err := specgen.ParseNetworkFlag([]string{s.Network})
		if err != nil {
			return nil, fmt.Errorf("network %q: %w", s.Network, err)
		}
		sg.NetNS, sg.Networks, sg.NetworkOptions = ns, networks, opts
	}
	return sg, nil
}

// Start starts a created container.
func (r *Runtime) Start(ctx context.Context, id string) error {
	c, err := r.connect(ctx)
	if err != nil {
		return err
	}
	return r.classify(containers.Start(c, id, nil), "starting container "+id)
}

// Inspect returns what the controller needs of a container, never its
// environment.
func (r *Runtime) Inspect(ctx context.Context, nameOrID string) (rt.Container, error) {
	c, err := r.connect(ctx)
	if err != nil {
		return rt.Container{}, err
	}
	data, err := containers.Inspect(c, nameOrID, nil)
	if err != nil {
		return rt.Container{}, r.classify(err, "container "+nameOrID)
	}
	out := rt.Container{ID: data.ID, Name: data.Name, CreatedAt: data.Created}
	if data.Config != nil {
		out.Labels = data.Config.Labels
	}
	if data.State != nil {
		out.State = state(data.State.Status)
		out.ExitCode = data.State.ExitCode
		out.StartedAt, out.FinishedAt = data.State.StartedAt, data.State.FinishedAt
	}
	return out, nil
}

// List returns every container, running or not, carrying all the labels.
func (r *Runtime) List(ctx context.Context, labels map[string]string) ([]rt.Container, error) {
	c, err := r.connect(ctx)
	if err != nil {
		return nil, err
	}
	list, err := containers.List(c, new(containers.ListOptions).WithAll(true).WithFilters(labelFilters(labels)))
	if err != nil {
		return nil, r.classify(err, "listing containers")
	}
	out := make([]rt.Container, 0, len(list))
	for _, l := range list {
		item := rt.Container{ID: l.ID, Labels: l.Labels, State: state(l.State), ExitCode: l.ExitCode, CreatedAt: l.Created}
		if len(l.Names) > 0 {
			item.Name = l.Names[0]
		}
		if l.StartedAt > 0 {
			item.StartedAt = time.Unix(l.StartedAt, 0)
		}
		if l.ExitedAt > 0 {
			item.FinishedAt = time.Unix(l.ExitedAt, 0)
		}
		out = append(out, item)
	}
	return out, nil
}

func labelFilters(labels map[string]string) map[string][]string {
	filters := map[string][]string{}
	for k, v := range labels {
		filters["label"] = append(filters["label"], k+"="+v)
	}
	return filters
}

func state(s string) rt.State {
	switch s {
	case "created", "configured", "initialized":
		return rt.StateCreated
	case "running":
		return rt.StateRunning
	case "exited", "stopped":
		return rt.StateExited
	}
	return rt.StateOther
}

// Stop sends SIGTERM and, after grace, SIGKILL.
func (r *Runtime) Stop(ctx context.Context, id string, grace time.Duration) error {
	c, err := r.connect(ctx)
	if err != nil {
		return err
	}
	seconds := uint((grace + time.Second - 1) / time.Second)
	err = containers.Stop(c, id, new(containers.StopOptions).WithTimeout(seconds))
	var model *errorhandling.ErrorModel
	if errors.As(err, &model) && model.ResponseCode == http.StatusNotModified {
		return nil // already stopped
	}
	return r.classify(err, "stopping container "+id)
}

// Remove removes the container, killing it if it still runs; a container
// that is already gone is not an error.
func (r *Runtime) Remove(ctx context.Context, id string) error {
	c, err := r.connect(ctx)
	if err != nil {
		return err
	}
	_, err = containers.Remove(c, id, new(containers.RemoveOptions).WithForce(true).WithIgnore(true))
	err = r.classify(err, "removing container "+id)
	if errors.Is(err, rt.ErrNotFound) {
		return nil
	}
	return err
}

// logTailLines bounds how much of a log is read to find its last bytes.
const logTailLines = 2000

// Logs returns the end of the container's combined output, stdout and stderr
// in the order they were written.
func (r *Runtime) Logs(ctx context.Context, id string, maxBytes int) (string, error) {
	c, err := r.connect(ctx)
	if err != nil {
		return "", err
	}
	// The bindings send each frame to the channel of its stream; with
	// unbuffered channels and one reader, frames arrive in stream order.
	stdout, stderr := make(chan string), make(chan string)
	done := make(chan error, 1)
	opts := new(containers.LogOptions).WithStdout(true).WithStderr(true).WithTail(fmt.Sprint(logTailLines))
	go func() { done <- containers.Logs(c, id, opts, stdout, stderr) }()
	var b strings.Builder
	for {
		select {
		case s := <-stdout:
			b.WriteString(s)
		case s := <-stderr:
			b.WriteString(s)
		case err := <-done:
			if err != nil {
				return "", r.classify(err, "logs of container "+id)
			}
			return tail(b.String(), maxBytes), nil
		}
	}
}

// tail keeps the last maxBytes of s, starting on a whole UTF-8 character.
func tail(s string, maxBytes int) string {
	if len(s) <= maxBytes {
		return s
	}
	s = s[len(s)-maxBytes:]
	for len(s) > 0 && !utf8.RuneStart(s[0]) {
		s = s[1:]
	}
	return s
}

// Events streams the events of containers carrying all the labels until ctx
// ends, then closes the event channel.
func (r *Runtime) Events(ctx context.Context, labels map[string]string) (<-chan rt.Event, <-chan error) {
	out, errs := make(chan rt.Event), make(chan error, 1)
	c, err := r.connect(ctx)
	if err != nil {
		errs <- err
		close(out)
		return out, errs
	}
	filters := labelFilters(labels)
	filters["type"] = []string{"container"}
	raw := make(chan entitiestypes.Event)
	if err := system.Events(c, raw, nil, new(system.EventsOptions).WithStream(true).WithFilters(filters)); err != nil {
		errs <- r.classify(err, "events")
		close(out)
		return out, errs
	}
	go func() {
		defer close(out)
		for e := range raw { // closed when ctx ends the request
			ev := rt.Event{ContainerID: e.Actor.ID, Action: string(e.Action), Labels: e.Actor.Attributes, Time: time.Unix(0, e.TimeNano)}
			ev.Name = e.Actor.Attributes["name"]
			select {
			case out <- ev:
			case <-ctx.Done():
				go func() {
					for range raw { // let the bindings' decoder finish
					}
				}()
				return
			}
		}
	}()
	return out, errs
}

func ptr[T any](v T) *T { return &v }
