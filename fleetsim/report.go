package fleetsim

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/tokenfleet/tokenfleet/protocol"
)

// Goals of the presence run at 10,000 agents (DESIGN.md, Scale).
const (
	GoalCoordinatorCorePercent = 10.0  // coordinator CPU, % of one core
	GoalQueueSeconds           = 1.0   // heartbeat queue, in seconds of heartbeat traffic
	GoalCoordinatorRSSMB       = 200.0 // coordinator RSS
)

// Report is what a presence run measured.
type Report struct {
	Agents          int     `json:"agents"`
	Heartbeat       Seconds `json:"heartbeat_interval_s"`
	PresenceTimeout Seconds `json:"presence_timeout_s"`

	Enrol *EnrolReport `json:"enrol,omitempty"`
	Fleet FleetStats   `json:"fleet"`
	// Ramp is the time from the first agent's start to the last one's.
	Ramp Seconds `json:"ramp_s"`
	// OnlineAfterLastStart is how long after the last agent started the coordinator
	// showed every agent online.
	OnlineAfterLastStart Seconds `json:"online_after_last_start_s"`
	// SettledAfterLastStart is how long after the last agent started the coordinator had
	// taken every hello and no heartbeats waited (measured with the management API only).
	SettledAfterLastStart Seconds `json:"settled_after_last_start_s"`
	// Online is how many agents the coordinator showed online after the steady window.
	Online int `json:"online"`

	// Window is the steady window's length; the figures below are measured in it.
	Window                Seconds `json:"window_s"`
	CoordinatorCPUPercent float64 `json:"coordinator_cpu_percent"` // of one core
	CoordinatorRSSMaxMB   float64 `json:"coordinator_rss_max_mb"`
	CoordinatorHWMMB      float64 `json:"coordinator_hwm_mb"`
	// OneSecondOfTraffic is the heartbeats the fleet sends a second (Agents ÷ Heartbeat).
	OneSecondOfTraffic float64 `json:"one_second_of_traffic"`
	HeartbeatQueueMax  int     `json:"heartbeat_queue_max"`
	HeartbeatQueueMean float64 `json:"heartbeat_queue_mean"`
	HeartbeatQueueP90  int     `json:"heartbeat_queue_p90"`
	// HeartbeatQueue is the heartbeat queue's depth, a sample a second over the window.
	HeartbeatQueue []int   `json:"heartbeat_queue_samples"`
	EventsQueueMax int     `json:"events_queue_max"`
	QueueSamples   int     `json:"queue_samples"`
	SimCPUPercent  float64 `json:"simulator_cpu_percent"`
	SimRSSMaxMB    float64 `json:"simulator_rss_max_mb"`
	SimKBPerAgent  float64 `json:"simulator_kb_per_agent"`

	// Stopped agents stopped after the window; OfflineAfter is how long until the
	// coordinator showed all of them offline.
	Stopped      int     `json:"stopped"`
	OfflineAfter Seconds `json:"offline_after_s"`
	AllOffline   bool    `json:"all_offline"`

	// Jobs is the job load's report, when one ran (RunConfig.Jobs).
	Jobs *JobReport `json:"jobs,omitempty"`
}

// EnrolReport is the enrolment's rate.
type EnrolReport struct {
	Agents    int     `json:"agents"`
	Existing  int     `json:"already_enrolled"`
	Endpoint  string  `json:"endpoint"`
	Seconds   Seconds `json:"seconds"`
	PerSecond float64 `json:"per_second"`
}

// QueueRatio is the heartbeat queue's maximum in seconds of heartbeat traffic (goal ≤ 1).
func (r *Report) QueueRatio() float64 {
	if r.OneSecondOfTraffic == 0 {
		return 0
	}
	return float64(r.HeartbeatQueueMax) / r.OneSecondOfTraffic
}

// OnlineRatio is the share of the fleet shown online after the window (goal 1).
func (r *Report) OnlineRatio() float64 {
	if r.Agents == 0 {
		return 0
	}
	return float64(r.Online) / float64(r.Agents)
}

// OfflineRatio is the offline detection time ÷ the coordinator's presence timeout: at
// least 1, and the sweep runs every third of the timeout, so up to about 1.4.
func (r *Report) OfflineRatio() float64 {
	if r.PresenceTimeout == 0 {
		return 0
	}
	return float64(r.OfflineAfter) / float64(r.PresenceTimeout)
}

