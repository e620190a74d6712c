package v1alpha1

import (
	"fmt"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// The rules below are the ones the CRD's schema and CEL rules state, plus
// checks CEL cannot say well (path hygiene, conflicting volume options): the
// webhook refuses all the CRD refuses, which the fuzz targets in
// internal/webhook/v1alpha1 check against the generated CRD. The webhook runs
// them all and reports every violation at once, each naming its field and its
// rule; the controller reuses ParseVolume to build mounts.

const (
	// MaxSecretsPerRun is the reference API's limit on secrets per run.
	MaxSecretsPerRun = 50
	// MaxSecretNameLength is the longest secret name Podman accepts.
	MaxSecretNameLength = 253
	// MaxPromptLength bounds spec.prompt, in bytes.
	MaxPromptLength = 65536
	// MaxBackoffLimit is the most retries spec.backoffLimit may ask for.
	MaxBackoffLimit = 20
	// PromptEnvVar is the variable through which the controller hands the
	// prompt to the container; a run may not set it itself.
	PromptEnvVar = "AGENT_PROMPT"
)

// Rule names, as they appear at the end of every validation message.
const (
	ruleEnvVarFormat      = "env var format"
	ruleBlockedVars       = "blocked vars"
	ruleReservedVars      = "reserved vars"
	ruleSecretName        = "secret name"
	rulePodmanSecretName  = "Podman secret name"
	ruleMaxPerRun         = "max per run"
	ruleOneSource         = "one source per variable"
	ruleVolumeFormat      = "volume format"
	ruleVolumeOptions     = "volume options"
	ruleUniqueMountPaths  = "unique container paths"
	ruleAbsolutePaths     = "absolute paths"
	ruleImmutableSpec     = "immutable spec"
	ruleCancelIsFinal     = "cancel is final"
	ruleImmutableQueue    = "immutable queue"
	rulePromptRequired    = "prompt required"
	rulePromptSize        = "prompt size"
	ruleCleanPaths        = "clean paths"
	ruleVolumeOptionClash = "one option of each kind"
	ruleLabelSelector     = "label selector"
	ruleSizeLimits        = "size limits"
	ruleHostName          = "host name"
	rulePositiveTimeout   = "positive timeout"
	ruleBackoffLimit      = "backoff limit"
	ruleNonNegativeTTL    = "non-negative ttl"
	ruleMemoryFormat      = "memory format"
	ruleCPUsFormat        = "cpus format"
	rulePositiveCPUs      = "positive cpus"
	ruleNetworkName       = "network name"
	ruleClaudeNeedsCmd    = "claude options need the default command"
	ruleModelName         = "model name"
	ruleTurns             = "max turns"
	ruleBudgetFormat      = "budget format"
	rulePositiveBudget    = "positive budget"
	ruleToolRule          = "tool rule"
	rulePermissionMode    = "permission mode"
	ruleNotifyURL         = "notify url"
	ruleSessionsNeedCmd   = "sessions need the default command"
	ruleRunName           = "run name"
	ruleForkNeedsSession  = "fork needs continueFrom"
	ruleNoControlChars    = "no control characters"
	ruleUniqueEgress      = "unique egress names"
	ruleEgressNoNetwork   = "egress without network"
	// RuleEgressName is the rule each entry of spec.egress.allow is held
	// to. The webhook checks it with internal/egress's parser, which the
	// hosts and placement read the entries with, and which this package
	// cannot import.
	RuleEgressName = "egress name"
	// RuleCredentialHost, RuleCredentialHostAllowed, RuleCredentialHeader
	// and RuleCredentialFormat are the rules of a credential's host,
	// header and format, which the webhook checks with the parsers the
	// hosts' proxy uses (internal/egress, internal/credential).
	RuleCredentialHost        = "credential host"
	RuleCredentialHostAllowed = "credential host allowed"
	RuleCredentialHeader      = "credential header"
	RuleCredentialFormat      = "credential format"
	ruleUniqueCredentialHosts = "one credential a host"
)

// Lengths and counts the CRD bounds with maxLength, maxItems and
// maxProperties, checked here too so that the webhook refuses all the CRD
// refuses (the fuzz targets in internal/webhook/v1alpha1 hold them to it).
// Lengths are in characters, as OpenAPI counts them.
const (
	maxWorkdirLength     = 4096
	maxImageLength       = 512
	maxCommandItems      = 64
	maxArgLength         = 4096
	maxHostNameLength    = 253
	maxVolumes           = 32
	maxVolumeLength      = 2048
	maxEnvVars           = 128
	maxEnvValueLength    = 32768
	maxMemoryLength      = 32
	maxCPUsLength        = 16
	maxNetworkNameLength = 253
	maxModelLength       = 128
	maxTurns             = 10000
	maxBudgetLength      = 16
	maxTools             = 64
	maxToolLength        = 256
	maxSystemPromptAdd   = 16384
	maxURLLength         = 2048
	maxEgressEntries     = 100
	maxCredentials       = 16
	maxPlaceholders      = 8
	maxPlaceholderLength = 256
	// MaxEgressEntryLength is the longest entry of spec.egress.allow: "*.",
	// a name of 253 characters and ":65535".
	MaxEgressEntryLength = 2 + 253 + 6
)

// The CRD's patterns, for the fields the webhook checks in the same words.
var (
	hostNamePattern    = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)
	memoryPattern      = regexp.MustCompile(`^[1-9][0-9]*[bkmgBKMG]?$`)
	cpusPattern        = regexp.MustCompile(`^([0-9]+(\.[0-9]+)?|\.[0-9]+)$`)
	networkNamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)
	modelPattern       = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:\[\]-]*$`)
	budgetPattern      = regexp.MustCompile(`^[0-9]+([.][0-9]+)?$`)
	zeroBudgetPattern  = regexp.MustCompile(`^0*([.]0*)?$`)
	toolRulePattern    = regexp.MustCompile(`^[A-Za-z_][^\x00-\x1f\x7f]*$`)
	notifyURLPattern   = regexp.MustCompile(`^(https://[^/?#@\s]+|http://(127\.0\.0\.1|\[::1\]|localhost)(:[0-9]{1,5})?)([/?#]\S*)?$`)
)

