package fleetsim

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tokenfleet/tokenfleet/drivers/pkcs11/simtoken"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// FilesPerAgent is about how many files a simulated agent holds open: its journal, the
// journal's WAL and shared memory, and its lock file. A process's open files limit
// (RLIMIT_NOFILE) bounds how many agents it can run: beyond it, the fleet is spread over
// worker processes.
const FilesPerAgent = 4

// filesReserve is left for everything else a process opens (broker sockets, /proc, logs).
const filesReserve = 1000

// AgentsPerProcess is how many agents fit in a process with the open files limit given.
func AgentsPerProcess(fileLimit uint64) int {
	if fileLimit <= filesReserve {
		return 0
	}
	return int((fileLimit - filesReserve) / FilesPerAgent)
}

// workerMessage is a line a worker writes on its standard output.
type workerMessage struct {
	Stats   *FleetStats `json:"stats,omitempty"`
	Stopped []string    `json:"stopped,omitempty"`
	// StopDone answers a "stop-ids" line, with the agents stopped (none, maybe).
	StopDone bool `json:"stop_done,omitempty"`
	// FaultsSet answers a "faults" line: true once they are set; false with Error.
	FaultsSet *bool  `json:"faults_set,omitempty"`
	Error     string `json:"error,omitempty"`
}

// RunWorker runs the fleet of cfg for a parent process (Workers): it writes the fleet's
// stats as a JSON line on out every half second, answers "stop N" lines on in by stopping
// N agents and writing their IDs, "stop-ids ID ..." lines by stopping those of the agents
// it runs, "faults [OP=RATE:CODE ...]" lines by setting the simulated tokens' injected
// failures (none without any), and stops everything when in ends or ctx does.
func RunWorker(ctx context.Context, cfg FleetConfig, in io.Reader, out io.Writer) error {
	fleet, err := NewFleet(cfg)
	if err != nil {
		return err
	}
	var outMu sync.Mutex
	enc := json.NewEncoder(out)
	write := func(m workerMessage) {
		outMu.Lock()
		defer outMu.Unlock()
		_ = enc.Encode(m)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	fleet.Start(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				st := fleet.Stats()
				write(workerMessage{Stats: &st})
			}
		}
	}()
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		verb, arg, _ := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		switch verb {
		case "faults":
			write(setWorkerFaults(fleet, arg))
			continue
		case "stop-ids":
			write(workerMessage{Stopped: fleet.StopAgents(strings.Fields(arg)), StopDone: true})
			continue
		}
		n, err := strconv.Atoi(arg)
		if verb != "stop" || err != nil || n < 0 {
			write(workerMessage{Error: fmt.Sprintf("unknown command %q: want stop N, stop-ids ID ..., or faults [OP=RATE:CODE ...]", sc.Text())})
			continue
		}
		write(workerMessage{Stopped: append([]string{}, fleet.Stop(n)...)})
	}
	cancel()
	<-done
	fleet.Close()
	st := fleet.Stats()
	write(workerMessage{Stats: &st})
	return nil
}

// setWorkerFaults reads a "faults" line's faults and sets them on the worker's fleet.
func setWorkerFaults(fleet *Fleet, specs string) workerMessage {
	var faults []TokenFault
	for _, spec := range strings.Fields(specs) {
		f, err := ParseTokenFault(spec)
		if err != nil {
			return workerMessage{FaultsSet: new(false), Error: err.Error()}
		}
		faults = append(faults, f)
	}
	if err := fleet.SetTokenFaults(faults); err != nil {
		return workerMessage{FaultsSet: new(false), Error: err.Error()}
	}
	return workerMessage{FaultsSet: new(true)}
}

// WorkersConfig spreads a fleet over worker processes.
type WorkersConfig struct {
	// Command is the worker's command line without the fleet's flags, e.g.
	// ["/usr/bin/tokenfleet-fleetsim", "worker"]; WorkerArgs adds them.
	Command []string
	Fleet   FleetConfig
	// Processes is how many workers share the fleet.
	Processes int
	// Stderr receives the workers' logs (nil: discarded).
	Stderr io.Writer
	// Faults and Reinsert are the simulated tokens' injected failures (SimTokensConfig).
	Faults   []TokenFault
	Reinsert simtoken.Dist
}

