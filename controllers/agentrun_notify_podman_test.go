package controllers_test

import (
	"crypto/hmac"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
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

// verifies is the receiver's check: the HMAC-SHA256 of timestamp.body.
func (c receivedCallback) verifies(key string) bool {
	return hmac.Equal([]byte(c.signature), []byte(notify.Sign([]byte(key), c.timestamp, c.body)))
}

var _ = Describe("A run's completion callback", func() {
	notifiedRun := func(prefix, url, keySecret string) *agentsv1alpha1.AgentRun {
		return newRun(prefix, func(r *agentsv1alpha1.AgentRun) {
			r.Spec.Command = []string{"sh", "-c", `echo "the key is $HOOK_KEY"`, "sh"}
			r.Spec.Podman.SecretsEnv = map[string]agentsv1alpha1.SecretName{"HOOK_KEY": agentsv1alpha1.SecretName(keySecret)}
			r.Spec.Notify = &agentsv1alpha1.NotifySpec{URL: url, SecretName: agentsv1alpha1.SecretName(keySecret)}
		})
	}

	It("is signed with the key from Podman, retried until the receiver accepts it, and recorded", func(ctx SpecContext) {
		keySecret, key := "agentrun-hook-"+rand.String(6), "hook-key-"+rand.String(24)
		createSecret(keySecret, key)
		rc := serveReceiver(2)
		run := notifiedRun("notify", rc.URL, keySecret)
		Expect(k8s.Create(ctx, run)).To(Succeed())
		cleanUp(run)

		waitForPhase(ctx, run, agentsv1alpha1.PhaseSucceeded, 30*time.Second)
		Eventually(func() metav1.Condition { return conditionOf(get(ctx, run), agentsv1alpha1.ConditionNotified) }).
			WithContext(ctx).WithTimeout(60 * time.Second).Should(And(
			HaveField("Status", metav1.ConditionTrue), HaveField("Reason", agentsv1alpha1.ReasonDelivered),
			HaveField("Message", ContainSubstring("HTTP 200 (try 3)"))))

		// The Notified write keeps the run's other conditions (the cache's
		// copy of a finished run has few of them).
		Expect(conditionOf(get(ctx, run), agentsv1alpha1.ConditionSucceeded).Status).To(Equal(metav1.ConditionTrue))
		Expect(conditionOf(get(ctx, run), agentsv1alpha1.ConditionReady).Status).To(Equal(metav1.ConditionTrue))

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
		raw, err := json.Marshal(get(ctx, run))
		Expect(err).NotTo(HaveOccurred())
		Expect(string(raw)).NotTo(ContainSubstring(key))
		events := func() string {
			raw, _ := json.Marshal(runEvents(ctx, run))
			return string(raw)
		}
		Eventually(events).WithContext(ctx).WithTimeout(5 * time.Second).Should(ContainSubstring(agentsv1alpha1.ReasonDelivered))
		Expect(events()).NotTo(ContainSubstring(key))
		Expect(managerLogs.String()).NotTo(ContainSubstring(key))
	})

	It("gives up after its tries and says so", func(ctx SpecContext) {
		keySecret := "agentrun-hook-" + rand.String(6)
		createSecret(keySecret, "hook-key-"+rand.String(24))
		rc := serveReceiver(1000)
		run := notifiedRun("notify-fails", rc.URL, keySecret)
		Expect(k8s.Create(ctx, run)).To(Succeed())
		cleanUp(run)

		Eventually(func() metav1.Condition { return conditionOf(get(ctx, run), agentsv1alpha1.ConditionNotified) }).
			WithContext(ctx).WithTimeout(90 * time.Second).Should(And(
			HaveField("Status", metav1.ConditionFalse), HaveField("Reason", agentsv1alpha1.ReasonNotifyFailed),
			HaveField("Message", ContainSubstring("503"))))
		Expect(rc.received()).To(HaveLen(4), "the suite's hosts try 4 times")
		Eventually(func() string {
			raw, _ := json.Marshal(runEvents(ctx, run))
			return string(raw)
		}).WithContext(ctx).WithTimeout(5 * time.Second).Should(ContainSubstring(agentsv1alpha1.ReasonNotifyFailed))
	})
})
