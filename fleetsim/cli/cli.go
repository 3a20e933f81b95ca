// Package cli is the command line of tokenfleet-fleetsim, the fleet simulator.
package cli

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11/simtoken"
	"github.com/tokenfleet/tokenfleet/fleetsim"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// Exit statuses.
const (
	ExitOK    = 0
	ExitFail  = 1
	ExitUsage = 2
)

// usageError is a bad flag or argument: exit status 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// Main runs the command line with args (without the program name) and returns the exit
// status.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRoot(stdin, stdout, stderr)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	fmt.Fprintf(stderr, "tokenfleet-fleetsim: %v\n", err)
	var ue usageError
	if errors.As(err, &ue) || strings.HasPrefix(err.Error(), "unknown command") || strings.HasPrefix(err.Error(), "unknown flag") {
		return ExitUsage
	}
	return ExitFail
}

const rootLong = `tokenfleet-fleetsim runs simulated agents in one process (or a few) to size a
tokenfleet deployment. Each simulated agent is a real tokenfleet agent (journal, executor,
heartbeats, hello with its token inventory) with a data directory of its own, speaking the
real protocol over the real broker; simulated agents share a few broker connections (200
agents each), so the coordinator must run with broker.agent_users: shared (agents share one
broker user: sender checks then rely on the routing key alone). Never point it at a
production coordinator.`

func newRoot(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "tokenfleet-fleetsim",
		Short:         "Simulate a fleet of tokenfleet agents against a real coordinator and broker",
		Long:          rootLong,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newRun(stdout, stderr), newEnrol(stdout, stderr), newWorker(stdin, stdout, stderr))
	return root
}

// common are the flags of run and worker that describe the fleet.
type common struct {
	broker         string
	prefix         string
	agents         int
	data           string
	heartbeat      time.Duration
	ramp           string
	perConnection  int
	profile        string
	tokensPerAgent int
	logLevel       string
	faultSpecs     []string
	reinsertSpec   string
	crashEvery     time.Duration
	restartAfter   time.Duration
	seed           uint64

	// Read by check from the flags above.
	faults   []fleetsim.TokenFault
	reinsert simtoken.Dist
}

func (c *common) flags(fs *pflag.FlagSet) {
	fs.StringVar(&c.broker, "broker", "", "the broker, amqp://user:password@host:5672/vhost (required; its user must be allowed to declare queues)")
	fs.StringVar(&c.prefix, "prefix", "sim-", "agent ID prefix: agents are PREFIX00000, PREFIX00001, ...")
	fs.IntVar(&c.agents, "agents", 1000, "how many simulated agents")
	fs.StringVar(&c.data, "data", "", "directory for the agents' journals, one subdirectory each (default: a new temporary directory, removed at the end)")
	fs.DurationVar(&c.heartbeat, "heartbeat", protocol.HeartbeatInterval, "heartbeat interval of every agent (jittered ±10%)")
	fs.StringVar(&c.ramp, "ramp", "500/s", "how fast agents start: N/s, or 0 for all at once")
	fs.IntVar(&c.perConnection, "per-connection", fleetsim.DefaultAgentsPerConnection, "agents sharing one broker connection (at most 2,000: a channel each)")
	fs.StringVar(&c.profile, "profile", "instant", "latency profile of the simulated tokens: "+strings.Join(profiles, ", "))
	fs.IntVar(&c.tokensPerAgent, "tokens-per-agent", 1, "simulated tokens per agent, blank (0: agents with no token module)")
	fs.StringVar(&c.logLevel, "log-level", "warn", "the agents' log level on stderr: debug, info, warn, error")
	fs.StringArrayVar(&c.faultSpecs, "fault", nil, "inject token failures, OP=RATE:CODE (repeatable, one per operation), e.g. keygen_ec=0.02:token.device_removed;\n"+
		"OP: "+strings.Join(opNames(), ", ")+";\nCODE: a driver code, e.g. token.device_error, token.device_removed (the token is pulled out for --reinsert)")
	fs.StringVar(&c.reinsertSpec, "reinsert", fleetsim.DefaultReinsert.Median.String()+"/"+fleetsim.DefaultReinsert.P95.String(),
		"how long a token a removal fault pulled out stays out: a duration (5s), or a median and a 95th percentile (5s/15s)")
	fs.DurationVar(&c.crashEvery, "crash-every", 0, "crash a random agent this often on average, across the fleet (0: never): it stops at once, as on SIGKILL, and starts again from its journal after --restart-after")
	fs.DurationVar(&c.restartAfter, "restart-after", fleetsim.DefaultRestartAfter, "how long a crashed agent stays down before it starts again on its data directory")
	fs.Uint64Var(&c.seed, "seed", 1, "seeds the simulated tokens' latencies and failures and the crashes, so that a run can be replayed")
}

