package host

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strconv"
	"syscall"

	"github.com/agentrun/agentrun/internal/claudecli"
)

// sessionCopy copies the conversation transcripts of an earlier run's
// session directory (claudecli.IsTranscript says which files they are) into
// a new one, up to a size and a file count. The earlier run's container
// could write anything into its directory, and a container that still held
// it could change it during the copy, so everything is done through roots
// (a link cannot lead out of the directory), a file's type is taken from its
// open descriptor, and only regular files and directories are copied.
type sessionCopy struct {
	dst      *os.Root
	uid, gid int
	chown    bool
	maxBytes int64
	maxFiles int
	bytes    int64
	files    int
	// skipped names what was left out for not being a regular file or a
	// directory (or for changing while it was copied).
	skipped []string
}

// beforeCopying runs between looking at an entry (it is a directory, or a
// regular file) and opening it to copy it: tests change the entry there.
var beforeCopying = func(rel string) {}

// sessionTooLargeError says a copy passed one of the host's limits.
type sessionTooLargeError struct{ limit string }

func (e *sessionTooLargeError) Error() string { return "it holds more than " + e.limit }

// transcripts copies src's projects/<project>/<transcript> files.
func (c *sessionCopy) transcripts(src *os.Root) error {
	projects, ok := c.openDir(src, claudecli.TranscriptsDir, claudecli.TranscriptsDir)
	if !ok {
		return nil
	}
	defer projects.Close()
	if err := c.mkdir(claudecli.TranscriptsDir); err != nil {
		return err
	}
	entries, err := fs.ReadDir(projects.FS(), ".")
	if err != nil {
		return err
	}
	for _, e := range entries {
		rel := path.Join(claudecli.TranscriptsDir, e.Name())
		if !e.IsDir() {
			c.skipSpecial(rel, e.Type())
			continue
		}
		if err := c.project(projects, e.Name(), rel); err != nil {
			return err
		}
	}
	return nil
}

// project copies the transcripts of one project directory.
func (c *sessionCopy) project(projects *os.Root, name, rel string) error {
	src, ok := c.openDir(projects, name, rel)
	if !ok {
		return nil
	}
	defer src.Close()
	if err := c.mkdir(rel); err != nil {
		return err
	}
	entries, err := fs.ReadDir(src.FS(), ".")
	if err != nil {
		return err
	}
	for _, e := range entries {
		file := path.Join(rel, e.Name())
		if !e.Type().IsRegular() || !claudecli.IsTranscript(e.Name()) {
			c.skipSpecial(file, e.Type())
			continue
		}
		if err := c.file(src, e.Name(), file); err != nil {
			return err
		}
	}
	return nil
}

// openDir opens the directory name of parent as a root, or records it as
// skipped when it is something else, or has become something else since it
// was looked at (a link, which may not lead out of parent, to another
// directory).
func (c *sessionCopy) openDir(parent *os.Root, name, rel string) (*os.Root, bool) {
	info, err := parent.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false
	}
	if err != nil || !info.IsDir() {
		c.skip(rel)
		return nil, false
	}
	beforeCopying(rel)
	dir, err := parent.OpenRoot(name)
	if err != nil {
		c.skip(rel)
		return nil, false
	}
	if opened, err := dir.Stat("."); err != nil || !os.SameFile(info, opened) {
		_ = dir.Close() // only looked at: a failed Close loses nothing
		c.skip(rel)
		return nil, false
	}
	return dir, true
}

// file copies the regular file name of src to rel, counting it against the
// limits. It is opened without blocking (a FIFO put in its place does not
// hang the copy) and copied only if the open descriptor is the regular file
// that was looked at.
func (c *sessionCopy) file(src *os.Root, name, rel string) error {
	info, err := src.Lstat(name)
	if err != nil || !info.Mode().IsRegular() {
		c.skip(rel)
		return nil
	}
	if c.files++; c.maxFiles > 0 && c.files > c.maxFiles {
		return &sessionTooLargeError{strconv.Itoa(c.maxFiles) + " files"}
	}
	beforeCopying(rel)
	in, err := src.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOFOLLOW, 0)
	if err != nil {
		c.skip(rel)
		return nil
	}
	defer in.Close()
	if opened, err := in.Stat(); err != nil || !opened.Mode().IsRegular() || !os.SameFile(info, opened) {
		c.skip(rel)
		return nil
	}
	out, err := c.dst.OpenFile(rel, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	if c.chown {
		if err := out.Chown(c.uid, c.gid); err != nil {
			return err
		}
	}
	return c.copyCapped(out, in)
}

// copyCapped copies in to out, counting the bytes against the limit.
func (c *sessionCopy) copyCapped(out *os.File, in io.Reader) error {
	if c.maxBytes > 0 {
		in = io.LimitReader(in, c.maxBytes-c.bytes+1)
	}
	n, err := io.Copy(out, in)
	c.bytes += n
	if c.maxBytes > 0 && c.bytes > c.maxBytes {
		return &sessionTooLargeError{strconv.FormatInt(c.maxBytes, 10) + " bytes"}
	}
	if err != nil {
		return err
	}
	return out.Close()
}

// mkdir makes the directory rel in the copy, owned by the containers' user.
func (c *sessionCopy) mkdir(rel string) error {
	if err := c.dst.Mkdir(rel, 0o700); err != nil {
		return err
	}
	return c.own(c.dst, rel)
}

// own gives rel in root to the containers' user, when the host runs them as
// a numeric one.
func (c *sessionCopy) own(root *os.Root, rel string) error {
	if !c.chown {
		return nil
	}
	if err := root.Lchown(rel, c.uid, c.gid); err != nil {
		return fmt.Errorf("giving %s to the containers' user: %w", rel, err)
	}
	return nil
}

// skipSpecial records rel as skipped when it is neither a regular file nor
// a directory: other files are not transcripts and are left out silently.
func (c *sessionCopy) skipSpecial(rel string, mode fs.FileMode) {
	if !mode.IsRegular() && !mode.IsDir() {
		c.skip(rel)
	}
}

func (c *sessionCopy) skip(rel string) {
	c.skipped = append(c.skipped, strconv.Quote(rel))
}
