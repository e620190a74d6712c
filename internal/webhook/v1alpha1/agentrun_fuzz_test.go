package v1alpha1_test

// Fuzz targets holding the webhook against the CRD: every input is admitted
// twice, once by AgentRunValidator (after decoding it as the webhook server
// does) and once by the generated CRD's schema and CEL rules evaluated with the
// API server's own libraries (internal/testing/crdvalidation), and the two must
// agree on accept or reject, but for the disagreements listed, with their
// reasons, in agentrun_disagreements_test.go. make test runs the seed corpus
// (testdata/fuzz); make fuzz runs each target for FUZZTIME.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/apimachinery/pkg/util/validation/field"
	sigsjson "sigs.k8s.io/json"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
	"github.com/agentrun/agentrun/internal/testing/crdvalidation"
	webhookv1alpha1 "github.com/agentrun/agentrun/internal/webhook/v1alpha1"
)

// crdFile is the generated CRD, read at test time so that a CRD left stale by
// a marker change is what gets fuzzed, and fails.
const crdFile = "../../../config/crd/bases/agents.agentrun.dev_agentruns.yaml"

var (
	crdOnce      sync.Once
	crdValidator *crdvalidation.Validator
	crdLoadErr   error
)

func loadCRD(t *testing.T) *crdvalidation.Validator {
	t.Helper()
	crdOnce.Do(func() {
		crdValidator, crdLoadErr = crdvalidation.LoadFile(crdFile, agentsv1alpha1.GroupVersion.Version)
	})
	if crdLoadErr != nil {
		t.Fatal(crdLoadErr)
	}
	return crdValidator
}

// Bits of specInput.Mask: which optional parts of the spec are written.
const (
	withEnv          = 1 << iota // podman.env {Key: Value}
	withSecret                   // podman.secretsEnv {TOKEN: Secret}
	withSecretKey                // the secretsEnv variable is Key, not TOKEN
	withVolume1                  // podman.volumes has Volume1
	withVolume2                  // and Volume2
	withPodman                   // podman is written even when it holds nothing
	withMemory                   // podman.memory, even ""
	withCPUs                     // podman.cpus, even ""
	withNetwork                  // podman.network, even ""
	withExpression               // hostSelector.matchExpressions [{SelectorKey, SelectorOperator, [SelectorValue]}]
	withLabels                   // hostSelector.matchLabels {SelectorKey: SelectorValue}
	withBackoffLimit             // backoffLimit
	withTTL                      // ttlSecondsAfterFinished
	withTimeout                  // timeout, as written, even ""
	withCommand                  // command [Command]
	withCancel                   // cancel: true
	withWorkdir                  // workdir, even ""
	withImage                    // image, even ""
	withHostName                 // hostName, even ""
	withLongPrompt               // Prompt repeated to about 64 Ki characters
	withExtraEnv                 // Extra more env variables
	withExtraSecrets             // Extra more secrets
	withExtraVolumes             // Extra more volumes
	withExtraCommand             // Extra more command arguments
	withClaudeModel              // claude.model Value
	withClaudeBudget             // claude.maxBudgetUSD Memory
	withClaudeTools              // claude.allowedTools [Secret]
	withClaudeMode               // claude.permissionMode SelectorValue
	withClaudeTurns              // claude.maxTurns BackoffLimit
	withNotify                   // notify {url: Timeout, secretName: Secret}
	withContinueFrom             // continueFrom HostName
	withFork                     // fork: true
	withEgress                   // egress.allow [Value]
	withExtraEgress              // egress.allow, Extra more names
)

// specInput is a run as the fuzzer builds it: a few strings and numbers put
// in place in a spec, and Mask saying which optional parts are present. It
// builds the JSON a client sends, not a typed AgentRun, so that what the
// typed client never writes (an explicit "", a timeout spelled "90m") is
// fuzzed too.
type specInput struct {
	Mask                                         uint64
	Extra                                        uint8
	Prompt, Workdir, Image, HostName             string
	Key, Value, Secret, Volume1, Volume2         string
	Memory, CPUs, Network, Timeout               string
	BackoffLimit, TTL                            int64
	SelectorKey, SelectorOperator, SelectorValue string
	Command                                      string
}

