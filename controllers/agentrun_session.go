package controllers

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/claudecli"
	"github.com/agentrun/agentrun/internal/containers"
)

// A run's Claude Code state (its configuration and its sessions) lives in a
// directory of the host's --session-dir, mounted here; CLAUDE_CONFIG_DIR
// points Claude Code at it.
const (
	sessionMountPath   = "/agentrun/claude"
	claudeConfigDirEnv = "CLAUDE_CONFIG_DIR"
)

// sessionSource checks the earlier run whose session run continues. It
// returns that run when its session can be continued now, or else the state
// run waits (the earlier run has not finished) or fails in.
func sessionSource(ctx context.Context, c client.Reader, run *agentsv1alpha1.AgentRun) (*agentsv1alpha1.AgentRun, *runState, error) {
	name := run.Spec.ContinueFrom
	earlier := &agentsv1alpha1.AgentRun{}
	err := c.Get(ctx, client.ObjectKey{Namespace: run.Namespace, Name: name}, earlier)
	switch {
	case apierrors.IsNotFound(err):
		return nil, &runState{agentsv1alpha1.PhaseFailed, agentsv1alpha1.ReasonSessionUnavailable,
			fmt.Sprintf("AgentRun %s, whose Claude session this run continues, does not exist", name)}, nil
	case err != nil:
		return nil, nil, err
	case !earlier.Status.Phase.IsFinished():
		return nil, &runState{agentsv1alpha1.PhasePending, agentsv1alpha1.ReasonWaitingForSession,
			fmt.Sprintf("waiting for AgentRun %s to finish, to continue its Claude session", name)}, nil
	case earlier.Status.SessionDir == "" || earlier.Status.Host == "" || earlier.Status.AgentResult == nil || earlier.Status.AgentResult.SessionID == "":
		return nil, &runState{agentsv1alpha1.PhaseFailed, agentsv1alpha1.ReasonSessionUnavailable,
			fmt.Sprintf("AgentRun %s ended (%s) without a Claude session to continue", name, earlier.Status.Phase)}, nil
	}
	return earlier, nil, nil
}

// attachSession gives a run of the host's default command (Claude Code) its
// session directory: a new one, the earlier run's (continue), or a copy of
// it (fork), with the flags that resume the earlier session, and returns the
// directory's name for status.sessionDir. It returns instead the state the
// run waits or fails in when the session cannot be had.
func (r *AgentRunReconciler) attachSession(ctx context.Context, run *agentsv1alpha1.AgentRun, spec *containers.Spec) (string, *runState, error) {
	if r.SessionDir == "" || len(run.Spec.Command) > 0 || !claudecli.IsClaude(r.Defaults.Command) {
		if run.Spec.ContinueFrom == "" {
			return "", nil, nil
		}
		return "", &runState{agentsv1alpha1.PhaseFailed, agentsv1alpha1.ReasonSessionUnavailable, fmt.Sprintf(
			"host %s keeps no Claude sessions (its --session-dir is empty, or its default command is not Claude Code)", r.Host)}, nil
	}
	dir, fresh := string(run.UID), true
	var flags []string
	if run.Spec.ContinueFrom != "" {
		earlier, st, err := sessionSource(ctx, r.Client, run)
		if err != nil || st != nil {
			return "", st, err
		}
		if earlier.Status.Host != r.Host {
			return "", &runState{agentsv1alpha1.PhaseFailed, agentsv1alpha1.ReasonSessionUnavailable, fmt.Sprintf(
				"the Claude session of AgentRun %s is kept on host %s, not on %s", earlier.Name, earlier.Status.Host, r.Host)}, nil
		}
		from := filepath.Join(r.SessionDir, earlier.Status.SessionDir)
		if _, err := os.Stat(from); err != nil {
			return "", &runState{agentsv1alpha1.PhaseFailed, agentsv1alpha1.ReasonSessionUnavailable, fmt.Sprintf(
				"host %s no longer has the Claude session of AgentRun %s (%v)", r.Host, earlier.Name, err)}, nil
		}
		flags = []string{"--resume", earlier.Status.AgentResult.SessionID}
		if run.Spec.Fork {
			flags = append(flags, "--fork-session")
			// A retry, or a pass after one that copied but did not
			// record it, finds its copy.
			if _, err := os.Stat(filepath.Join(r.SessionDir, dir)); errors.Is(err, fs.ErrNotExist) {
				if err := copyDir(from, filepath.Join(r.SessionDir, dir)); err != nil {
					return "", nil, fmt.Errorf("copying the session of AgentRun %s: %w", earlier.Name, err)
				}
			}
		} else {
			dir, fresh = earlier.Status.SessionDir, false
		}
	}
	path := filepath.Join(r.SessionDir, dir)
	if fresh {
		if err := os.MkdirAll(path, 0o700); err != nil {
			return "", nil, fmt.Errorf("making the run's session directory: %w", err)
		}
	}
	// The container's user owns its state.
	if uid, gid, ok := numericUser(r.Policy.User); ok {
		if err := chownTree(path, uid, gid); err != nil {
			return "", nil, fmt.Errorf("giving the session directory to the container's user: %w", err)
		}
	}
	spec.Mounts = append(spec.Mounts, containers.Mount{Source: path, Destination: sessionMountPath})
	spec.Env[claudeConfigDirEnv] = sessionMountPath
	spec.Command = claudecli.InsertFlags(spec.Command, flags...)
	return dir, nil, nil
}

