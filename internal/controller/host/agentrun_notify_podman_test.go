package host_test

import (
	"crypto/hmac"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/controller/controllertest"
	"github.com/agentrun/agentrun/internal/controller/host"
	"github.com/agentrun/agentrun/internal/notify"
)

// receiver is a pipeline's endpoint for completion callbacks, on loopback.
// It refuses the first failFirst callbacks with 503.
type receiver struct {
	URL       string
	failFirst int

	mu        sync.Mutex
	callbacks []receivedCallback
}

type receivedCallback struct {
	body      []byte
	timestamp string
	signature string
}

func serveReceiver(failFirst int) *receiver {
	rc := &receiver{failFirst: failFirst}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		defer rc.mu.Unlock()
		rc.callbacks = append(rc.callbacks, receivedCallback{body, r.Header.Get(notify.HeaderTimestamp), r.Header.Get(notify.HeaderSignature)})
		if len(rc.callbacks) <= rc.failFirst {
			http.Error(w, "busy", http.StatusServiceUnavailable)
		}
	}))
	DeferCleanup(srv.Close)
	rc.URL = srv.URL + "/hooks/agentrun"
	return rc
}

func (rc *receiver) received() []receivedCallback {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]receivedCallback(nil), rc.callbacks...)
}

// gate is a receiver that holds every callback until the test lets one go,
// which it then refuses with 503: a receiver that never answers, for as long
// as the test wants.
type gate struct {
	URL     string
	arrived chan struct{}
	release chan struct{}
}

func serveGate() *gate {
	g := &gate{arrived: make(chan struct{}, 100), release: make(chan struct{})}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.arrived <- struct{}{}
		<-g.release
		http.Error(w, "busy", http.StatusServiceUnavailable)
	}))
	DeferCleanup(srv.Close)
	DeferCleanup(func() { close(g.release) }) // before srv.Close, which waits for the held callbacks
	g.URL = srv.URL + "/hooks/agentrun"
	return g
}

// verifies is the receiver's check: the HMAC-SHA256 of timestamp.body.
func (c receivedCallback) verifies(key string) bool {
	return hmac.Equal([]byte(c.signature), []byte(notify.Sign([]byte(key), c.timestamp, c.body)))
}