func (in specInput) has(bit uint64) bool { return in.Mask&bit != 0 }

// object returns the AgentRun as the API server holds it after decoding the
// request: JSON-decoded, so strings are valid UTF-8 and integers int64.
func (in specInput) object() map[string]any {
	spec := map[string]any{"prompt": in.prompt()}
	for _, s := range []struct {
		bit         uint64
		key         string
		value       any
		inPodmanMap bool
	}{
		{withWorkdir, "workdir", in.Workdir, false},
		{withImage, "image", in.Image, false},
		{withHostName, "hostName", in.HostName, false},
		{withTimeout, "timeout", in.Timeout, false},
		{withBackoffLimit, "backoffLimit", in.BackoffLimit, false},
		{withTTL, "ttlSecondsAfterFinished", in.TTL, false},
		{withCancel, "cancel", true, false},
		{withContinueFrom, "continueFrom", in.HostName, false},
		{withFork, "fork", true, false},
	} {
		if in.has(s.bit) {
			spec[s.key] = s.value
		}
	}
	if in.has(withCommand) || in.has(withExtraCommand) {
		command := []any{}
		if in.has(withCommand) {
			command = append(command, in.Command)
		}
		command = append(command, in.extras(withExtraCommand, func(int) any { return "arg" })...)
		spec["command"] = command
	}
	if selector := in.selector(); selector != nil {
		spec["hostSelector"] = selector
	}
	if claude := in.claude(); claude != nil {
		spec["claude"] = claude
	}
	if in.has(withNotify) {
		spec["notify"] = map[string]any{"url": in.Timeout, "secretName": in.Secret}
	}
	if in.has(withEgress) || in.has(withExtraEgress) {
		allow := []any{}
		if in.has(withEgress) {
			allow = append(allow, in.Value)
		}
		allow = append(allow, in.extras(withExtraEgress, func(i int) any { return fmt.Sprintf("n%d.example.test", i) })...)
		spec["egress"] = map[string]any{"allow": allow}
	}
	if podman := in.podman(); len(podman) > 0 || in.has(withPodman) {
		spec["podman"] = podman
	}
	return decoded(map[string]any{
		"apiVersion": agentsv1alpha1.GroupVersion.String(),
		"kind":       "AgentRun",
		"metadata":   map[string]any{"name": "fuzz", "namespace": "default"},
		"spec":       spec,
	})
}

// claude reuses the inputs of other fields for Claude Code's options, so
// that the seed corpus keeps its shape.
func (in specInput) claude() map[string]any {
	var claude map[string]any
	for _, c := range []struct {
		bit   uint64
		key   string
		value any
	}{
		{withClaudeModel, "model", in.Value},
		{withClaudeBudget, "maxBudgetUSD", in.Memory},
		{withClaudeTools, "allowedTools", []any{in.Secret}},
		{withClaudeMode, "permissionMode", in.SelectorValue},
		{withClaudeTurns, "maxTurns", in.BackoffLimit},
	} {
		if in.has(c.bit) {
			if claude == nil {
				claude = map[string]any{}
			}
			claude[c.key] = c.value
		}
	}
	return claude
}

func (in specInput) prompt() string {
	n := utf8.RuneCountInString(in.Prompt)
	if !in.has(withLongPrompt) || n == 0 {
		return in.Prompt
	}
	// Close to the 65536 limit: over it when Extra is odd.
	return strings.Repeat(in.Prompt, agentsv1alpha1.MaxPromptLength/n+int(in.Extra%2))
}

