// Package agentimage names the Claude Code image that hack/agent-image.sh
// builds. Its Version constant is the one place the pinned Claude Code version
// is written: the manager's host.runs.defaultImage and the agent suite use Image, and
// hack/agent-image.sh reads Version from this file. The package's test fails
// when the script's reading or the documentation disagree with it.
package agentimage

// Version is the pinned @anthropic-ai/claude-code version. hack/agent-image.sh
// reads it with sed: keep it on one line, a plain string.
const Version = "2.1.328"

// Image is the tag hack/agent-image.sh gives the image it builds.
const Image = "localhost/agentrun-claude:" + Version