// WriteJSON writes the report as one JSON document.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the report for people, each figure beside its goal.
func (r *Report) WriteText(w io.Writer) error {
	p := func(format string, args ...any) { _, _ = fmt.Fprintf(w, format+"\n", args...) }
	p("fleet: %d agents, heartbeat every %s, %d broker connections", r.Agents, r.Heartbeat, r.Fleet.Connections)
	if e := r.Enrol; e != nil {
		p("enrolment: %d agents in %s (%.0f a second, %s; %d were enrolled already)", e.Agents, e.Seconds, e.PerSecond, e.Endpoint, e.Existing)
	}
	p("started: %d of %d in %s (%d failed); sent %d hellos, %d heartbeats, %d other messages, %d publishes failed",
		r.Fleet.Started, r.Agents, r.Ramp, r.Fleet.Failed, r.Fleet.Hellos, r.Fleet.Heartbeats, r.Fleet.Other, r.Fleet.PublishErrs)
	if r.Fleet.FirstError != "" {
		p("first agent error: %s", r.Fleet.FirstError)
	}
	if r.Fleet.Crashes > 0 || r.Fleet.Restarts > 0 {
		p("crashes: %d agents crashed (stopped at once, nothing flushed), %d restarted from their journals", r.Fleet.Crashes, r.Fleet.Restarts)
	}
	if len(r.Fleet.TokenFaults) > 0 {
		p("token faults injected:")
		for _, f := range r.Fleet.TokenFaults {
			p("  %-12s %-30s rate %-6s %6d", f.Op, f.Code, strconv.FormatFloat(f.Rate, 'g', -1, 64), f.Injected)
		}
	}
	p("presence: every agent online %s after the last start; %d of %d online after the window (goal: all, ratio %.3f)",
		r.OnlineAfterLastStart, r.Online, r.Agents, r.OnlineRatio())
	if r.SettledAfterLastStart > 0 {
		p("coordinator caught up (every hello taken, no heartbeat backlog) %s after the last start", r.SettledAfterLastStart)
	}
	p("steady window: %s", r.Window)
	p("  coordinator CPU      %6.1f %% of one core      (goal < %.0f)", r.CoordinatorCPUPercent, GoalCoordinatorCorePercent)
	p("  coordinator RSS      %6.1f MB max, %.1f MB peak (goal ≤ %.0f)", r.CoordinatorRSSMaxMB, r.CoordinatorHWMMB, GoalCoordinatorRSSMB)
	p("  heartbeat queue      %6d max, %d p90, %.1f mean over %d samples; one second of traffic is %.0f: ratio %.3f (goal ≤ %.0f)",
		r.HeartbeatQueueMax, r.HeartbeatQueueP90, r.HeartbeatQueueMean, r.QueueSamples, r.OneSecondOfTraffic, r.QueueRatio(), GoalQueueSeconds)
	p("  events queue         %6d max", r.EventsQueueMax)
	p("  simulator            %6.1f %% of one core, %.1f MB max RSS, %.0f kB per agent", r.SimCPUPercent, r.SimRSSMaxMB, r.SimKBPerAgent)
	if r.Jobs != nil {
		r.Jobs.WriteText(w)
	}
	if r.Stopped > 0 {
		if r.AllOffline {
			p("offline: %d agents stopped, all shown offline after %s; presence timeout %s: ratio %.2f (goal 1 to 1.4: the sweep runs every third of the timeout)",
				r.Stopped, r.OfflineAfter, r.PresenceTimeout, r.OfflineRatio())
		} else {
			p("offline: %d agents stopped, not all shown offline", r.Stopped)
		}
	}
	return nil
}

// sampler samples the coordinator's and the simulator's processes and the coordinator's
// queues every second while a window is open.
type sampler struct {
	cfg   RunConfig
	fleet Runner

	cancel context.CancelFunc
	done   chan struct{}

	mu        sync.Mutex // guards the fields below
	open      bool
	opened    time.Time
	closed    time.Time
	coordFrom ProcSample
	coordTo   ProcSample
	simFrom   time.Duration
	simTo     time.Duration
	simBase   int64 // the simulator's RSS before the fleet started
	coordRSS  int64
	coordHWM  int64
	simRSS    int64
	hbMax     int
	hbSum     int
	hb        []int
	evMax     int
	samples   int
}

