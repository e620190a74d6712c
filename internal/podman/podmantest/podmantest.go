// Package podmantest is what the test suites do to the Podman service under
// test besides running containers: create the secrets a run refers to, check
// a container, name the service's version. It goes through that service's API
// (the bindings), never the host's podman CLI, which talks to the host's own
// store and, being 4.3.1 on Debian 12, cannot read everything a 5.x service
// sends. It is apart from internal/podman so that package's own tests can use
// it through internal/testing/testenv without an import cycle.
package podmantest

import (
	"context"
	"fmt"
	"strings"

	"github.com/containers/podman/v5/pkg/bindings"
	"github.com/containers/podman/v5/pkg/bindings/containers"
	"github.com/containers/podman/v5/pkg/bindings/secrets"
)

// Conn is a connection to one Podman API service.
type Conn struct {
	ctx    context.Context
	socket string
}

// Connect connects to the service at the Unix socket path (pinging it).
func Connect(ctx context.Context, socket string) (*Conn, error) {
	c, err := bindings.NewConnection(ctx, "unix://"+socket)
	if err != nil {
		return nil, fmt.Errorf("podman API at %s: %w", socket, err)
	}
	return &Conn{ctx: c, socket: socket}, nil
}

// Version is the service's Podman version, as learnt when connecting.
func (c *Conn) Version() string {
	if v := bindings.ServiceVersion(c.ctx); v != nil {
		return v.String()
	}
	return "unknown"
}

// CreateSecret creates a secret (file driver) holding value.
func (c *Conn) CreateSecret(name, value string) error {
	_, err := secrets.Create(c.ctx, strings.NewReader(value), new(secrets.CreateOptions).WithName(name))
	if err != nil {
		return fmt.Errorf("creating secret %s on %s: %w", name, c.socket, err)
	}
	return nil
}

// SecretExists tells whether the secret exists, by inspecting its metadata
// (Podman 4.3's exists endpoint always answers 404).
func (c *Conn) SecretExists(name string) bool {
	_, err := secrets.Inspect(c.ctx, name, nil)
	return err == nil
}

// RemoveSecret removes a secret.
func (c *Conn) RemoveSecret(name string) error {
	if err := secrets.Remove(c.ctx, name); err != nil {
		return fmt.Errorf("removing secret %s on %s: %w", name, c.socket, err)
	}
	return nil
}

// ContainerExists tells whether a container exists.
func (c *Conn) ContainerExists(nameOrID string) (bool, error) {
	return containers.Exists(c.ctx, nameOrID, nil)
}

// ContainerEnv is a container's environment as its inspect output shows it,
// for the tests of what Podman reveals there (4.3.1 shows env secrets'
// values, 5.x masks them).
func (c *Conn) ContainerEnv(nameOrID string) ([]string, error) {
	data, err := containers.Inspect(c.ctx, nameOrID, nil)
	if err != nil {
		return nil, err
	}
	if data.Config == nil {
		return nil, nil
	}
	return data.Config.Env, nil
}
