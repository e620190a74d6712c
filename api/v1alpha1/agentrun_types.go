package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// AgentRunSpec describes one run of an AI coding agent in a Podman container.
// Everything but cancel is fixed once the run is created: a run is a record of
// what was executed, so a change means a new AgentRun.
// +kubebuilder:validation:XValidation:rule="has(self.workdir) == has(oldSelf.workdir) && has(self.image) == has(oldSelf.image) && has(self.command) == has(oldSelf.command) && has(self.hostName) == has(oldSelf.hostName) && has(self.hostSelector) == has(oldSelf.hostSelector) && has(self.podman) == has(oldSelf.podman) && has(self.timeout) == has(oldSelf.timeout) && has(self.backoffLimit) == has(oldSelf.backoffLimit) && has(self.ttlSecondsAfterFinished) == has(oldSelf.ttlSecondsAfterFinished) && has(self.claude) == has(oldSelf.claude) && has(self.notify) == has(oldSelf.notify) && has(self.continueFrom) == has(oldSelf.continueFrom) && has(self.fork) == has(oldSelf.fork) && has(self.egress) == has(oldSelf.egress)",message="spec is immutable after creation except spec.cancel (rule: immutable spec)"
// +kubebuilder:validation:XValidation:rule="!oldSelf.?cancel.orValue(false) || self.?cancel.orValue(false)",message="spec.cancel cannot be set back to false once a run is cancelled (rule: cancel is final)"
// +kubebuilder:validation:XValidation:rule="!has(self.continueFrom) || !has(self.command) || size(self.command) == 0",message="spec.continueFrom resumes a Claude Code session, which needs the host's default command (Claude Code), not spec.command (rule: sessions need the default command)"
// +kubebuilder:validation:XValidation:rule="!has(self.fork) || !self.fork || has(self.continueFrom)",message="spec.fork branches the session of spec.continueFrom, which is not set (rule: fork needs continueFrom)"
// +kubebuilder:validation:XValidation:rule="!has(self.claude) || !has(self.command) || size(self.command) == 0",message="spec.claude sets the flags of the host's default command (Claude Code); with spec.command, write the flags into the command (rule: claude options need the default command)"
// +kubebuilder:validation:XValidation:rule="!has(self.egress) || !has(self.podman) || !has(self.podman.network) || size(self.podman.network) == 0",message="spec.egress needs the host's egress proxy, which a run on a Podman network of its own bypasses: leave spec.podman.network empty (rule: egress without network)",fieldPath=".podman.network"
// +kubebuilder:validation:XValidation:rule="!has(self.egress) || !has(self.egress.credentials) || self.egress.credentials.all(c, !has(c.placeholderEnv) || c.placeholderEnv.all(v, !has(self.podman) || (!has(self.podman.env) || !(v in self.podman.env)) && (!has(self.podman.secretsEnv) || !(v in self.podman.secretsEnv))))",message="a credential's placeholder variable may not also be set in spec.podman.env or secretsEnv (rule: one source per variable)",fieldPath=".egress.credentials"
type AgentRunSpec struct {
	// Prompt is the task given to the agent. It is passed as the last argument
	// of the command and as the environment variable AGENT_PROMPT.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=65536
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec is immutable after creation except spec.cancel (rule: immutable spec)"
	Prompt string `json:"prompt"`

	// Workdir is the absolute path of the container's working directory,
	// typically the container side of one of spec.podman.volumes. Empty means
	// the image's own working directory.
	// +optional
	// +kubebuilder:validation:MaxLength=4096
	// +kubebuilder:validation:XValidation:rule="self.startsWith('/')",message="workdir must be an absolute path (rule: absolute paths)"
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec is immutable after creation except spec.cancel (rule: immutable spec)"
	Workdir string `json:"workdir,omitempty"`

	// Image is the container image to run. Empty means the controller's
	// default agent image.
	// +optional
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:XValidation:rule=`!self.matches('[\\x00-\\x1f\\x7f-\\x9f]')`,message="image must not contain control characters (rule: no control characters)"
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec is immutable after creation except spec.cancel (rule: immutable spec)"
	Image string `json:"image,omitempty"`

	// Command is the argv the container runs, without the prompt, which the
	// controller appends as the last argument. Empty means the controller's
	// default agent command.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=4096
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec is immutable after creation except spec.cancel (rule: immutable spec)"
	Command []string `json:"command,omitempty"`

	// HostName pins the run to the Podman host of this name (its
	// PodmanHost, and its manager's --host-name). Empty lets the fleet place
	// the run on any host that can run it (see hostSelector).
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec is immutable after creation except spec.cancel (rule: immutable spec)"
	HostName string `json:"hostName,omitempty"`

	// HostSelector restricts the hosts an unpinned run may be placed on to
	// those whose PodmanHost labels (each host's host.labels) match, as a
	// Pod's nodeSelector does for Nodes. Empty means any host.
	// +optional
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'])",message="hostSelector operators must be In, NotIn, Exists or DoesNotExist (rule: label selector)"
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, (e.operator in ['In', 'NotIn']) == (has(e.values) && size(e.values) > 0))",message="hostSelector In and NotIn need values, Exists and DoesNotExist take none (rule: label selector)"
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec is immutable after creation except spec.cancel (rule: immutable spec)"
	HostSelector *metav1.LabelSelector `json:"hostSelector,omitempty"`

	// ContinueFrom names an earlier AgentRun of the namespace whose Claude
	// Code session this run continues: the new prompt is sent in that
	// conversation (--resume). The run goes to the earlier run's host, which
	// keeps the session's state, once the earlier run has finished; it waits
	// until then (reason WaitingForSession), and fails (SessionUnavailable)
	// if the earlier run has no session or its host no longer has it.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec is immutable after creation except spec.cancel (rule: immutable spec)"
	ContinueFrom string `json:"continueFrom,omitempty"`

	// Fork branches the session of spec.continueFrom instead of continuing
	// it: this run starts from a copy of its state and gets a session ID of
	// its own (--fork-session); the earlier session stays as it was.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec is immutable after creation except spec.cancel (rule: immutable spec)"
	Fork bool `json:"fork,omitempty"`

	// Claude holds Claude Code's options, turned into its command-line flags.
	// They apply to the host's default command, which must be Claude Code:
	// a run that sets spec.command writes its flags there instead.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec is immutable after creation except spec.cancel (rule: immutable spec)"
	Claude *ClaudeSpec `json:"claude,omitempty"`

	// Podman holds the container settings passed to Podman.
	// +optional
	Podman PodmanSpec `json:"podman,omitempty"`

	// Egress is where the run's connections may go. A run that sets it goes
	// through its host's egress proxy, which lets through only connections
	// to the host's default names (by default the agent's own API) and to
	// the names listed here; everything else is refused. A run without it
	// gets its host's egress mode (host.egress.mode, proxy by default).
	// +optional
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec is immutable after creation except spec.cancel (rule: immutable spec)"
	Egress *EgressSpec `json:"egress,omitempty"`

	// Notify has the run's host call a URL when the run finishes, with the
	// run's final status signed with a key from a Podman secret on the host.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec is immutable after creation except spec.cancel (rule: immutable spec)"
	Notify *NotifySpec `json:"notify,omitempty"`

	// Timeout bounds how long the run may take from its first container's
	// start, retries included, as a duration such as "30m" or "1h30m". Past
	// it the container is stopped and the run fails with reason
	// DeadlineExceeded, without a retry. Empty means the host's default (its
	// host.runs.defaultTimeout, 30m).
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') || duration(self) > duration('0s')",message="timeout must be a positive duration such as 30m (rule: positive timeout)"
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec is immutable after creation except spec.cancel (rule: immutable spec)"
	Timeout *metav1.Duration `json:"timeout,omitempty"`

	// BackoffLimit is how many times a failed attempt (non-zero exit) is
	// retried in a new container, after an exponential backoff, before the
	// run fails. A cancel or a deadline is not retried. Defaults to 0.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=20
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec is immutable after creation except spec.cancel (rule: immutable spec)"
	BackoffLimit *int32 `json:"backoffLimit,omitempty"`

	// TTLSecondsAfterFinished deletes the run (and anything left of its
	// container) this many seconds after it finished. Unset keeps it until it
	// is deleted by hand.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec is immutable after creation except spec.cancel (rule: immutable spec)"
	TTLSecondsAfterFinished *int32 `json:"ttlSecondsAfterFinished,omitempty"`

	// Cancel stops the run when set to true (kubectl patch or GitOps): the
	// container is stopped (SIGTERM, then SIGKILL after the host's grace
	// period) and the run ends in phase Cancelled. It is the one field that
	// may change after creation, and it cannot be set back to false.
	// +optional
	Cancel bool `json:"cancel,omitempty"`
}

