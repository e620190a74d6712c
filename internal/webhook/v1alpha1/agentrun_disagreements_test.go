package v1alpha1_test

import (
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	agentsv1alpha1 "github.com/agentrun/agentrun/api/v1alpha1"
)

// disagreement is a class of inputs on which the webhook and the CRD's
// schema and CEL rules disagree on purpose. The fuzz targets accept a
// disagreement only when each error of the stricter side belongs to a class
// listed here; docs/validation.md lists the same classes for users.
type disagreement struct {
	class  string
	reason string
	// webhookOnly matches a webhook refusal of an input the CRD accepts.
	webhookOnly func(v verdict, c metav1.StatusCause) bool
	// crdOnly matches a CRD error on an input the webhook accepts.
	crdOnly func(v verdict, e *field.Error) bool
}

var disagreementsByDesign = []disagreement{
	{
		class: "unclean paths (rule: clean paths)",
		reason: "workdir and both sides of a volume must be clean (path.Clean leaves them unchanged: no '..', '.', '//' " +
			"or trailing '/'); CEL has no path functions to say it, and the CRD checks only that they are absolute",
		webhookOnly: func(_ verdict, c metav1.StatusCause) bool { return ruleOf(c.Message) == "clean paths" },
	},
	{
		class:  "a volume mounted at / (rule: volume format)",
		reason: "the container path / would hide the image; the CRD's volume pattern allows it, the webhook does not",
		webhookOnly: func(_ verdict, c metav1.StatusCause) bool {
			return strings.Contains(c.Message, "the container path may not be /")
		},
	},
	{
		class: "two options of one kind on a volume (rule: one option of each kind)",
		reason: "ro with rw, z with Z and the like contradict each other; the CRD checks each option against the list, " +
			"pairs would need a rule per kind",
		webhookOnly: func(_ verdict, c metav1.StatusCause) bool { return ruleOf(c.Message) == "one option of each kind" },
	},
	{
		class: "label selector keys and values (rule: label selector)",
		reason: "the webhook applies metav1's ValidateLabelSelector (qualified-name keys, label values); the CRD's CEL " +
			"rules check only the operators and whether values are given, which is what evaluating the selector needs",
		webhookOnly: func(_ verdict, c metav1.StatusCause) bool {
			return ruleOf(c.Message) == "label selector" &&
				!strings.HasSuffix(c.Field, ".operator") && !strings.HasSuffix(c.Field, ".values")
		},
	},
	{
		class: "a prompt over 65536 bytes but not over 65536 characters (rule: prompt size)",
		reason: "the webhook bounds the prompt in bytes, what the container's argv and environment hold; " +
			"an OpenAPI maxLength counts characters",
		webhookOnly: func(v verdict, c metav1.StatusCause) bool {
			prompt, _ := v.spec()["prompt"].(string)
			return ruleOf(c.Message) == "prompt size" && utf8.RuneCountInString(prompt) <= agentsv1alpha1.MaxPromptLength
		},
	},
	{
		class: "an optional field written as \"\"",
		reason: "the typed AgentRun the webhook decodes cannot tell \"\" from an absent field (omitempty), and treats " +
			"both as unset; the CRD sees the JSON and applies the field's pattern to \"\"",
		crdOnly: func(v verdict, e *field.Error) bool {
			return (slices.Contains(optionalStringFields, e.Field) || credentialDefaulted.MatchString(e.Field)) && valueAt(v.obj, e.Field) == ""
		},
	},
	{
		class: "a timeout spelled outside the CRD's pattern (+5s, 1.s, 5µs)",
		reason: "Go's time.ParseDuration, which decodes the timeout for the webhook, accepts spellings the CRD's " +
			"pattern refuses; the webhook sees only the decoded duration",
		crdOnly: func(v verdict, e *field.Error) bool {
			timeout, _ := v.spec()["timeout"].(string)
			d, err := time.ParseDuration(timeout)
			return e.Field == "spec.timeout" && err == nil && d > 0 && !timeoutPattern.MatchString(timeout)
		},
	},
	{
		class: "an update that changes only how the spec is written (rule: immutable spec)",
		reason: "writing an empty optional field (podman: {}, env: {}, image: \"\") or removing one, or a timeout " +
			"spelled differently (90m for 1h30m), changes the JSON the CRD's transition rules compare but not " +
			"the decoded spec the webhook compares",
		crdOnly: func(v verdict, e *field.Error) bool {
			return v.old != nil && ruleOf(e.Detail) == "immutable spec" && reflect.DeepEqual(canonicalSpec(v.obj), canonicalSpec(v.old))
		},
	},
}

