// Package claudecli turns a run's Claude Code options (spec.claude) into the
// Claude Code CLI's flags, placed in the host's default command.
package claudecli

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

// endOfOptions ends the CLI's options: what follows is the prompt, even when
// it starts with '-'.
const endOfOptions = "--"

// IsClaude tells whether argv runs the Claude Code CLI.
func IsClaude(argv []string) bool {
	return len(argv) > 0 && path.Base(argv[0]) == "claude"
}

// Command returns the host's default command with the options' flags in it,
// before its end of options ("--", added when it has none), so that the
// prompt appended after it stays the prompt. With no options it returns the
// command unchanged.
func Command(defaultCommand []string, c *agentsv1alpha1.ClaudeSpec) ([]string, error) {
	if c == nil {
		return slices.Clone(defaultCommand), nil
	}
	if !IsClaude(defaultCommand) {
		return nil, fmt.Errorf("spec.claude sets Claude Code's flags, but this host's default command is not Claude Code (%s): "+
			"write the flags into spec.command, or run it on a host whose --default-command is claude", strings.Join(defaultCommand, " "))
	}
	end := slices.Index(defaultCommand, endOfOptions)
	if end < 0 {
		end = len(defaultCommand)
	}
	out := slices.Clone(defaultCommand[:end])
	out = append(out, Flags(c)...)
	return append(out, endOfOptions), nil
}

// Flags are the CLI flags of the options. Values are validated not to start
// with '-' (api/v1alpha1), and single values are written --flag=value, so
// that none is read as another flag.
func Flags(c *agentsv1alpha1.ClaudeSpec) []string {
	var flags []string
	single := func(flag, value string) {
		if value != "" {
			flags = append(flags, flag+"="+value)
		}
	}
	single("--model", c.Model)
	if c.MaxTurns != nil {
		single("--max-turns", strconv.Itoa(int(*c.MaxTurns)))
	}
	single("--max-budget-usd", c.MaxBudgetUSD)
	single("--permission-mode", c.PermissionMode)
	single("--append-system-prompt", c.AppendSystemPrompt)
	// The tool lists take several values each; the flag or the end of
	// options after them ends the list.
	if len(c.AllowedTools) > 0 {
		flags = append(append(flags, "--allowedTools"), c.AllowedTools...)
	}
	if len(c.DisallowedTools) > 0 {
		flags = append(append(flags, "--disallowedTools"), c.DisallowedTools...)
	}
	return flags
}

// InsertFlags puts flags into a command that ends with its prompt: before its
// end of options ("--") when it has one, else just before the prompt.
func InsertFlags(command []string, flags ...string) []string {
	if len(flags) == 0 || len(command) == 0 {
		return command
	}
	at := len(command) - 1
	if end := slices.Index(command, endOfOptions); end >= 0 && end < at {
		at = end
	}
	return slices.Concat(command[:at], flags, command[at:])
}