// NotifySpec is where and how a finished run is reported. When the run
// finishes, its host POSTs the run's final status (JSON, its output masked as
// in the API) to URL with the headers X-Agentrun-Timestamp (Unix seconds)
// and X-Agentrun-Signature: sha256=<hex HMAC-SHA256 of the timestamp, ".",
// and the body>, keyed with the value of the Podman secret SecretName. A
// failed delivery is retried with a growing pause for a few minutes; the
// Notified condition says how it went.
type NotifySpec struct {
	// URL receives the POST: https, or http to the host's loopback only
	// (127.0.0.1, [::1] or localhost), which never leaves the host.
	// +required
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:Pattern=`^(https://[^/?#@\s]+|http://(127\.0\.0\.1|\[::1\]|localhost)(:[0-9]{1,5})?)([/?#]\S*)?$`
	// +kubebuilder:validation:XValidation:rule=`!self.matches('[\\x00-\\x1f\\x7f-\\x9f]')`,message="url must not contain control characters (rule: no control characters)"
	URL string `json:"url"`

	// SecretName is the Podman secret on the run's host that holds the
	// signing key. Its value never enters the API.
	// +required
	SecretName SecretName `json:"secretName"`
}

// ClaudeSpec holds Claude Code's options. Each becomes one of the CLI's flags;
// none may start with '-', so none can be read as another flag.
type ClaudeSpec struct {
	// Model is the model, an alias (sonnet, opus) or a full name
	// (--model).
	// +optional
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9][A-Za-z0-9._:\[\]-]*$`
	Model string `json:"model,omitempty"`

	// MaxTurns bounds the agent's turns (--max-turns).
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000
	MaxTurns *int32 `json:"maxTurns,omitempty"`

	// MaxBudgetUSD bounds what the run may spend on API calls, in US
	// dollars, as a decimal string such as "5" or "0.50" (--max-budget-usd).
	// +optional
	// +kubebuilder:validation:MaxLength=16
	// +kubebuilder:validation:Pattern=`^[0-9]+([.][0-9]+)?$`
	// +kubebuilder:validation:XValidation:rule="!self.matches('^0*([.]0*)?$')",message="maxBudgetUSD must be more than 0 (rule: positive budget)"
	MaxBudgetUSD string `json:"maxBudgetUSD,omitempty"`

	// AllowedTools are the tools the agent may use without asking, in
	// Claude Code's rule syntax: "Read", "Bash(git diff:*)",
	// "mcp__github" (--allowedTools).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=256
	// +kubebuilder:validation:items:Pattern=`^[A-Za-z_][^\x00-\x1f\x7f]*$`
	AllowedTools []string `json:"allowedTools,omitempty"`

	// DisallowedTools are the tools the agent may not use, in the same
	// syntax (--disallowedTools).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=256
	// +kubebuilder:validation:items:Pattern=`^[A-Za-z_][^\x00-\x1f\x7f]*$`
	DisallowedTools []string `json:"disallowedTools,omitempty"`

	// PermissionMode is how the agent asks for permission
	// (--permission-mode).
	// +optional
	// +kubebuilder:validation:Enum=acceptEdits;auto;bypassPermissions;manual;dontAsk;plan
	PermissionMode string `json:"permissionMode,omitempty"`

	// AppendSystemPrompt is added to the end of Claude Code's system prompt
	// (--append-system-prompt).
	// +optional
	// +kubebuilder:validation:MaxLength=16384
	AppendSystemPrompt string `json:"appendSystemPrompt,omitempty"`
}

// PodmanSpec holds the container settings passed to Podman.
// +kubebuilder:validation:XValidation:rule="!has(self.env) || !has(self.secretsEnv) || self.env.all(k, !(k in self.secretsEnv))",message="a variable may be set in env or in secretsEnv, not both (rule: one source per variable)"
// +kubebuilder:validation:XValidation:rule="has(self.volumes) == has(oldSelf.volumes) && has(self.secretsEnv) == has(oldSelf.secretsEnv) && has(self.env) == has(oldSelf.env) && has(self.memory) == has(oldSelf.memory) && has(self.cpus) == has(oldSelf.cpus) && has(self.network) == has(oldSelf.network)",message="spec is immutable after creation except spec.cancel (rule: immutable spec)"
type PodmanSpec struct {
	// Volumes are bind mounts written as Podman writes them:
	// "/host/path:/container/path" or "/host/path:/container/path:options",
	// where options is a comma-separated list of ro, rw, z, Z, U, O, copy,
	// nocopy, exec, noexec, nosuid, nodev, bind, rbind, private, rprivate,
	// slave, rslave, shared or rshared.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="self.all(v, v.matches('^/[^:]*:/[^:]*(:[^:]+)?$'))",message="each volume must be /host/path:/container/path[:options] with absolute paths (rule: volume format)"
	// +kubebuilder:validation:XValidation:rule="self.all(v, v.split(':').size() < 3 || v.split(':')[2].split(',').all(o, o in ['ro', 'rw', 'z', 'Z', 'U', 'O', 'copy', 'nocopy', 'exec', 'noexec', 'nosuid', 'nodev', 'bind', 'rbind', 'private', 'rprivate', 'slave', 'rslave', 'shared', 'rshared']))",message="volume options must be among ro, rw, z, Z, U, O, copy, nocopy, exec, noexec, nosuid, nodev, bind, rbind, private, rprivate, slave, rslave, shared, rshared (rule: volume options)"
	// +kubebuilder:validation:XValidation:rule="self.all(v, v.split(':').size() < 2 || self.exists_one(w, w.split(':').size() >= 2 && w.split(':')[1] == v.split(':')[1]))",message="two volumes may not share a container path (rule: unique container paths)"
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec is immutable after creation except spec.cancel (rule: immutable spec)"
	Volumes []string `json:"volumes,omitempty"`

	// SecretsEnv maps an environment variable name to the name of a Podman
	// secret on the host (podman secret create NAME -). Podman itself puts
	// the secret's value in the variable; the controller never reads it.
	// +optional
	// +kubebuilder:validation:MaxProperties=50
	// +kubebuilder:validation:XValidation:rule="self.all(k, k.matches('^[A-Za-z_][A-Za-z0-9_]*$'))",message="env var names must start with a letter or underscore and contain only [A-Za-z0-9_] (rule: env var format)"
	// +kubebuilder:validation:XValidation:rule="!('LD_PRELOAD' in self) && !('LD_LIBRARY_PATH' in self)",message="LD_PRELOAD and LD_LIBRARY_PATH are not allowed (rule: blocked vars)"
	// +kubebuilder:validation:XValidation:rule="!('AGENT_PROMPT' in self)",message="AGENT_PROMPT is set by the controller (rule: reserved vars)"
	// +kubebuilder:validation:XValidation:rule="self.size() == oldSelf.size() && self.all(k, k in oldSelf && self[k] == oldSelf[k])",message="spec is immutable after creation except spec.cancel (rule: immutable spec)"
	SecretsEnv map[string]SecretName `json:"secretsEnv,omitempty"`

	// Env holds plain, non-secret environment variables. Put tokens in
	// secretsEnv instead: env values are stored in the AgentRun for anyone
	// who can read it.
	// +optional
	// +kubebuilder:validation:MaxProperties=128
	// +kubebuilder:validation:XValidation:rule="self.all(k, k.matches('^[A-Za-z_][A-Za-z0-9_]*$'))",message="env var names must start with a letter or underscore and contain only [A-Za-z0-9_] (rule: env var format)"
	// +kubebuilder:validation:XValidation:rule="!('LD_PRELOAD' in self) && !('LD_LIBRARY_PATH' in self)",message="LD_PRELOAD and LD_LIBRARY_PATH are not allowed (rule: blocked vars)"
	// +kubebuilder:validation:XValidation:rule="!('AGENT_PROMPT' in self)",message="AGENT_PROMPT is set by the controller (rule: reserved vars)"
	// +kubebuilder:validation:XValidation:rule="self.size() == oldSelf.size() && self.all(k, k in oldSelf && self[k] == oldSelf[k])",message="spec is immutable after creation except spec.cancel (rule: immutable spec)"
	Env map[string]EnvValue `json:"env,omitempty"`

	// Memory is the container's memory limit in Podman's notation: a
	// number with an optional unit b, k, m or g (for example 512m or 2g).
	// +optional
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^[1-9][0-9]*[bkmgBKMG]?$`
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec is immutable after creation except spec.cancel (rule: immutable spec)"
	Memory string `json:"memory,omitempty"`

	// The positive-cpus rule, like the positive-timeout rule, converts only a
	// value of the pattern's form and leaves the rest to the pattern: a CEL
	// evaluation error is not ratcheted as a false result is, so a stored run
	// whose value the conversion fails on (one written before the pattern)
	// could take no update at all, not even its finalizer's removal
	// (found by FuzzAgentRunUpdate).

	// CPUs is the number of CPUs the container may use, as Podman's --cpus
	// takes it (for example 1 or 0.5).
	// +optional
	// +kubebuilder:validation:MaxLength=16
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?|\.[0-9]+)$`
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]+)?|[.][0-9]+)$') || double(self.startsWith('.') ? '0' + self : self) > 0.0",message="cpus must be greater than 0 (rule: positive cpus)"
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec is immutable after creation except spec.cancel (rule: immutable spec)"
	CPUs string `json:"cpus,omitempty"`

	// Network is the Podman network mode or the name of a Podman network
	// (for example bridge, none, or a network made with podman network
	// create). Empty means Podman's default.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9][A-Za-z0-9_.-]*$`
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec is immutable after creation except spec.cancel (rule: immutable spec)"
	Network string `json:"network,omitempty"`
}

