package v1alpha1_test

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// Each seed of the fuzz targets is an example of a rule, and what each side
// must say of it is written here: the fuzz targets only require the two
// sides to agree (or to disagree as listed), so a rule dropped from the
// webhook goes unnoticed wherever an exemption or the CRD covers it (the
// webhook's prompt rule did). "ok" accepts, "refused" refuses.
type seedVerdict struct{ webhook, crd string }

var (
	bothAccept         = seedVerdict{"ok", "ok"}
	bothRefuse         = seedVerdict{"refused", "refused"}
	onlyCRDRefuses     = seedVerdict{"ok", "refused"}
	onlyWebhookRefuses = seedVerdict{"refused", "ok"}
)

var seedVerdicts = map[string]map[string]seedVerdict{
	"FuzzAgentRunCreate": {
		"backoff-21":                    bothRefuse,
		"backoff-negative":              bothRefuse,
		"command-65":                    bothRefuse,
		"command-arg-too-long":          bothRefuse,
		"cpus-leading-dot":              bothAccept,
		"egress-100":                    bothAccept,
		"egress-101":                    bothRefuse,
		"egress-allowed":                bothAccept,
		"egress-duplicate":              bothRefuse,
		"egress-empty-list":             bothAccept,
		"egress-inner-wildcard":         bothRefuse,
		"egress-ip":                     bothRefuse,
		"egress-ip-port":                bothRefuse,
		"egress-ipv6":                   bothRefuse,
		"egress-label-64":               bothRefuse,
		"egress-last-label-digits":      bothRefuse,
		"egress-name-253-wildcard-port": bothAccept,
		"egress-name-254":               bothRefuse,
		"egress-port-65535":             bothAccept,
		"egress-port-65536":             bothRefuse,
		"egress-port-leading-zero":      bothRefuse,
		"egress-upper-case":             bothRefuse,
		"egress-url":                    bothRefuse,
		"egress-with-network":           bothRefuse,
		"cpus-zero":                     bothRefuse,
		"empty-podman":                  bothAccept,
		"env-129":                       bothRefuse,
		"env-and-secret":                bothRefuse,
		"env-value-too-long":            bothRefuse,
		"hostname-empty":                onlyCRDRefuses,
		"hostname-pattern":              bothRefuse,
		"image-c1-control":              bothRefuse,
		"image-control-characters":      bothRefuse,
		"image-multibyte-512-chars":     bothAccept,
		"image-too-long":                bothRefuse,
		"memory-empty":                  onlyCRDRefuses,
		"memory-pattern":                bothRefuse,
		"network-pattern":               bothRefuse,
		"notify-url-control-characters": bothRefuse,
		"prompt-65537-chars":            bothRefuse,
		"prompt-empty":                  bothRefuse,
		"prompt-multibyte-65536-chars":  onlyWebhookRefuses,
		"reference":                     bothAccept,
		"secrets-51":                    bothRefuse,
		"selector-bad-key":              onlyWebhookRefuses,
		"selector-bad-operator":         bothRefuse,
		"selector-exists-with-values":   bothRefuse,
		"selector-in-without-values":    bothRefuse,
		"timeout-90m":                   bothAccept,
		"timeout-overflow":              bothRefuse,
		"timeout-plus-sign":             onlyCRDRefuses,
		"timeout-zero":                  bothRefuse,
		"ttl-negative":                  bothRefuse,
		"ttl-over-int32":                bothRefuse,
		"volume-root-and-clash":         onlyWebhookRefuses,
		"volume-same-container-path":    bothRefuse,
		"volume-too-long":               bothRefuse,
		"volumes-33":                    bothRefuse,
		"workdir-too-long":              bothRefuse,
	},
	"FuzzEgressCredential": {
		"anthropic-x-api-key":               bothAccept,
		"format-256":                        bothAccept,
		"format-257":                        bothRefuse,
		"format-base64-unclosed":            bothRefuse,
		"format-base64-without-placeholder": bothRefuse,
		"format-braces":                     bothRefuse,
		"format-crlf-header":                bothRefuse,
		"format-empty":                      onlyCRDRefuses,
		"format-function-name-prefixed":     bothRefuse,
		"format-newline":                    bothRefuse,
		"format-no-placeholder":             bothRefuse,
		"format-non-ascii":                  bothRefuse,
		"format-two-placeholders":           bothRefuse,
		"format-unknown-function":           bothRefuse,
		"format-value-as-user":              bothAccept,
		"github-api-defaults":               bothAccept,
		"github-git-basic":                  bothAccept,
		"header-colon":                      bothRefuse,
		"header-content-length":             bothRefuse,
		"header-empty":                      onlyCRDRefuses,
		"header-proxy-authorization-lower":  bothRefuse,
		"header-token-symbols":              bothAccept,
		"host-allowed-on-other-port":        bothRefuse,
		"host-ip":                           bothRefuse,
		"host-is-wildcard-base":             bothRefuse,
		"host-not-allowed":                  bothRefuse,
		"host-port":                         bothRefuse,
		"host-under-wildcard":               bothAccept,
		"host-under-wildcard-443":           bothAccept,
		"host-under-wildcard-other-port":    bothRefuse,
		"host-upper-case":                   bothRefuse,
		"host-wildcard":                     bothRefuse,
		"placeholder-agent-prompt":          bothRefuse,
		"placeholder-bad-name":              bothRefuse,
		"placeholder-beside-env":            bothAccept,
		"placeholder-in-env":                bothRefuse,
		"placeholder-in-secrets-env":        bothRefuse,
		"placeholder-in-two-credentials":    bothRefuse,
		"placeholder-ld-preload":            bothRefuse,
		"same-host-twice":                   bothRefuse,
		"secret-bad-name":                   bothRefuse,
		"secret-empty":                      bothRefuse,
		"two-credentials":                   bothAccept,
	},
	"FuzzAgentRunUpdate": {
		// stored-timeout-go-cannot-decode has none: its stored run does not decode, and it is skipped.
		"backoff-changed":                     bothRefuse,
		"cancel":                              bothAccept,
		"cancel-cleared":                      bothRefuse,
		"cancel-removed":                      bothRefuse,
		"egress-added":                        bothRefuse,
		"egress-changed":                      bothRefuse,
		"egress-run-cancelled":                bothAccept,
		"env-added":                           bothRefuse,
		"invalid-stored-run-cancelled":        bothAccept,
		"memory-empty-added":                  onlyCRDRefuses,
		"podman-removed":                      onlyCRDRefuses,
		"prompt-changed":                      bothRefuse,
		"secret-changed":                      bothRefuse,
		"timeout-changed":                     bothRefuse,
		"timeout-respelled":                   onlyCRDRefuses,
		"unchanged-run-with-unparseable-cpus": bothAccept,
	},
}

