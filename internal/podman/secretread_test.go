package podman

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"regexp"
	"testing"

	"k8s.io/apimachinery/pkg/util/rand"

	rt "github.com/agentrun/agentrun/internal/containers"
	"github.com/agentrun/agentrun/internal/testing/testenv"
)

// On Podman 4 SecretValue reads a secret through a container it makes and
// removes. A caller that gives up mid-read (a host stopping, a reconcile's
// deadline) must not leave that container, and its network namespace, behind:
// the removal outlives the caller's context.
func TestSecretValueRemovesItsContainerWhenTheCallerGivesUp(t *testing.T) {
	direct := newRuntime(t)
	if _, v5, err := direct.connectV(t.Context()); err != nil {
		t.Fatal(err)
	} else if v5 {
		t.Skip("Podman 5 shows a secret through its secrets API: SecretValue makes no container")
	}
	name := "agentrun-test-" + rand.String(8)
	addSecret(t, direct, name, "agentrun-read-value-"+rand.String(16))

	// The caller gives up once the reading container exists: while Podman
	// initialises it, as a stopping host's context would.
	ctx, giveUp := context.WithCancel(t.Context())
	defer giveUp()
	path := filepath.Join(t.TempDir(), "podman.sock")
	holdInit(t, path, testenv.PodmanSocket(), giveUp)

	_, err := New(path).SecretValue(ctx, name)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("SecretValue = %v, want it to end with the caller's cancellation (during the container's init)", err)
	}
	left, err := direct.List(context.Background(), map[string]string{rt.LabelSecretRead: name})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range left {
		t.Errorf("SecretValue left container %s (%s) behind when its caller gave up", c.Name, c.State)
		_ = direct.Remove(context.Background(), c.ID)
	}
}

var containerInit = regexp.MustCompile(`/containers/[^/]+/init$`)

// holdInit serves path as a proxy to the real service's socket that, on a
// container's init request, calls onInit and then holds the request until
// its client goes away; every other request passes through.
func holdInit(t *testing.T, path, target string, onInit func()) {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: "podman"})
	proxy.Transport = &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", target)
		},
	}
	server := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method == http.MethodPost && containerInit.MatchString(req.URL.Path) {
			onInit()
			<-req.Context().Done()
			return
		}
		proxy.ServeHTTP(w, req)
	})}
	go func() { _ = server.Serve(l) }()
	t.Cleanup(func() { _ = server.Close() })
}
