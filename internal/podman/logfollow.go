package podman

import (
	"context"
	"errors"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/containers/podman/v5/pkg/bindings/containers"

	rt "github.com/agentrun/agentrun/internal/containers"
)

// refollowPause is how long StreamLogs waits before following again a
// container that Podman stopped following while it had not exited.
const refollowPause = 250 * time.Millisecond

// StreamLogs writes the container's output to w frame by frame (conmon writes
// a frame per line, or per part of a long line), stdout and stderr in the
// order the service sends them.
//
// A follow ends when the container has exited and every line it printed was
// sent, whatever Podman's own follow does. Podman (k8s-file driver) follows
// the log file with a polling tailer; once the container exits it waits one
// poll interval and tells the tailer to stop at the end of the file
// (StopAtEOF); a tailer waiting at the end of the file selects between the
// poller's "modified" and its own "dying", and when both are ready (the
// poller's tick and the stop fall together) picks one at random: picking
// "dying" it returns without reading what was written since its last read. The last line a
// container prints right before it exits is then lost: seen on Podman 5.4
// (`run --follow` printed "token: ***" and not the "done" after it), whose
// follow waits for the exit itself rather than for 4.3's died event, so it
// stops sooner after the exit. So the frames carry their timestamps, and
// when Podman's follow ends the container is inspected: exited, its log is
// read once more without following (a plain read to the end of the file,
// after conmon wrote it all) from the last timestamp sent, skipping the
// frames already sent; not exited, it is followed again from there.
func (r *Runtime) StreamLogs(ctx context.Context, id string, o rt.LogOptions, w io.Writer) error {
	cur := &logCursor{w: w}
	follow := o.Follow
	for {
		if err := r.streamFrames(ctx, id, cur.options(o, follow), cur); err != nil || !follow {
			return err
		}
		c, err := r.Inspect(ctx, id)
		switch {
		case errors.Is(err, rt.ErrNotFound):
			return nil
		case err != nil:
			return err
		case c.State == rt.StateExited:
			follow = false
			continue
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(refollowPause):
		}
	}
}

// streamFrames sends the service's frames to cur. When cur fails (the
// reader went away) the request is cancelled, and the frames already on
// their way are drained so that the bindings' goroutine, which blocks on
// its channels, ends.
func (r *Runtime) streamFrames(ctx context.Context, id string, opts *containers.LogOptions, cur *logCursor) error {
	c, err := r.connect(ctx)
	if err != nil {
		return err
	}
	c, cancel := context.WithCancel(c)
	defer cancel()
	stdout, stderr := make(chan string), make(chan string)
	done := make(chan error, 1)
	go func() { done <- containers.Logs(c, id, opts, stdout, stderr) }()
	var writeErr error
	write := func(s string) {
		if writeErr != nil {
			return
		}
		if writeErr = cur.frame(s); writeErr != nil {
			cancel()
		}
	}
	for {
		select {
		case s := <-stdout:
			write(s)
		case s := <-stderr:
			write(s)
		case err := <-done:
			switch {
			case writeErr != nil:
				return writeErr
			case ctx.Err() != nil:
				return ctx.Err()
			case err != nil:
				return r.classify(err, "logs of container "+id)
			}
			return nil
		}
	}
}

// logCursor writes timestamped frames to w without their timestamps, and
// remembers where the output sent so far ends, so that a later read sends
// only what follows.
type logCursor struct {
	w io.Writer
	// last is the timestamp of the last frame sent, and atLast how many
	// frames were sent with it (conmon's timestamps are in nanoseconds,
	// yet two frames may share one).
	last   time.Time
	atLast int
	// resuming is true while a resumed read has not yet sent a frame: it
	// drops those stamped before last, and the first skip of those stamped
	// last.
	resuming bool
	skip     int
}

// options are the service's options for the next read: o's own for the
// first, and from the last frame sent on for the next ones.
func (c *logCursor) options(o rt.LogOptions, follow bool) *containers.LogOptions {
	opts := new(containers.LogOptions).WithStdout(true).WithStderr(true).WithFollow(follow).WithTimestamps(true)
	if c.last.IsZero() {
		if o.TailLines >= 0 {
			opts = opts.WithTail(strconv.Itoa(o.TailLines))
		}
		if !o.Since.IsZero() {
			opts = opts.WithSince(o.Since.Format(time.RFC3339Nano))
		}
		return opts
	}
	c.resuming, c.skip = true, c.atLast
	// Podman sends the frames stamped after since: a nanosecond earlier
	// includes those stamped last, of which skip were sent.
	return opts.WithSince(c.last.Add(-time.Nanosecond).Format(time.RFC3339Nano))
}

// frame writes one "TIMESTAMP output" frame's output, unless an earlier
// read sent it.
func (c *logCursor) frame(s string) error {
	stamp, out, ok := strings.Cut(s, " ")
	t, err := time.Parse(time.RFC3339Nano, stamp)
	if !ok || err != nil {
		// Not the output itself in the error: it is not masked yet.
		return errors.New("the service sent a log frame without its timestamp")
	}
	if c.resuming {
		switch {
		case t.Before(c.last):
			return nil
		case t.Equal(c.last) && c.skip > 0:
			c.skip--
			return nil
		}
		c.resuming = false
	}
	if t.Equal(c.last) {
		c.atLast++
	} else {
		c.last, c.atLast = t, 1
	}
	_, err = io.WriteString(c.w, out)
	return err
}
