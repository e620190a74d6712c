package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"path/filepath"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/agentrun/agentrun/internal/logapi"
	"github.com/agentrun/agentrun/internal/logserver"
)

// The fleet's aggregated log API asks the API server whether a user may
// read a run's output, and reads the front-proxy settings the API server
// publishes: config/logapi binds system:auth-delegator and
// extension-apiserver-authentication-reader, as for metrics-server. Hosts
// need neither any more: they check no one but the fleet.

// setupLogAPI adds the fleet's aggregated log API to mgr.
func setupLogAPI(mgr ctrl.Manager, o logAPIOptions) error {
	serving, err := tls.LoadX509KeyPair(filepath.Join(o.CertDir, "tls.crt"), filepath.Join(o.CertDir, "tls.key"))
	if err != nil {
		return fmt.Errorf("the log API's serving certificate: %w", err)
	}
	fleet, err := tls.LoadX509KeyPair(filepath.Join(o.ClientCertDir, "tls.crt"), filepath.Join(o.ClientCertDir, "tls.key"))
	if err != nil {
		return fmt.Errorf("the fleet's client certificate for hosts: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	auth, err := logapi.NewAuth(ctx, mgr.GetConfig(), mgr.GetAPIReader())
	if err != nil {
		return err
	}
	srv := &logapi.Server{Reader: mgr.GetClient(), Auth: auth, ClientCertificate: fleet, Limits: logapi.DefaultLimits, Log: mgr.GetLogger().WithName("logapi")}
	return mgr.Add(everyReplica{&logserver.Endpoint{BindAddress: o.BindAddress, Certificate: serving, Handler: srv.Handler()}})
}

// everyReplica runs the log API on every replica, leader or not: its
// Service sends requests to all of them, and it keeps no state to elect for.
type everyReplica struct{ *logserver.Endpoint }

func (everyReplica) NeedLeaderElection() bool { return false }