func (in specInput) podman() map[string]any {
	podman := map[string]any{}
	if in.has(withEnv) || in.has(withExtraEnv) {
		env := in.extraMap(withExtraEnv, "x")
		if in.has(withEnv) {
			env[in.Key] = in.Value
		}
		podman["env"] = env
	}
	if in.has(withSecret) || in.has(withExtraSecrets) {
		secrets := in.extraMap(withExtraSecrets, "tok")
		if in.has(withSecret) {
			key := "TOKEN"
			if in.has(withSecretKey) {
				key = in.Key
			}
			secrets[key] = in.Secret
		}
		podman["secretsEnv"] = secrets
	}
	if in.has(withVolume1) || in.has(withVolume2) || in.has(withExtraVolumes) {
		volumes := []any{}
		for _, v := range []struct {
			bit   uint64
			value string
		}{{withVolume1, in.Volume1}, {withVolume2, in.Volume2}} {
			if in.has(v.bit) {
				volumes = append(volumes, v.value)
			}
		}
		volumes = append(volumes, in.extras(withExtraVolumes, func(i int) any { return fmt.Sprintf("/extra/%d:/extra/%d", i, i) })...)
		podman["volumes"] = volumes
	}
	for _, s := range []struct {
		bit        uint64
		key, value string
	}{{withMemory, "memory", in.Memory}, {withCPUs, "cpus", in.CPUs}, {withNetwork, "network", in.Network}} {
		if in.has(s.bit) {
			podman[s.key] = s.value
		}
	}
	return podman
}

func (in specInput) selector() map[string]any {
	if !in.has(withExpression) && !in.has(withLabels) {
		return nil
	}
	selector := map[string]any{}
	if in.has(withExpression) {
		expr := map[string]any{"key": in.SelectorKey, "operator": in.SelectorOperator}
		if in.SelectorValue != "" {
			expr["values"] = []any{in.SelectorValue}
		}
		selector["matchExpressions"] = []any{expr}
	}
	if in.has(withLabels) {
		selector["matchLabels"] = map[string]any{in.SelectorKey: in.SelectorValue}
	}
	return selector
}

// extras returns Extra generated entries when bit is set.
func (in specInput) extras(bit uint64, entry func(int) any) []any {
	if !in.has(bit) {
		return nil
	}
	out := make([]any, int(in.Extra))
	for i := range out {
		out[i] = entry(i)
	}
	return out
}

func (in specInput) extraMap(bit uint64, value string) map[string]any {
	m := map[string]any{}
	for i := range in.extras(bit, func(int) any { return nil }) {
		m[fmt.Sprintf("EXTRA_%d", i)] = value
	}
	return m
}

// decoded returns obj as the API server's JSON decoder yields it.
func decoded(obj map[string]any) map[string]any {
	data, err := json.Marshal(obj)
	if err != nil {
		panic(err)
	}
	var out map[string]any
	if err := utiljson.Unmarshal(data, &out); err != nil {
		panic(err)
	}
	return out
}

// verdict is one admission of an object by the webhook and by the CRD.
type verdict struct {
	obj, old map[string]any // old is nil for a create
	// webhookErrs are the webhook's refusals, as field and message; a
	// request the webhook server cannot decode is one entry with no field.
	webhookErrs []metav1.StatusCause
	crdErrs     field.ErrorList
}