// opNames are the simulated tokens' operation classes, for --fault.
func opNames() []string {
	names := make([]string, len(simtoken.Ops))
	for i, o := range simtoken.Ops {
		names[i] = string(o)
	}
	return names
}

// check validates the common flags and returns the fleet's configuration.
func (c *common) check() (fleetsim.FleetConfig, error) {
	var fc fleetsim.FleetConfig
	if c.broker == "" {
		return fc, usagef("--broker is required: amqp://user:password@host:5672/vhost")
	}
	if !strings.HasPrefix(c.broker, "amqp://") && !strings.HasPrefix(c.broker, "amqps://") {
		return fc, usagef("--broker %q: want an amqp:// or amqps:// URL", redact(c.broker))
	}
	if c.agents < 1 {
		return fc, usagef("--agents %d: want 1 or more", c.agents)
	}
	if err := protocol.ValidateAgentID(fleetsim.AgentID(c.prefix, c.agents-1)); err != nil {
		return fc, usagef("--prefix %q does not make valid agent IDs (%v): use lower-case letters, digits, '-', '_' or '@'", c.prefix, err)
	}
	if c.heartbeat < 100*time.Millisecond {
		return fc, usagef("--heartbeat %s: want 100ms or more (production: 15s)", c.heartbeat)
	}
	ramp, err := parseRamp(c.ramp)
	if err != nil {
		return fc, err
	}
	if c.perConnection < 1 || c.perConnection > 2000 {
		return fc, usagef("--per-connection %d: want 1 to 2000 (each agent takes a channel; RabbitMQ allows 2,047 a connection)", c.perConnection)
	}
	if !validProfile(c.profile) {
		return fc, usagef("--profile %q: want one of %s", c.profile, strings.Join(profiles, ", "))
	}
	if c.tokensPerAgent < 0 || c.tokensPerAgent > protocol.MaxTokens {
		return fc, usagef("--tokens-per-agent %d: want 0 to %d", c.tokensPerAgent, protocol.MaxTokens)
	}
	lvl, err := zerolog.ParseLevel(c.logLevel)
	if err != nil || c.logLevel == "" {
		return fc, usagef("--log-level %q: want debug, info, warn or error", c.logLevel)
	}
	_ = lvl
	if err := c.checkFaults(); err != nil {
		return fc, err
	}
	return fleetsim.FleetConfig{
		BrokerURL: c.broker, Prefix: c.prefix, Count: c.agents, DataDir: c.data, Heartbeat: c.heartbeat,
		Ramp: ramp, PerConnection: c.perConnection,
		CrashEvery: c.crashEvery, RestartAfter: c.restartAfter, Seed: c.seed,
	}, nil
}

