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
	"net/http"
	"net/url"
	"strconv"
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
	conn context.Context // holds the bindings' connection; nil until used
	// v5 tells whether the service behind conn is Podman 5 or later, read
	// once per connection from the version the bindings learn when they
	// connect (their ping), so no call costs an extra request to know it.
	v5 bool
}

var _ rt.Runtime = &Runtime{}

// New returns a Runtime for the API service at the Unix socket path. It does
// not connect: the manager starts, and reports Podman as unavailable, while
// the service is down.
func New(socket string) *Runtime {
	return &Runtime{socket: socket}
}

// call is the context given to the bindings: the caller's deadline,
// cancellation and values, plus the bindings' connection, which they look up
// by a key they keep unexported.
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

// connect returns the context for one call, connecting first if needed.
// Connecting pings the service, so it happens once, not per call; the
// bindings then dial the socket for each request.
func (r *Runtime) connect(ctx context.Context) (context.Context, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conn == nil {
		// The connection's context outlives this call, so it is built on
		// Background (not the caller's values); the caller's ctx still bounds
		// the ping. Only its values are used afterwards.
		pingCtx, cancel := context.WithCancel(context.Background())
		defer cancel()
		defer context.AfterFunc(ctx, cancel)()
		conn, err := bindings.NewConnection(pingCtx, "unix://"+r.socket)
		if err != nil {
			return nil, r.unavailable(err)
		}
		r.conn = conn
		r.v5 = false
		if v := bindings.ServiceVersion(conn); v != nil && v.Major >= 5 {
			r.v5 = true
		}
	}
	return call{Context: ctx, conn: r.conn}, nil
}

