// Package containers is the controller's view of a container engine: a small
// interface with neutral types, implemented over Podman's API by
// internal/podman and in memory by internal/containers/fake for unit tests.
//
// None of these types carries a container's environment: Podman 4 shows env
// secrets' values in inspect output, and the controller must never hold them
// beyond SecretValues, whose only use is masking them in output, and
// SecretValue, which reads a callback's signing key.
package containers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

var (
	// ErrNotFound: no container (or secret, or image) has that name or ID.
	ErrNotFound = errors.New("not found")
	// ErrImageNotFound is the ErrNotFound of a Create whose image is not
	// in local storage, told apart from a missing secret so that the
	// controller can say which without a lookup of its own before each
	// create.
	ErrImageNotFound = fmt.Errorf("image %w", ErrNotFound)
	// ErrAlreadyExists: a container with that name exists already.
	ErrAlreadyExists = errors.New("already exists")
	// ErrUnavailable: the engine's API did not answer.
	ErrUnavailable = errors.New("container engine unavailable")
)

// Mount is a bind mount of a host path into the container.
type Mount struct {
	Source      string
	Destination string
	// Options are Podman's bind-mount options (ro, Z, nosuid, ...).
	Options []string
}

// Spec is everything needed to create one container.
type Spec struct {
	Name    string
	Image   string
	Command []string
	Workdir string
	// Env holds plain variables.
	Env map[string]string
	// SecretEnv maps a variable name to the name of an engine secret whose
	// value the engine puts in that variable.
	SecretEnv map[string]string
	Mounts    []Mount
	Labels    map[string]string
	// MemoryBytes and NanoCPUs are limits; zero means none.
	MemoryBytes int64
	NanoCPUs    int64
	// Network is the network mode or network name; empty means the engine's
	// default.
	Network string
	// NoNewPrivileges stops setuid binaries from gaining privileges.
	NoNewPrivileges bool
	// CapDrop and CapAdd adjust the engine's default capabilities (ALL may
	// be dropped, then a few added back).
	CapDrop, CapAdd []string
	// PidsLimit caps the number of processes; zero means the engine's
	// default.
	PidsLimit int64
	// User is the user[:group] the container's processes run as; empty
	// means the image's.
	User string
	// UserNS is the user namespace mode (auto, keep-id, ...); empty means
	// the engine's default.
	UserNS string
	// LogMaxBytes bounds the container's log on the host: past it, the
	// engine starts the log afresh and keeps only what comes after. Zero
	// means the engine's default, which may be no bound at all.
	LogMaxBytes int64
}

// State is a container's lifecycle state.
type State string

const (
	StateCreated State = "created"
	StateRunning State = "running"
	StateExited  State = "exited"
	// StateOther covers the engine's remaining states (paused, stopping, ...).
	StateOther State = "other"
)

// Container is what the controller observes of one container.
type Container struct {
	ID     string
	Name   string
	Labels map[string]string
	State  State
	// ExitCode is meaningful once State is StateExited.
	ExitCode   int32
	CreatedAt  time.Time
	StartedAt  time.Time
	FinishedAt time.Time
}

// Event is a container lifecycle event (create, start, died, remove, ...).
type Event struct {
	ContainerID string
	Name        string
	Action      string
	Labels      map[string]string
	Time        time.Time
	// ExitCode is the container's exit code, in died events.
	ExitCode int32
}

// Inventory is what a host holds that runs need, by name: the engine's
// version, its secrets' names (never their values) and its images' names.
type Inventory struct {
	Version string
	Secrets []string
	Images  []string
}

// LogOptions select what StreamLogs sends.
type LogOptions struct {
	// Follow keeps the stream open until the container exits.
	Follow bool
	// TailLines sends only that many of the last lines already written;
	// negative: all of them.
	TailLines int
	// Since sends only what was written from then on; zero: all.
	Since time.Time
}

// LabelSecretRead marks a container an engine makes only to read a secret's
// value (SecretValue on Podman 4), with the secret's name: such a container
// never runs, and is removed at once.
const LabelSecretRead = "agents.agentrun.dev/secret-read"