// checkFaults reads --fault and --reinsert and checks the crash flags.
func (c *common) checkFaults() error {
	c.faults = c.faults[:0]
	for _, spec := range c.faultSpecs {
		f, err := fleetsim.ParseTokenFault(spec)
		if err != nil {
			return usagef("--fault %v", err)
		}
		c.faults = append(c.faults, f)
	}
	if err := fleetsim.CheckTokenFaults(c.faults); err != nil {
		return usagef("--fault: %v", err)
	}
	if len(c.faults) > 0 && c.tokensPerAgent < 1 {
		return usagef("--fault needs simulated tokens: --tokens-per-agent 1 or more")
	}
	d, err := fleetsim.ParseReinsert(c.reinsertSpec)
	if err != nil {
		return usagef("--reinsert %v", err)
	}
	c.reinsert = d
	if c.crashEvery != 0 && c.crashEvery < 100*time.Millisecond {
		return usagef("--crash-every %s: want 0 (no crashes) or 100ms or more", c.crashEvery)
	}
	if c.restartAfter < 0 {
		return usagef("--restart-after %s: want 0 (at once) or more", c.restartAfter)
	}
	return nil
}

// tokens gives agents simulated tokens, or none (nil) when --tokens-per-agent is 0.
func (c *common) tokens() (*fleetsim.SimTokens, error) {
	if c.tokensPerAgent == 0 {
		return nil, nil
	}
	return fleetsim.NewSimTokens(c.tokensConfig())
}

func (c *common) tokensConfig() fleetsim.SimTokensConfig {
	return fleetsim.SimTokensConfig{Profile: c.profile, PerAgent: c.tokensPerAgent, Seed: c.seed,
		Faults: c.faults, Reinsert: c.reinsert}
}

func (c *common) logger(stderr io.Writer) zerolog.Logger {
	lvl, _ := zerolog.ParseLevel(c.logLevel)
	return zerolog.New(stderr).Level(lvl).With().Timestamp().Logger()
}

// parseRamp reads "500/s", "500" or "0".
func parseRamp(s string) (float64, error) { return parseRate("--ramp", s) }

// parseRate reads a rate flag: "500/s", "500" or "0".
func parseRate(flag, s string) (float64, error) {
	n, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(s), "/s"), 64)
	if err != nil || n < 0 {
		return 0, usagef("%s %q: want how many a second, like 500/s (0: all at once)", flag, s)
	}
	return n, nil
}

func redact(u string) string {
	if at := strings.LastIndex(u, "@"); at > 0 {
		if scheme := strings.Index(u, "://"); scheme > 0 && scheme < at {
			return u[:scheme+3] + "***" + u[at:]
		}
	}
	return u
}

// apiFlags reach the coordinator's API.
type apiFlags struct {
	url       string
	tokenFile string
	caFile    string
}

func (a *apiFlags) flags(fs *pflag.FlagSet) {
	fs.StringVar(&a.url, "coordinator", "", "the coordinator's API, https://host:8443 (required)")
	fs.StringVar(&a.tokenFile, "api-token-file", "", "file holding an administrator's API token (required), e.g. DATA/admin.token")
	fs.StringVar(&a.caFile, "ca-file", "", "CA certificate (PEM) of the coordinator's TLS certificate (default: system roots)")
}

