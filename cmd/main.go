// Command manager runs agentrun: the AgentRun validating webhook, the fleet's
// placement and host lifecycle controllers, the reconciler of one Podman host,
// or several of them (--mode).
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/containers"
	"github.com/agentrun/agentrun/internal/controller/fleet"
	"github.com/agentrun/agentrun/internal/controller/host"
	"github.com/agentrun/agentrun/internal/logapi"
	"github.com/agentrun/agentrun/internal/podman"
	webhookv1alpha1 "github.com/agentrun/agentrun/internal/webhook/v1alpha1"
)

func main() {
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	opts, err := parseOptions(flag.CommandLine, os.Args[1:], os.Hostname)
	if err != nil {
		fmt.Fprintln(os.Stderr, "agentrun:", err)
		os.Exit(2)
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	if err := run(opts); err != nil {
		ctrl.Log.Error(err, "Manager stopped")
		os.Exit(1)
	}
}

func run(opts *options) error {
	log := ctrl.Log.WithName("setup")
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := agentsv1alpha1.AddToScheme(scheme); err != nil {
		return err
	}
	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), opts.managerOptions(scheme))
	if err != nil {
		return fmt.Errorf("creating the manager: %w", err)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}

	if opts.servesWebhook() {
		if err := webhookv1alpha1.SetupAgentRunWebhookWithManager(mgr); err != nil {
			return fmt.Errorf("setting up the webhook: %w", err)
		}
		if err := mgr.AddReadyzCheck("webhook", mgr.GetWebhookServer().StartedChecker()); err != nil {
			return err
		}
	}
	if opts.runsFleet() {
		if err := fleet.SetupFleet(mgr, opts.fleetConfig()); err != nil {
			return fmt.Errorf("setting up the fleet controllers: %w", err)
		}
		log.Info("Placing runs on Podman hosts and watching their heartbeats", "leaseNamespace", opts.leaseNamespace, "gracePeriod", opts.hostGracePeriod)
		if api, ok, _ := opts.logAPI(); ok {
			if err := setupLogAPI(mgr, api); err != nil {
				return fmt.Errorf("setting up the log API: %w", err)
			}
			log.Info("Serving runs' live output to the API server", "group", logapi.GroupVersion, "address", api.BindAddress)
		}
	}
	if opts.runsReconciler() {
		r, err := host.SetupHost(mgr, opts.hostConfig(podman.New(opts.podmanSocket)))
		if err != nil {
			return fmt.Errorf("setting up the reconciler: %w", err)
		}
		if err := mgr.AddReadyzCheck("podman", podmanReachable(r.Runtime)); err != nil {
			return err
		}
		log.Info("Running AgentRuns on this Podman host", "host", opts.hostName, "podmanSocket", opts.podmanSocket)
	}
	return mgr.Start(ctrl.SetupSignalHandler())
}

// podmanReachable fails readiness while the host's Podman API does not answer.
func podmanReachable(rt containers.Runtime) healthz.Checker {
	return func(req *http.Request) error {
		ctx, cancel := context.WithTimeout(req.Context(), 2*time.Second)
		defer cancel()
		return rt.Ping(ctx)
	}
}
