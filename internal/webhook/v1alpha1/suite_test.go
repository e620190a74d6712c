package v1alpha1_test

import (
	"context"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/runtime"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/testenv"
	webhookv1alpha1 "github.com/agentrun/agentrun/internal/webhook/v1alpha1"
)

// Two control planes: one with the validating webhook served by a manager, and
// one with the CRD alone, to show that its CEL rules refuse bad runs when no
// webhook is reachable.
var (
	cancel        context.CancelFunc
	webhookEnv    *envtest.Environment
	celEnv        *envtest.Environment
	webhookClient client.Client
	celOnlyClient client.Client
)

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
	Expect(err).NotTo(HaveOccurred())
	mgr, err := ctrl.NewManager(cfg, testenv.ManagerOptions(webhookEnv, scheme))
	Expect(err).NotTo(HaveOccurred())
	Expect(webhookv1alpha1.SetupAgentRunWebhookWithManager(mgr)).To(Succeed())
	go func() {
		defer GinkgoRecover()
		Expect(mgr.Start(ctx)).To(Succeed())
	}()
	Expect(testenv.WaitForWebhookServer(webhookEnv, 20*time.Second)).To(Succeed())
	webhookClient, err = client.New(cfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())

	celEnv, err = testenv.New(false)
	Expect(err).NotTo(HaveOccurred())
	celCfg, err := celEnv.Start()
	Expect(err).NotTo(HaveOccurred())
	celOnlyClient, err = client.New(celCfg, client.Options{Scheme: scheme})
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