// PermissionModes are the values Claude Code's --permission-mode takes.
var PermissionModes = []string{"acceptEdits", "auto", "bypassPermissions", "manual", "dontAsk", "plan"}

var envNamePattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// secretNamePattern is the secret name pattern Podman's secrets store
// enforced in its first releases (containers/common); later releases accept
// any name without ',', '/', '=' or NUL. Keeping the narrow one means a name
// that reaches a host can carry no shell, option or control character into a
// --secret flag, a log line or an event message. RE2's $ matches only at the
// end of the text, so a trailing newline is refused.
var secretNamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// blockedEnvVars would let a run load code into every process of the
// container, including the agent's own tooling.
var blockedEnvVars = []string{"LD_PRELOAD", "LD_LIBRARY_PATH"}

// volumeOptionKinds lists the bind-mount options a volume may carry, grouped
// so that two options of one kind (ro and rw, z and Z) are refused. suid and
// dev are left out on purpose: they would re-enable setuid binaries and device
// files from a host directory.
var volumeOptionKinds = map[string]string{
	"ro": "access", "rw": "access",
	"z": "relabel", "Z": "relabel",
	"U":    "chown",
	"O":    "overlay",
	"copy": "copy", "nocopy": "copy",
	"exec": "exec", "noexec": "exec",
	"nosuid": "suid",
	"nodev":  "dev",
	"bind":   "bind", "rbind": "bind",
	"private": "propagation", "rprivate": "propagation",
	"slave": "propagation", "rslave": "propagation",
	"shared": "propagation", "rshared": "propagation",
}