func TestFuzzSeedsHaveTheirVerdicts(t *testing.T) {
	for target, want := range seedVerdicts {
		dir := filepath.Join("testdata", "fuzz", target)
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) == 0 {
			t.Fatalf("%s: no seeds", dir)
		}
		for _, e := range entries {
			t.Run(target+"/"+e.Name(), func(t *testing.T) {
				values, err := readCorpusFile(filepath.Join(dir, e.Name()))
				if err != nil {
					t.Fatal(err)
				}
				v := seedAdmission(t, target, values)
				got := seedVerdict{verdictWord(len(v.webhookErrs) == 0), verdictWord(len(v.crdErrs) == 0)}
				w, listed := want[e.Name()]
				if !listed || got != w {
					t.Errorf("webhook %s, CRD %s; want %+v (listed: %t)\nwebhook: %v\nCRD: %v", got.webhook, got.crd, w, listed, v.webhookErrs, v.crdErrs)
				}
			})
		}
	}
}

func verdictWord(ok bool) string {
	if ok {
		return "ok"
	}
	return "refused"
}

// seedAdmission admits a seed of target as the target does.
func seedAdmission(t *testing.T, target string, values []any) verdict {
	t.Helper()
	if target == "FuzzEgressCredential" {
		var in credentialInput
		fill(t, &in, values)
		return admit(t, in.object(), nil)
	}
	var in specInput
	rest := fill(t, &in, values)
	if target == "FuzzAgentRunCreate" {
		return createAdmission(t, in)
	}
	return updateAdmission(t, in, rest[0].(uint8), rest[1].(string), rest[2].(uint8))
}

// fill sets the fields of the struct in points to from the first values, in
// order, and returns the values left.
func fill(t *testing.T, in any, values []any) []any {
	t.Helper()
	fields := reflect.ValueOf(in).Elem()
	if len(values) < fields.NumField() {
		t.Fatalf("%d values, want at least %d", len(values), fields.NumField())
	}
	for i := range fields.NumField() {
		fields.Field(i).Set(reflect.ValueOf(values[i]))
	}
	return values[fields.NumField():]
}

// readCorpusFile reads a file of Go's fuzzing corpus format (go test fuzz
// v1), with the types the targets here take.
func readCorpusFile(path string) ([]any, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if lines[0] != "go test fuzz v1" {
		return nil, fmt.Errorf("%s: not a corpus file", path)
	}
	var values []any
	for _, line := range lines[1:] {
		kind, literal, ok := strings.Cut(strings.TrimSuffix(line, ")"), "(")
		if !ok {
			return nil, fmt.Errorf("%s: cannot read %q", path, line)
		}
		var v any
		switch kind {
		case "string":
			v, err = strconv.Unquote(literal)
		case "uint8":
			var n uint64
			n, err = strconv.ParseUint(literal, 0, 8)
			v = uint8(n)
		case "byte":
			var r rune
			r, _, _, err = strconv.UnquoteChar(strings.Trim(literal, "'"), '\'')
			v = uint8(r)
		case "uint64":
			v, err = strconv.ParseUint(literal, 0, 64)
		case "int64":
			v, err = strconv.ParseInt(literal, 0, 64)
		default:
			err = fmt.Errorf("type %s", kind)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %q: %w", path, line, err)
		}
		values = append(values, v)
	}
	return values, nil
}