// admit runs both validations. It fails t when a webhook refusal does not
// name its field and end with its rule's name.
func admit(t *testing.T, obj, old map[string]any) verdict {
	t.Helper()
	v := verdict{obj: obj, old: old}
	crd := loadCRD(t)
	newObj := decoded(obj)
	crd.Admit(newObj)
	if old == nil {
		v.crdErrs = crd.ValidateCreate(context.Background(), newObj)
	} else {
		oldObj := decoded(old)
		crd.Admit(oldObj)
		v.crdErrs = crd.ValidateUpdate(context.Background(), newObj, oldObj)
	}

	var oldRun *agentsv1alpha1.AgentRun
	if old != nil {
		var err error
		if oldRun, err = decodeRun(old); err != nil {
			// Neither the webhook nor the controller could read such a
			// stored run (a timeout Go cannot parse): nothing to compare.
			t.Skipf("the stored run does not decode: %v", err)
		}
	}
	run, err := decodeRun(obj)
	if err != nil {
		v.webhookErrs = []metav1.StatusCause{{Message: "decoding: " + err.Error()}}
		return v
	}
	validator := &webhookv1alpha1.AgentRunValidator{}
	if old == nil {
		_, err = validator.ValidateCreate(context.Background(), run)
	} else {
		_, err = validator.ValidateUpdate(context.Background(), oldRun, run)
	}
	if err == nil {
		return v
	}
	var status *apierrors.StatusError
	if !apierrors.IsInvalid(err) || !errors.As(err, &status) || status.ErrStatus.Details == nil {
		t.Fatalf("the webhook refused with %T %v, want an Invalid error with causes", err, err)
	}
	for _, c := range status.ErrStatus.Details.Causes {
		if c.Field == "" || ruleOf(c.Message) == "" {
			t.Errorf("webhook refusal %q at %q: want a field and a message ending with (rule: NAME)", c.Message, c.Field)
		}
	}
	v.webhookErrs = status.ErrStatus.Details.Causes
	return v
}

// decodeRun decodes obj as the webhook server's decoder does (case-sensitive
// JSON into the typed AgentRun).
func decodeRun(obj map[string]any) (*agentsv1alpha1.AgentRun, error) {
	data, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	run := &agentsv1alpha1.AgentRun{}
	return run, sigsjson.UnmarshalCaseSensitivePreserveInts(data, run)
}

var ruleSuffix = regexp.MustCompile(`\(rule: ([^()]+)\)$`)

// ruleOf returns the rule a message ends with, or "".
func ruleOf(message string) string {
	if m := ruleSuffix.FindStringSubmatch(message); m != nil {
		return m[1]
	}
	return ""
}

// requireAgreement fails t unless the webhook and the CRD both accept or both
// refuse v's object, or the disagreement is one listed in disagreementsByDesign.
func requireAgreement(t *testing.T, v verdict) {
	t.Helper()
	webhookOK, crdOK := len(v.webhookErrs) == 0, len(v.crdErrs) == 0
	if webhookOK == crdOK {
		return
	}
	var unexplained []string
	if crdOK {
		for _, c := range v.webhookErrs {
			if byDesignWebhookOnly(v, c) == nil {
				unexplained = append(unexplained, fmt.Sprintf("webhook only: %s: %s", c.Field, c.Message))
			}
		}
	} else {
		for _, e := range v.crdErrs {
			if byDesignCRDOnly(v, e) == nil {
				unexplained = append(unexplained, "CRD only: "+e.Error())
			}
		}
	}
	if len(unexplained) > 0 {
		t.Errorf("the webhook and the CRD disagree, and the disagreement is not listed in disagreementsByDesign:\n  %s\nobject: %s\nold: %s",
			strings.Join(unexplained, "\n  "), mustJSON(v.obj), mustJSON(v.old))
	}
}

func mustJSON(obj map[string]any) string {
	if obj == nil {
		return "none"
	}
	data, _ := json.Marshal(obj)
	return string(data)
}