// hostChangingVolumeOptions are the volume options with which Podman changes
// the files of the host directory themselves, not only the container's view
// of them, and what each does. They are valid, but a host applies them only
// when its operator allows it (host.volumes.allowRelabel), so the webhook warns
// about them when a run is created.
var hostChangingVolumeOptions = map[string]string{
	"U": "changes the owner of every file under the host path to the container's user",
	"z": "relabels every file under the host path for SELinux, shared by all containers",
	"Z": "relabels every file under the host path for SELinux, private to this container",
}

// Volume is one parsed entry of spec.podman.volumes.
type Volume struct {
	HostPath      string
	ContainerPath string
	Options       []string
}

// ParseVolume splits "/host:/container[:options]" and checks its form. The
// error says which rule the entry breaks.
func ParseVolume(spec string) (Volume, error) {
	parts := strings.Split(spec, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return Volume{}, fmt.Errorf("must be /host/path:/container/path[:options] (rule: %s)", ruleVolumeFormat)
	}
	v := Volume{HostPath: parts[0], ContainerPath: parts[1]}
	for _, p := range []string{v.HostPath, v.ContainerPath} {
		if !strings.HasPrefix(p, "/") {
			return Volume{}, fmt.Errorf("%q must be an absolute path (rule: %s)", p, ruleVolumeFormat)
		}
		if path.Clean(p) != p {
			return Volume{}, fmt.Errorf("%q must be a clean path, without '..', '.', '//' or a trailing '/' (rule: %s)", p, ruleCleanPaths)
		}
	}
	if v.ContainerPath == "/" {
		return Volume{}, fmt.Errorf("the container path may not be / (rule: %s)", ruleVolumeFormat)
	}
	if len(parts) == 3 {
		seen := map[string]string{}
		for _, o := range strings.Split(parts[2], ",") {
			kind, ok := volumeOptionKinds[o]
			if !ok {
				return Volume{}, fmt.Errorf("unknown option %q: options must be among %s (rule: %s)", o, knownVolumeOptions(), ruleVolumeOptions)
			}
			if other, clash := seen[kind]; clash {
				return Volume{}, fmt.Errorf("options %q and %q conflict (rule: %s)", other, o, ruleVolumeOptionClash)
			}
			seen[kind] = o
			v.Options = append(v.Options, o)
		}
	}
	return v, nil
}

// HostChanges says, for each of v's options that makes Podman change files of
// the host directory, what it does ("option U changes the owner of ..."), in
// the order the options are written.
func (v Volume) HostChanges() []string {
	var changes []string
	for _, o := range v.Options {
		if what, ok := hostChangingVolumeOptions[o]; ok {
			changes = append(changes, fmt.Sprintf("option %s %s", o, what))
		}
	}
	return changes
}

func knownVolumeOptions() string {
	opts := make([]string, 0, len(volumeOptionKinds))
	for o := range volumeOptionKinds {
		opts = append(opts, o)
	}
	slices.Sort(opts)
	return strings.Join(opts, ", ")
}

// ValidateAgentRun checks a run being created.
func ValidateAgentRun(run *AgentRun) field.ErrorList {
	return validateSpec(&run.Spec, field.NewPath("spec"))
}

// ValidateAgentRunUpdate checks a change to a run: the new spec must equal the
// old one but for cancel, which may only go from false to true, and the Kueue
// queue label must be the one the run was created with. It does not
// apply ValidateAgentRun's rules again: the spec cannot change, so they would
// only judge the stored run by today's rules, and once a rule is tightened a
// run created before would be stuck, unable to be cancelled or to lose its
// finalizer when it is deleted.
func ValidateAgentRunUpdate(old, run *AgentRun) field.ErrorList {
	specPath := field.NewPath("spec")
	var errs field.ErrorList
	oldSpec, newSpec := old.Spec, run.Spec
	oldSpec.Cancel, newSpec.Cancel = false, false
	if !equality.Semantic.DeepEqual(oldSpec, newSpec) {
		errs = append(errs, field.Forbidden(specPath, Rule("spec is immutable after creation except spec.cancel", ruleImmutableSpec)))
	}
	if old.Spec.Cancel && !run.Spec.Cancel {
		errs = append(errs, field.Forbidden(specPath.Child("cancel"), Rule("spec.cancel cannot be set back to false once a run is cancelled", ruleCancelIsFinal)))
	}
	// A run's Workload is made in the queue of its label: a run moved out
	// of its queue would run outside the queue's quota, one moved in after
	// a host took it would be counted nowhere.
	if old.Labels[LabelQueueName] != run.Labels[LabelQueueName] {
		errs = append(errs, field.Forbidden(field.NewPath("metadata", "labels").Key(LabelQueueName),
			Rule("the Kueue queue label cannot be added, changed or removed after creation", ruleImmutableQueue)))
	}
	return errs
}

