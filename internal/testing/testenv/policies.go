package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// Start starts env's control plane and installs the admission policies of
// config/default in it (InstallAdmissionPolicies), so that suites see what
// `kubectl apply -k config/default` installs besides the CRDs and the
// webhook. It returns the admin's configuration, as env.Start does.
func Start(env *envtest.Environment) (*rest.Config, error) {
	cfg, err := env.Start()
	if err != nil {
		return nil, err
	}
	if err := InstallAdmissionPolicies(cfg); err != nil {
		_ = env.Stop()
		return nil, err
	}
	return cfg, nil
}

// InstallAdmissionPolicies creates the ValidatingAdmissionPolicies of
// config/default and their bindings, rendered by envtest's kubectl
// (kustomize), as the admin cfg. The API server enforces a policy a moment
// after it is created: a suite that depends on one waits for it.
func InstallAdmissionPolicies(cfg *rest.Config) error {
	kubectl := filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl")
	var stderr bytes.Buffer
	cmd := exec.Command(kubectl, "kustomize", filepath.Join(RepoRoot(), "config", "default"))
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("kubectl kustomize config/default: %w: %s", err, stderr.String())
	}
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		return err
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(out), 4096)
	for {
		u := &unstructured.Unstructured{}
		err := dec.Decode(&u.Object)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		kind := u.GetKind()
		if kind != "ValidatingAdmissionPolicy" && kind != "ValidatingAdmissionPolicyBinding" {
			continue
		}
		// Cluster-scoped: kustomize stamped config/default's namespace.
		u.SetNamespace("")
		if err := c.Create(context.Background(), u); err != nil {
			return fmt.Errorf("creating %s %s: %w", kind, u.GetName(), err)
		}
	}
}