func newSampler(cfg RunConfig, fleet Runner) *sampler {
	s := &sampler{cfg: cfg, fleet: fleet}
	s.simBase = s.simProc().RSS
	return s
}

// simProc sums the simulator's processes.
func (s *sampler) simProc() ProcSample {
	var sum ProcSample
	for _, pid := range s.fleet.Processes() {
		p, err := ReadProc(pid)
		if err != nil {
			continue
		}
		sum.CPU += p.CPU
		sum.RSS += p.RSS
	}
	return sum
}

func (s *sampler) start(ctx context.Context) {
	ctx, s.cancel = context.WithCancel(ctx)
	s.done = make(chan struct{})
	go func() {
		defer close(s.done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				s.sample(ctx)
			}
		}
	}()
}

func (s *sampler) stop() {
	s.cancel()
	<-s.done
}

func (s *sampler) sample(ctx context.Context) {
	s.mu.Lock()
	open := s.open
	s.mu.Unlock()
	if !open {
		return
	}
	var coord ProcSample
	if s.cfg.CoordinatorPID > 0 {
		coord, _ = ReadProc(s.cfg.CoordinatorPID)
	}
	sim := s.simProc()
	hb, ev := -1, -1
	if m := s.cfg.Management; m != nil {
		if q, err := m.Queue(ctx, protocol.HeartbeatsQueue); err == nil {
			hb = q.Messages
		}
		if q, err := m.Queue(ctx, protocol.EventsQueue); err == nil {
			ev = q.Messages
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.coordRSS = max(s.coordRSS, coord.RSS)
	s.coordHWM = max(s.coordHWM, coord.HWM)
	s.simRSS = max(s.simRSS, sim.RSS)
	if hb >= 0 {
		s.samples++
		s.hbSum += hb
		s.hb = append(s.hb, hb)
		s.hbMax = max(s.hbMax, hb)
	}
	s.evMax = max(s.evMax, ev)
}

// window opens or closes the steady window, sampling at both ends: a short window has
// samples too.
func (s *sampler) window(ctx context.Context, open bool) {
	if !open {
		s.sample(ctx)
	}
	defer func() {
		if open {
			s.sample(ctx)
		}
	}()
	var coord ProcSample
	if s.cfg.CoordinatorPID > 0 {
		coord, _ = ReadProc(s.cfg.CoordinatorPID)
	}
	sim := s.simProc()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.open = open
	if open {
		s.opened, s.coordFrom, s.simFrom = time.Now(), coord, sim.CPU
		s.coordRSS, s.coordHWM, s.simRSS = coord.RSS, coord.HWM, sim.RSS
	} else {
		s.closed, s.coordTo, s.simTo = time.Now(), coord, sim.CPU
		s.coordRSS, s.coordHWM, s.simRSS = max(s.coordRSS, coord.RSS), max(s.coordHWM, coord.HWM), max(s.simRSS, sim.RSS)
	}
}

// fill puts the window's figures into rep.
func (s *sampler) fill(rep *Report) {
	s.mu.Lock()
	defer s.mu.Unlock()
	wall := s.closed.Sub(s.opened)
	rep.Window = secs(wall)
	if wall <= 0 {
		return
	}
	const mb = 1 << 20
	if s.cfg.CoordinatorPID > 0 {
		rep.CoordinatorCPUPercent = 100 * (s.coordTo.CPU - s.coordFrom.CPU).Seconds() / wall.Seconds()
		rep.CoordinatorRSSMaxMB = float64(s.coordRSS) / mb
		rep.CoordinatorHWMMB = float64(s.coordHWM) / mb
	}
	rep.SimCPUPercent = 100 * (s.simTo - s.simFrom).Seconds() / wall.Seconds()
	rep.SimRSSMaxMB = float64(s.simRSS) / mb
	if rep.Agents > 0 {
		rep.SimKBPerAgent = float64(s.simRSS-s.simBase) / 1024 / float64(rep.Agents)
	}
	rep.HeartbeatQueueMax, rep.EventsQueueMax, rep.QueueSamples = s.hbMax, max(s.evMax, 0), s.samples
	if s.samples > 0 {
		rep.HeartbeatQueueMean = float64(s.hbSum) / float64(s.samples)
		rep.HeartbeatQueue = slices.Clone(s.hb)
		sorted := slices.Sorted(slices.Values(s.hb))
		rep.HeartbeatQueueP90 = sorted[min(len(sorted)-1, len(sorted)*9/10)]
	}
}