func validateSpec(spec *AgentRunSpec, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	switch {
	case spec.Prompt == "":
		errs = append(errs, field.Required(p.Child("prompt"), Rule("the prompt must be non-empty", rulePromptRequired)))
	case len(spec.Prompt) > MaxPromptLength:
		errs = append(errs, field.Invalid(p.Child("prompt"), fmt.Sprintf("%d bytes", len(spec.Prompt)),
			Rule(fmt.Sprintf("the prompt must be at most %d bytes", MaxPromptLength), rulePromptSize)))
	}
	if spec.Workdir != "" {
		errs = append(errs, maxLength(p.Child("workdir"), spec.Workdir, maxWorkdirLength)...)
		errs = append(errs, validateAbsoluteCleanPath(p.Child("workdir"), spec.Workdir)...)
	}
	errs = append(errs, maxLength(p.Child("image"), spec.Image, maxImageLength)...)
	errs = append(errs, noControlCharacters(p.Child("image"), spec.Image)...)
	errs = append(errs, maxItems(p.Child("command"), len(spec.Command), maxCommandItems)...)
	for i, arg := range spec.Command {
		errs = append(errs, maxLength(p.Child("command").Index(i), arg, maxArgLength)...)
	}
	errs = append(errs, maxLength(p.Child("hostName"), spec.HostName, maxHostNameLength)...)
	errs = append(errs, matchPattern(p.Child("hostName"), spec.HostName, hostNamePattern,
		"host names must be lower-case letters, digits, '-' and '.', starting and ending with a letter or digit", ruleHostName)...)
	if spec.Timeout != nil && spec.Timeout.Duration <= 0 {
		errs = append(errs, field.Invalid(p.Child("timeout"), spec.Timeout.Duration.String(),
			Rule("timeout must be a positive duration such as 30m", rulePositiveTimeout)))
	}
	if n := spec.BackoffLimit; n != nil && (*n < 0 || *n > MaxBackoffLimit) {
		errs = append(errs, field.Invalid(p.Child("backoffLimit"), *n,
			Rule(fmt.Sprintf("backoffLimit must be between 0 and %d", MaxBackoffLimit), ruleBackoffLimit)))
	}
	if n := spec.TTLSecondsAfterFinished; n != nil && *n < 0 {
		errs = append(errs, field.Invalid(p.Child("ttlSecondsAfterFinished"), *n,
			Rule("ttlSecondsAfterFinished must not be negative", ruleNonNegativeTTL)))
	}
	if spec.HostSelector != nil {
		for _, e := range metav1validation.ValidateLabelSelector(spec.HostSelector, metav1validation.LabelSelectorValidationOptions{}, p.Child("hostSelector")) {
			e.Detail = Rule(e.Detail, ruleLabelSelector)
			errs = append(errs, e)
		}
	}
	errs = append(errs, validatePodman(&spec.Podman, p.Child("podman"))...)
	if spec.ContinueFrom != "" {
		errs = append(errs, maxLength(p.Child("continueFrom"), spec.ContinueFrom, maxHostNameLength)...)
		errs = append(errs, matchPattern(p.Child("continueFrom"), spec.ContinueFrom, hostNamePattern,
			"AgentRun names are lower-case letters, digits, '-' and '.', starting and ending with a letter or digit", ruleRunName)...)
		if len(spec.Command) > 0 {
			errs = append(errs, field.Forbidden(p.Child("continueFrom"), Rule(
				"spec.continueFrom resumes a Claude Code session, which needs the host's default command (Claude Code), not spec.command", ruleSessionsNeedCmd)))
		}
	} else if spec.Fork {
		errs = append(errs, field.Forbidden(p.Child("fork"), Rule("spec.fork branches the session of spec.continueFrom, which is not set", ruleForkNeedsSession)))
	}
	if n := spec.Notify; n != nil {
		urlPath := p.Child("notify", "url")
		errs = append(errs, maxLength(urlPath, n.URL, maxURLLength)...)
		errs = append(errs, noControlCharacters(urlPath, n.URL)...)
		if !notifyURLPattern.MatchString(n.URL) {
			errs = append(errs, field.Invalid(urlPath, n.URL, Rule(
				"the URL must be https://, or http:// to 127.0.0.1, [::1] or localhost, without user information or spaces", ruleNotifyURL)))
		}
		errs = append(errs, ValidateSecretName(p.Child("notify", "secretName"), string(n.SecretName))...)
	}
	if spec.Egress != nil {
		errs = append(errs, validateEgress(spec, p)...)
	}
	if spec.Claude != nil {
		if len(spec.Command) > 0 {
			errs = append(errs, field.Forbidden(p.Child("claude"), Rule(
				"spec.claude sets the flags of the host's default command (Claude Code); with spec.command, write the flags into the command", ruleClaudeNeedsCmd)))
		}
		errs = append(errs, validateClaude(spec.Claude, p.Child("claude"))...)
	}
	return errs
}

