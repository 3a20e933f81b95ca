package fleetsim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// DefaultPresenceTimeout is the coordinator's default heartbeat timeout (three heartbeat
// intervals): offline detection is judged against it.
const DefaultPresenceTimeout = 3 * protocol.HeartbeatInterval

// Runner is a simulated fleet as the presence run drives it: in this process (*Fleet) or
// spread over worker processes (*Workers).
type Runner interface {
	Start(ctx context.Context)
	Stats() FleetStats
	// Stop stops the n agents started last and returns their IDs.
	Stop(n int) []string
	// SetTokenFaults replaces the simulated tokens' injected failures while the fleet
	// runs (nil: none).
	SetTokenFaults(faults []TokenFault) error
	Close()
	// Processes are the simulator's own processes, for its CPU and memory.
	Processes() []int
}

// FleetStats is what a fleet did so far.
type FleetStats struct {
	Started     int   `json:"started"`
	Failed      int   `json:"failed"`
	Hellos      int64 `json:"hellos"`
	Heartbeats  int64 `json:"heartbeats"`
	Other       int64 `json:"other_messages"`
	PublishErrs int64 `json:"publish_errors"`
	Connections int   `json:"connections"`
	// Crashes is how many agents crashed (FleetConfig.CrashEvery), Restarts how many of
	// them started again from their journals.
	Crashes  int `json:"crashes"`
	Restarts int `json:"restarts"`
	// TokenFaults are the failures the simulated tokens injected, per configured fault.
	TokenFaults []FaultCount `json:"token_faults,omitempty"`
	// FirstError is the first error an agent ended with, if any.
	FirstError string `json:"first_error,omitempty"`
}

// Stats is the fleet's FleetStats.
func (f *Fleet) Stats() FleetStats {
	s := FleetStats{
		Started: f.Started(), Failed: f.Failed(), Connections: f.Connections(),
		Hellos: f.counters.Hellos.Load(), Heartbeats: f.counters.Heartbeats.Load(),
		Other: f.counters.Other.Load(), PublishErrs: f.counters.Failed.Load(),
		Crashes: f.Crashes(), Restarts: f.Restarts(),
	}
	if fc, ok := f.cfg.Tokens.(FaultCounter); ok {
		s.TokenFaults = fc.Faults()
	}
	if errs := f.Errors(); len(errs) > 0 {
		s.FirstError = errs[0].Error()
	}
	return s
}

// Processes is this process.
func (f *Fleet) Processes() []int { return []int{os.Getpid()} }

// RunConfig is a presence run.
type RunConfig struct {
	// Agents is the fleet's size; Prefix its IDs' prefix (AgentID); Heartbeat the agents'
	// heartbeat interval (0: 15s).
	Agents    int
	Prefix    string
	Heartbeat time.Duration
	// API is the coordinator's API, as an administrator (enrolment, presence).
	API *client.Client
	// Enrol enrols the agents through the API before they start.
	Enrol bool
	// Management reads the coordinator's queues (nil: no queue depths).
	Management *Management
	// CoordinatorPID is the coordinator's process, for its CPU and memory (0: not measured).
	CoordinatorPID int
	// Window is the steady window measured once every agent is online.
	Window time.Duration
	// StopAgents is how many agents stop after the window, to time offline detection.
	StopAgents int
	// PresenceTimeout is the coordinator's heartbeat timeout (0: DefaultPresenceTimeout).
	PresenceTimeout time.Duration
	// OnlineTimeout bounds the wait for every agent to show online, and for the stopped
	// ones to show offline (0: 5 minutes, or two presence timeouts if longer, plus a second
	// for every 50 agents).
	OnlineTimeout time.Duration
	// Jobs, when above 0, runs a job load after the window: an issue job on each of the
	// first Jobs agents (RunJobs), with Tokens for the token time (nil: not subtracted).
	Jobs    int
	JobRate float64 // jobs created a second; 0: all at once
	Tokens  *SimTokens
	Log     zerolog.Logger
}