// These rules sit on the value rather than on secretsEnv so that the API
// server names the variable whose secret is wrong
// (spec.podman.secretsEnv[GH_TOKEN]). Their CEL cost stays small: maxLength
// bounds each regex match and secretsEnv's maxProperties how many run. The
// pattern rule leaves an empty name to the first, so it is reported once.
// +kubebuilder:validation:MaxLength=253
// +kubebuilder:validation:XValidation:rule="self != ''",message="secret names must be non-empty (rule: secret name)"
// +kubebuilder:validation:XValidation:rule="self == '' || self.matches('^[A-Za-z0-9][A-Za-z0-9_.-]*$')",message="secret names must start with a letter or digit and contain only letters, digits, '_', '.' and '-' (rule: Podman secret name)"

// SecretName is the name of a Podman secret, as podman secret create takes it.
type SecretName string

// EnvValue is the value of a plain environment variable.
// +kubebuilder:validation:MaxLength=32768
type EnvValue string

// AgentRunPhase is a run's place in its lifecycle.
// +kubebuilder:validation:Enum=Pending;Running;Succeeded;Failed;Cancelled
type AgentRunPhase string

const (
	// PhasePending: the run is accepted but its container is not running
	// yet (no host has claimed it, it waits for a secret, an image or a slot).
	PhasePending AgentRunPhase = "Pending"
	// PhaseRunning: the run's container is running on status.host.
	PhaseRunning AgentRunPhase = "Running"
	// PhaseSucceeded: the container exited 0 and the agent reported no error.
	PhaseSucceeded AgentRunPhase = "Succeeded"
	// PhaseFailed: the run ended without success (non-zero exit, deadline,
	// agent error, or a launch error that waiting cannot fix).
	PhaseFailed AgentRunPhase = "Failed"
	// PhaseCancelled: the run was stopped because spec.cancel was set.
	PhaseCancelled AgentRunPhase = "Cancelled"
)