func validateClaude(c *ClaudeSpec, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	errs = append(errs, maxLength(p.Child("model"), c.Model, maxModelLength)...)
	errs = append(errs, matchPattern(p.Child("model"), c.Model, modelPattern,
		"model names start with a letter or digit and contain only letters, digits, '.', '_', ':', '[', ']' and '-'", ruleModelName)...)
	if n := c.MaxTurns; n != nil && (*n < 1 || *n > maxTurns) {
		errs = append(errs, field.Invalid(p.Child("maxTurns"), *n, Rule(fmt.Sprintf("maxTurns must be between 1 and %d", maxTurns), ruleTurns)))
	}
	if b := c.MaxBudgetUSD; b != "" {
		budgetPath := p.Child("maxBudgetUSD")
		errs = append(errs, maxLength(budgetPath, b, maxBudgetLength)...)
		errs = append(errs, matchPattern(budgetPath, b, budgetPattern, "maxBudgetUSD must be a decimal number of dollars such as 5 or 0.50", ruleBudgetFormat)...)
		if zeroBudgetPattern.MatchString(b) {
			errs = append(errs, field.Invalid(budgetPath, b, Rule("maxBudgetUSD must be more than 0", rulePositiveBudget)))
		}
	}
	for _, tools := range []struct {
		name  string
		rules []string
	}{{"allowedTools", c.AllowedTools}, {"disallowedTools", c.DisallowedTools}} {
		toolsPath := p.Child(tools.name)
		errs = append(errs, maxItems(toolsPath, len(tools.rules), maxTools)...)
		for i, r := range tools.rules {
			errs = append(errs, maxLength(toolsPath.Index(i), r, maxToolLength)...)
			if !toolRulePattern.MatchString(r) {
				errs = append(errs, field.Invalid(toolsPath.Index(i), r,
					Rule("tool rules start with a letter or '_' and contain no control characters", ruleToolRule)))
			}
		}
	}
	if m := c.PermissionMode; m != "" && !slices.Contains(PermissionModes, m) {
		errs = append(errs, field.Invalid(p.Child("permissionMode"), m,
			Rule("permissionMode must be one of "+strings.Join(PermissionModes, ", "), rulePermissionMode)))
	}
	errs = append(errs, maxLength(p.Child("appendSystemPrompt"), c.AppendSystemPrompt, maxSystemPromptAdd)...)
	return errs
}