// FuzzRuleFunctions fuzzes the rule functions one value at a time: an env var
// name, a secret name, a volume entry and an entry of spec.egress.allow.
// Each function must not panic, must end each message with its rule, and
// must agree with the CRD on a run that holds the value and is otherwise
// valid.
func FuzzRuleFunctions(f *testing.F) {
	f.Add("GH_TOKEN", "github-token", "/home/user/repo:/workspace:ro,Z", "*.githubusercontent.com:443")
	f.Fuzz(func(t *testing.T, name, secret, volume, egressName string) {
		// The API server only ever sees valid UTF-8: JSON decoding replaces
		// the rest, so the functions are held to what it decodes.
		name, secret, volume, egressName = validUTF8(name), validUTF8(secret), validUTF8(volume), validUTF8(egressName)

		p := field.NewPath("spec", "podman", "env").Key(name)
		for _, errs := range []field.ErrorList{
			agentsv1alpha1.ValidateEnvName(p, name),
			agentsv1alpha1.ValidateSecretName(p, secret),
		} {
			for _, e := range errs {
				if e.Field != p.String() || ruleOf(e.Detail) == "" {
					t.Errorf("%v: want field %s and a message ending with (rule: NAME)", e, p)
				}
			}
		}
		vol, err := agentsv1alpha1.ParseVolume(volume)
		switch {
		case err != nil && ruleOf(err.Error()) == "":
			t.Errorf("ParseVolume(%q): %v: want a message ending with (rule: NAME)", volume, err)
		case err == nil && formatVolume(vol) != volume:
			t.Errorf("ParseVolume(%q) = %+v, which reads back as %q", volume, vol, formatVolume(vol))
		}

		for _, in := range []specInput{
			{Mask: withEnv, Prompt: "p", Key: name, Value: "x"},
			{Mask: withSecret | withSecretKey, Prompt: "p", Key: name, Secret: "tok"},
			{Mask: withSecret, Prompt: "p", Secret: secret},
			{Mask: withVolume1, Prompt: "p", Volume1: volume},
			{Mask: withEgress, Prompt: "p", Value: egressName},
		} {
			requireAgreement(t, admit(t, in.object(), nil))
		}
	})
}

func validUTF8(s string) string {
	var out string
	if err := json.Unmarshal([]byte(mustMarshal(s)), &out); err != nil {
		panic(err)
	}
	return out
}

func mustMarshal(v any) string {
	data, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(data)
}

func formatVolume(v agentsv1alpha1.Volume) string {
	s := v.HostPath + ":" + v.ContainerPath
	if len(v.Options) > 0 {
		s += ":" + strings.Join(v.Options, ",")
	}
	return s
}

// FuzzAgentRunCreate fuzzes whole runs being created.
func FuzzAgentRunCreate(f *testing.F) {
	f.Add(uint64(withSecret|withVolume1|withWorkdir), uint8(0), "Review the open PRs using gh CLI", "/workspace", "", "",
		"", "", "github-token", "/home/user/myrepo:/workspace", "", "", "", "", "", int64(0), int64(0), "", "", "", "")
	f.Add(uint64(withClaudeModel|withClaudeBudget|withClaudeTools|withClaudeMode|withClaudeTurns), uint8(0), "Fix the bug", "", "", "",
		"", "claude-sonnet-4-5", "Bash(git diff:*)", "", "", "0.50", "", "", "", int64(30), int64(0), "", "", "acceptEdits", "")
	f.Add(uint64(withNotify), uint8(0), "Report back", "", "", "",
		"", "", "hook-key", "", "", "", "", "", "http://127.0.0.1:8080/done", int64(0), int64(0), "", "", "", "")
	f.Fuzz(func(t *testing.T, mask uint64, extra uint8, prompt, workdir, image, hostName,
		key, value, secret, volume1, volume2, memory, cpus, network, timeout string,
		backoffLimit, ttl int64, selectorKey, selectorOperator, selectorValue, command string,
	) {
		in := specInput{mask, extra, prompt, workdir, image, hostName, key, value, secret, volume1, volume2,
			memory, cpus, network, timeout, backoffLimit, ttl, selectorKey, selectorOperator, selectorValue, command}
		requireAgreement(t, createAdmission(t, in))
	})
}

// createAdmission admits the run in as created.
func createAdmission(t *testing.T, in specInput) verdict {
	t.Helper()
	return admit(t, in.object(), nil)
}