// Run enrols (if asked), starts the fleet, waits until the coordinator shows every agent
// online, measures the steady window, stops StopAgents agents and times until the
// coordinator shows them offline, then closes the fleet. The report says what was
// reached even when Run fails part way.
func Run(ctx context.Context, cfg RunConfig, fleet Runner) (*Report, error) {
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = protocol.HeartbeatInterval
	}
	if cfg.PresenceTimeout == 0 {
		cfg.PresenceTimeout = DefaultPresenceTimeout
	}
	if cfg.OnlineTimeout == 0 {
		// A busy machine starts agents (each opens and syncs its journal) at a few dozen a
		// second whatever the ramp asks.
		cfg.OnlineTimeout = max(5*time.Minute, 2*cfg.PresenceTimeout) + time.Duration(cfg.Agents)*time.Second/50
	}
	rep := &Report{Agents: cfg.Agents, Heartbeat: secs(cfg.Heartbeat), PresenceTimeout: secs(cfg.PresenceTimeout),
		OneSecondOfTraffic: float64(cfg.Agents) / cfg.Heartbeat.Seconds(), Stopped: cfg.StopAgents}
	defer fleet.Close()

	ids := make(map[string]bool, cfg.Agents)
	for i := range cfg.Agents {
		ids[AgentID(cfg.Prefix, i)] = true
	}
	if cfg.Enrol {
		e, err := Enrol(ctx, cfg.API, cfg.Prefix, cfg.Agents, cfg.Log)
		rep.Enrol = &e
		if err != nil {
			return rep, err
		}
	}

	sampler := newSampler(cfg, fleet)
	sampler.start(ctx)
	defer sampler.stop()

	cfg.Log.Info().Int("agents", cfg.Agents).Msg("starting the fleet")
	begin := time.Now()
	fleet.Start(ctx)
	// Every agent working, then every agent online.
	deadline := time.Now().Add(cfg.OnlineTimeout)
	var lastStart time.Time
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for lastStart.IsZero() {
		st := fleet.Stats()
		if st.Started >= cfg.Agents {
			lastStart = time.Now()
			break
		}
		if st.Failed > 0 {
			rep.Fleet = st
			return rep, fmt.Errorf("%d agents failed; the first: %s", st.Failed, st.FirstError)
		}
		if err := wait(ctx, tick, deadline); err != nil {
			rep.Fleet = st
			return rep, fmt.Errorf("%d of %d agents started within %s: %w", st.Started, cfg.Agents, cfg.OnlineTimeout, err)
		}
	}
	rep.Ramp = secs(lastStart.Sub(begin))
	deadline = time.Now().Add(cfg.OnlineTimeout)
	cfg.Log.Info().Float64("seconds", float64(rep.Ramp)).Msg("every agent started; waiting for the coordinator to show them online")
	for {
		online, err := countOnline(ctx, cfg.API, ids)
		if err == nil && online == cfg.Agents {
			rep.OnlineAfterLastStart = secs(max(0, time.Since(lastStart)))
			break
		}
		if werr := wait(ctx, tick, deadline); werr != nil {
			rep.Online = online
			rep.Fleet = fleet.Stats()
			if err != nil {
				return rep, fmt.Errorf("%d of %d agents shown online within %s (asking the API: %w): %w", online, cfg.Agents, cfg.OnlineTimeout, err, werr)
			}
			return rep, fmt.Errorf("%d of %d agents shown online within %s: %w", online, cfg.Agents, cfg.OnlineTimeout, werr)
		}
	}
	cfg.Log.Info().Float64("seconds", float64(rep.OnlineAfterLastStart)).Msg("every agent online")
	// Steady means the coordinator has caught up with the start too: every hello taken
	// (a transaction each, behind the heartbeats' fast path) and no heartbeat backlog.
	if cfg.Management != nil {
		if err := settle(ctx, cfg.Management, rep.OneSecondOfTraffic, tick, deadline); err != nil {
			return rep, err
		}
		rep.SettledAfterLastStart = secs(time.Since(lastStart))
		cfg.Log.Info().Float64("seconds", float64(rep.SettledAfterLastStart)).Msg("the coordinator's queues are drained")
	}
	cfg.Log.Info().Dur("window_ms", cfg.Window).Msg("measuring the steady window")

	// The steady window: nothing is asked of the API meanwhile, so the coordinator's CPU
	// is presence's alone.
	sampler.window(ctx, true)
	if err := sleepCtx(ctx, cfg.Window); err != nil {
		return rep, err
	}
	sampler.window(ctx, false)
	sampler.fill(rep)
	online, err := countOnline(ctx, cfg.API, ids)
	if err != nil {
		return rep, fmt.Errorf("counting agents online after the window: %w", err)
	}
	rep.Online = online
	rep.Fleet = fleet.Stats()

	if cfg.Jobs > 0 {
		busy := make([]string, min(cfg.Jobs, cfg.Agents))
		for i := range busy {
			busy[i] = AgentID(cfg.Prefix, i)
		}
		jr, err := RunJobs(ctx, JobLoadConfig{API: cfg.API, Agents: busy, Tokens: cfg.Tokens, Rate: cfg.JobRate, Verify: 5, Log: cfg.Log})
		rep.Jobs = jr
		if err != nil {
			return rep, fmt.Errorf("job load: %w", err)
		}
	}

	if cfg.StopAgents > 0 {
		stopped := fleet.Stop(cfg.StopAgents)
		at := time.Now()
		cfg.Log.Info().Int("agents", len(stopped)).Msg("agents stopped; waiting for the coordinator to show them offline")
		gone := make(map[string]bool, len(stopped))
		for _, id := range stopped {
			gone[id] = true
		}
		deadline := time.Now().Add(cfg.OnlineTimeout)
		for {
			still, err := countOnline(ctx, cfg.API, gone)
			if err == nil && still == 0 {
				rep.OfflineAfter = secs(time.Since(at))
				rep.AllOffline = true
				break
			}
			if werr := wait(ctx, tick, deadline); werr != nil {
				return rep, fmt.Errorf("%d of %d stopped agents still shown online after %s: %w", still, len(stopped), cfg.OnlineTimeout, werr)
			}
		}
	}
	rep.Fleet = fleet.Stats()
	return rep, nil
}