// WorkerArgs are the flags of a worker for cfg and its simulated tokens (none when
// tokens.PerAgent is 0), as `tokenfleet-fleetsim worker` reads them.
func WorkerArgs(cfg FleetConfig, tokens SimTokensConfig) []string {
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = protocol.HeartbeatInterval
	}
	if cfg.PerConnection == 0 {
		cfg.PerConnection = DefaultAgentsPerConnection
	}
	if tokens.Profile == "" {
		tokens.Profile = "instant"
	}
	args := []string{
		"--broker", cfg.BrokerURL, "--prefix", cfg.Prefix, "--first", strconv.Itoa(cfg.First),
		"--agents", strconv.Itoa(cfg.Count), "--data", cfg.DataDir, "--heartbeat", cfg.Heartbeat.String(),
		"--ramp", strconv.FormatFloat(cfg.Ramp, 'f', -1, 64) + "/s", "--per-connection", strconv.Itoa(cfg.PerConnection),
		"--profile", tokens.Profile, "--tokens-per-agent", strconv.Itoa(tokens.PerAgent),
		"--seed", strconv.FormatUint(cfg.Seed, 10),
		"--crash-every", cfg.CrashEvery.String(), "--restart-after", cfg.RestartAfter.String(),
	}
	for _, f := range tokens.Faults {
		args = append(args, "--fault", f.String())
	}
	if r := tokens.Reinsert; r != (simtoken.Dist{}) {
		args = append(args, "--reinsert", r.Median.String()+"/"+max(r.P95, r.Median).String())
	}
	return args
}

// Workers is a fleet spread over worker processes, each running RunWorker.
type Workers struct {
	cfg     WorkersConfig
	profile string
	tokens  int
	procs   []*workerProc

	faultsMu sync.Mutex // one SetTokenFaults at a time: each waits for its answers
}

type workerProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	ids   int // agents it runs

	mu      sync.Mutex // guards the fields below
	stats   FleetStats
	exitErr error // how the process ended, once ended is closed
	stopped chan []string
	faults  chan error    // the answers to "faults" lines
	ended   chan struct{} // closed when the process has ended
}

// NewWorkers prepares a fleet of cfg.Fleet.Count agents over cfg.Processes workers, with
// the simulated token settings the workers pass on (profile, tokens per agent).
func NewWorkers(cfg WorkersConfig, profile string, tokensPerAgent int) (*Workers, error) {
	if len(cfg.Command) == 0 {
		return nil, errors.New("fleetsim: no worker command")
	}
	if cfg.Processes < 1 {
		return nil, fmt.Errorf("fleetsim: %d worker processes: want one or more", cfg.Processes)
	}
	return &Workers{cfg: cfg, profile: profile, tokens: tokensPerAgent}, nil
}

// Start starts the workers, each with its share of the agents and of the ramp.
func (w *Workers) Start(ctx context.Context) {
	n := w.cfg.Processes
	first := w.cfg.Fleet.First
	for i := range n {
		fc := w.cfg.Fleet
		fc.First = first
		fc.Count = w.cfg.Fleet.Count / n
		if i < w.cfg.Fleet.Count%n {
			fc.Count++
		}
		first += fc.Count
		fc.Ramp = w.cfg.Fleet.Ramp / float64(n)
		// The fleet's crash rate shared out: n workers each crashing every n×CrashEvery.
		fc.CrashEvery = w.cfg.Fleet.CrashEvery * time.Duration(n)
		args := append(append([]string{}, w.cfg.Command[1:]...), WorkerArgs(fc, SimTokensConfig{
			Profile: w.profile, PerAgent: w.tokens, Seed: fc.Seed, Faults: w.cfg.Faults, Reinsert: w.cfg.Reinsert})...)
		cmd := exec.CommandContext(context.WithoutCancel(ctx), w.cfg.Command[0], args...)
		cmd.Stderr = w.cfg.Stderr
		p := &workerProc{cmd: cmd, ids: fc.Count, stopped: make(chan []string, 1), faults: make(chan error, 1), ended: make(chan struct{})}
		stdin, err1 := cmd.StdinPipe()
		stdout, err2 := cmd.StdoutPipe()
		if err := errors.Join(err1, err2); err != nil {
			p.fail(err)
			w.procs = append(w.procs, p)
			continue
		}
		p.stdin = stdin
		if err := cmd.Start(); err != nil {
			p.fail(fmt.Errorf("starting worker %s: %w", w.cfg.Command[0], err))
			w.procs = append(w.procs, p)
			continue
		}
		go p.read(stdout)
		w.procs = append(w.procs, p)
	}
}

func (p *workerProc) fail(err error) {
	p.mu.Lock()
	p.stats = FleetStats{Failed: p.ids, FirstError: err.Error()}
	p.mu.Unlock()
	select {
	case <-p.ended:
	default:
		close(p.ended)
	}
}

