package kubectlplugin

import (
	"bytes"
	"io"
	"strconv"
	"strings"
	"unicode"
)

// What the plugin prints comes from the API: run status, events and host
// reports that any host may write, and specs written before the API refused
// control characters in them. A terminal takes control characters for
// commands (an ESC or C1 CSI sequence can clear the screen, rewrite a line,
// retitle the window or plant a hyperlink), so every value is printed with
// them escaped, as Go writes them in a quoted string (\x1b, \r, \u009b).
// kubectl agentrun logs and run --follow are exempt: they copy the run's own
// output, byte for byte, as kubectl logs does (docs/kubectl-plugin.md).

// printable escapes every control character of s, newlines too: one value
// stays on one line of a table.
func printable(s string) string {
	return escapeControls(s, "")
}

// printableLines escapes the control characters of s but its newlines.
func printableLines(s string) string {
	return escapeControls(s, "\n")
}

// escapeControls escapes the control characters of s that keep does not
// hold.
func escapeControls(s, keep string) string {
	if !strings.ContainsFunc(s, func(r rune) bool { return unicode.IsControl(r) && !strings.ContainsRune(keep, r) }) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if unicode.IsControl(r) && !strings.ContainsRune(keep, r) {
			b.WriteString(strings.Trim(strconv.QuoteRune(r), "'"))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// printEscaped has print write into a buffer and copies what it wrote to
// out with its control characters escaped but newlines and tabs (which
// -o jsonpath templates put between columns, and which no terminal takes
// for a command): the way out for kubectl's printers (-o yaml, jsonpath,
// go-template, ...), whose values this package does not format itself.
func printEscaped(out io.Writer, print func(io.Writer) error) error {
	var buf bytes.Buffer
	if err := print(&buf); err != nil {
		return err
	}
	_, err := io.WriteString(out, escapeControls(buf.String(), "\n\t"))
	return err
}