var _ = Describe("A run's completion callback", func() {
	notifiedRun := func(prefix, url, keySecret string) *agentsv1alpha1.AgentRun {
		return controllertest.NewRun(prefix, func(r *agentsv1alpha1.AgentRun) {
			r.Spec.Command = []string{"sh", "-c", `echo "the key is $HOOK_KEY"`, "sh"}
			r.Spec.Podman.SecretsEnv = map[string]agentsv1alpha1.SecretName{"HOOK_KEY": agentsv1alpha1.SecretName(keySecret)}
			r.Spec.Notify = &agentsv1alpha1.NotifySpec{URL: url, SecretName: agentsv1alpha1.SecretName(keySecret)}
		})
	}

	It("is signed with the key from Podman, retried until the receiver accepts it, and recorded", func(ctx SpecContext) {
		keySecret, key := "agentrun-hook-"+rand.String(6), "hook-key-"+rand.String(24)
		controllertest.CreateSecret(keySecret, key)
		rc := serveReceiver(2)
		run := notifiedRun("notify", rc.URL, keySecret)
		Expect(controllertest.K8s.Create(ctx, run)).To(Succeed())
		controllertest.CleanUp(run)

		controllertest.WaitForPhase(ctx, run, agentsv1alpha1.PhaseSucceeded, 30*time.Second)
		Eventually(func() metav1.Condition {
			return controllertest.ConditionOf(controllertest.Get(ctx, run), agentsv1alpha1.ConditionNotified)
		}).
			WithContext(ctx).WithTimeout(60 * time.Second).Should(And(
			HaveField("Status", metav1.ConditionTrue), HaveField("Reason", agentsv1alpha1.ReasonDelivered),
			HaveField("Message", ContainSubstring("HTTP 200 (try 3)"))))

		// The Notified write keeps the run's other conditions (the cache's
		// copy of a finished run has few of them).
		Expect(controllertest.ConditionOf(controllertest.Get(ctx, run), agentsv1alpha1.ConditionSucceeded).Status).To(Equal(metav1.ConditionTrue))
		Expect(controllertest.ConditionOf(controllertest.Get(ctx, run), agentsv1alpha1.ConditionReady).Status).To(Equal(metav1.ConditionTrue))

		callbacks := rc.received()
		Expect(callbacks).To(HaveLen(3), "two refused, the third accepted, and no more")
		for _, c := range callbacks {
			Expect(c.verifies(key)).To(BeTrue(), "every callback verifies with the key")
			Expect(c.verifies("not-"+key)).To(BeFalse(), "a receiver with another key sees the mismatch")
			var body struct {
				Namespace, Name string
				Status          agentsv1alpha1.AgentRunStatus
			}
			Expect(json.Unmarshal(c.body, &body)).To(Succeed())
			Expect(body.Name).To(Equal(run.Name))
			Expect(body.Status.Phase).To(Equal(agentsv1alpha1.PhaseSucceeded))
			Expect(body.Status.Output).To(ContainSubstring("the key is ***"), "the output is masked as in the API")
			Expect(string(c.body)).NotTo(ContainSubstring(key))
		}

		By("keeping the key out of the API and the logs")
		raw, err := json.Marshal(controllertest.Get(ctx, run))
		Expect(err).NotTo(HaveOccurred())
		Expect(string(raw)).NotTo(ContainSubstring(key))
		events := func() string {
			raw, _ := json.Marshal(controllertest.RunEvents(ctx, run))
			return string(raw)
		}
		Eventually(events).WithContext(ctx).WithTimeout(5 * time.Second).Should(ContainSubstring(agentsv1alpha1.ReasonDelivered))
		Expect(events()).NotTo(ContainSubstring(key))
		Expect(controllertest.ManagerLogs.String()).NotTo(ContainSubstring(key))
	})

	It("gives up after its tries and says so", func(ctx SpecContext) {
		keySecret := "agentrun-hook-" + rand.String(6)
		controllertest.CreateSecret(keySecret, "hook-key-"+rand.String(24))
		rc := serveReceiver(1000)
		run := notifiedRun("notify-fails", rc.URL, keySecret)
		Expect(controllertest.K8s.Create(ctx, run)).To(Succeed())
		controllertest.CleanUp(run)

		Eventually(func() metav1.Condition {
			return controllertest.ConditionOf(controllertest.Get(ctx, run), agentsv1alpha1.ConditionNotified)
		}).
			WithContext(ctx).WithTimeout(90 * time.Second).Should(And(
			HaveField("Status", metav1.ConditionFalse), HaveField("Reason", agentsv1alpha1.ReasonNotifyFailed),
			HaveField("Message", ContainSubstring("503"))))
		Expect(rc.received()).To(HaveLen(4), "the suite's hosts try 4 times")
		Eventually(func() string {
			raw, _ := json.Marshal(controllertest.RunEvents(ctx, run))
			return string(raw)
		}).WithContext(ctx).WithTimeout(5 * time.Second).Should(ContainSubstring(agentsv1alpha1.ReasonNotifyFailed))
	})

	Context("on a host of its own", func() {
		const notifyHost = "podman-notify"
		// startNotifyHost runs a host whose callbacks are delivered by one
		// worker and wait an hour for an answer, with cfg changed by mutate.
		startNotifyHost := func(mutate func(*host.HostConfig)) {
			cfg := controllertest.HostConfig(notifyHost, controllertest.Podman, false, 0)
			cfg.NotifyWorkers, cfg.NotifyTimeout, cfg.Workers = 1, time.Hour, 2
			mutate(&cfg)
			DeferCleanup(controllertest.StartHostConfig(cfg))
		}
		pinned := func(r *agentsv1alpha1.AgentRun) *agentsv1alpha1.AgentRun {
			r.Spec.HostName = notifyHost
			return r
		}
		queued := func(run *agentsv1alpha1.AgentRun) func() bool {
			return func() bool {
				for _, line := range strings.Split(controllertest.ManagerLogs.String(), "\n") {
					if strings.Contains(line, "Queued the completion callback") && strings.Contains(line, run.Name) {
						return true
					}
				}
				return false
			}
		}

		It("never holds a reconcile worker, and serves namespaces in turn", func(ctx SpecContext) {
			startNotifyHost(func(*host.HostConfig) {})
			keySecret := "agentrun-hook-" + rand.String(6)
			controllertest.CreateSecret(keySecret, "hook-key-"+rand.String(24))
			tarpit, rc := serveGate(), serveReceiver(0)
			other := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "notify-" + rand.String(6)}}
			Expect(controllertest.K8s.Create(ctx, other)).To(Succeed())

			By("filling the delivery worker and the queue with one namespace's callbacks to a receiver that never answers")
			var busy []*agentsv1alpha1.AgentRun
			for range 5 {
				run := pinned(notifiedRun("notify-busy", tarpit.URL, keySecret))
				Expect(controllertest.K8s.Create(ctx, run)).To(Succeed())
				controllertest.CleanUp(run)
				busy = append(busy, run)
			}
			Eventually(tarpit.arrived).WithContext(ctx).WithTimeout(60 * time.Second).Should(Receive())
			for _, run := range busy {
				controllertest.WaitForPhase(ctx, run, agentsv1alpha1.PhaseSucceeded, 60*time.Second)
				Eventually(queued(run)).WithContext(ctx).WithTimeout(30 * time.Second).Should(BeTrue())
			}

			By("launching and finishing other runs meanwhile, one of them with a callback from another namespace")
			plain := pinned(controllertest.NewRun("notify-plain", nil))
			quiet := pinned(notifiedRun("notify-quiet", rc.URL, keySecret))
			quiet.Namespace = other.Name
			for _, run := range []*agentsv1alpha1.AgentRun{plain, quiet} {
				Expect(controllertest.K8s.Create(ctx, run)).To(Succeed())
				controllertest.CleanUp(run)
			}
			controllertest.WaitForPhase(ctx, plain, agentsv1alpha1.PhaseSucceeded, 60*time.Second)
			controllertest.WaitForPhase(ctx, quiet, agentsv1alpha1.PhaseSucceeded, 60*time.Second)
			Eventually(queued(quiet)).WithContext(ctx).WithTimeout(30 * time.Second).Should(BeTrue())
			Expect(tarpit.arrived).To(BeEmpty(), "the one delivery worker still waits for the first answer")
			for _, run := range busy {
				Expect(controllertest.ConditionOf(controllertest.Get(ctx, run), agentsv1alpha1.ConditionNotified).Type).To(BeEmpty())
			}

			By("delivering the other namespace's callback within a turn, not after the four queued before it")
			released := 0
			for len(rc.received()) == 0 {
				Expect(released).To(BeNumerically("<", 2), "the other namespace's callback waits behind the busy one's")
				tarpit.release <- struct{}{}
				released++
				Eventually(func() bool { return len(tarpit.arrived) > 0 || len(rc.received()) > 0 }).
					WithContext(ctx).WithTimeout(30 * time.Second).Should(BeTrue())
				if len(rc.received()) == 0 {
					<-tarpit.arrived
				}
			}
			Eventually(func() metav1.Condition {
				return controllertest.ConditionOf(controllertest.Get(ctx, quiet), agentsv1alpha1.ConditionNotified)
			}).
				WithContext(ctx).WithTimeout(30 * time.Second).Should(HaveField("Reason", agentsv1alpha1.ReasonDelivered))
		})

		It("is delivered by the host's next process when the one that queued it stopped first", func(ctx SpecContext) {
			cfg := controllertest.HostConfig(notifyHost, controllertest.Podman, false, 0)
			cfg.NotifyWorkers, cfg.NotifyTimeout = 1, time.Hour
			stop := controllertest.StartHostConfig(cfg)
			keySecret := "agentrun-hook-" + rand.String(6)
			controllertest.CreateSecret(keySecret, "hook-key-"+rand.String(24))
			tarpit := serveGate()
			run := pinned(notifiedRun("notify-restart", tarpit.URL, keySecret))
			Expect(controllertest.K8s.Create(ctx, run)).To(Succeed())
			controllertest.CleanUp(run)
			Eventually(tarpit.arrived).WithContext(ctx).WithTimeout(60 * time.Second).Should(Receive())

			stop()
			tarpit.release <- struct{}{} // the first process's try, which it no longer waits for
			Expect(controllertest.ConditionOf(controllertest.Get(ctx, run), agentsv1alpha1.ConditionNotified).Type).To(BeEmpty(), "a stopping host records no outcome")
			DeferCleanup(controllertest.StartHostConfig(cfg))
			controllertest.CleanUp(run) // before the next manager stops: see the egress suite's restart spec
			Eventually(tarpit.arrived).WithContext(ctx).WithTimeout(60*time.Second).Should(Receive(), "the next process tries again")
		})

		It("refuses the host's loopback and private networks, says only the class, and never shows the URL's token", func(ctx SpecContext) {
			startNotifyHost(func(cfg *host.HostConfig) { cfg.NotifyAllowedCIDRs = nil }) // as by default
			keySecret, token := "agentrun-hook-"+rand.String(6), "qz"+rand.String(20)
			controllertest.CreateSecret(keySecret, "hook-key-"+rand.String(24))
			rc := serveReceiver(0)
			receiverURL, err := url.Parse(rc.URL)
			Expect(err).NotTo(HaveOccurred())
			port := receiverURL.Port()
			var runs []*agentsv1alpha1.AgentRun
			for _, url := range []string{
				"http://localhost:" + port + "/hooks?token=" + token, // a name that resolves to loopback
				"https://10.0.0.7:22/hooks?token=" + token,
				"https://169.254.169.254/latest/meta-data?sig=" + token,
			} {
				run := pinned(notifiedRun("notify-refused", url, keySecret))
				Expect(controllertest.K8s.Create(ctx, run)).To(Succeed())
				controllertest.CleanUp(run)
				runs = append(runs, run)
			}
			for _, run := range runs {
				Eventually(func() metav1.Condition {
					return controllertest.ConditionOf(controllertest.Get(ctx, run), agentsv1alpha1.ConditionNotified)
				}).
					WithContext(ctx).WithTimeout(60 * time.Second).Should(And(
					HaveField("Reason", agentsv1alpha1.ReasonNotifyFailed),
					HaveField("Message", HaveSuffix(": "+notify.ClassNotAllowed))))
				raw, err := json.Marshal(controllertest.Get(ctx, run).Status)
				Expect(err).NotTo(HaveOccurred())
				Expect(string(raw)).NotTo(ContainSubstring(token))
				Eventually(func() string {
					raw, _ := json.Marshal(controllertest.RunEvents(ctx, run))
					return string(raw)
				}).WithContext(ctx).WithTimeout(5 * time.Second).Should(And(
					ContainSubstring(notify.ClassNotAllowed), Not(ContainSubstring(token))))
			}
			Expect(rc.received()).To(BeEmpty())
			Expect(controllertest.ManagerLogs.String()).NotTo(ContainSubstring(token))
		})
	})
})
