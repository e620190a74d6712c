package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/rand"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

// What the suites that drive runs on a fleet share: a client, runs, and what
// each host's Podman says it did with them (its events and containers).

// Client returns a client of the fleet's API server (admin kubeconfig) that
// knows the built-in types and AgentRuns, allowed 50 requests a second; it
// can watch too.
func (f *Fleet) Client() (client.WithWatch, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", f.Kubeconfig())
	if err != nil {
		return nil, err
	}
	// client-go's default, 5 requests a second, would pace a suite's
	// hundreds of creates and its polling rather than the fleet.
	cfg.QPS, cfg.Burst = 50, 100
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := agentsv1alpha1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	return client.NewWithWatch(cfg, client.Options{Scheme: scheme})
}

// NewRun is a run in namespace default named PREFIX-<5 random characters>
// that echoes its host's name, changed by mutate (when not nil).
func NewRun(prefix string, mutate func(*agentsv1alpha1.AgentRun)) *agentsv1alpha1.AgentRun {
	run := &agentsv1alpha1.AgentRun{
		ObjectMeta: metav1.ObjectMeta{Name: prefix + "-" + rand.String(5), Namespace: "default"},
		Spec:       agentsv1alpha1.AgentRunSpec{Prompt: "hello", Command: []string{"sh", "-c", "echo ran on $(hostname)"}},
	}
	if mutate != nil {
		mutate(run)
	}
	return run
}

// createToken marks the object a Create sent, so that the suite knows its
// own object from another of the same name.
const createToken = "test.agentrun.dev/create-token"

// Create creates run, and takes an AlreadyExists for what it is. client-go
// sends a create again when the API server answered a 5xx or 429 with
// Retry-After, although the first may have been stored (seen under make
// test's load: "race-pk7pt already exists" from the suite's own create):
// the object there then carries this create's token, and the create
// succeeded. Another object of the same name (a random suffix that came up
// twice) gets the run a longer name.
func Create(ctx context.Context, c client.Client, run *agentsv1alpha1.AgentRun) error {
	if run.Annotations == nil {
		run.Annotations = map[string]string{}
	}
	// Kept across a caller's retries of the same run.
	token := run.Annotations[createToken]
	if token == "" {
		token = rand.String(16)
		run.Annotations[createToken] = token
	}
	for range 3 {
		err := c.Create(ctx, run)
		if !apierrors.IsAlreadyExists(err) {
			return err
		}
		there := &agentsv1alpha1.AgentRun{}
		if err := c.Get(ctx, client.ObjectKeyFromObject(run), there); err != nil {
			return err
		}
		if there.Annotations[createToken] == token {
			there.DeepCopyInto(run)
			return nil
		}
		run.Name += "-" + rand.String(3)
	}
	return fmt.Errorf("creating run %s: three names taken", run.Name)
}

// RaceRuns are n unpinned runs that exit 0 at once (command true): created
// together, they have every host racing to claim each of them, and each must
// still run in exactly one container (CreatesByAttempt).
func RaceRuns(prefix string, n int) []*agentsv1alpha1.AgentRun {
	runs := make([]*agentsv1alpha1.AgentRun, n)
	for i := range runs {
		runs[i] = NewRun(prefix, func(r *agentsv1alpha1.AgentRun) { r.Spec.Command = []string{"true"} })
	}
	return runs
}

// ContainerEvent is one event of an agentrun container, as a host's Podman
// recorded it.
type ContainerEvent struct {
	Host string
	// Action is Podman's: create, init, start, died, remove, ...
	Action string
	// Name is the container's name, agentrun-<ns>-<name>-<uid8>-<attempt>.
	Name string
	// UID and Attempt are the run's, from the container's labels.
	UID     string
	Attempt int
	// ExitCode is the container's, on a died event.
	ExitCode int
	Time     time.Time
}

// AttemptKey names one attempt of one run.
type AttemptKey struct {
	UID     string
	Attempt int
}

// Key is the attempt the event is about.
func (e ContainerEvent) Key() AttemptKey { return AttemptKey{UID: e.UID, Attempt: e.Attempt} }

// podmanGet GETs a libpod API path (with its query) from the host's Podman.
func (f *Fleet) podmanGet(host, pathAndQuery string) ([]byte, error) {
	resp, err := f.HTTPClient(host).Get("http://d/v4.0.0/libpod/" + pathAndQuery)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("host %s: GET %s: %s: %s", host, pathAndQuery, resp.Status, body)
	}
	return body, nil
}

// ContainerEvents returns the events of agentrun containers (those with a
// run's UID label) that the host's Podman recorded since the given time,
// through its API (the 4.3.1 CLI cannot read a Podman 5 host's events).
func (f *Fleet) ContainerEvents(host string, since time.Time) ([]ContainerEvent, error) {
	q := url.Values{}
	q.Set("stream", "false")
	q.Set("since", fmt.Sprint(since.Unix()))
	q.Set("filters", `{"type":["container"]}`)
	body, err := f.podmanGet(host, "events?"+q.Encode())
	if err != nil {
		return nil, err
	}
	var out []ContainerEvent
	dec := json.NewDecoder(bytes.NewReader(body))
	for dec.More() {
		e, ours, err := decodeContainerEvent(dec, host)
		if err != nil {
			return nil, err
		}
		if ours {
			out = append(out, e)
		}
	}
	return out, nil
}

