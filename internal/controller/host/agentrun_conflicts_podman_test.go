package host_test

import (
	"context"
	"fmt"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"sigs.k8s.io/controller-runtime/pkg/client"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/controller/controllertest"
)

var _ = Describe("Runs whose metadata other clients write while they launch", func() {
	// GitOps tools and people label and annotate runs at any time. Each such
	// write makes the host's status writes of that moment meet a conflict;
	// the host must still launch every run once and record it, whatever
	// happened to an earlier pass's write.
	It("each end with one container and its result, and no slot stays held", func(ctx SpecContext) {
		const host = "host-metadata"
		const capacity, count = 4, 12
		DeferCleanup(controllertest.StartHostWith(host, controllertest.Podman, true, capacity))
		var runs []*agentsv1alpha1.AgentRun
		for i := range count {
			run := controllertest.NewRun(fmt.Sprintf("meta%02d", i), func(r *agentsv1alpha1.AgentRun) {
				r.Spec.HostName = host
				r.Spec.Command = []string{"sh", "-c", "sleep 1; echo done", "sh"}
			})
			Expect(controllertest.K8s.Create(ctx, run)).To(Succeed())
			controllertest.CleanUp(run)
			runs = append(runs, run)
		}

		landed := writeMetadataFor(ctx, runs, 15*time.Second)
		for _, run := range runs {
			Expect(landed[run.Name]).To(BeNumerically(">", 0), "no metadata write landed on run %s", run.Name)
		}

		for _, run := range runs {
			done := controllertest.WaitForPhase(ctx, run, agentsv1alpha1.PhaseSucceeded, 90*time.Second)
			Expect(done.Status.Output).To(ContainSubstring("done"))
			Expect(done.Status.Attempts).To(BeEquivalentTo(1))
			cs := controllertest.RunContainers(ctx, run)
			Expect(cs).To(HaveLen(1), "run %s must have had exactly one container", run.Name)
			Expect(cs[0].Name).To(Equal(done.Status.ContainerName))
			Expect(controllertest.HostCreates.Of(done.Status.ContainerName)).To(Equal([]string{host}),
				"run %s: a second create would have met the first container's name and adopted it", run.Name)
		}
		// Every slot is free again: a further run starts at once.
		next := controllertest.NewRun("meta-next", func(r *agentsv1alpha1.AgentRun) {
			r.Spec.HostName = host
			r.Spec.Command = []string{"true"}
		})
		Expect(controllertest.K8s.Create(ctx, next)).To(Succeed())
		controllertest.CleanUp(next)
		controllertest.WaitForPhase(ctx, next, agentsv1alpha1.PhaseSucceeded, 20*time.Second)
	}, SpecTimeout(3*time.Minute))
})

// writeMetadataFor writes a label and an annotation on every run, over and
// over, for d, as a GitOps tool would: merge patches that carry no
// resourceVersion, so each one lands and moves the run's version on. It
// returns how many landed on each run, by name (a run that finished and went
// takes no more).
func writeMetadataFor(ctx context.Context, runs []*agentsv1alpha1.AgentRun, d time.Duration) map[string]int {
	GinkgoHelper()
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	var mu sync.Mutex
	landed := map[string]int{}
	for _, run := range runs {
		wg.Add(1)
		go func() {
			defer GinkgoRecover()
			defer wg.Done()
			for i := 0; time.Now().Before(deadline) && ctx.Err() == nil; i++ {
				patch := fmt.Sprintf(`{"metadata":{"labels":{"gitops/sync":"s%d"},"annotations":{"gitops/revision":"r%d"}}}`, i, i)
				if controllertest.K8s.Patch(ctx, run.DeepCopy(), client.RawPatch("application/merge-patch+json", []byte(patch))) == nil {
					mu.Lock()
					landed[run.Name]++
					mu.Unlock()
				}
				time.Sleep(100 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	return landed
}