// IsFinished tells whether the phase is terminal: nothing more will run.
func (p AgentRunPhase) IsFinished() bool {
	return p == PhaseSucceeded || p == PhaseFailed || p == PhaseCancelled
}

// AgentRunStatus is what the controller observed of the run.
type AgentRunStatus struct {
	// ObservedGeneration is the metadata.generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// SessionDir names the directory, under its host's host.sessions.dir, that
	// holds the run's Claude Code state (its sessions), mounted into its
	// container: the run's UID. Every run has its own; one that continues
	// or forks a session starts with a copy of the earlier run's
	// conversation transcripts.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`
	SessionDir string `json:"sessionDir,omitempty"`

	// Phase summarises the run: Pending, Running, Succeeded, Failed or
	// Cancelled.
	// +optional
	Phase AgentRunPhase `json:"phase,omitempty"`

	// Conditions are the run's detailed states; see the Condition* constants.
	// `kubectl wait --for=condition=Succeeded` waits for success and
	// `--for=condition=Failed` for a failure, `--for=condition=Finished` for
	// either.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// Host is the Podman host running (or that ran) the run. It is written
	// when a host claims the run (or the fleet places it there), and cleared
	// only when that host is lost and the run is to be placed again.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Host string `json:"host,omitempty"`

	// ContainerID is the Podman container ID of the current attempt.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	ContainerID string `json:"containerID,omitempty"`

	// ContainerName is the Podman container name of the current attempt.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	ContainerName string `json:"containerName,omitempty"`

	// StartTime is when the run's first container started; spec.timeout
	// and status.duration count from it.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`

	// CompletionTime is when the run finished.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`

	// ExitCode is the exit code of the last attempt's container.
	// +optional
	ExitCode *int32 `json:"exitCode,omitempty"`

	// Attempts counts the containers started for this run.
	// +optional
	Attempts int32 `json:"attempts,omitempty"`

	// DisruptedAttempts counts the attempts that ended because their host
	// was lost (condition HostLost) or Kueue evicted the run (reason
	// Evicted) rather than by failing: they do not count against
	// spec.backoffLimit, as a Job's pods disrupted by a node's loss do not.
	// +optional
	DisruptedAttempts int32 `json:"disruptedAttempts,omitempty"`

	// Duration is how long the run took from its first container's start to
	// its end, for example "1m12s".
	// +optional
	// +kubebuilder:validation:MaxLength=64
	Duration string `json:"duration,omitempty"`

	// Egress is the run's network egress: its mode and, through the proxy,
	// the connections let through and refused.
	// +optional
	Egress *EgressStatus `json:"egress,omitempty"`

	// Budget is what the run reserved under its namespace's AgentRunBudgets.
	// The fleet sets it before a host may take the run; a host does not
	// take a run that a budget selects until it is set.
	// +optional
	Budget *RunBudget `json:"budget,omitempty"`

	// AgentResult holds what the agent reported when its output ended with a
	// Claude Code JSON result object (claude -p --output-format json).
	// +optional
	AgentResult *AgentResult `json:"agentResult,omitempty"`

	// Output is the tail of the container's combined stdout and stderr.
	// +optional
	// +kubebuilder:validation:MaxLength=65536
	Output string `json:"output,omitempty"`

	// Message says, for a person, why the run is in its phase and, when
	// something is wrong, how to fix it.
	// +optional
	// +kubebuilder:validation:MaxLength=4096
	Message string `json:"message,omitempty"`
}

