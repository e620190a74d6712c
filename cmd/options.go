package main

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	ctrl "sigs.k8s.io/controller-runtime"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	configv1alpha1 "github.com/agentrun/agentrun/api/config/v1alpha1"
	"github.com/agentrun/agentrun/internal/config"
	"github.com/agentrun/agentrun/internal/containers"
	"github.com/agentrun/agentrun/internal/controller/agentruns"
	"github.com/agentrun/agentrun/internal/controller/fleet"
	"github.com/agentrun/agentrun/internal/controller/host"
)

// What one manager process does, as a comma-separated --mode. The webhook
// and the fleet (placement and host lifecycle) are cluster-wide services, run
// by the in-cluster Deployment; a host's reconciler runs on each Podman host.
// all is the three in one process, for a single host.
const (
	modeAll     = "all"
	modeWebhook = "webhook"
	modeFleet   = "fleet"
	modeHost    = "host"
	// modeReconciler is the name host had before the fleet existed.
	modeReconciler = "reconciler"
)

// options are the manager's settings: the few flags an operator passes per
// machine, and the configuration file (--config) with the deprecated flags
// given applied over it.
type options struct {
	mode       string
	hostName   string
	configFile string
	cfg        *configv1alpha1.Configuration
	// deprecations say which deprecated flags were given and which field
	// of the file each one overrode, for the log once it is set up.
	deprecations []config.DeprecatedFlag
}

