package host

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/claudecli"
	"github.com/agentrun/agentrun/internal/containers"
	"github.com/agentrun/agentrun/internal/controller/agentruns"
	"github.com/agentrun/agentrun/internal/policy"
)

// A run's Claude Code state (its configuration and its sessions) lives in a
// directory of the host's host.sessions.dir named by the run's UID, mounted
// here; CLAUDE_CONFIG_DIR points Claude Code at it. Every run has a directory
// of its own, mounted by no other run: a run that continues or forks a
// session starts from a copy of the earlier run's conversation transcripts
// (copyTranscripts), nothing else of it.
const (
	sessionMountPath   = "/agentrun/claude"
	claudeConfigDirEnv = "CLAUDE_CONFIG_DIR"
)

// reasonSessionEntriesSkipped is the event that names what a session copy
// left out for not being a regular file or a directory.
const reasonSessionEntriesSkipped = "SessionEntriesSkipped"

// keepsSessions tells whether the host keeps its runs' Claude sessions: it
// has a session directory, and its default command is Claude Code.
func (c HostConfig) keepsSessions() bool {
	return c.SessionDir != "" && claudecli.IsClaude(c.Defaults.Command)
}

// keepsSession tells whether run gets a session directory: it runs this
// host's default command, Claude Code, on a host that keeps sessions.
func (r *AgentRunReconciler) keepsSession(run *agentsv1alpha1.AgentRun) bool {
	return policy.KeepsSession(r.keepsSessions(), run)
}

// prepareSession is the session step of a launch, which comes after the
// run has its slot and secrets: it waits for the run's image (a directory
// is made, or a session copied, only for a run that can start), then
// attaches the session. It returns the directory for status.sessionDir, or
// the state the run waits or fails in.
func (r *AgentRunReconciler) prepareSession(ctx context.Context, run *agentsv1alpha1.AgentRun, spec *containers.Spec) (string, *agentruns.State, ctrl.Result, error) {
	if r.keepsSession(run) {
		ok, err := r.Runtime.ImageExists(ctx, spec.Image)
		if err != nil {
			st, res, err := r.notLaunched(run, fmt.Errorf("looking up image %s: %w", spec.Image, err))
			return "", &st, res, err
		}
		if !ok {
			return "", &agentruns.State{Phase: agentsv1alpha1.PhasePending, Reason: agentsv1alpha1.ReasonImageNotFound, Message: imageNotFoundMessage(r.Host, spec.Image)},
				ctrl.Result{RequeueAfter: r.RecheckPeriod}, nil
		}
	}
	dir, skipped, st, err := r.attachSession(ctx, run, spec)
	switch {
	case err != nil:
		// The host's own setup failed (its session directory cannot be
		// written, say): retried with backoff, and said.
		return "", &agentruns.State{Phase: agentsv1alpha1.PhasePending, Reason: agentsv1alpha1.ReasonLaunchFailed, Message: fmt.Sprintf(
				"host %s cannot keep the run's Claude session (--session-dir %s): %v", r.Host, r.SessionDir, err)},
			ctrl.Result{}, err
	case st != nil:
		return "", st, ctrl.Result{RequeueAfter: r.RecheckPeriod}, nil
	}
	if len(skipped) > 0 {
		r.Recorder.Eventf(run, nil, corev1.EventTypeWarning, reasonSessionEntriesSkipped, "CopySession", "%s", agentruns.TruncateUTF8(fmt.Sprintf(
			"the copy of AgentRun %s's session left out what is not a regular file or a directory: %s",
			run.Spec.ContinueFrom, strings.Join(skipped, ", ")), agentruns.MaxEventNoteBytes))
	}
	return dir, nil, ctrl.Result{}, nil
}