func (a *apiFlags) client() (*client.Client, error) {
	if a.url == "" {
		return nil, usagef("--coordinator is required: the coordinator's API URL, e.g. https://coordinator:8443")
	}
	if a.tokenFile == "" {
		return nil, usagef("--api-token-file is required: a file holding an administrator's API token")
	}
	tok, err := os.ReadFile(a.tokenFile)
	if err != nil {
		return nil, usagef("--api-token-file: %v", err)
	}
	opts := []client.Option{client.WithUserAgent("tokenfleet-fleetsim")}
	if a.caFile != "" {
		pem, err := os.ReadFile(a.caFile)
		if err != nil {
			return nil, usagef("--ca-file: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, usagef("--ca-file %s: no PEM certificate in it", a.caFile)
		}
		opts = append(opts, client.WithRootCAs(pool))
	}
	c, err := client.New(a.url, strings.TrimSpace(string(tok)), opts...)
	if err != nil {
		return nil, usagef("--coordinator: %v", err)
	}
	return c, nil
}

const runExample = `  # 1,000 agents at the production heartbeat, against a local coordinator
  tokenfleet-fleetsim run --broker amqp://guest:guest@127.0.0.1:5672/tokenfleet \
      --coordinator http://127.0.0.1:8443 --api-token-file data/admin.token \
      --agents 1000 --duration 1m --management http://guest:guest@127.0.0.1:15672 \
      --coordinator-pid $(pidof tokenfleet-coordinator)

  # 10,000 agents, the report as JSON
  tokenfleet-fleetsim run --broker amqp://guest:guest@127.0.0.1:5672/tokenfleet \
      --coordinator http://127.0.0.1:8443 --api-token-file data/admin.token \
      --agents 10000 --ramp 500/s --duration 2m --report json`

func newRun(stdout, stderr io.Writer) *cobra.Command {
	var c common
	var a apiFlags
	var (
		duration        time.Duration
		stop            int
		presenceTimeout time.Duration
		report          string
		management      string
		coordinatorPID  int
		enrol           bool
		processes       int
		jobs            int
		jobRate         string
		faultsFor       time.Duration
	)
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run a fleet until every agent is online, measure a steady window, time offline detection",
		Long: `run enrols the agents through the API (unless --enrol=false), starts them at --ramp, waits until
the coordinator shows every agent online, then measures a steady window of --duration: the
coordinator's CPU (% of one core) and RSS (--coordinator-pid, read from /proc), the heartbeat
queue's depth every second against one second of heartbeat traffic (--management), and the
simulator's own CPU and memory. Then it stops --stop agents and times until the coordinator
shows them offline, against its presence timeout (--presence-timeout: the coordinator's
broker.heartbeat_timeout). It prints the report (--report text or json) and exits 0, or 1 when
the run could not finish (the report says how far it got).

Each agent holds about 4 files open (its journal, WAL, shared memory and lock): the simulator
raises its open files limit to the hard limit and, when that is not enough for --agents,
spreads the agents over worker processes (--processes) of its own.`,
		Example: runExample,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fc, err := c.check()
			if err != nil {
				return err
			}
			api, err := a.client()
			if err != nil {
				return err
			}
			if duration < 0 {
				return usagef("--duration %s: want 0 or more", duration)
			}
			if stop < 0 || stop > c.agents {
				return usagef("--stop %d: want 0 to --agents (%d)", stop, c.agents)
			}
			if presenceTimeout < time.Second {
				return usagef("--presence-timeout %s: want the coordinator's broker.heartbeat_timeout (default 45s)", presenceTimeout)
			}
			if c.crashEvery > 0 && c.restartAfter >= presenceTimeout {
				// The run waits for every agent shown online: one down past the timeout would
				// hold it.
				return usagef("--restart-after %s: want less than --presence-timeout (%s), so that a crashed agent is back before the coordinator shows it offline",
					c.restartAfter, presenceTimeout)
			}
			if report != "text" && report != "json" {
				return usagef("--report %q: want text or json", report)
			}
			if processes < 0 {
				return usagef("--processes %d: want 0 (as many as the open files limit needs) or more", processes)
			}
			if jobs < 0 || jobs > c.agents {
				return usagef("--jobs %d: want 0 to --agents (%d)", jobs, c.agents)
			}
			rate, err := parseRate("--job-rate", jobRate)
			if err != nil {
				return err
			}
			if jobs > 0 && c.tokensPerAgent < 1 {
				return usagef("--jobs %d needs simulated tokens: --tokens-per-agent 1 or more", jobs)
			}
			if faultsFor < 0 || (faultsFor > 0 && len(c.faults) == 0) {
				return usagef("--faults-for %s: want 0 (the whole run), or a duration with --fault to stop the failures after", faultsFor)
			}
			log := c.logger(stderr)
			var mgmt *fleetsim.Management
			if management != "" {
				vhost, err := fleetsim.VHostOf(c.broker)
				if err != nil {
					return usagef("--broker: %v", err)
				}
				if mgmt, err = fleetsim.NewManagement(management, vhost); err != nil {
					return usagef("--management: %v", err)
				}
			}
			cleanup, err := dataDir(&fc)
			if err != nil {
				return err
			}
			defer cleanup()
			runner, toks, err := newRunner(fc, c, processes, log, stderr)
			if err != nil {
				return err
			}
			if _, inProcess := runner.(*fleetsim.Fleet); jobs > 0 && !inProcess {
				return usagef("--jobs needs the whole fleet in this process, where the tokens' time is measured: fewer --agents, or a higher open files limit (ulimit -n %d)",
					1000+fleetsim.FilesPerAgent*c.agents)
			}
			if faultsFor > 0 {
				// The tokens are "fixed" part way through: what a rollout's brake needs to be
				// resumed after it tripped on them.
				fix := time.AfterFunc(faultsFor, func() {
					if err := runner.SetTokenFaults(nil); err != nil {
						log.Error().Err(err).Msg("stopping the injected token failures")
						return
					}
					log.Warn().Dur("after_ms", faultsFor).Msg("injected token failures stopped (--faults-for)")
				})
				defer fix.Stop()
			}
			rep, runErr := fleetsim.Run(cmd.Context(), fleetsim.RunConfig{
				Agents: c.agents, Prefix: c.prefix, Heartbeat: c.heartbeat, API: api, Enrol: enrol,
				Management: mgmt, CoordinatorPID: coordinatorPID, Window: duration, StopAgents: stop,
				PresenceTimeout: presenceTimeout, Jobs: jobs, JobRate: rate, Tokens: toks, Log: log,
			}, runner)
			if rep != nil {
				if report == "json" {
					_ = rep.WriteJSON(stdout)
				} else {
					_ = rep.WriteText(stdout)
				}
			}
			return runErr
		},
	}
	fs := cmd.Flags()
	c.flags(fs)
	a.flags(fs)
	fs.DurationVar(&duration, "duration", 2*time.Minute, "the steady window measured once every agent is online")
	fs.IntVar(&stop, "stop", 10, "agents stopped after the window to time offline detection (0: none)")
	fs.DurationVar(&presenceTimeout, "presence-timeout", fleetsim.DefaultPresenceTimeout, "the coordinator's broker.heartbeat_timeout, which offline detection is judged against")
	fs.StringVar(&report, "report", "text", "report format: text or json")
	fs.StringVar(&management, "management", "", "RabbitMQ's management API, http://guest:guest@127.0.0.1:15672, to sample queue depths (default: not sampled)")
	fs.IntVar(&coordinatorPID, "coordinator-pid", 0, "the coordinator's process ID on this machine, to sample its CPU and RSS (default: not sampled)")
	fs.BoolVar(&enrol, "enrol", true, "enrol the agents through the API first (agents already enrolled are kept)")
	fs.IntVar(&processes, "processes", 0, "worker processes to spread the agents over (0: one, or as many as the open files limit needs)")
	fs.StringVar(&jobRate, "job-rate", "10/s", "how fast the --jobs are created: N/s, or 0 for all at once (a burst: its latencies are mostly queueing)")
	fs.IntVar(&jobs, "jobs", 0, "after the window, an issue job on each of the first N agents (no approval: profile "+fleetsim.JobProfile+"), with latency per phase")
	fs.DurationVar(&faultsFor, "faults-for", 0, "stop the --fault failures this long after the start, as if the tokens were fixed (0: they last the whole run)")
	return cmd
}

