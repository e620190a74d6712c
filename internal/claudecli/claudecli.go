// Package claudecli turns a run's Claude Code options (spec.claude) into the
// Claude Code CLI's flags, placed in the host's default command.
package claudecli

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/google/uuid"

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

// IsSessionID tells whether id has the form of Claude Code's session IDs: a
// UUID, written in its canonical lowercase form. The ID comes from the
// agent's own output, so anything else (a string made to be read as a flag,
// say) is refused rather than passed to the CLI.
func IsSessionID(id string) bool {
	u, err := uuid.Parse(id)
	return err == nil && u.String() == id
}

// ResumeFlags are the flags that resume the session id, in a form no value
// can turn into another flag (--resume=<id>), with --fork-session when the
// run branches it.
func ResumeFlags(id string, fork bool) []string {
	flags := []string{"--resume=" + id}
	if fork {
		flags = append(flags, "--fork-session")
	}
	return flags
}

// TranscriptsDir is the directory of Claude Code's config dir
// (CLAUDE_CONFIG_DIR) that holds the conversation transcripts: one
// directory per project (the working directory, its slashes made dashes),
// and in it one <session ID>.jsonl file per session, which --resume reads.
const TranscriptsDir = "projects"

// IsTranscript tells whether a file of a project directory is a session's
// conversation transcript, <session ID>.jsonl. Nothing else of a config dir
// is conversation: settings.json (hooks, permission mode), .claude.json
// (MCP servers, trusted folders), CLAUDE.md, commands/, agents/, plugins/,
// credentials, and in a project directory the auto memory (memory/) and
// the subagents' transcripts (<session ID>/), which --resume does not need.
func IsTranscript(name string) bool {
	id, ok := strings.CutSuffix(name, ".jsonl")
	return ok && IsSessionID(id)
}