// validateEgress checks the form of spec.egress: its size, no name twice,
// and no Podman network of the run's own, which would bypass the host's
// proxy. Each entry's own rule (RuleEgressName) is the webhook's.
func validateEgress(spec *AgentRunSpec, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	allowPath := p.Child("egress", "allow")
	errs = append(errs, maxItems(allowPath, len(spec.Egress.Allow), maxEgressEntries)...)
	seen := make(map[string]bool, len(spec.Egress.Allow))
	for i, entry := range spec.Egress.Allow {
		errs = append(errs, maxLength(allowPath.Index(i), entry, MaxEgressEntryLength)...)
		if seen[entry] {
			errs = append(errs, duplicate(allowPath.Index(i), entry, "each name is listed once", ruleUniqueEgress))
		}
		seen[entry] = true
	}
	errs = append(errs, validateCredentials(spec, p.Child("egress", "credentials"))...)
	if spec.Podman.Network != "" {
		errs = append(errs, field.Forbidden(p.Child("podman", "network"), Rule(
			"spec.egress needs the host's egress proxy, which a run on a Podman network of its own bypasses: leave spec.podman.network empty", ruleEgressNoNetwork)))
	}
	return errs
}

// validateCredentials checks what of spec.egress.credentials needs no
// parser of the hosts': one credential a host, the secret's name, and the
// placeholder variables, each a valid name set by one source only. The
// host, header and format are the webhook's (RuleCredentialHost and the
// others).
func validateCredentials(spec *AgentRunSpec, p *field.Path) field.ErrorList {
	creds := spec.Egress.Credentials
	errs := maxItems(p, len(creds), maxCredentials)
	hosts := make(map[string]bool, len(creds))
	placeholders := map[string]int{}
	for i, c := range creds {
		if hosts[c.Host] {
			errs = append(errs, duplicate(p.Index(i).Child("host"), c.Host, "each host has one credential", ruleUniqueCredentialHosts))
		}
		hosts[c.Host] = true
		errs = append(errs, ValidateSecretName(p.Index(i).Child("secretName"), string(c.SecretName))...)
		envPath := p.Index(i).Child("placeholderEnv")
		errs = append(errs, maxItems(envPath, len(c.PlaceholderEnv), maxPlaceholders)...)
		for j, name := range c.PlaceholderEnv {
			errs = append(errs, validatePlaceholder(spec, envPath.Index(j), name)...)
			if first, dup := placeholders[name]; dup {
				errs = append(errs, duplicate(envPath.Index(j), name,
					fmt.Sprintf("the variable is already a placeholder of credentials[%d]", first), ruleOneSource))
				continue
			}
			placeholders[name] = i
		}
	}
	return errs
}

// validatePlaceholder holds a placeholder variable to secretsEnv's rules
// for a name, and refuses a variable spec.podman sets too.
func validatePlaceholder(spec *AgentRunSpec, p *field.Path, name string) field.ErrorList {
	if tooLong := maxLength(p, name, maxPlaceholderLength); tooLong != nil {
		return tooLong
	}
	errs := ValidateEnvName(p, name)
	_, inEnv := spec.Podman.Env[name]
	_, inSecrets := spec.Podman.SecretsEnv[name]
	if inEnv || inSecrets {
		errs = append(errs, field.Invalid(p, name, Rule(
			"the variable is also set in spec.podman.env or secretsEnv: a variable has one source", ruleOneSource)))
	}
	return errs
}

func duplicate(p *field.Path, value any, message, rule string) *field.Error {
	dup := field.Duplicate(p, value)
	dup.Detail = Rule(message, rule)
	return dup
}