// The changes FuzzAgentRunUpdate makes to a stored run, chosen by its change
// argument; newValue is the value written.
var specChanges = []func(spec map[string]any, newValue string){
	func(map[string]any, string) {}, // spec.cancel only
	func(s map[string]any, v string) { s["prompt"] = v },
	func(s map[string]any, v string) { s["workdir"] = v },
	func(s map[string]any, v string) { s["image"] = v },
	func(s map[string]any, v string) { s["hostName"] = v },
	func(s map[string]any, v string) { s["timeout"] = v },
	func(s map[string]any, v string) { s["command"] = []any{v} },
	func(s map[string]any, v string) { s["backoffLimit"] = int64(len(v)) },
	func(s map[string]any, v string) { s["ttlSecondsAfterFinished"] = int64(len(v)) },
	func(s map[string]any, v string) {
		s["hostSelector"] = map[string]any{"matchLabels": map[string]any{"k": v}}
	},
	func(s map[string]any, v string) { delete(s, v) },
	func(s map[string]any, v string) { podmanOf(s)["memory"] = v },
	func(s map[string]any, v string) { podmanOf(s)["cpus"] = v },
	func(s map[string]any, v string) { podmanOf(s)["network"] = v },
	func(s map[string]any, v string) { podmanOf(s)["volumes"] = []any{v} },
	func(s map[string]any, v string) { mapOf(podmanOf(s), "env")[v] = "x" },
	func(s map[string]any, v string) { mapOf(podmanOf(s), "secretsEnv")["TOKEN"] = v },
	func(s map[string]any, v string) { delete(podmanOf(s), v) },
	func(s map[string]any, v string) { s["claude"] = map[string]any{"model": v} },
	func(s map[string]any, v string) { s["notify"] = map[string]any{"url": v, "secretName": "k"} },
	func(s map[string]any, v string) { s["egress"] = map[string]any{"allow": []any{v}} },
}

func podmanOf(spec map[string]any) map[string]any { return mapOf(spec, "podman") }

func mapOf(parent map[string]any, key string) map[string]any {
	m, ok := parent[key].(map[string]any)
	if !ok {
		m = map[string]any{}
		parent[key] = m
	}
	return m
}

// FuzzAgentRunUpdate fuzzes updates of a stored run: one change to its spec
// (specChanges) and spec.cancel set, cleared or removed. The stored run is
// not required to pass today's create rules, as a run stored under older ones
// would not.
func FuzzAgentRunUpdate(f *testing.F) {
	f.Add(uint64(withSecret|withVolume1|withWorkdir), uint8(0), "Review the open PRs using gh CLI", "/workspace", "", "",
		"", "", "github-token", "/home/user/myrepo:/workspace", "", "", "", "", "", int64(0), int64(0), "", "", "", "",
		uint8(0), "", uint8(1))
	f.Fuzz(func(t *testing.T, mask uint64, extra uint8, prompt, workdir, image, hostName,
		key, value, secret, volume1, volume2, memory, cpus, network, timeout string,
		backoffLimit, ttl int64, selectorKey, selectorOperator, selectorValue, command string,
		change uint8, newValue string, newCancel uint8,
	) {
		in := specInput{mask, extra, prompt, workdir, image, hostName, key, value, secret, volume1, volume2,
			memory, cpus, network, timeout, backoffLimit, ttl, selectorKey, selectorOperator, selectorValue, command}
		requireAgreement(t, updateAdmission(t, in, change, newValue, newCancel))
	})
}

// updateAdmission admits an update of the stored run in: the change to its
// spec chosen by change, writing newValue, and spec.cancel removed, set or
// cleared by newCancel.
func updateAdmission(t *testing.T, in specInput, change uint8, newValue string, newCancel uint8) verdict {
	t.Helper()
	old := in.object()
	obj := decoded(old)
	spec := obj["spec"].(map[string]any)
	specChanges[int(change)%len(specChanges)](spec, newValue)
	switch newCancel % 3 {
	case 0:
		delete(spec, "cancel")
	case 1:
		spec["cancel"] = true
	case 2:
		spec["cancel"] = false
	}
	return admit(t, decoded(obj), old)
}