// parseOptions reads the flags in args and the file --config names; hostname
// supplies the default host name.
func parseOptions(fs *flag.FlagSet, args []string, hostname func() (string, error)) (*options, error) {
	o := &options{}
	defaultHost, _ := hostname()
	// Host names are object names (the PodmanHost, the Lease), so lower
	// case, as the kubelet lower-cases a machine's name for its Node.
	defaultHost = strings.ToLower(defaultHost)
	fs.StringVar(&o.mode, "mode", modeAll, "what this process does, comma-separated: webhook (serve the validating webhook), fleet (place runs on hosts and declare hosts lost; once per cluster), host (run AgentRuns on this Podman host; reconciler is an alias); all is the three")
	fs.StringVar(&o.hostName, "host-name", defaultHost, "this Podman host's name: runs pinned to it (spec.hostName) or claimed by it are run here")
	fs.StringVar(&o.configFile, "config", "", "the configuration file (config.agentrun.dev/v1alpha1 Configuration, docs/configuration.md); without it every setting has its default")
	deprecated := registerDeprecated(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	cfg, err := config.Load(o.configFile)
	if err != nil {
		return nil, err
	}
	config.Default(cfg)
	o.cfg = cfg
	overridden := map[string]string{}
	for _, d := range deprecated {
		if !d.set {
			continue
		}
		if err := d.flag.Apply(cfg, d.value); err != nil {
			return nil, err
		}
		overridden[d.flag.Field] = d.flag.Name
		o.deprecations = append(o.deprecations, d.flag)
	}
	return o, o.validate(overridden)
}

// given is a deprecated flag and, once fs parsed the command line, whether
// it was given and its last value.
type given struct {
	flag  config.DeprecatedFlag
	set   bool
	value string
}

// Set records a value for parseOptions to apply over the file; a Bool flag's
// value must be one.
func (g *given) Set(s string) error {
	if g.flag.Bool {
		if _, err := strconv.ParseBool(s); err != nil {
			return err
		}
	}
	g.set, g.value = true, s
	return nil
}

func (g *given) String() string   { return "" }
func (g *given) IsBoolFlag() bool { return g.flag.Bool }

// registerDeprecated adds every deprecated flag to fs.
func registerDeprecated(fs *flag.FlagSet) []*given {
	var all []*given
	for _, f := range config.DeprecatedFlags {
		g := &given{flag: f}
		fs.Var(g, f.Name, "deprecated: set "+f.Field+" in the --config file instead (given, this flag overrides it)")
		all = append(all, g)
	}
	return all
}

// validate checks --mode and --host-name, and the file with the deprecated
// flags applied: an error in a field a flag set says which flag.
func (o *options) validate(overridden map[string]string) error {
	var errs []error
	for _, m := range list(o.mode) {
		if !slices.Contains([]string{modeAll, modeWebhook, modeFleet, modeHost, modeReconciler}, m) {
			errs = append(errs, fmt.Errorf("--mode must list some of webhook, fleet and host (or be all), not %q", o.mode))
			break
		}
	}
	if len(list(o.mode)) == 0 {
		errs = append(errs, errors.New("--mode is empty"))
	}
	if o.runsReconciler() {
		switch msgs := validation.IsDNS1123Subdomain(o.leaderElectionID()); {
		case o.hostName == "":
			errs = append(errs, errors.New("--host-name is empty and the machine's host name is unknown"))
		case len(validation.IsDNS1123Subdomain(o.hostName)) > 0 || len(msgs) > 0:
			errs = append(errs, fmt.Errorf("--host-name %q must be a lower-case DNS name (letters, digits, '-' and '.') of at most %d characters: "+
				"it names the host's PodmanHost and Leases", o.hostName, validation.DNS1123SubdomainMaxLength-len(hostLeasePrefix)))
		}
	}
	fieldErrs := config.Validate(o.cfg, config.Sections{Host: o.runsReconciler(), Fleet: o.runsFleet()})
	for _, e := range fieldErrs {
		if name := flagOf(e, overridden); name != "" {
			e.Detail += " (set by the deprecated flag --" + name + ")"
		}
	}
	if agg := fieldErrs.ToAggregate(); agg != nil {
		errs = append(errs, fmt.Errorf("configuration %s: %w", cmp.Or(o.configFile, "(defaults, no --config)"), agg))
	}
	return errors.Join(errs...)
}

// flagOf is the deprecated flag that set the field of e, if one did.
func flagOf(e *field.Error, overridden map[string]string) string {
	for path, name := range overridden {
		if e.Field == path || strings.HasPrefix(e.Field, path+"[") || strings.HasPrefix(e.Field, path+".") {
			return name
		}
	}
	return ""
}

func (o *options) does(mode string) bool {
	modes := list(o.mode)
	return slices.Contains(modes, modeAll) || slices.Contains(modes, mode) || mode == modeHost && slices.Contains(modes, modeReconciler)
}

func (o *options) runsReconciler() bool { return o.does(modeHost) }
func (o *options) servesWebhook() bool  { return o.does(modeWebhook) }
func (o *options) runsFleet() bool      { return o.does(modeFleet) }

// hostLeasePrefix starts the leader election lease of a host's managers.
const hostLeasePrefix = "agentrun-host-"

// leaderElectionID is per host for reconcilers, so that two managers started
// for one host never run the same AgentRun, while managers of different hosts
// work side by side. Host names are DNS names already (validate), so the
// lease is named after the host unchanged and two hosts never share one.
func (o *options) leaderElectionID() string {
	if !o.runsReconciler() {
		return "agentrun-cluster"
	}
	return hostLeasePrefix + o.hostName
}

func (o *options) managerOptions(scheme *runtime.Scheme) ctrl.Options {
	c := o.cfg
	opts := ctrl.Options{
		Scheme:                        scheme,
		Metrics:                       metricsserver.Options{BindAddress: c.Metrics.BindAddress},
		HealthProbeBindAddress:        c.Health.BindAddress,
		PprofBindAddress:              c.Pprof.BindAddress,
		LeaderElection:                *c.LeaderElection.LeaderElect,
		LeaderElectionID:              o.leaderElectionID(),
		LeaderElectionNamespace:       cmp.Or(c.LeaderElection.ResourceNamespace, c.LeaseNamespace),
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 &c.LeaderElection.LeaseDuration.Duration,
		RenewDeadline:                 &c.LeaderElection.RenewDeadline.Duration,
		RetryPeriod:                   &c.LeaderElection.RetryPeriod.Duration,
		WebhookServer: webhook.NewServer(webhook.Options{
			Host:    c.Webhook.Host,
			Port:    int(*c.Webhook.Port),
			CertDir: c.Webhook.CertDir,
		}),
	}
	// A host's cache holds only its own runs, unless this process runs the
	// fleet too, which needs every run.
	if o.runsReconciler() && !o.runsFleet() {
		agentruns.UseHostCache(&opts, o.hostName)
	} else {
		opts.Cache = agentruns.CacheOptions()
	}
	return opts
}

// list splits a comma-separated flag value, dropping empty items.
func list(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// hostConfig is the reconciler's configuration for this host, over rt, built
// from the file's typed host section.
func (o *options) hostConfig(rt containers.Runtime) (host.HostConfig, error) {
	return host.ConfigFromFile(o.cfg, o.hostName, rt)
}

// logAPI is where the fleet serves the aggregated log API; ok is false when
// fleet.logsAPI.bindAddress is empty.
func (o *options) logAPI() (l logAPIOptions, ok bool) {
	a := o.cfg.Fleet.LogsAPI
	return logAPIOptions{BindAddress: a.BindAddress, CertDir: a.CertDir, ClientCertDir: a.ClientCertDir}, a.BindAddress != ""
}

// logAPIOptions are the fleet's aggregated log API's settings.
type logAPIOptions struct {
	BindAddress, CertDir, ClientCertDir string
}

// fleetConfig is the configuration of the fleet's controllers.
func (o *options) fleetConfig() fleet.FleetConfig {
	return fleet.FleetConfig{
		LeaseNamespace:     o.cfg.LeaseNamespace,
		PinnedRunsWait:     o.cfg.Fleet.PinnedRunsWaitForLostHost,
		RecheckPeriod:      time.Minute,
		RunRecordRetention: o.cfg.Fleet.RunRecordRetention.Duration,
		Kueue:              o.cfg.Fleet.Kueue,
	}
}

// warnDeprecated logs, for each deprecated flag given, the field of the file
// it overrode.
func (o *options) warnDeprecated(log logr.Logger) {
	for _, f := range o.deprecations {
		log.Info("WARNING: flag --"+f.Name+" is deprecated and goes in the next release: set "+f.Field+" in the --config file instead",
			"flag", f.Name, "field", f.Field, "config", o.configFile)
	}
}