func validateAbsoluteCleanPath(p *field.Path, value string) field.ErrorList {
	if !strings.HasPrefix(value, "/") {
		return field.ErrorList{field.Invalid(p, value, Rule("must be an absolute path", ruleAbsolutePaths))}
	}
	if path.Clean(value) != value {
		return field.ErrorList{field.Invalid(p, value, Rule("must be a clean path, without '..', '.', '//' or a trailing '/'", ruleCleanPaths))}
	}
	return nil
}

func validatePodman(spec *PodmanSpec, p *field.Path) field.ErrorList {
	var errs field.ErrorList

	secretsPath := p.Child("secretsEnv")
	if n := len(spec.SecretsEnv); n > MaxSecretsPerRun {
		errs = append(errs, field.Invalid(secretsPath, n, Rule(fmt.Sprintf("at most %d secrets per run", MaxSecretsPerRun), ruleMaxPerRun)))
	}
	for _, name := range sortedKeys(spec.SecretsEnv) {
		keyPath := secretsPath.Key(name)
		errs = append(errs, ValidateEnvName(keyPath, name)...)
		errs = append(errs, ValidateSecretName(keyPath, string(spec.SecretsEnv[name]))...)
	}

	envPath := p.Child("env")
	if n := len(spec.Env); n > maxEnvVars {
		errs = append(errs, field.Invalid(envPath, n, Rule(fmt.Sprintf("at most %d variables", maxEnvVars), ruleSizeLimits)))
	}
	for _, name := range sortedKeys(spec.Env) {
		keyPath := envPath.Key(name)
		errs = append(errs, ValidateEnvName(keyPath, name)...)
		errs = append(errs, maxLength(keyPath, string(spec.Env[name]), maxEnvValueLength)...)
		if _, dup := spec.SecretsEnv[name]; dup {
			errs = append(errs, field.Invalid(keyPath, name, Rule("a variable may be set in env or in secretsEnv, not both", ruleOneSource)))
		}
	}

	volumesPath := p.Child("volumes")
	errs = append(errs, maxItems(volumesPath, len(spec.Volumes), maxVolumes)...)
	mounted := map[string]int{}
	for i, entry := range spec.Volumes {
		if tooLong := maxLength(volumesPath.Index(i), entry, maxVolumeLength); tooLong != nil {
			errs = append(errs, tooLong...)
			continue
		}
		v, err := ParseVolume(entry)
		if err != nil {
			errs = append(errs, field.Invalid(volumesPath.Index(i), entry, err.Error()))
			continue
		}
		if first, dup := mounted[v.ContainerPath]; dup {
			errs = append(errs, field.Invalid(volumesPath.Index(i), entry,
				Rule(fmt.Sprintf("container path %s is already mounted by volumes[%d]", v.ContainerPath, first), ruleUniqueMountPaths)))
			continue
		}
		mounted[v.ContainerPath] = i
	}

	errs = append(errs, maxLength(p.Child("memory"), spec.Memory, maxMemoryLength)...)
	errs = append(errs, matchPattern(p.Child("memory"), spec.Memory, memoryPattern,
		"memory must be a number with an optional unit b, k, m or g, such as 512m", ruleMemoryFormat)...)
	errs = append(errs, validateCPUs(p.Child("cpus"), spec.CPUs)...)
	errs = append(errs, maxLength(p.Child("network"), spec.Network, maxNetworkNameLength)...)
	errs = append(errs, matchPattern(p.Child("network"), spec.Network, networkNamePattern,
		"network names must start with a letter or digit and contain only letters, digits, '_', '.' and '-'", ruleNetworkName)...)
	return errs
}

func validateCPUs(p *field.Path, cpus string) field.ErrorList {
	errs := maxLength(p, cpus, maxCPUsLength)
	if format := matchPattern(p, cpus, cpusPattern, "cpus must be a decimal number such as 1 or 0.5", ruleCPUsFormat); format != nil {
		return append(errs, format...)
	}
	if n, err := strconv.ParseFloat(cpus, 64); cpus != "" && (err != nil || n <= 0) {
		errs = append(errs, field.Invalid(p, cpus, Rule("cpus must be greater than 0", rulePositiveCPUs)))
	}
	return errs
}