// settle waits until the events queue is empty and the heartbeat queue holds less than
// a second of traffic, six samples in a row: the management API's figures are up to five
// seconds old.
func settle(ctx context.Context, m *Management, oneSecond float64, tick *time.Ticker, deadline time.Time) error {
	calm := 0
	for calm < 6 {
		ev, err1 := m.Queue(ctx, protocol.EventsQueue)
		hb, err2 := m.Queue(ctx, protocol.HeartbeatsQueue)
		if err := errors.Join(err1, err2); err != nil {
			return err
		}
		if ev.Messages == 0 && float64(hb.Messages) <= oneSecond {
			calm++
		} else {
			calm = 0
		}
		if err := wait(ctx, tick, deadline); err != nil {
			return fmt.Errorf("the coordinator's queues did not drain (events %d, heartbeats %d): %w", ev.Messages, hb.Messages, err)
		}
	}
	return nil
}

// countOnline counts the agents of ids the coordinator shows online.
func countOnline(ctx context.Context, api *client.Client, ids map[string]bool) (int, error) {
	n := 0
	for a, err := range api.AllAgents(ctx, 500) {
		if err != nil {
			return n, err
		}
		if ids[a.ID] && a.Online {
			n++
		}
	}
	return n, nil
}

// wait waits for the next tick, or fails when ctx or the deadline ends first.
func wait(ctx context.Context, tick *time.Ticker, deadline time.Time) error {
	if time.Now().After(deadline) {
		return errors.New("gave up waiting")
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-tick.C:
		return nil
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Enrol enrols agents prefix00000… through the API's batch endpoint and reports the
// rate. Agents the coordinator already knows are taken as enrolled, so a run can be
// repeated.
func Enrol(ctx context.Context, api *client.Client, prefix string, n int, log zerolog.Logger) (EnrolReport, error) {
	rep := EnrolReport{Agents: n}
	begin := time.Now()
	err := enrolAll(ctx, api, prefix, n, &rep)
	rep.Seconds = secs(time.Since(begin))
	if rep.Seconds > 0 {
		rep.PerSecond = float64(n) / float64(rep.Seconds)
	}
	log.Info().Int("agents", n).Float64("per_second", rep.PerSecond).Str("endpoint", rep.Endpoint).Msg("agents enrolled")
	return rep, err
}

func enrolAll(ctx context.Context, api *client.Client, prefix string, n int, rep *EnrolReport) error {
	rep.Endpoint = "POST /api/v1/agents/batch"
	for first := 0; first < n; first += client.MaxAgentBatch {
		batch := make([]client.AgentEnrolment, 0, min(client.MaxAgentBatch, n-first))
		for i := first; i < first+cap(batch); i++ {
			id := AgentID(prefix, i)
			batch = append(batch, client.AgentEnrolment{ID: id, Hostname: id + ".fleetsim"})
		}
		_, err := api.EnrolAgents(ctx, batch)
		if conflict(err) {
			// Some were enrolled before (a run repeated): a batch is all or nothing, so
			// enrol this one's agents one by one.
			if err := enrolEach(ctx, api, batch, rep); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("enrolling %s to %s: %w", batch[0].ID, batch[len(batch)-1].ID, err)
		}
	}
	return nil
}

// enrolEach enrols agents one request each, counting those enrolled already.
func enrolEach(ctx context.Context, api *client.Client, agents []client.AgentEnrolment, rep *EnrolReport) error {
	for _, a := range agents {
		_, err := api.EnrolAgent(ctx, a)
		if conflict(err) {
			rep.Existing++
			continue
		}
		if err != nil {
			return fmt.Errorf("enrolling %s: %w", a.ID, err)
		}
	}
	return nil
}

// Seconds is a duration in seconds, as reports give them.
type Seconds float64

// String is the duration rounded for people.
func (s Seconds) String() string {
	return strings.TrimSuffix(fmt.Sprintf("%.1f", float64(s)), ".0") + " s"
}

func secs(d time.Duration) Seconds { return Seconds(d.Seconds()) }