// dataDir makes a temporary data directory when none is given; the returned function
// removes it.
func dataDir(fc *fleetsim.FleetConfig) (func(), error) {
	if fc.DataDir != "" {
		return func() {}, os.MkdirAll(fc.DataDir, 0o700)
	}
	dir, err := os.MkdirTemp("", "tokenfleet-fleetsim-")
	if err != nil {
		return nil, err
	}
	fc.DataDir = dir
	return func() { _ = os.RemoveAll(dir) }, nil
}

// newRunner runs the fleet in this process when the open files limit allows, else in
// worker processes of this program.
func newRunner(fc fleetsim.FleetConfig, c common, processes int, log zerolog.Logger, stderr io.Writer) (fleetsim.Runner, *fleetsim.SimTokens, error) {
	limit, err := fleetsim.RaiseFileLimit()
	if err != nil {
		return nil, nil, err
	}
	per := fleetsim.AgentsPerProcess(limit)
	if processes == 0 {
		if per < 1 {
			return nil, nil, fmt.Errorf("the open files limit (%d) leaves no room for agents: run `ulimit -n %d` first", limit, 1000+fleetsim.FilesPerAgent*c.agents)
		}
		processes = (c.agents + per - 1) / per
	} else if per*processes < c.agents {
		return nil, nil, usagef("--processes %d: %d agents need %d processes with the open files limit of %d (or run `ulimit -n %d` first)",
			processes, c.agents, (c.agents+per-1)/per, limit, 1000+fleetsim.FilesPerAgent*((c.agents+processes-1)/processes))
	}
	if processes == 1 {
		toks, err := c.tokens()
		if err != nil {
			return nil, nil, err
		}
		fc.Log = log
		if toks != nil {
			fc.Tokens = toks
		}
		f, err := fleetsim.NewFleet(fc)
		return f, toks, err
	}
	self, err := fleetsim.Self()
	if err != nil {
		return nil, nil, err
	}
	log.Info().Int("processes", processes).Uint64("open_files_limit", limit).Msg("spreading the agents over worker processes")
	fc.Log = zerolog.Nop()
	w, err := fleetsim.NewWorkers(fleetsim.WorkersConfig{
		Command: []string{self, "worker", "--log-level", c.logLevel}, Fleet: fc, Processes: processes, Stderr: stderr,
		Faults: c.faults, Reinsert: c.reinsert,
	}, c.profile, c.tokensPerAgent)
	return w, nil, err
}