// EgressSpec lists the names a run may reach beyond its host's defaults.
// The credentials' rules that span the list sit here: a credential's host
// must be reachable through allow (egress.Policy.Allows on port 443, which
// the webhook applies exactly: the same name, the name with :443, or a "*."
// pattern strictly above it), and a placeholder variable belongs to one
// credential. Their CEL cost stays within the API server's budget because
// maxItems bounds both lists and maxLength their strings.
// +kubebuilder:validation:XValidation:rule="!has(self.credentials) || self.credentials.all(c, has(self.allow) && self.allow.exists(a, a == c.host || a == c.host + ':443' || a.startsWith('*.') && (c.host.endsWith(a.substring(1)) || (c.host + ':443').endsWith(a.substring(1)))))",message="each credential's host must be one spec.egress.allow lets the run reach on port 443: the same name, the name with :443, or a *. pattern above it (rule: credential host allowed)",fieldPath=".credentials"
// +kubebuilder:validation:XValidation:rule="!has(self.credentials) || self.credentials.all(c, self.credentials.all(d, c.host == d.host || !has(c.placeholderEnv) || !has(d.placeholderEnv) || !c.placeholderEnv.exists(v, v in d.placeholderEnv)))",message="a placeholder variable belongs to one credential: list it in one placeholderEnv only (rule: one source per variable)",fieldPath=".credentials"
type EgressSpec struct {
	// Allow are the host names the run may connect to, each a DNS name
	// with an optional port (github.com, registry.npmjs.org:443); a leading
	// "*." matches every name below the one after it, not that name itself
	// (*.githubusercontent.com). Without a port, 443 and 80. No IP
	// addresses, schemes or paths. Each must be within the ceiling of the
	// host the run goes to (its host.egress.permitted), or the run does not
	// start (EgressNotPermitted).
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=100
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=261
	// +kubebuilder:validation:items:XValidation:rule=`!self.matches('[/?#@]')`,message="a host name with an optional port, not a URL: no scheme, path, query or user (rule: egress name)"
	// +kubebuilder:validation:items:XValidation:rule=`self.matches('^(\\*\\.)?([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\\.)*[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?$')`,message="each entry is a lower-case DNS name (labels of a to z, 0 to 9 and inner hyphens, 1 to 63 characters), optionally with a leading '*.' and a port from 1 to 65535 without leading zeros: github.com, *.githubusercontent.com, registry.npmjs.org:443 (rule: egress name)"
	// +kubebuilder:validation:items:XValidation:rule=`self.matches('^(\\*\\.)?[^:]{1,253}(:[^:]*)?$')`,message="the name is at most 253 characters (rule: egress name)"
	// +kubebuilder:validation:items:XValidation:rule=`!self.matches('(^|[.])[0-9]+(:[^:]*)?$')`,message="the last label of the name is not all digits: an IP address is not a host name (rule: egress name)"
	Allow []string `json:"allow,omitempty"`

	// Credentials are tokens the host's egress proxy adds to the run's
	// HTTPS requests to their hosts, so the agent never holds them: each
	// names a Podman secret on the host, the header it goes in and the form
	// of its value. For those hosts alone the proxy ends TLS with a
	// certificate from a CA made for the run (which the container trusts),
	// removes any header of that name the agent sent, adds the secret's
	// value, and masks the value in what comes back; other hosts are
	// tunnelled untouched. One credential a host, each a host allow lets
	// the run reach. GitHub's API and git over HTTPS with one token are
	// {host: api.github.com, secretName: github-token, placeholderEnv:
	// [GH_TOKEN]} and {host: github.com, secretName: github-token, format:
	// "Basic base64(x-access-token:{})"}.
	// +optional
	// +listType=map
	// +listMapKey=host
	// +kubebuilder:validation:MaxItems=16
	Credentials []EgressCredential `json:"credentials,omitempty"`
}