// WatchContainerEvents follows the host's Podman events as they happen and
// sends those of agentrun containers to the channel, which is closed when
// ctx ends or the stream does (a Podman restart). It returns once Podman
// answered, so that no event after the call is missed.
func (f *Fleet) WatchContainerEvents(ctx context.Context, host string) (<-chan ContainerEvent, error) {
	q := url.Values{}
	q.Set("stream", "true")
	q.Set("filters", `{"type":["container"]}`)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://d/v4.0.0/libpod/events?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	hc := f.HTTPClient(host)
	hc.Timeout = 0 // a stream: ctx ends it
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("host %s: events stream: %s", host, resp.Status)
	}
	out := make(chan ContainerEvent, 256)
	go func() {
		defer close(out)
		defer resp.Body.Close()
		dec := json.NewDecoder(resp.Body)
		for {
			e, ours, err := decodeContainerEvent(dec, host)
			if err != nil {
				return
			}
			if !ours {
				continue
			}
			select {
			case out <- e:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// decodeContainerEvent reads the next event of the host's stream; ours says
// whether it is an agentrun container's.
func decodeContainerEvent(dec *json.Decoder, host string) (e ContainerEvent, ours bool, err error) {
	var ev struct {
		Action   string
		TimeNano int64 `json:"timeNano"`
		Actor    struct{ Attributes map[string]string }
	}
	if err := dec.Decode(&ev); err != nil {
		return e, false, fmt.Errorf("host %s: events: %w", host, err)
	}
	a := ev.Actor.Attributes
	uid := a[agentsv1alpha1.LabelUID]
	if uid == "" {
		return e, false, nil
	}
	attempt, _ := strconv.Atoi(a[agentsv1alpha1.LabelAttempt])
	code, _ := strconv.Atoi(a["containerExitCode"])
	return ContainerEvent{Host: host, Action: ev.Action, Name: a["name"], UID: uid,
		Attempt: attempt, ExitCode: code, Time: time.Unix(0, ev.TimeNano)}, true, nil
}

// AllContainerEvents is ContainerEvents of every host of the fleet.
func (f *Fleet) AllContainerEvents(since time.Time) ([]ContainerEvent, error) {
	var all []ContainerEvent
	for _, h := range f.Hosts() {
		evs, err := f.ContainerEvents(h, since)
		if err != nil {
			return nil, err
		}
		all = append(all, evs...)
	}
	return all, nil
}

// CreatesByAttempt lists, for each attempt of a run, the hosts whose Podman
// created a container for it (one entry per create event): exactly one entry
// is right, a second is a run started twice.
func CreatesByAttempt(events []ContainerEvent) map[AttemptKey][]string {
	out := map[AttemptKey][]string{}
	for _, e := range events {
		if e.Action == "create" {
			out[e.Key()] = append(out[e.Key()], e.Host)
		}
	}
	return out
}

// Container is an agentrun container that a host's Podman holds.
type Container struct {
	Host, Name, UID, State string
}

// Containers lists the agentrun containers (those with a run's UID label) on
// the host, running or not.
func (f *Fleet) Containers(host string) ([]Container, error) {
	q := url.Values{}
	q.Set("all", "true")
	q.Set("filters", fmt.Sprintf(`{"label":[%q]}`, agentsv1alpha1.LabelUID))
	body, err := f.podmanGet(host, "containers/json?"+q.Encode())
	if err != nil {
		return nil, err
	}
	var list []struct {
		Names  []string
		Labels map[string]string
		State  string
	}
	if err := json.Unmarshal(body, &list); err != nil {
		return nil, fmt.Errorf("host %s: containers: %w", host, err)
	}
	out := make([]Container, 0, len(list))
	for _, c := range list {
		name := ""
		if len(c.Names) > 0 {
			name = c.Names[0]
		}
		out = append(out, Container{Host: host, Name: name, UID: c.Labels[agentsv1alpha1.LabelUID], State: c.State})
	}
	return out, nil
}

// WaitExited blocks until the host's Podman says the container has exited,
// looking every 5 ms (Podman's wait polls the container's state; the
// managers look every 50 ms, and the file event log that events streams
// from is read every 250 ms), or ctx ends.
func (f *Fleet) WaitExited(ctx context.Context, host, name string) error {
	q := url.Values{}
	q.Set("condition", "exited")
	q.Set("interval", "5ms")
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://d/v4.0.0/libpod/containers/"+url.PathEscape(name)+"/wait?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	hc := f.HTTPClient(host)
	hc.Timeout = 0 // as long as the container runs: ctx ends it
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("host %s: waiting for %s: %s: %s", host, name, resp.Status, body)
	}
	return nil
}

// ContainerExists asks the host's Podman whether the container exists.
func (f *Fleet) ContainerExists(host, name string) (bool, error) {
	resp, err := f.HTTPClient(host).Get("http://d/v4.0.0/libpod/containers/" + url.PathEscape(name) + "/exists")
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	switch resp.StatusCode {
	case http.StatusNoContent:
		return true, nil
	case http.StatusNotFound:
		return false, nil
	}
	return false, fmt.Errorf("host %s: does %s exist: %s", host, name, resp.Status)
}
