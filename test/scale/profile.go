package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// profileBurst takes CPU profiles of the kube-apiserver, the fleet and the
// first simhosts process at once, for -profile-seconds from a few seconds
// into the burst, into -profile-dir as h<HOSTS>-<part>.pprof (go tool pprof
// reads them). It returns at once; done closes when they are written.
func (s *stack) profileBurst(ctx context.Context, procs []*simProcess, hosts int) (done <-chan struct{}) {
	finished := make(chan struct{})
	if s.cfg.profileDir == "" {
		close(finished)
		return finished
	}
	secs := fmt.Sprint(s.cfg.profileFor.Seconds())
	targets := map[string]string{
		"fleet": fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%s", s.pprofPort, secs),
		"hosts": fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%s", procs[0].addr, secs),
	}
	go func() {
		defer close(finished)
		select {
		case <-ctx.Done():
			return
		case <-time.After(3 * time.Second):
		}
		results := make(chan error, len(targets)+1)
		for part, url := range targets {
			go func() { results <- s.saveProfile(ctx, http.DefaultClient, url, hosts, part) }()
		}
		go func() { results <- s.profileAPIServer(ctx, secs, hosts) }()
		for range len(targets) + 1 {
			if err := <-results; err != nil {
				step("a profile: %v", err)
			}
		}
	}()
	return finished
}

// profileAPIServer profiles the kube-apiserver through its own
// /debug/pprof, as the admin.
func (s *stack) profileAPIServer(ctx context.Context, secs string, hosts int) error {
	restCfg, err := clientcmd.BuildConfigFromFlags("", s.f.Kubeconfig())
	if err != nil {
		return err
	}
	restCfg.Timeout = 0
	client, err := rest.HTTPClientFor(restCfg)
	if err != nil {
		return err
	}
	return s.saveProfile(ctx, client, restCfg.Host+"/debug/pprof/profile?seconds="+secs, hosts, "kube-apiserver")
}

func (s *stack) saveProfile(ctx context.Context, client *http.Client, url string, hosts int, part string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	if err := os.MkdirAll(s.cfg.profileDir, 0o755); err != nil {
		return err
	}
	file := filepath.Join(s.cfg.profileDir, fmt.Sprintf("h%d-%s.pprof", hosts, part))
	out, err := os.Create(file)
	if err != nil {
		return err
	}
	defer out.Close()
	_, err = io.Copy(out, resp.Body)
	return err
}
