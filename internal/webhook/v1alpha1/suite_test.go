package v1alpha1_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/testing/testenv"
	webhookv1alpha1 "github.com/agentrun/agentrun/internal/webhook/v1alpha1"
)

// Two control planes: one with the validating webhook served by a manager, and
// one with the CRD and config/default's admission policies alone, to show
// that its CEL rules refuse bad runs when no webhook is reachable. The webhook carries one extra create rule, off until
// a test switches it on (stricterPrompts), to tighten a rule under runs that
// are already stored.
var (
	cancel        context.CancelFunc
	webhookEnv    *envtest.Environment
	celEnv        *envtest.Environment
	webhookClient client.Client
	celOnlyClient client.Client
	// webhookConfig and celConfig are the admins' configurations of the
	// two, which the use specs impersonate users with. The CRD-only
	// control plane has config/default's admission policies (testenv.Start);
	// the webhook's has none, so each checks use on its own.
	webhookConfig, celConfig *rest.Config
)

// stricterPrompts switches on stricterPromptRule. The webhook server calls
// the rule from its own goroutines, hence the atomic.
var stricterPrompts atomic.Bool

// stricterPromptRule refuses prompts longer than 16 bytes while
// stricterPrompts is on: a rule far stricter than the API's, which the
// reference example's prompt breaks.
func stricterPromptRule(run *agentsv1alpha1.AgentRun) field.ErrorList {
	if !stricterPrompts.Load() || len(run.Spec.Prompt) <= 16 {
		return nil
	}
	return field.ErrorList{field.Invalid(field.NewPath("spec", "prompt"), run.Spec.Prompt,
		"the prompt must be at most 16 bytes (rule: tightened prompt size)")}
}

func TestAdmission(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "AgentRun admission suite")
}

var _ = BeforeSuite(func() {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	var ctx context.Context
	ctx, cancel = context.WithCancel(context.Background())

	scheme := runtime.NewScheme()
	Expect(agentsv1alpha1.AddToScheme(scheme)).To(Succeed())

	var err error
	webhookEnv, err = testenv.New(true)
	Expect(err).NotTo(HaveOccurred())
	cfg, err := webhookEnv.Start()
	webhookConfig = cfg
	Expect(err).NotTo(HaveOccurred())
	mgr, err := ctrl.NewManager(cfg, testenv.ManagerOptions(webhookEnv, scheme))
	Expect(err).NotTo(HaveOccurred())
	validator := &webhookv1alpha1.AgentRunValidator{
		ExtraCreateRules: []func(*agentsv1alpha1.AgentRun) field.ErrorList{stricterPromptRule},
	}
	Expect(validator.SetupWithManager(mgr)).To(Succeed())
	go func() {
		defer GinkgoRecover()
		Expect(mgr.Start(ctx)).To(Succeed())
	}()
	Expect(testenv.WaitForWebhookServer(webhookEnv, 20*time.Second)).To(Succeed())
	webhookClient, err = client.New(cfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())

	celEnv, err = testenv.New(false)
	Expect(err).NotTo(HaveOccurred())
	celConfig, err = testenv.Start(celEnv)
	Expect(err).NotTo(HaveOccurred())
	celOnlyClient, err = client.New(celConfig, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())
})

var _ = AfterSuite(func() {
	if cancel != nil {
		cancel()
	}
	for _, env := range []*envtest.Environment{webhookEnv, celEnv} {
		if env != nil {
			Expect(env.Stop()).To(Succeed())
		}
	}
})