// Runtime is the container engine as the controller uses it.
type Runtime interface {
	// Ping returns nil when the engine's API answers.
	Ping(ctx context.Context) error
	// ImageExists tells whether an image is present locally.
	ImageExists(ctx context.Context, image string) (bool, error)
	// SecretExists tells whether a secret exists, without reading its value.
	SecretExists(ctx context.Context, name string) (bool, error)
	// Create creates (but does not start) a container and returns its ID. It
	// returns ErrAlreadyExists when the name is taken, ErrImageNotFound when
	// the image is not in local storage (nothing is pulled), and ErrNotFound
	// when a secret is missing.
	Create(ctx context.Context, spec Spec) (string, error)
	// Start starts a created container.
	Start(ctx context.Context, id string) error
	// Inspect returns a container by name or ID, or ErrNotFound.
	Inspect(ctx context.Context, nameOrID string) (Container, error)
	// List returns the containers, in any state, that carry every given
	// label.
	List(ctx context.Context, labels map[string]string) ([]Container, error)
	// Wait blocks until the container is no longer running, or ctx ends,
	// and returns its exit code. A container removed while waited on has
	// exited (Podman answers 137, with no error); one that never existed is
	// ErrNotFound. It is a long call, with no deadline of its own: the
	// controller holds one per running container, so that an exit is seen
	// without Podman's event log, which lags under load.
	Wait(ctx context.Context, id string) (int32, error)
	// Stop sends SIGTERM, waits up to grace, then SIGKILL. Stopping a
	// container that is not running is not an error.
	Stop(ctx context.Context, id string, grace time.Duration) error
	// Remove removes a container, stopping it first if needed. Removing a
	// container that does not exist is not an error.
	Remove(ctx context.Context, id string) error
	// SecretValues returns the values of the secrets a container that has
	// started (Podman 4.3.1 resolves them only then) gets as environment
	// variables (secretEnv maps each variable to its secret), in no
	// particular order. They exist for one purpose: masking them in the
	// container's output before it goes anywhere. A caller keeps them in
	// memory for as long as that takes, and never stores or logs them.
	SecretValues(ctx context.Context, containerID string, secretEnv map[string]string) ([]string, error)
	// SecretValue returns one secret's value, for the host's own use: the
	// key that signs a run's completion callback. The caller holds it in
	// memory for that one use, and never stores or logs it. A secret that
	// does not exist is ErrNotFound.
	SecretValue(ctx context.Context, name string) (string, error)
	// Logs returns at most maxBytes of the end of the container's combined
	// stdout and stderr.
	Logs(ctx context.Context, id string, maxBytes int) (string, error)
	// StreamLogs writes the container's combined stdout and stderr to w as
	// the engine sends it, until the end of what was written, or, with
	// opts.Follow, until the container exits; or until ctx ends.
	StreamLogs(ctx context.Context, id string, opts LogOptions, w io.Writer) error
	// Events streams container events for containers carrying every given
	// label, until ctx ends. When the stream ends, both channels close; if
	// it ended by failing, the error channel first receives the error (the
	// only one it ever receives).
	Events(ctx context.Context, labels map[string]string) (<-chan Event, <-chan error)
	// Inventory lists the engine's version, secret names and image names.
	Inventory(ctx context.Context) (Inventory, error)
	// InventoryChanges streams one value each time the engine reports that
	// an image (or, where the engine reports it, a secret) was added,
	// tagged, untagged or removed, until ctx ends; the channels behave as
	// Events' do.
	InventoryChanges(ctx context.Context) (<-chan struct{}, <-chan error)
}

// StopAndRemove stops c when it runs, giving it grace before SIGKILL, then
// removes it: how a container that must go (a deleted run's, a fenced one)
// is taken down, its process first ending as it would on a stop.
func StopAndRemove(ctx context.Context, rt Runtime, c Container, grace time.Duration) error {
	if c.State == StateRunning {
		if err := rt.Stop(ctx, c.ID, grace); err != nil {
			return fmt.Errorf("stopping container %s: %w", c.Name, err)
		}
	}
	if err := rt.Remove(ctx, c.ID); err != nil {
		return fmt.Errorf("removing container %s: %w", c.Name, err)
	}
	return nil
}
