// Package runoutput is a run's container output as people may see it: with
// the run's secret values masked. The reconciler uses it for status.output,
// the host's log endpoint for the live stream, so both mask alike.
package runoutput

import (
	"bytes"
	"context"
	"fmt"
	"io"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/containers"
	"github.com/agentrun/agentrun/internal/redact"
)

// SecretEnv maps each of the run's secret variables to its Podman secret,
// as the engine takes them; nil when the run has none.
func SecretEnv(run *agentsv1alpha1.AgentRun) map[string]string {
	if len(run.Spec.Podman.SecretsEnv) == 0 {
		return nil
	}
	out := make(map[string]string, len(run.Spec.Podman.SecretsEnv))
	for variable, name := range run.Spec.Podman.SecretsEnv {
		out[variable] = string(name)
	}
	return out
}

// Redactor masks the values of the run's secrets in container c's output,
// read from the host's Podman for this use only: they live as long as the
// returned Redactor.
func Redactor(ctx context.Context, rt containers.Runtime, run *agentsv1alpha1.AgentRun, c containers.Container) (*redact.Redactor, error) {
	secrets := SecretEnv(run)
	if len(secrets) == 0 {
		return redact.New(), nil
	}
	values, err := rt.SecretValues(ctx, c.ID, secrets)
	if err != nil {
		return nil, fmt.Errorf("reading the secret values of container %s, to mask them in its output: %w", c.Name, err)
	}
	return redact.New(values...), nil
}

// Tail returns at most the last n bytes of container id's output, masked
// by r. It masks more than it keeps, then cuts: a value that the cut splits
// is masked whole first, so no part of it starts what is kept.
func Tail(ctx context.Context, rt containers.Runtime, id string, r *redact.Redactor, n int) (string, error) {
	// Logs may start up to a quarter of what it reads later, at a line's
	// start: twice the window keeps Reach before the cut.
	out, err := rt.Logs(ctx, id, 2*(n+r.Reach()))
	if err != nil {
		return "", err
	}
	return TruncateStart(r.String(out), n), nil
}

// TruncateStart keeps at most the last n bytes of s without splitting a
// character.
func TruncateStart(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := len(s) - n
	for i < len(s) && s[i]&0xC0 == 0x80 {
		i++
	}
	return s[i:]
}

// maxLine is the most a LineWriter holds while it waits for a line's end: a
// process that never prints a newline still streams, in pieces this long.
const maxLine = 64 << 10

// LineWriter redacts a stream line by line: each whole line is masked and
// written on at once, so a reader sees lines as the run prints them. Masking
// whole lines catches a value the engine split across two frames. What may
// begin a value that the next lines complete (a multi-line value, wrapped
// base64) waits for them, and a line longer than maxLine is cut where no
// value spans the cut (redact's Cut).
type LineWriter struct {
	w        io.Writer
	redactor *redact.Redactor
	buf      []byte
}

// NewLineWriter redacts into w with r.
func NewLineWriter(w io.Writer, r *redact.Redactor) *LineWriter {
	return &LineWriter{w: w, redactor: r}
}

func (l *LineWriter) Write(p []byte) (int, error) {
	l.buf = append(l.buf, p...)
	end := bytes.LastIndexByte(l.buf, '\n') + 1
	if end == 0 && len(l.buf) >= maxLine {
		// What may still join with the text to come stays.
		end = len(l.buf) - l.redactor.Reach()
	}
	if end <= 0 {
		return len(p), nil
	}
	end = l.redactor.Cut(string(l.buf), end)
	if end == 0 {
		return len(p), nil
	}
	if err := l.emit(l.buf[:end]); err != nil {
		return 0, err
	}
	l.buf = append(l.buf[:0], l.buf[end:]...)
	return len(p), nil
}

// Close writes what is left, a last line without its newline.
func (l *LineWriter) Close() error {
	if len(l.buf) == 0 {
		return nil
	}
	err := l.emit(l.buf)
	l.buf = nil
	return err
}

func (l *LineWriter) emit(b []byte) error {
	_, err := io.WriteString(l.w, l.redactor.String(string(b)))
	return err
}