// connectV returns connect's context and whether the service is Podman 5 or
// later, for the calls whose behaviour differs between 4.x and 5.x.
func (r *Runtime) connectV(ctx context.Context) (context.Context, bool, error) {
	c, err := r.connect(ctx)
	if err != nil {
		return nil, false, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return c, r.v5, nil
}

// disconnect drops the connection after a transport failure, so the next
// call connects afresh (and learns the version of a restarted service).
func (r *Runtime) disconnect() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.conn = nil
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
	var urlErr *url.Error
	switch {
	case errors.As(err, &model) && (model.ResponseCode == http.StatusNotFound || model.Because == causeNoSuchContainer):
		return fmt.Errorf("%s: %w: %w", what, err, rt.ErrNotFound)
	case errors.As(err, &urlErr) && !errors.Is(err, context.Canceled):
		// No answer: refused, reset, or none before the caller's deadline.
		r.disconnect()
		return r.unavailable(err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// causeNoSuchContainer is how Podman 4.3.1 answers an inspect of a container
// it is removing at that moment: a 500, "container ID does not exist in
// database: no such container" (seen when the log endpoint inspected a run's
// container as its host removed it). It is gone, as a 404 says.
const causeNoSuchContainer = "no such container"

// cause is the root cause Podman gives for a failed request, which tells
// more than its status: most failures are 500s.
func cause(err error) string {
	var model *errorhandling.ErrorModel
	if errors.As(err, &model) {
		return model.Because
	}
	return ""
}

// Ping checks that the service answers, at its _ping endpoint: the version
// endpoint would do, but Podman 4.3.1 answers it by running dpkg-query for
// the versions of conmon and the OCI runtime, which takes 1.5 to 2.6 s on
// this machine under load (measured), too slow for a readiness probe.
func (r *Runtime) Ping(ctx context.Context) error {
	c, err := r.connect(ctx)
	if err != nil {
		return err
	}
	conn, err := bindings.GetClient(c)
	if err != nil {
		return r.classify(err, "ping")
	}
	resp, err := conn.DoRequest(c, nil, http.MethodGet, "/_ping", nil, nil)
	if err != nil {
		return r.classify(err, "ping")
	}
	defer resp.Body.Close()
	return r.classify(resp.Process(nil), "ping")
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

// SecretExists tells whether the secret exists, never reading its value.
// Podman 5 answers the exists endpoint; Podman 4.3's exists endpoint always
// answers 404 (so it would say no), so there the secret's metadata is
// inspected and a 404 is the answer.
func (r *Runtime) SecretExists(ctx context.Context, name string) (bool, error) {
	c, v5, err := r.connectV(ctx)
	if err != nil {
		return false, err
	}
	if v5 {
		ok, err := secrets.Exists(c, name)
		return ok, r.classify(err, "secret "+name)
	}
	_, err = secrets.Inspect(c, name, nil)
	err = r.classify(err, "secret "+name)
	if errors.Is(err, rt.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// maskedValue is what Podman 5 shows in a container's inspect output in
// place of an env secret's value, under the secret's name (SECRET=*******);
// it is not a value to mask.
const maskedValue = "*******"

// SecretValues reads the values of a container's env secrets, for masking
// them in its output. The two versions differ:
//   - Podman 5 shows a secret's value through the secrets API (showsecret)
//     and masks it in the container's inspect output, so the values come
//     from the secrets API only;
//   - Podman 4.3 ignores showsecret (SecretData stays empty) but shows env
//     secrets' values in the container's own inspect output (Config.Env), so
//     the values are read from there, by variable name.
func (r *Runtime) SecretValues(ctx context.Context, id string, secretEnv map[string]string) ([]string, error) {
	c, v5, err := r.connectV(ctx)
	if err != nil {
		return nil, err
	}
	var values []string
	missing := map[string]bool{}
	for variable, name := range secretEnv {
		info, err := secrets.Inspect(c, name, &secrets.InspectOptions{ShowSecret: ptr(true)})
		if err = r.classify(err, "secret "+name); err != nil && !errors.Is(err, rt.ErrNotFound) {
			return nil, err
		}
		if err == nil && info.SecretData != "" {
			values = append(values, info.SecretData)
		} else {
			missing[variable] = true
		}
	}
	// On 5.x a secret the API did not show (removed since the container was
	// created) is not in inspect either: only the mask is.
	if len(missing) == 0 || v5 {
		return values, nil
	}
	data, err := containers.Inspect(c, id, nil)
	if err != nil {
		return nil, r.classify(err, "container "+id)
	}
	if data.Config != nil {
		for _, kv := range data.Config.Env {
			// The mask check guards a 4.x server that masks like 5.x does.
			if variable, value, ok := strings.Cut(kv, "="); ok && missing[variable] && value != maskedValue {
				values = append(values, value)
			}
		}
	}
	return values, nil
}

// secretReadCleanupTimeout bounds the removal of the container SecretValue
// reads through, which runs whatever became of the caller's context.
const secretReadCleanupTimeout = 30 * time.Second

// SecretValue reads one secret's value for the host's own use. Podman 5 shows
// it through the secrets API. Podman 4.3.1's API has no way to show it, but
// once a container with the secret as an env secret is initialised (its OCI
// spec written, its process not started), its inspect shows the value: such
// a container, made from any local image, is initialised, inspected and
// removed.
func (r *Runtime) SecretValue(ctx context.Context, name string) (string, error) {
	c, v5, err := r.connectV(ctx)
	if err != nil {
		return "", err
	}
	info, err := secrets.Inspect(c, name, &secrets.InspectOptions{ShowSecret: ptr(true)})
	if err = r.classify(err, "secret "+name); err != nil {
		return "", err
	}
	if info.SecretData != "" || v5 {
		return info.SecretData, nil
	}
	local, err := images.List(c, nil)
	if err != nil {
		return "", r.classify(err, "listing images")
	}
	if len(local) == 0 {
		return "", fmt.Errorf("reading secret %s through Podman 4 needs a local image, and there is none", name)
	}
	const variable = "AGENTRUN_SECRET_VALUE"
	sg := specgen.NewSpecGenerator(local[0].ID, false)
	sg.Name = "agentrun-secret-read-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	sg.Command = []string{"true"}
	sg.Entrypoint = []string{}
	sg.EnvSecrets = map[string]string{variable: name}
	sg.Labels = map[string]string{rt.LabelSecretRead: name}
	// The removal outlives the caller's context: a caller that gives up
	// mid-read (a stopping host, a call's deadline) would otherwise leave the
	// container and its network namespace behind. By name, so that a create
	// whose answer was lost is removed too.
	defer func() {
		cleanup, cancel := context.WithTimeout(context.WithoutCancel(c), secretReadCleanupTimeout)
		defer cancel()
		_, _ = containers.Remove(cleanup, sg.Name, new(containers.RemoveOptions).WithForce(true).WithIgnore(true))
	}()
	resp, err := containers.CreateWithSpec(c, sg, nil)
	if err != nil {
		return "", r.classify(err, "creating a container to read secret "+name)
	}
	if err := containers.ContainerInit(c, resp.ID, nil); err != nil {
		return "", r.classify(err, "initialising the container that reads secret "+name)
	}
	data, err := containers.Inspect(c, resp.ID, nil)
	if err != nil {
		return "", r.classify(err, "container "+resp.ID)
	}
	if data.Config != nil {
		for _, kv := range data.Config.Env {
			if k, value, ok := strings.Cut(kv, "="); ok && k == variable && value != maskedValue {
				return value, nil
			}
		}
	}
	return "", fmt.Errorf("this Podman shows the value of secret %s neither in its secrets API nor in inspect", name)
}

// Podman's root causes (ErrorModel.Because) for Create's expected failures:
// the messages of containers/storage's and common/secrets' sentinel errors.
// 4.3.1 and 5.4.2 send the same texts (the contract and the controller suite
// check each against both), so they are matched whatever the version.
const (
	causeImageUnknown  = "image not known"
	causeNameInUse     = "that name is already in use"
	causeSecretUnknown = "no such secret"
)

// Create creates the container with an init process as PID 1, so SIGTERM
// stops it promptly, and the secrets as Podman env secrets. It never pulls:
// a missing image is ErrNotFound.
func (r *Runtime) Create(ctx context.Context, s rt.Spec) (string, error) {
	sg, err := specGenerator(s)
	if err != nil {
		return "", err
	}
	c, err := r.connect(ctx)
	if err != nil {
		return "", err
	}
	resp, err := containers.CreateWithSpec(c, sg, nil)
	switch cause(err) {
	case causeImageUnknown:
		return "", fmt.Errorf("creating container %s: image %s is not in local storage (it is never pulled): %w", s.Name, s.Image, rt.ErrImageNotFound)
	case causeNameInUse:
		return "", fmt.Errorf("creating container %s: the name is taken: %w", s.Name, rt.ErrAlreadyExists)
	case causeSecretUnknown:
		return "", fmt.Errorf("creating container %s: %w: %w", s.Name, err, rt.ErrNotFound)
	}
	if err != nil {
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
	sg.NoNewPrivileges = ptr(s.NoNewPrivileges)
	sg.CapDrop, sg.CapAdd = s.CapDrop, s.CapAdd
	sg.User = s.User
	if s.LogMaxBytes > 0 {
		// Only k8s-file honours a size (journald keeps what the journal
		// keeps), and conmon truncates the file when it is reached; both
		// 4.3.1 and 5.4.2 default to k8s-file, but a host's containers.conf
		// may not.
		sg.LogConfiguration = &specgen.LogConfig{Driver: "k8s-file", Size: s.LogMaxBytes}
	}
	if s.UserNS != "" {
		ns, err := specgen.ParseUserNamespace(s.UserNS)
		if err != nil {
			return nil, fmt.Errorf("user namespace %q: %w", s.UserNS, err)
		}
		sg.UserNS = ns
	}
	for _, m := range s.Mounts {
		sg.Mounts = append(sg.Mounts, spec.Mount{Type: "bind", Source: m.Source, Destination: m.Destination, Options: m.Options})
	}
	if s.MemoryBytes > 0 || s.NanoCPUs > 0 || s.PidsLimit > 0 {
		sg.ResourceLimits = &spec.LinuxResources{}
		if s.PidsLimit > 0 {
			sg.ResourceLimits.Pids = &spec.LinuxPids{Limit: s.PidsLimit}
		}
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
		// Podman 4.3.1 can report a container that exits right after it
		// starts as finished up to a few milliseconds before it started
		// (measured: 0.07 to 2.2 ms, its FinishedAt always ending in the same
		// sub-microsecond digits, which looks like a file time stamped from
		// the kernel's coarse clock). A run never ends before it begins, so
		// such a FinishedAt is taken as the start; 5.4.2 was not seen doing it.
		if !out.FinishedAt.IsZero() && out.FinishedAt.Before(out.StartedAt) {
			out.FinishedAt = out.StartedAt
		}
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
	seconds := uint((grace + time.Second - 1) / time.Second) // Podman counts whole seconds
	err = containers.Stop(c, id, new(containers.StopOptions).WithTimeout(seconds))
	var model *errorhandling.ErrorModel
	if errors.As(err, &model) && model.ResponseCode == http.StatusNotModified {
		return nil // it was not running
	}
	return r.classify(err, "stopping container "+id)
}

// waitInterval is how often Podman looks at a waited-on container: its
// default, 250 ms, would alone use up the budget from an exit to the run's
// status (250 ms at the 99th percentile); a look is a lock and a stat of the
// exit file, cheap beside the calls a run makes anyway.
const waitInterval = "50ms"

// Wait blocks until the container has exited (or stopped), or ctx ends.
func (r *Runtime) Wait(ctx context.Context, id string) (int32, error) {
	c, err := r.connect(ctx)
	if err != nil {
		return 0, err
	}
	opts := new(containers.WaitOptions).WithConditions([]string{"exited", "stopped"}).WithInterval(waitInterval)
	code, err := containers.Wait(c, id, opts)
	return code, r.classify(err, "waiting for container "+id)
}

// Remove removes the container, killing it at once if it still runs (a
// graceful stop is Stop's job); a container that is already gone is not an
// error.
func (r *Runtime) Remove(ctx context.Context, id string) error {
	c, err := r.connect(ctx)
	if err != nil {
		return err
	}
	opts := new(containers.RemoveOptions).WithForce(true).WithTimeout(0).WithIgnore(true)
	_, err = containers.Remove(c, id, opts)
	err = r.classify(err, "removing container "+id)
	if errors.Is(err, rt.ErrNotFound) {
		return nil
	}
	return err
}

// Logs returns the end of the container's combined output, stdout and stderr
// in the order the service sends them.
//
// It reads the whole log and keeps its end, rather than asking the service
// for the last lines: Podman 4.3's tail moves line ends around partial lines
// (a last line without a newline, or a line long enough for conmon to split),
// which would corrupt the very lines the controller parses.
func (r *Runtime) Logs(ctx context.Context, id string, maxBytes int) (string, error) {
	c, err := r.connect(ctx)
	if err != nil {
		return "", err
	}
	maxBytes = max(maxBytes, 0)
	opts := new(containers.LogOptions).WithStdout(true).WithStderr(true)
	// The bindings send each frame to its stream's channel in turn; with
	// unbuffered channels and one reader, frames arrive in the service's order.
	stdout, stderr := make(chan string), make(chan string)
	done := make(chan error, 1)
	go func() { done <- containers.Logs(c, id, opts, stdout, stderr) }()
	var b []byte
	for {
		select {
		case s := <-stdout:
			b = keepEnd(append(b, s...), maxBytes)
		case s := <-stderr:
			b = keepEnd(append(b, s...), maxBytes)
		case err := <-done:
			if err != nil {
				return "", r.classify(err, "logs of container "+id)
			}
			return tail(string(b), maxBytes), nil
		}
	}
}

// keepEnd bounds memory when long lines come: it keeps the last maxBytes
// bytes and the one before them, which tail looks at.
func keepEnd(b []byte, maxBytes int) []byte {
	if len(b) <= 2*maxBytes+1 {
		return b
	}
	return append(b[:0], b[len(b)-maxBytes-1:]...)
}

// tail keeps at most the last maxBytes of s. It starts at a line when one
// starts early in that window (a partial first line is noise), else at a
// whole UTF-8 character.
func tail(s string, maxBytes int) string {
	if len(s) <= maxBytes {
		return s
	}
	cut := len(s) - maxBytes
	if s[cut-1] == '\n' {
		return s[cut:]
	}
	w := s[cut:]
	if i := strings.IndexByte(w, '\n'); i >= 0 && i < len(w)/4 {
		return w[i+1:]
	}
	for len(w) > 0 && !utf8.RuneStart(w[0]) {
		w = w[1:]
	}
	return w
}

// Events streams the events of containers carrying all the labels until ctx
// ends, then closes both channels. If the stream breaks first, the error
// channel says so (ErrUnavailable) before they close.
func (r *Runtime) Events(ctx context.Context, labels map[string]string) (<-chan rt.Event, <-chan error) {
	filters := labelFilters(labels)
	filters["type"] = []string{"container"}
	return stream(ctx, r, filters, event)
}

// InventoryChanges streams a value for each image and secret event. Neither
// Podman 4.3.1 nor 5.4.2 sends secret events (measured), so callers must
// also look at secrets some other way; the filter asks for them anyway, for
// the versions that do.
func (r *Runtime) InventoryChanges(ctx context.Context) (<-chan struct{}, <-chan error) {
	filters := map[string][]string{"type": {"image", "secret"}}
	return stream(ctx, r, filters, func(entitiestypes.Event) struct{} { return struct{}{} })
}

// stream follows the service's events that match filters, mapped by conv,
// until ctx ends, then closes both channels; if the stream breaks first, the
// error channel says so (ErrUnavailable) before they close.
func stream[T any](ctx context.Context, r *Runtime, filters map[string][]string, conv func(entitiestypes.Event) T) (<-chan T, <-chan error) {
	out, errs := make(chan T), make(chan error, 1)
	fail := func(err error) (<-chan T, <-chan error) {
		errs <- err
		close(out)
		close(errs)
		return out, errs
	}
	c, err := r.connect(ctx)
	if err != nil {
		return fail(err)
	}
	raw := make(chan entitiestypes.Event)
	// The request is bound to ctx: when ctx ends, its body fails to read and
	// the bindings close raw.
	opts := new(system.EventsOptions).WithStream(true).WithFilters(filters)
	if err := system.Events(c, raw, nil, opts); err != nil {
		return fail(r.classify(err, "events"))
	}
	go func() {
		defer close(errs)
		defer close(out)
		for e := range raw {
			select {
			case out <- conv(e):
			case <-ctx.Done():
				for range raw { // let the bindings' reader finish
				}
				return
			}
		}
		if ctx.Err() == nil {
			r.disconnect()
			errs <- r.unavailable(errors.New("the event stream ended"))
		}
	}()
	return out, errs
}

// Inventory lists the service's version (learnt when connecting), its
// secrets' names and its images' repository:tag names.
func (r *Runtime) Inventory(ctx context.Context) (rt.Inventory, error) {
	c, err := r.connect(ctx)
	if err != nil {
		return rt.Inventory{}, err
	}
	var inv rt.Inventory
	if v := bindings.ServiceVersion(c); v != nil {
		inv.Version = v.String()
	}
	secretList, err := secrets.List(c, nil)
	if err != nil {
		return rt.Inventory{}, r.classify(err, "secrets")
	}
	for _, s := range secretList {
		inv.Secrets = append(inv.Secrets, s.Spec.Name)
	}
	imageList, err := images.List(c, nil)
	if err != nil {
		return rt.Inventory{}, r.classify(err, "images")
	}
	for _, img := range imageList {
		for _, tag := range img.RepoTags {
			if tag != "<none>:<none>" {
				inv.Images = append(inv.Images, tag)
			}
		}
	}
	return inv, nil
}

// event maps a Podman event; its attributes are the container's labels plus
// name, image, podId and, for died, the exit code (never its environment).
// The versions differ in what else they attach, and this reads nothing that
// only one of them sends: 4.3.1 puts containerExitCode on every event ("0"
// until the container dies) and its labels only on some events (create,
// remove), 5.x puts the labels on every event and containerExitCode only on
// died and remove. A missing exit code parses as 0, as 4.3.1's "0" does.
func event(e entitiestypes.Event) rt.Event {
	code, _ := strconv.ParseInt(e.Actor.Attributes["containerExitCode"], 10, 32)
	return rt.Event{
		ContainerID: e.Actor.ID,
		Name:        e.Actor.Attributes["name"],
		Action:      string(e.Action),
		Labels:      e.Actor.Attributes,
		Time:        time.Unix(0, e.TimeNano),
		ExitCode:    int32(code),
	}
}

func ptr[T any](v T) *T { return &v }