// EgressCredential is a Podman secret the proxy adds to a host's requests.
type EgressCredential struct {
	// Host is the name whose HTTPS requests (port 443) get the credential:
	// a lower-case DNS name without wildcard or port (api.github.com),
	// which spec.egress.allow must let the run reach on port 443.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule=`self.matches('^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\\.)*[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$')`,message="the host is a lower-case DNS name without wildcard or port (labels of a to z, 0 to 9 and inner hyphens, 1 to 63 characters), as api.github.com: the credential goes to that one name, on port 443 (rule: credential host)"
	// +kubebuilder:validation:XValidation:rule=`!self.matches('(^|[.])[0-9]+$')`,message="the last label of the host is not all digits: an IP address is not a host name (rule: credential host)"
	Host string `json:"host"`

	// SecretName is the Podman secret on the run's host that holds the
	// credential (podman secret create NAME -). The host reads its value
	// for the run, in memory; it never reaches the container or the API.
	// A run whose secret does not exist does not start (SecretNotFound).
	// +required
	SecretName SecretName `json:"secretName"`

	// Header is the request header the credential goes in: Authorization
	// (the default), x-api-key, PRIVATE-TOKEN...; any header of that name
	// the agent sent is removed. Not one about the connection or the
	// message's framing (Host, Content-Length, Connection,
	// Proxy-Authorization and the like).
	// +optional
	// +kubebuilder:default=Authorization
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:XValidation:rule=`self.matches('^[A-Za-z0-9!#$%&\\x27*+.^_\\x60|~-]+$')`,message="the header is an HTTP header name: letters, digits and the symbols an HTTP token allows, no space or colon (rule: credential header)"
	// +kubebuilder:validation:XValidation:rule="!(self.lowerAscii() in ['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'host', 'content-length', 'content-encoding', 'expect'])",message="the header is not one a credential may set: it is about the connection or the message's framing, not authentication (rule: credential header)"
	Header string `json:"header,omitempty"`

	// Format is the header's value, with {} standing for the secret's
	// value, once: "Bearer {}" (the default), "token {}", "{}", or
	// "Basic base64(USER:{})" for HTTP basic authentication (git over
	// HTTPS: "Basic base64(x-access-token:{})"). base64(...) is the one
	// function; one line of printable ASCII, with no other braces or
	// parentheses.
	// +optional
	// +kubebuilder:default="Bearer {}"
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:XValidation:rule=`self.matches('^([\\x20-\\x27\\x2a-\\x7a\\x7c\\x7e]*[{][}][\\x20-\\x27\\x2a-\\x7a\\x7c\\x7e]*|([\\x20-\\x27\\x2a-\\x7a\\x7c\\x7e]*[\\x20-\\x27\\x2a-\\x2f\\x3a-\\x40\\x5b-\\x5e\\x60\\x7c\\x7e])?base64[(][\\x20-\\x27\\x2a-\\x7a\\x7c\\x7e]*[{][}][\\x20-\\x27\\x2a-\\x7a\\x7c\\x7e]*[)][\\x20-\\x27\\x2a-\\x7a\\x7c\\x7e]*)$')`,message="the format is one line of printable ASCII with exactly one {} where the secret's value goes (Bearer {}), or the {} inside the one function base64(...) (Basic base64(x-access-token:{})); no other braces or parentheses (rule: credential format)"
	Format string `json:"format,omitempty"`

	// PlaceholderEnv are environment variables set to the placeholder
	// "agentrun-injected", for tools that will not send a request without a
	// token of their own (GH_TOKEN for gh, ANTHROPIC_API_KEY for Claude
	// Code); the proxy replaces what they send. Each is a variable of no
	// other credential, nor of spec.podman.env or secretsEnv.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MaxLength=256
	// +kubebuilder:validation:items:XValidation:rule="self.matches('^[A-Za-z_][A-Za-z0-9_]*$')",message="env var names must start with a letter or underscore and contain only [A-Za-z0-9_] (rule: env var format)"
	// +kubebuilder:validation:items:XValidation:rule="!(self in ['LD_PRELOAD', 'LD_LIBRARY_PATH'])",message="LD_PRELOAD and LD_LIBRARY_PATH are not allowed (rule: blocked vars)"
	// +kubebuilder:validation:items:XValidation:rule="self != 'AGENT_PROMPT'",message="AGENT_PROMPT is set by the controller (rule: reserved vars)"
	PlaceholderEnv []string `json:"placeholderEnv,omitempty"`
}