// attachSession gives a run of the host's default command (Claude Code) its
// session directory, new or with the earlier run's transcripts (continue,
// fork), mounts it, and adds the flags that resume the earlier session. It
// returns the directory's name for status.sessionDir and what a copy left
// out, or the state the run waits or fails in.
func (r *AgentRunReconciler) attachSession(ctx context.Context, run *agentsv1alpha1.AgentRun, spec *containers.Spec) (string, []string, *agentruns.State, error) {
	if refused := policy.AdmitSession(r.keepsSessions(), run); refused != nil {
		return "", nil, &agentruns.State{Phase: agentsv1alpha1.PhaseFailed, Reason: refused.Reason, Message: "host " + r.Host + " " + refused.Message}, nil
	}
	if !r.keepsSession(run) {
		return "", nil, nil, nil
	}
	dir := string(run.UID)
	if !agentruns.IsRunUID(dir) {
		return "", nil, &agentruns.State{Phase: agentsv1alpha1.PhaseFailed, Reason: agentsv1alpha1.ReasonLaunchFailed, Message: fmt.Sprintf("the run's UID %q is not a UUID", dir)}, nil
	}
	// The run's directory is made below, by the host, in host.sessions.dir: it
	// is what the volume checks hold the mount to.
	if err := os.MkdirAll(r.SessionDir, 0o700); err != nil {
		return "", nil, nil, err
	}
	if refused := r.Policy.CheckHostMount(containers.Mount{Source: r.SessionDir, Destination: sessionMountPath}); refused != nil {
		return "", nil, &agentruns.State{Phase: agentsv1alpha1.PhaseFailed, Reason: refused.Reason, Message: "the host's Claude session directory: " + refused.Message}, nil
	}
	var earlier *agentsv1alpha1.AgentRun
	if run.Spec.ContinueFrom != "" {
		var st *agentruns.State
		var err error
		// Read from the API server: the earlier run is released, and out
		// of this host's cache, once its host let go of it.
		if earlier, st, err = agentruns.SessionSource(ctx, r.APIReader, run); err != nil || st != nil {
			return "", nil, st, err
		}
		if earlier.Status.Host != r.Host {
			return "", nil, &agentruns.State{Phase: agentsv1alpha1.PhaseFailed, Reason: agentsv1alpha1.ReasonSessionUnavailable, Message: fmt.Sprintf(
					"the Claude session of AgentRun %s is kept on host %s, not on %s", earlier.Name, earlier.Status.Host, r.Host)},
				nil
		}
	}
	skipped, st, err := r.makeSessionDir(dir, earlier)
	if err != nil || st != nil {
		return "", nil, st, err
	}
	spec.Mounts = append(spec.Mounts, containers.Mount{Source: filepath.Join(r.SessionDir, dir), Destination: sessionMountPath})
	spec.Env[claudeConfigDirEnv] = sessionMountPath
	if earlier != nil {
		forwarder, agent := agentCommand(spec.Command)
		spec.Command = slices.Concat(forwarder, claudecli.InsertFlags(agent, claudecli.ResumeFlags(earlier.Status.AgentResult.SessionID, run.Spec.Fork)...))
	}
	return dir, skipped, nil, nil
}

// makeSessionDir makes the run's session directory, empty or with the
// earlier run's transcripts, and gives it to the containers' user. It is
// made under a temporary name and renamed once complete, so a directory
// under the run's UID is always whole: a retry, or a pass after one that
// made it but did not record it, uses it as it is. It returns what a copy
// left out, or the state the run fails in when the earlier session is gone
// or too large to copy.
func (r *AgentRunReconciler) makeSessionDir(dir string, earlier *agentsv1alpha1.AgentRun) ([]string, *agentruns.State, error) {
	sessions, err := r.openSessions()
	if err != nil {
		return nil, nil, err
	}
	defer sessions.Close()
	if _, err := sessions.Lstat(dir); err == nil {
		return nil, nil, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, err
	}
	partial := dir + partialSuffix
	if err := sessions.RemoveAll(partial); err != nil {
		return nil, nil, fmt.Errorf("removing an unfinished session directory: %w", err)
	}
	skipped, err := r.fillSessionDir(sessions, partial, earlier)
	if err == nil {
		err = sessions.Rename(partial, dir)
	}
	if err == nil {
		return skipped, nil, nil
	}
	if rmErr := sessions.RemoveAll(partial); rmErr != nil {
		return nil, nil, errors.Join(err, rmErr)
	}
	var tooLarge *sessionTooLargeError
	switch {
	case errors.As(err, &tooLarge):
		return nil, &agentruns.State{Phase: agentsv1alpha1.PhaseFailed, Reason: agentsv1alpha1.ReasonSessionTooLarge, Message: fmt.Sprintf(
				"the Claude session of AgentRun %s is too large to copy on host %s: %v; the partial copy was removed", earlier.Name, r.Host, err)},
			nil
	case errors.Is(err, errSessionGone):
		return nil, &agentruns.State{Phase: agentsv1alpha1.PhaseFailed, Reason: agentsv1alpha1.ReasonSessionUnavailable, Message: fmt.Sprintf(
				"host %s no longer has the Claude session of AgentRun %s", r.Host, earlier.Name)},
			nil
	}
	return nil, nil, err
}

// partialSuffix marks a session directory being made; one left behind by a
// pass that stopped goes with the next try, or as unused.
const partialSuffix = ".partial"

// errSessionGone says the earlier run's session directory is not there.
var errSessionGone = errors.New("the session directory is gone")

// fillSessionDir makes the directory name in sessions, owned by the
// containers' user, and copies the earlier run's transcripts into it.
func (r *AgentRunReconciler) fillSessionDir(sessions *os.Root, name string, earlier *agentsv1alpha1.AgentRun) ([]string, error) {
	if err := sessions.Mkdir(name, 0o700); err != nil {
		return nil, err
	}
	dst, err := sessions.OpenRoot(name)
	if err != nil {
		return nil, err
	}
	defer dst.Close()
	c := &sessionCopy{dst: dst, maxBytes: r.SessionCopyMaxBytes, maxFiles: r.SessionCopyMaxFiles}
	c.uid, c.gid, c.chown = numericUser(r.Policy.User)
	if err := c.own(dst, "."); err != nil {
		return nil, err
	}
	if earlier == nil {
		return nil, nil
	}
	src, err := sessions.OpenRoot(earlier.Status.SessionDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errSessionGone
	} else if err != nil {
		return nil, err
	}
	defer src.Close()
	err = c.transcripts(src)
	return c.skipped, err
}