// numericUser parses "uid:gid".
func numericUser(user string) (uid, gid int, ok bool) {
	u, g, found := strings.Cut(user, ":")
	uid, errU := strconv.Atoi(u)
	gid, errG := strconv.Atoi(g)
	return uid, gid, found && errU == nil && errG == nil
}

func chownTree(root string, uid, gid int) error {
	return filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}

// copyDir copies a session directory: directories, regular files and
// symbolic links, nothing else.
func copyDir(from, to string) error {
	return filepath.WalkDir(from, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(from, p)
		if err != nil {
			return err
		}
		dst := filepath.Join(to, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(dst, info.Mode().Perm())
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(target, dst)
		case d.Type().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(dst, data, info.Mode().Perm())
		}
		return nil
	})
}

// collectSessions removes the session directories no run of this host
// refers to any more (deleted runs, TTL included), once they are older than
// SessionMinAge: a directory made for a launch whose status is not written
// yet is younger. It works from the disk and the cluster, so it needs no
// state of its own and picks up after a restart.
func (r *AgentRunReconciler) collectSessions(ctx context.Context) error {
	entries, err := os.ReadDir(r.SessionDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	runs := &agentsv1alpha1.AgentRunList{}
	if err := r.List(ctx, runs); err != nil {
		return err
	}
	used := map[string]bool{}
	for _, run := range runs.Items {
		if run.Status.Host == r.Host || run.Spec.HostName == r.Host {
			used[run.Status.SessionDir] = true
			used[string(run.UID)] = true
		}
	}
	now := r.Clock.Now()
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || !e.IsDir() || used[e.Name()] || now.Sub(info.ModTime()) < r.SessionMinAge {
			continue
		}
		if err := os.RemoveAll(filepath.Join(r.SessionDir, e.Name())); err != nil {
			return err
		}
		log.FromContext(ctx).Info("Removed a Claude session no run refers to", "dir", e.Name())
	}
	return nil
}

// sessionCollector runs collectSessions every SessionGCPeriod while this
// manager leads its host.
func (r *AgentRunReconciler) sessionCollector(ctx context.Context) error {
	t := time.NewTicker(r.SessionGCPeriod)
	defer t.Stop()
	for {
		if err := r.collectSessions(ctx); err != nil {
			log.FromContext(ctx).Error(err, "Removing unused Claude sessions")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
