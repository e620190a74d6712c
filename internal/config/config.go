// Package config loads the manager's configuration file
// (config.agentrun.dev/v1alpha1 Configuration): strict decoding, defaults,
// validation whose errors name the field path, and the typed settings the
// host and the fleet are built from.
package config

import (
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"

	configv1alpha1 "github.com/agentrun/agentrun/api/config/v1alpha1"
)

var codecs = func() serializer.CodecFactory {
	scheme := runtime.NewScheme()
	if err := configv1alpha1.AddToScheme(scheme); err != nil {
		panic(err)
	}
	// Strict: a misspelt or misplaced field is refused, not ignored. A host
	// policy with "allowedPath:" would otherwise run with none of it.
	return serializer.NewCodecFactory(scheme, serializer.EnableStrict)
}()

// Decode reads a configuration file's content: its apiVersion and kind must
// be config.agentrun.dev/v1alpha1 Configuration, and every field one the type
// has. It neither defaults nor validates.
func Decode(data []byte) (*configv1alpha1.Configuration, error) {
	obj, gvk, err := codecs.UniversalDeserializer().Decode(data, nil, nil)
	if err != nil {
		return nil, err
	}
	cfg, ok := obj.(*configv1alpha1.Configuration)
	if !ok {
		return nil, fmt.Errorf("%s is not a %s Configuration", gvk, configv1alpha1.GroupVersion)
	}
	return cfg, nil
}

// Load reads the file at path, or starts from an empty configuration when
// path is empty (every setting its default).
func Load(path string) (*configv1alpha1.Configuration, error) {
	if path == "" {
		return &configv1alpha1.Configuration{}, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	cfg, err := Decode(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}