func newWorker(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	var c common
	var first int
	cmd := &cobra.Command{
		Use:    "worker",
		Short:  "Run a share of a fleet for a run in another process (internal)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fc, err := c.check()
			if err != nil {
				return err
			}
			if c.data == "" {
				return usagef("--data is required")
			}
			if _, err := fleetsim.RaiseFileLimit(); err != nil {
				return err
			}
			fc.First = first
			fc.Log = c.logger(stderr)
			toks, err := c.tokens()
			if err != nil {
				return err
			}
			if toks != nil {
				fc.Tokens = toks
			}
			return fleetsim.RunWorker(cmd.Context(), fc, stdin, stdout)
		},
	}
	c.flags(cmd.Flags())
	cmd.Flags().IntVar(&first, "first", 0, "index of the first agent")
	return cmd
}

func newEnrol(stdout, stderr io.Writer) *cobra.Command {
	var a apiFlags
	var agents int
	var prefix string
	cmd := &cobra.Command{
		Use:   "enrol",
		Short: "Enrol simulated agents through the coordinator's API and print the rate",
		Example: `  tokenfleet-fleetsim enrol --coordinator http://127.0.0.1:8443 --api-token-file data/admin.token \
      --agents 10000 --prefix sim-`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			api, err := a.client()
			if err != nil {
				return err
			}
			if agents < 1 {
				return usagef("--agents %d: want 1 or more", agents)
			}
			if err := protocol.ValidateAgentID(fleetsim.AgentID(prefix, agents-1)); err != nil {
				return usagef("--prefix %q does not make valid agent IDs (%v)", prefix, err)
			}
			rep, err := fleetsim.Enrol(cmd.Context(), api, prefix, agents, zerolog.New(stderr).Level(zerolog.WarnLevel))
			fmt.Fprintf(stdout, "enrolled %d agents (%d were already) in %s: %.0f a second (%s)\n",
				rep.Agents-rep.Existing, rep.Existing, rep.Seconds, rep.PerSecond, rep.Endpoint)
			return err
		},
	}
	fs := cmd.Flags()
	a.flags(fs)
	fs.IntVar(&agents, "agents", 1000, "how many agents")
	fs.StringVar(&prefix, "prefix", "sim-", "agent ID prefix")
	return cmd
}
