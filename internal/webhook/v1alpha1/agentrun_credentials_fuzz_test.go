package v1alpha1_test

import (
	"strings"
	"testing"
)

// Bits of credentialInput.Mask: which optional parts of the credential and
// its run are written.
const (
	credHeader      = 1 << iota // header Header, even ""
	credFormat                  // format Format, even ""
	credPlaceholder             // placeholderEnv [Placeholder]
	credSecond                  // a second credential, for second.example.test (allowed), with placeholderEnv [Placeholder]
	credEnv                     // podman.env {Env: "x"}
	credSecretEnv               // podman.secretsEnv {Env: "tok"}
)

// credentialInput is a run with one credential as the fuzzer builds it,
// allowed to reach Allow (and second.example.test).
type credentialInput struct {
	Mask                         uint8
	Host, Secret, Header, Format string
	Placeholder, Allow, Env      string
}

func (in credentialInput) has(bit uint8) bool { return in.Mask&bit != 0 }

func (in credentialInput) object() map[string]any {
	cred := map[string]any{"host": in.Host, "secretName": in.Secret}
	if in.has(credHeader) {
		cred["header"] = in.Header
	}
	if in.has(credFormat) {
		cred["format"] = in.Format
	}
	if in.has(credPlaceholder) {
		cred["placeholderEnv"] = []any{in.Placeholder}
	}
	creds := []any{cred}
	allow := []any{in.Allow}
	if in.has(credSecond) {
		creds = append(creds, map[string]any{"host": "second.example.test", "secretName": "second", "placeholderEnv": []any{in.Placeholder}})
		allow = append(allow, "second.example.test")
	}
	spec := map[string]any{"prompt": "p", "egress": map[string]any{"allow": allow, "credentials": creds}}
	podman := map[string]any{}
	if in.has(credEnv) {
		podman["env"] = map[string]any{in.Env: "x"}
	}
	if in.has(credSecretEnv) {
		podman["secretsEnv"] = map[string]any{in.Env: "tok"}
	}
	if len(podman) > 0 {
		spec["podman"] = podman
	}
	return decoded(map[string]any{
		"apiVersion": "agents.agentrun.dev/v1alpha1",
		"kind":       "AgentRun",
		"metadata":   map[string]any{"name": "fuzz", "namespace": "default"},
		"spec":       spec,
	})
}

// FuzzEgressCredential fuzzes one credential of spec.egress.credentials:
// its host against the run's allow list, its header, its format, its
// secret and its placeholder variable, which the webhook checks with the
// proxy's own parsers (credential.ParseFormat above all) and the CRD with
// CEL.
func FuzzEgressCredential(f *testing.F) {
	f.Add(uint8(credHeader|credFormat|credPlaceholder), "github.com", "github-token", "Authorization",
		"Basic base64(x-access-token:{})", "GH_TOKEN", "github.com", "")
	f.Fuzz(func(t *testing.T, mask uint8, host, secret, header, format, placeholder, allow, env string) {
		in := credentialInput{mask, host, secret, header, format, placeholder, allow, env}
		requireAgreement(t, admit(t, in.object(), nil))
	})
}

// The CRD lists the headers a credential may not set in a CEL rule of its
// own, beside credential.CheckHeader's list: every header of HTTP's
// registry that either refuses, in any case, must be refused by both, so
// that a header added to one list and not the other fails here rather than
// waiting for the fuzzer to spell it.
func TestHeadersACredentialMayNotSetAgree(t *testing.T) {
	for _, name := range []string{
		"Accept", "Accept-Encoding", "Accept-Language", "Alt-Svc", "Authorization", "Cache-Control", "Connection",
		"Content-Encoding", "Content-Language", "Content-Length", "Content-Location", "Content-Range", "Content-Type",
		"Cookie", "Date", "Expect", "Forwarded", "From", "Host", "Http2-Settings", "If-Match", "If-None-Match", "Keep-Alive",
		"Max-Forwards", "Origin", "Priority", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Connection", "Range",
		"Referer", "Set-Cookie", "TE", "Trailer", "Transfer-Encoding", "Upgrade", "User-Agent", "Via", "X-Forwarded-For",
	} {
		for _, spelled := range []string{name, strings.ToLower(name), strings.ToUpper(name)} {
			in := credentialInput{Mask: credHeader, Host: "github.com", Secret: "t", Header: spelled, Allow: "github.com"}
			v := admit(t, in.object(), nil)
			if (len(v.webhookErrs) == 0) != (len(v.crdErrs) == 0) {
				t.Errorf("header %s: webhook %v, CRD %v; want both to accept or both to refuse", spelled, v.webhookErrs, v.crdErrs)
			}
		}
	}
}