// HeaderOrDefault is the header the credential goes in: Header, or
// DefaultCredentialHeader when unset (the API server defaults it; a typed
// client's object may not have been through it).
func (c EgressCredential) HeaderOrDefault() string {
	if c.Header == "" {
		return DefaultCredentialHeader
	}
	return c.Header
}

// FormatOrDefault is the credential's format: Format, or
// DefaultCredentialFormat when unset.
func (c EgressCredential) FormatOrDefault() string {
	if c.Format == "" {
		return DefaultCredentialFormat
	}
	return c.Format
}

const (
	// CredentialPlaceholder is the value of a credential's placeholder
	// variables.
	CredentialPlaceholder = "agentrun-injected"
	// DefaultCredentialHeader is spec.egress.credentials[].header's
	// default.
	DefaultCredentialHeader = "Authorization"
	// DefaultCredentialFormat is spec.egress.credentials[].format's
	// default.
	DefaultCredentialFormat = "Bearer {}"
)

// EgressMode is how a run's container reaches the network.
// +kubebuilder:validation:Enum=proxy;none;open
type EgressMode string

const (
	// EgressProxy: the container has no network of its own, only the
	// host's egress proxy, which lets through the names the run may reach.
	EgressProxy EgressMode = "proxy"
	// EgressNone: the container has no network at all.
	EgressNone EgressMode = "none"
	// EgressOpen: the container is on a Podman network (spec.podman.network,
	// or Podman's default bridge) and reaches whatever that network does.
	EgressOpen EgressMode = "open"
)

