package cli

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"runtime"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/tokenfleet/tokenfleet/agent"
	"github.com/tokenfleet/tokenfleet/agent/config"
	"github.com/tokenfleet/tokenfleet/agent/enrol"
	"github.com/tokenfleet/tokenfleet/agent/keys"
	"github.com/tokenfleet/tokenfleet/internal/buildinfo"
)

// pendingPoll paces the questions of an agent waiting for approval: soon at first, then
// once a minute.
var pendingPoll = struct{ first, max time.Duration }{5 * time.Second, time.Minute}

func enrolCommand(e *env) *cobra.Command {
	var o agentFlags
	var coordinator, code, fingerprint, caFile, session string
	var force, noWait bool
	cmd := &cobra.Command{
		Use:   "enrol --coordinator URL --code CODE [flags]",
		Short: "Enrol this agent with an activation code or enrolment key",
		Long: `Exchange an activation code or enrolment key (tfe_...) for this agent's identity: its
agent ID, its own broker user and password, the coordinator's keys. They are kept in the
data directory, readable by the service account only; run then uses them.

The coordinator is reached over https: pin its CA with --ca-fingerprint (printed with the
code), or trust --coordinator-ca FILE, or the system roots. Plain http is refused except
to this host, since the code would cross the network in clear.

An agent whose key holds it for an administrator's approval waits and says so (--no-wait
to return at once; run waits too). Enrolling again an enrolled agent is refused unless
--force.

The agent ID is --id (or the configuration's id); without one the coordinator derives it
from the host name, or session@host with --session on a shared terminal server.

Exit status: 0 enrolled (or pending with --no-wait), 1 refused or failed, 2 usage.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if coordinator == "" || code == "" {
				return usageError{errors.New("--coordinator and --code are required")}
			}
			r, err := o.resolve(cmd, e.logLevel)
			if err != nil {
				return err
			}
			host, _ := os.Hostname()
			id := ""
			if r.IDSet {
				id = r.Agent.ID
			}
			ctx := cmd.Context()
			rec, err := enrol.Enrol(ctx, enrol.Options{Coordinator: coordinator, CAFingerprint: fingerprint, CAFile: caFile,
				Code: code, AgentID: id, Hostname: host, Session: session, OS: runtime.GOOS + "/" + runtime.GOARCH,
				Version: buildinfo.Read().Short(), DataDir: r.Agent.DataDir, Force: force})
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "enrolled as %s with %s: %s\n", rec.AgentID, rec.Coordinator, rec.State)
			if rec.State != "pending" || noWait {
				if rec.State == "pending" {
					fmt.Fprintf(e.stdout, "waiting for an administrator's approval (tokenfleetctl agent approve %s); run waits for it too\n", rec.AgentID)
				}
				return nil
			}
			fmt.Fprintf(e.stdout, "waiting for an administrator's approval: tokenfleetctl agent approve %s\n", rec.AgentID)
			return waitApproved(ctx, rec, r.Agent.DataDir, zerolog.Nop())
		},
	}
	f := cmd.Flags()
	f.StringVar(&coordinator, "coordinator", os.Getenv("TOKENFLEET_URL"), "the coordinator's URL (https://...; default $TOKENFLEET_URL)")
	f.StringVar(&code, "code", "", "the activation code or enrolment key (tfe_...)")
	f.StringVar(&fingerprint, "ca-fingerprint", "", "SHA-256 of the coordinator's TLS CA certificate, as printed with the code")
	f.StringVar(&caFile, "coordinator-ca", "", "the coordinator's TLS CA (PEM); default: the system roots")
	f.StringVar(&session, "session", "", "a user session on a shared terminal server: the agent ID becomes SESSION@HOST")
	f.BoolVar(&force, "force", false, "enrol again although this agent is enrolled")
	f.BoolVar(&noWait, "no-wait", false, "return at once when the agent waits for approval")
	o.register(f)
	return cmd
}

// waitApproved asks the coordinator until the agent is active (or refused), saying so
// while it waits.
func waitApproved(ctx context.Context, rec *enrol.Record, dir string, log zerolog.Logger) error {
	delay := pendingPoll.first
	for rec.State == "pending" {
		log.Info().Str("agent", rec.AgentID).Msgf("waiting for an administrator's approval: tokenfleetctl agent approve %s", rec.AgentID)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, pendingPoll.max)
		if err := rec.Refresh(ctx, dir); err != nil {
			var api *enrol.APIError
			if errors.As(err, &api) && api.Status < 500 {
				return err
			}
			log.Warn().Err(err).Msg("asking the coordinator failed; asking again")
		}
	}
	return nil
}

// applyEnrolment points an enrolled agent at its broker with its own credentials, unless
// the configuration names a broker itself. A pending agent waits here for its approval.
func applyEnrolment(ctx context.Context, r *config.Resolved, log zerolog.Logger) error {
	if r.BrokerSet {
		return nil
	}
	dir := r.Agent.DataDir
	rec, err := enrol.Load(dir)
	if errors.Is(err, os.ErrNotExist) {
		if r.Enrol == nil {
			return nil
		}
		// First start of a packaged agent: enrol as tokenfleet-agent enrol would.
		id := ""
		if r.IDSet {
			id = r.Agent.ID
		}
		host, _ := os.Hostname()
		e := r.Enrol
		rec, err = enrol.Enrol(ctx, enrol.Options{Coordinator: e.Coordinator, CAFingerprint: e.CAFingerprint, CAFile: e.CAFile,
			Code: e.Code, AgentID: id, Hostname: host, Session: e.Session, OS: runtime.GOOS + "/" + runtime.GOARCH,
			Version: buildinfo.Read().Short(), DataDir: dir})
		if err != nil {
			err = fmt.Errorf("enrolling with %s (the configuration's enrol section): %w", e.Coordinator, err)
			var api *enrol.APIError
			if errors.As(err, &api) && api.Status < 500 {
				return configError{err} // a refused code stays refused: no restart loop
			}
			return err
		}
		log.Info().Str("agent", rec.AgentID).Str("state", rec.State).Str("coordinator", rec.Coordinator).Msg("enrolled on first start")
	}
	if err != nil {
		return configError{err}
	}
	if r.IDSet && r.Agent.ID != rec.AgentID {
		return configError{fmt.Errorf("id %s is set, but this agent enrolled as %s: remove the id setting, or enrol again with --force", r.Agent.ID, rec.AgentID)}
	}
	r.Agent.ID = rec.AgentID
	if err := waitApproved(ctx, rec, dir, log); err != nil {
		return err
	}
	pair, err := keys.LoadOrCreate(dir)
	if err != nil {
		return err
	}
	if rec.Credentials == nil {
		if err := rec.Refresh(ctx, dir); err != nil {
			return err
		}
	}
	bc, err := rec.BrokerCredentials(pair)
	if err != nil {
		return err
	}
	u, err := url.Parse(rec.BrokerURL)
	if err != nil || u.Host == "" {
		return configError{fmt.Errorf("the enrolment's broker URL %q does not parse: enrol again with --force", rec.BrokerURL)}
	}
	u.User = url.User(bc.User)
	r.Agent.Broker.URL = u.String()
	r.Agent.Broker.Password = enrol.Password(dir, pair)
	if r.Agent.Broker.Queue == "" || r.Agent.Broker.Queue == agent.QueueAuto {
		// The coordinator declared its queue; its user may not declare any.
		r.Agent.Broker.Queue = agent.QueueCheck
	}
	log.Info().Str("agent", rec.AgentID).Str("broker", u.Redacted()).Str("coordinator", rec.Coordinator).
		Msg("enrolled: using the broker identity the coordinator gave")
	return nil
}