func (p *workerProc) read(r io.Reader) {
	defer close(p.ended)
	defer func() {
		err := p.cmd.Wait()
		p.mu.Lock()
		p.exitErr = err
		p.mu.Unlock()
	}()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		var m workerMessage
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			continue
		}
		p.mu.Lock()
		if m.Stats != nil {
			p.stats = *m.Stats
		}
		if m.Error != "" && p.stats.FirstError == "" && m.FaultsSet == nil {
			p.stats.FirstError = m.Error
		}
		p.mu.Unlock()
		if m.Stopped != nil || m.StopDone {
			p.stopped <- m.Stopped
		}
		if m.FaultsSet != nil {
			var err error
			if !*m.FaultsSet {
				err = errors.New(m.Error)
			}
			p.faults <- err
		}
	}
}

// Stats sums the workers' stats.
func (w *Workers) Stats() FleetStats {
	var s FleetStats
	for _, p := range w.procs {
		p.mu.Lock()
		ps, exitErr := p.stats, p.exitErr
		p.mu.Unlock()
		select {
		case <-p.ended:
			// A worker that failed failed its agents that had not started.
			if exitErr != nil {
				ps.Failed = max(ps.Failed, p.ids-ps.Started)
				if ps.FirstError == "" {
					ps.FirstError = fmt.Sprintf("worker process %s: %v (its log is on stderr)", p.cmd.Path, exitErr)
				}
			}
		default:
		}
		s.Started += ps.Started
		s.Failed += ps.Failed
		s.Hellos += ps.Hellos
		s.Heartbeats += ps.Heartbeats
		s.Other += ps.Other
		s.PublishErrs += ps.PublishErrs
		s.Connections += ps.Connections
		s.Crashes += ps.Crashes
		s.Restarts += ps.Restarts
		s.TokenFaults = mergeFaults(s.TokenFaults, ps.TokenFaults)
		if s.FirstError == "" {
			s.FirstError = ps.FirstError
		}
	}
	return s
}

// Stop stops n agents, taken from the last workers first.
func (w *Workers) Stop(n int) []string {
	var ids []string
	for i := len(w.procs) - 1; i >= 0 && n > 0; i-- {
		p := w.procs[i]
		if p.stdin == nil {
			continue
		}
		k := min(n, p.ids)
		if _, err := fmt.Fprintf(p.stdin, "stop %d\n", k); err != nil {
			continue
		}
		select {
		case got := <-p.stopped:
			ids = append(ids, got...)
			p.ids -= len(got)
			n -= len(got)
		case <-p.ended:
		}
	}
	return ids
}

// SetTokenFaults sets the simulated tokens' injected failures in every worker, one after
// the other, and returns once each has set them (nil: none).
func (w *Workers) SetTokenFaults(faults []TokenFault) error {
	if err := CheckTokenFaults(faults); err != nil {
		return fmt.Errorf("fleetsim: %w", err)
	}
	w.faultsMu.Lock()
	defer w.faultsMu.Unlock()
	line := "faults"
	for _, f := range faults {
		line += " " + f.String()
	}
	var errs []error
	for i, p := range w.procs {
		if p.stdin == nil {
			continue
		}
		if _, err := fmt.Fprintln(p.stdin, line); err != nil {
			errs = append(errs, fmt.Errorf("worker %d: %w", i, err))
			continue
		}
		select {
		case err := <-p.faults:
			if err != nil {
				errs = append(errs, fmt.Errorf("worker %d: %w", i, err))
			}
		case <-p.ended:
			errs = append(errs, fmt.Errorf("worker %d ended before it set the faults", i))
		}
	}
	return errors.Join(errs...)
}

// StopAgents stops the running agents with these IDs, asking each worker in turn, and
// returns those stopped. Not safe for use concurrently with Stop.
func (w *Workers) StopAgents(ids []string) []string {
	var out []string
	line := "stop-ids " + strings.Join(ids, " ")
	for _, p := range w.procs {
		if p.stdin == nil {
			continue
		}
		if _, err := fmt.Fprintln(p.stdin, line); err != nil {
			continue
		}
		select {
		case got := <-p.stopped:
			out = append(out, got...)
			p.ids -= len(got)
		case <-p.ended:
		}
	}
	return out
}

// Close ends every worker (their standard input closes: they stop their agents) and
// waits for them.
func (w *Workers) Close() {
	for _, p := range w.procs {
		if p.stdin != nil {
			_ = p.stdin.Close()
		}
	}
	for _, p := range w.procs {
		if p.cmd.Process == nil {
			continue
		}
		select {
		case <-p.ended:
		case <-time.After(2 * time.Minute):
			_ = p.cmd.Process.Kill()
			<-p.ended
		}
	}
}

// Processes are the workers' process IDs.
func (w *Workers) Processes() []int {
	var out []int
	for _, p := range w.procs {
		if p.cmd.Process != nil {
			out = append(out, p.cmd.Process.Pid)
		}
	}
	return out
}

// Self is the path of the running program, for WorkersConfig.Command.
func Self() (string, error) { return os.Executable() }