// openSessions opens the host's host.sessions.dir as the root every operation
// on session directories goes through: a container can rewrite what is in
// its own directory, and a link it leaves there must not lead the host
// anywhere else.
func (r *AgentRunReconciler) openSessions() (*os.Root, error) {
	return os.OpenRoot(r.SessionDir)
}

// numericUser parses "uid:gid".
func numericUser(user string) (uid, gid int, ok bool) {
	u, g, found := strings.Cut(user, ":")
	uid, errU := strconv.Atoi(u)
	gid, errG := strconv.Atoi(g)
	return uid, gid, found && errU == nil && errG == nil
}

// collectSessions removes the session directories no run of this host
// refers to any more (deleted runs, TTL included), once they are older than
// SessionMinAge: a directory made for a launch whose status is not written
// yet is younger. It works from the disk and the cluster, so it needs no
// state of its own and picks up after a restart.
func (r *AgentRunReconciler) collectSessions(ctx context.Context) error {
	if _, err := os.Stat(r.SessionDir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	sessions, err := r.openSessions()
	if err != nil {
		return err
	}
	defer sessions.Close()
	entries, err := fs.ReadDir(sessions.FS(), ".")
	if err != nil {
		return err
	}
	used, err := r.hostRunDirs(ctx)
	if err != nil {
		return err
	}
	now := r.Clock.Now()
	unused := map[string]bool{}
	for _, e := range entries {
		info, err := e.Info()
		if err == nil && e.IsDir() && !used[e.Name()] && now.Sub(info.ModTime()) >= r.SessionMinAge {
			unused[e.Name()] = true
		}
	}
	if err := r.dropReleasedRunDirs(ctx, unused); err != nil {
		return err
	}
	for name := range unused {
		if err := sessions.RemoveAll(name); err != nil {
			return err
		}
		log.FromContext(ctx).Info("Removed a Claude session no run refers to", "dir", name)
	}
	return nil
}

// dropReleasedRunDirs takes out of dirs the session directories of released
// runs, which a later run may continue: they are out of the host's cache,
// so they are listed from the API server, their metadata only (a session
// directory is named by its run's UID), a page at a time, and only when
// there are directories to look for.
func (r *AgentRunReconciler) dropReleasedRunDirs(ctx context.Context, dirs map[string]bool) error {
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(agentsv1alpha1.GroupVersion.WithKind("AgentRunList"))
	for len(dirs) > 0 {
		if err := r.APIReader.List(ctx, list, client.HasLabels{agentsv1alpha1.LabelReleased}, client.Limit(500),
			client.Continue(list.Continue)); err != nil {
			return fmt.Errorf("listing released AgentRuns: %w", err)
		}
		for _, run := range list.Items {
			delete(dirs, string(run.UID))
		}
		if list.Continue == "" {
			return nil
		}
	}
	return nil
}

// hostRunDirs are the names of the directories the runs of this host refer
// to: their UIDs and session directories.
func (r *AgentRunReconciler) hostRunDirs(ctx context.Context) (map[string]bool, error) {
	runs := &agentsv1alpha1.AgentRunList{}
	if err := r.List(ctx, runs); err != nil {
		return nil, err
	}
	used := map[string]bool{}
	for _, run := range runs.Items {
		if run.Status.Host == r.Host || run.Spec.HostName == r.Host {
			used[run.Status.SessionDir] = true
			used[string(run.UID)] = true
		}
	}
	return used, nil
}

// collectEgressDirs removes the egress socket directories of runs gone
// while no manager ran (the reconciler removes the others as their runs
// end), once older than SessionMinAge, as session directories are.
func (r *AgentRunReconciler) collectEgressDirs(ctx context.Context) error {
	used, err := r.hostRunDirs(ctx)
	if err != nil {
		return err
	}
	removed, err := r.egress.gate.Collect(func(uid string) bool { return used[uid] }, r.Clock.Now().Add(-r.SessionMinAge))
	for _, uid := range removed {
		log.FromContext(ctx).Info("Removed the egress socket directory of a run that is gone", "uid", uid)
	}
	return err
}

// collector removes, every SessionGCPeriod while this manager leads its
// host, what runs gone left on it: session directories and egress socket
// directories.
func (r *AgentRunReconciler) collector(ctx context.Context) error {
	t := time.NewTicker(r.SessionGCPeriod)
	defer t.Stop()
	for {
		if r.SessionDir != "" {
			if err := r.collectSessions(ctx); err != nil {
				log.FromContext(ctx).Error(err, "Removing unused Claude sessions")
			}
		}
		if r.egress.gate != nil {
			if err := r.collectEgressDirs(ctx); err != nil {
				log.FromContext(ctx).Error(err, "Removing the egress socket directories of runs gone")
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