// EgressStatus is what the run's egress is and what it tried.
type EgressStatus struct {
	// Mode is how the run's container reaches the network: proxy
	// (restricted to the names it may reach), none, or open.
	// +optional
	Mode EgressMode `json:"mode,omitempty"`

	// Allow are the names the run may reach through the proxy: its host's
	// defaults and its spec.egress.allow.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=200
	// +kubebuilder:validation:items:MaxLength=261
	Allow []string `json:"allow,omitempty"`

	// Allowed is how many connections the proxy let through.
	// +optional
	Allowed int64 `json:"allowed,omitempty"`

	// Refused is how many connections the proxy refused, in all.
	// +optional
	Refused int64 `json:"refused,omitempty"`

	// TopRefused are the destinations refused most often, at most ten,
	// the most refused first.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=10
	TopRefused []EgressRefusal `json:"topRefused,omitempty"`

	// Credentials are the run's credentials and how the proxy used them.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	Credentials []EgressCredentialStatus `json:"credentials,omitempty"`
}

// EgressCredentialStatus is how often the proxy added a credential, and how
// often its host refused it.
type EgressCredentialStatus struct {
	// Host is the credential's host.
	// +required
	// +kubebuilder:validation:MaxLength=253
	Host string `json:"host"`

	// SecretName is the credential's Podman secret.
	// +required
	SecretName SecretName `json:"secretName"`

	// Requests is how many requests the proxy added it to.
	// +optional
	Requests int64 `json:"requests,omitempty"`

	// Rejected is how many of them the host answered 401 or 403.
	// +optional
	Rejected int64 `json:"rejected,omitempty"`
}

// EgressRefusal is a destination the proxy refused and how often.
type EgressRefusal struct {
	// Destination is the name (or address) the run tried, with its port.
	// +required
	// +kubebuilder:validation:MaxLength=300
	Destination string `json:"destination"`

	// Count is how many times it was refused.
	// +required
	Count int64 `json:"count"`
}

// AgentResult is the agent's own report of a run, from the JSON result object
// Claude Code prints with --output-format json.
type AgentResult struct {
	// Result is the agent's final message, cut to its first 4096 bytes.
	// +optional
	// +kubebuilder:validation:MaxLength=4096
	Result string `json:"result,omitempty"`
	// SessionID identifies the agent's session, to resume or audit it.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	SessionID string `json:"sessionID,omitempty"`
	// NumTurns is how many turns the agent took.
	// +optional
	NumTurns int32 `json:"numTurns,omitempty"`
	// CostUSD is what the agent reported the run cost, in US dollars, as a
	// decimal string.
	// +optional
	// +kubebuilder:validation:MaxLength=32
	CostUSD string `json:"costUSD,omitempty"`
	// IsError tells whether the agent reported an error; such a run fails
	// with reason AgentError even when the container exits 0.
	// +optional
	IsError bool `json:"isError,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=ar,categories=agents
// The host a run was placed on or pinned to selects its runs by these
// (kubectl get agentruns --field-selector status.host=NAME, too).
// +kubebuilder:selectablefield:JSONPath=`.status.host`
// +kubebuilder:selectablefield:JSONPath=`.spec.hostName`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Host",type=string,JSONPath=`.status.host`
// +kubebuilder:printcolumn:name="Attempts",type=integer,JSONPath=`.status.attempts`
// +kubebuilder:printcolumn:name="Exit",type=integer,JSONPath=`.status.exitCode`
// +kubebuilder:printcolumn:name="Duration",type=string,JSONPath=`.status.duration`
// +kubebuilder:printcolumn:name="Egress",type=string,JSONPath=`.status.egress.mode`,priority=1
// +kubebuilder:printcolumn:name="Container",type=string,JSONPath=`.status.containerName`,priority=1
// +kubebuilder:printcolumn:name="Started",type=date,JSONPath=`.status.startTime`,priority=1
// +kubebuilder:printcolumn:name="Completed",type=date,JSONPath=`.status.completionTime`,priority=1
// +kubebuilder:printcolumn:name="Turns",type=integer,JSONPath=`.status.agentResult.numTurns`,priority=1
// +kubebuilder:printcolumn:name="Cost",type=string,JSONPath=`.status.agentResult.costUSD`,priority=1
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=`.status.message`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// AgentRun runs an AI coding agent once, in a Podman container on one of the
// cluster's Podman hosts, with Podman secrets injected as environment
// variables.
type AgentRun struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is what to run.
	// +required
	Spec AgentRunSpec `json:"spec"`

	// Status is what the controller observed of the run. A new run reads
	// observedGeneration 0 until a controller writes its status, so that
	// kstatus (Flux) sees it in progress rather than current.
	// +optional
	// +kubebuilder:default={observedGeneration: 0}
	Status AgentRunStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// AgentRunList is a list of AgentRuns.
type AgentRunList struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AgentRun `json:"items"`
}
