package cli

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/tokenfleet/tokenfleet/agent/config"
)

// agentFlags are the settings `run` and `install` take on the command line, over the
// configuration file.
type agentFlags struct {
	configFile   string
	id           string
	broker       string
	passwordFile string
	caFile       string
	queue        string
	modules      []string
	noUSB        bool
	registry     string
	dataDir      string
	logFormat    string
	poll         time.Duration
	heartbeat    time.Duration
	grace        time.Duration
	metrics      string
}

// flagFields maps each flag to the configuration setting it overrides.
var flagFields = []struct {
	flag, field string
	path        bool // a file or directory: install turns it absolute
}{
	{"id", "id", false},
	{"broker", "broker.url", false},
	{"broker-password-file", "broker.password_file", true},
	{"broker-ca", "broker.ca_file", true},
	{"queue", "broker.queue", false},
	{"module", "modules", true},
	{"no-usb", "usb", false},
	{"registry", "registry", true},
	{"data", "data_dir", true},
	{"log-format", "log.format", false},
	{"log-level", "log.level", false},
	{"poll-interval", "poll_interval", false},
	{"heartbeat-interval", "heartbeat_interval", false},
	{"shutdown-grace", "shutdown_grace", false},
	{"metrics-listen", "metrics_listen", false},
}

func (o *agentFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&o.configFile, "config", "", "configuration `FILE` (YAML); flags override it")
	fs.StringVar(&o.id, "id", "", "agent `ID` (default: the host name, lower-cased); one per user session on a shared host, e.g. alice@ts-01")
	fs.StringVar(&o.broker, "broker", "", "broker `URL`, amqp:// or amqps:// (default "+config.DefaultBrokerURL+"); keep the password out of it: --broker-password-file")
	fs.StringVar(&o.passwordFile, "broker-password-file", "", "`FILE` holding the broker password (mode 0600 or 0640)")
	fs.StringVar(&o.caFile, "broker-ca", "", "CA certificates (PEM `FILE`) the amqps:// broker's certificate must chain to")
	fs.StringVar(&o.queue, "queue", "", "how the agent's queue is made sure of: auto, declare (development) or check (enrolled agents)")
	fs.StringArrayVar(&o.modules, "module", nil, "PKCS#11 module `PATH` (repeatable; default: the modules of attached known token models, else OpenSC's)")
	fs.BoolVar(&o.noUSB, "no-usb", false, "do not enumerate USB devices (PKCS#11 polling only)")
	fs.StringVar(&o.registry, "registry", "", "extra token model registry `FILE` (YAML), merged over the built-in one")
	fs.StringVar(&o.dataDir, "data", "", "data `DIR`: journal and sealing key (default "+config.DefaultDataDir()+")")
	fs.StringVar(&o.logFormat, "log-format", "", "log format: json or console (default: console on a terminal, json otherwise)")
	fs.DurationVar(&o.poll, "poll-interval", 0, "how often tokens are polled (default 1s)")
	fs.DurationVar(&o.heartbeat, "heartbeat-interval", 0, "mean time between heartbeats (default 15s)")
	fs.DurationVar(&o.grace, "shutdown-grace", 0, "how long the outbox is flushed at shutdown (default 10s)")
	fs.StringVar(&o.metrics, "metrics-listen", "", "serve Prometheus metrics at http://`HOST:PORT`/metrics, e.g. 127.0.0.1:9310 (default: off)")
}

// load reads the configuration file, if any, and sets the flags given over it.
func (o *agentFlags) load(cmd *cobra.Command, logLevel string) (config.Config, error) {
	cfg := config.Default()
	if o.configFile != "" {
		var err error
		if cfg, err = config.Load(o.configFile); err != nil {
			return cfg, err
		}
	}
	fs := cmd.Flags()
	for _, f := range flagFields {
		if !fs.Changed(f.flag) {
			continue
		}
		cfg.SetBy(f.field, "--"+f.flag)
		switch f.flag {
		case "id":
			cfg.ID = o.id
		case "broker":
			cfg.Broker.URL = o.broker
		case "broker-password-file":
			cfg.Broker.PasswordFile = o.passwordFile
		case "broker-ca":
			cfg.Broker.CAFile = o.caFile
		case "queue":
			cfg.Broker.Queue = o.queue
		case "module":
			cfg.Modules = o.modules
		case "no-usb":
			usb := !o.noUSB
			cfg.USB = &usb
		case "registry":
			cfg.Registry = o.registry
		case "data":
			cfg.DataDir = o.dataDir
		case "log-format":
			cfg.Log.Format = o.logFormat
		case "log-level":
			cfg.Log.Level = logLevel
		case "poll-interval":
			cfg.PollInterval = o.poll
		case "heartbeat-interval":
			cfg.HeartbeatInterval = o.heartbeat
		case "shutdown-grace":
			cfg.ShutdownGrace = o.grace
		case "metrics-listen":
			cfg.MetricsListen = o.metrics
		}
	}
	return cfg, nil
}

// resolve loads and validates the settings. Its errors are configuration errors: one line
// naming every setting at fault.
func (o *agentFlags) resolve(cmd *cobra.Command, logLevel string) (*config.Resolved, error) {
	cfg, err := o.load(cmd, logLevel)
	if err != nil {
		return nil, configError{err}
	}
	r, err := cfg.Resolve()
	if err != nil {
		return nil, configError{err}
	}
	return r, nil
}

// serviceArguments are the arguments the installed service runs with: `run` and the
// flags given to install, paths made absolute (a service does not start where install ran).
func (o *agentFlags) serviceArguments(cmd *cobra.Command) ([]string, error) {
	args := []string{"run"}
	abs := func(p string) (string, error) {
		a, err := filepath.Abs(p)
		if err != nil {
			return "", fmt.Errorf("%s: %w", p, err)
		}
		return a, nil
	}
	if o.configFile != "" {
		p, err := abs(o.configFile)
		if err != nil {
			return nil, err
		}
		args = append(args, "--config", p)
	}
	var err error
	cmd.Flags().Visit(func(f *pflag.Flag) {
		if err != nil {
			return
		}
		for _, ff := range flagFields {
			if ff.flag != f.Name {
				continue
			}
			if f.Name == "broker" && hasPassword(o.broker) {
				err = errors.New("--broker holds a password, which the service definition would show to every local user: put it in the configuration file (mode 0600) or in --broker-password-file")
				return
			}
			values := []string{f.Value.String()}
			if sv, ok := f.Value.(pflag.SliceValue); ok {
				values = sv.GetSlice()
			}
			for _, v := range values {
				if ff.path {
					if v, err = abs(v); err != nil {
						return
					}
				}
				if f.Value.Type() == "bool" {
					args = append(args, "--"+f.Name+"="+v)
				} else {
					args = append(args, "--"+f.Name, v)
				}
			}
		}
	})
	return args, err
}

func hasPassword(raw string) bool {
	at := strings.LastIndex(raw, "@")
	scheme := strings.Index(raw, "://")
	return scheme >= 0 && at > scheme && strings.Contains(raw[scheme+3:at], ":")
}

// configError is a configuration that cannot be used: exit status ExitUsage, which a
// service manager should not restart on (restarting does not fix it).
type configError struct{ err error }

func (e configError) Error() string {
	// One line: a service manager's status shows the first.
	return strings.ReplaceAll(e.err.Error(), "\n", "; ")
}
func (e configError) Unwrap() error { return e.err }
