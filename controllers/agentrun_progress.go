package controllers

import (
	"context"
	"crypto/sha256"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/containers"
	"github.com/agentrun/agentrun/internal/redact"
	"github.com/agentrun/agentrun/internal/runoutput"
)

// refreshOutput publishes the end of a running container's output so far in
// status.output, masked as the final output is, once ProgressPeriod has passed
// since it was last read (or since the container started), and only when it
// changed; it returns how long until the next read is due. A read that fails
// is logged and tried again a period later: progress never fails a pass.
//
// The output is read whole, as the final output is (Logs says why): a
// running run costs a Podman logs call per period, and the call's cost grows
// with what the run has printed.
func (r *AgentRunReconciler) refreshOutput(ctx context.Context, run *agentsv1alpha1.AgentRun, c containers.Container) time.Duration {
	key := client.ObjectKeyFromObject(run)
	read := r.progress.of(key, c.ID)
	now := r.Clock.Now()
	since := read.at
	if since.IsZero() && run.Status.StartTime != nil {
		since = run.Status.StartTime.Time
	}
	if since.IsZero() {
		since = now
	}
	if wait := since.Add(r.ProgressPeriod).Sub(now); wait > 0 {
		if read.at.IsZero() {
			read.at = since
			r.progress.put(key, read)
		}
		return wait
	}
	read.at = now
	r.progress.put(key, read)
	output, err := r.Runtime.Logs(ctx, c.ID, r.OutputTailBytes)
	if err == nil && read.redactor == nil {
		// Read once per container, and held in memory only while it runs
		// (the final output is masked with them too): reading them is a
		// Podman call per secret, and an inspect on 4.3.
		read.redactor, err = runoutput.Redactor(ctx, r.Runtime, run, c)
	}
	if err != nil {
		log.FromContext(ctx).Error(err, "Reading a running container's output for status; trying again next period",
			"agentrun", key, "container", c.Name)
		return r.ProgressPeriod
	}
	masked := truncateStartUTF8(read.redactor.String(output), r.OutputTailBytes)
	if sum := sha256.Sum256([]byte(masked)); sum != read.published {
		read.published = sum
		run.Status.Output = masked
	}
	r.progress.put(key, read)
	return r.ProgressPeriod
}

// progressReads holds, per running run, what refreshOutput last read and
// published. The cache keeps no output (TrimForCache), so whether the output
// changed is told from the digest of what this process last wrote.
type progressReads struct {
	mu    sync.Mutex
	byRun map[types.NamespacedName]progressRead
}

type progressRead struct {
	containerID string
	at          time.Time
	published   [sha256.Size]byte
	// redactor holds the container's secret values, to mask its output.
	redactor *redact.Redactor
}

// of returns what was last read of the run's container id; a later attempt's
// container starts afresh.
func (p *progressReads) of(key types.NamespacedName, id string) progressRead {
	p.mu.Lock()
	defer p.mu.Unlock()
	if read, ok := p.byRun[key]; ok && read.containerID == id {
		return read
	}
	return progressRead{containerID: id}
}

func (p *progressReads) put(key types.NamespacedName, read progressRead) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.byRun == nil {
		p.byRun = map[types.NamespacedName]progressRead{}
	}
	p.byRun[key] = read
}

// unpublished forgets what was published for the run: its status write was
// lost, so the next read writes the output even if it has not changed.
func (p *progressReads) unpublished(key types.NamespacedName) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if read, ok := p.byRun[key]; ok {
		read.published = [sha256.Size]byte{}
		p.byRun[key] = read
	}
}

func (p *progressReads) forget(key types.NamespacedName) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.byRun, key)
}