// optionalStringFields are the spec's optional strings (omitempty), which the
// typed AgentRun reads as unset when written as "". spec.prompt is not one:
// "" is no prompt, and both sides must refuse it.
var optionalStringFields = []string{
	"spec.workdir", "spec.image", "spec.hostName", "spec.continueFrom",
	"spec.podman.memory", "spec.podman.cpus", "spec.podman.network",
	"spec.claude.model", "spec.claude.maxBudgetUSD", "spec.claude.permissionMode", "spec.claude.appendSystemPrompt",
}

// credentialDefaulted are a credential's header and format, which the CRD
// defaults when absent: the webhook reads "" as that default.
var credentialDefaulted = regexp.MustCompile(`^spec\.egress\.credentials\[[0-9]+\]\.(header|format)$`)

// timeoutPattern is spec.timeout's pattern in the CRD.
var timeoutPattern = regexp.MustCompile(`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`)

func (v verdict) spec() map[string]any {
	spec, _ := v.obj["spec"].(map[string]any)
	return spec
}

// canonicalSpec returns obj's spec without cancel, with empty values dropped
// and the timeout in Go's spelling: what the webhook's decoded run shows.
func canonicalSpec(obj map[string]any) any {
	spec := decoded(obj)["spec"].(map[string]any)
	delete(spec, "cancel")
	if t, ok := spec["timeout"].(string); ok {
		if d, err := time.ParseDuration(t); err == nil {
			spec["timeout"] = d.String()
		}
	}
	return dropEmpty(spec)
}

func dropEmpty(x any) any {
	switch x := x.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, v := range x {
			if v = dropEmpty(v); v != nil {
				out[k] = v
			}
		}
		if len(out) == 0 {
			return nil
		}
		return out
	case []any:
		if len(x) == 0 {
			return nil
		}
		return x
	case string:
		if x == "" {
			return nil
		}
	case bool:
		if !x {
			return nil
		}
	case int64:
		// backoffLimit and ttlSecondsAfterFinished are pointers: 0 is a value.
	}
	return x
}

// valueAt returns the value at a path of map keys and list indices such as
// spec.podman.memory or spec.egress.credentials[0].format, or nil.
func valueAt(obj map[string]any, path string) any {
	var x any = obj
	for _, step := range strings.Split(path, ".") {
		key, index, indexed := strings.Cut(strings.TrimSuffix(step, "]"), "[")
		m, ok := x.(map[string]any)
		if !ok {
			return nil
		}
		x = m[key]
		if indexed {
			list, _ := x.([]any)
			i, err := strconv.Atoi(index)
			if err != nil || i < 0 || i >= len(list) {
				return nil
			}
			x = list[i]
		}
	}
	return x
}

func byDesignWebhookOnly(v verdict, c metav1.StatusCause) *disagreement {
	for i, d := range disagreementsByDesign {
		if d.webhookOnly != nil && d.webhookOnly(v, c) {
			return &disagreementsByDesign[i]
		}
	}
	return nil
}

func byDesignCRDOnly(v verdict, e *field.Error) *disagreement {
	for i, d := range disagreementsByDesign {
		if d.crdOnly != nil && d.crdOnly(v, e) {
			return &disagreementsByDesign[i]
		}
	}
	return nil
}