// maxLength refuses a value longer than n characters. The value is not
// repeated in the error: it may be long.
func maxLength(p *field.Path, value string, n int) field.ErrorList {
	if l := utf8.RuneCountInString(value); l > n {
		return field.ErrorList{field.Invalid(p, fmt.Sprintf("%d characters", l), Rule(fmt.Sprintf("must be at most %d characters", n), ruleSizeLimits))}
	}
	return nil
}

// noControlCharacters refuses a value holding a control character (C0, DEL
// or C1, as unicode.IsControl has them, and the CRD's rule): such a value
// reaches status messages, events and the terminal of whoever runs kubectl
// agentrun describe, where an escape sequence could rewrite what they see.
// (field.Error quotes the value, so its controls show escaped.)
func noControlCharacters(p *field.Path, value string) field.ErrorList {
	if !strings.ContainsFunc(value, unicode.IsControl) {
		return nil
	}
	return field.ErrorList{field.Invalid(p, value, Rule("must not contain control characters", ruleNoControlChars))}
}

// maxItems refuses a list of more than n items.
func maxItems(p *field.Path, items, n int) field.ErrorList {
	if items > n {
		return field.ErrorList{field.Invalid(p, items, Rule(fmt.Sprintf("at most %d items", n), ruleSizeLimits))}
	}
	return nil
}

// matchPattern refuses a value set but not matching pattern. An empty value
// is the field unset: the typed spec cannot tell them apart.
func matchPattern(p *field.Path, value string, pattern *regexp.Regexp, message, ruleName string) field.ErrorList {
	if value == "" || pattern.MatchString(value) {
		return nil
	}
	return field.ErrorList{field.Invalid(p, value, Rule(message, ruleName))}
}

// ValidateEnvName applies the reference API's env var rules (format, blocked
// vars) and ours (reserved vars) to one variable name.
func ValidateEnvName(p *field.Path, name string) field.ErrorList {
	switch {
	case !envNamePattern.MatchString(name):
		return field.ErrorList{field.Invalid(p, name, Rule("env var names must start with a letter or underscore and contain only [A-Za-z0-9_]", ruleEnvVarFormat))}
	case slices.Contains(blockedEnvVars, name):
		return field.ErrorList{field.Forbidden(p, Rule(name+" is not allowed: it would load code into the agent's processes", ruleBlockedVars))}
	case name == PromptEnvVar:
		return field.ErrorList{field.Forbidden(p, Rule(PromptEnvVar+" is set by the controller", ruleReservedVars))}
	}
	return nil
}

// ValidateSecretName applies the reference API's secret name rule (non-empty,
// at most 253 characters) and Podman's name pattern (secretNamePattern) to
// the secret named at p, for the webhook to check new runs and for the
// controller to check a name before it passes it to Podman, whose --secret
// flag is comma-separated: a comma could smuggle in extra options.
func ValidateSecretName(p *field.Path, name string) field.ErrorList {
	switch {
	case name == "":
		return field.ErrorList{field.Required(p, Rule("secret names must be non-empty", ruleSecretName))}
	case len(name) > MaxSecretNameLength:
		return field.ErrorList{field.Invalid(p, fmt.Sprintf("%d characters", len(name)),
			Rule(fmt.Sprintf("secret names must be at most %d characters", MaxSecretNameLength), ruleSecretName))}
	case !secretNamePattern.MatchString(name):
		return field.ErrorList{field.Invalid(p, name,
			Rule("secret names must start with a letter or digit and contain only letters, digits, '_', '.' and '-'", rulePodmanSecretName))}
	}
	return nil
}

// Rule appends the rule's name to a message, as every validation message
// ends (the webhook's RuleEgressName too).
func Rule(message, name string) string {
	return fmt.Sprintf("%s (rule: %s)", message, name)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
