package fleetsim

import (
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11/simtoken"
)

// ModulePrefix begins the name of a simulated agent's PKCS#11 module: simtoken:AGENT-ID.
const ModulePrefix = "simtoken:"

// SimTokens gives each simulated agent a module of its own over an in-memory simulated
// token backend (drivers/pkcs11/simtoken): Tokens per agent, blank (an issue job
// initialises them), of the given model and latency profile, failing as configured. Every
// opening of an agent's module (the executor's, each inventory scan's) is over the same
// backend, as every opening of a real module sees the same tokens: they outlive an agent's
// crash.
type SimTokens struct {
	profile  simtoken.Profile
	perAgent int
	model    *simtoken.Model
	seed     uint64
	reinsert simtoken.Dist
	// injected counts the failures injected, by operation and CKR_ value; the map holds a
	// counter for every operation from the start and is never changed.
	injected map[simtoken.Op]*faultCounts

	mu       sync.Mutex                     // guards the fields below
	faults   []TokenFault                   // injected now
	byOp     map[simtoken.Op]simtoken.Fault // faults by operation, as the backends read them; replaced, never changed
	history  []TokenFault                   // every fault configured so far, first configuration first
	backends map[string]*simtoken.Backend   // by agent ID
	owner    map[string]*simtoken.Backend   // token serial → its backend
}

// faultCounts counts one operation's injected failures by the CKR_ value answered: the
// faults of an operation may change during a run (SetFaults).
type faultCounts struct {
	mu   sync.Mutex // guards byRV
	byRV map[uint]int64
}

func (c *faultCounts) add(rv uint) {
	c.mu.Lock()
	c.byRV[rv]++
	c.mu.Unlock()
}

func (c *faultCounts) get(rv uint) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.byRV[rv]
}

// SimTokensConfig describes a fleet's simulated tokens.
type SimTokensConfig struct {
	// Profile names the latency profile (simtoken.ProfileByName); "" is instant.
	Profile string
	// PerAgent is how many tokens each agent has, 1 or more.
	PerAgent int
	// Model is the tokens' kind; nil is simtoken.DefaultModel.
	Model *simtoken.Model
	// Seed seeds the random draws, with the agent's ID, so that a run can be replayed.
	Seed uint64
	// Faults are the injected failures, one per operation class at most.
	Faults []TokenFault
	// Reinsert is how long a token a removal fault pulled out stays out; the zero Dist is
	// DefaultReinsert.
	Reinsert simtoken.Dist
}

// NewSimTokens makes the simulated tokens of cfg.
func NewSimTokens(cfg SimTokensConfig) (*SimTokens, error) {
	if cfg.Profile == "" {
		cfg.Profile = "instant"
	}
	p, err := simtoken.ProfileByName(cfg.Profile)
	if err != nil {
		return nil, err
	}
	if cfg.PerAgent < 1 {
		return nil, fmt.Errorf("fleetsim: %d simulated tokens per agent: want 1 or more", cfg.PerAgent)
	}
	if err := CheckTokenFaults(cfg.Faults); err != nil {
		return nil, fmt.Errorf("fleetsim: %w", err)
	}
	if cfg.Reinsert == (simtoken.Dist{}) {
		cfg.Reinsert = DefaultReinsert
	}
	if err := cfg.Reinsert.Validate(); err != nil {
		return nil, fmt.Errorf("fleetsim: re-insertion time: %w", err)
	}
	s := &SimTokens{profile: p, perAgent: cfg.PerAgent, model: cfg.Model, seed: cfg.Seed, reinsert: cfg.Reinsert,
		injected: map[simtoken.Op]*faultCounts{},
		backends: map[string]*simtoken.Backend{}, owner: map[string]*simtoken.Backend{}}
	for _, op := range simtoken.Ops {
		s.injected[op] = &faultCounts{byRV: map[uint]int64{}}
	}
	s.setFaultsLocked(cfg.Faults) // checked above; nothing shares s yet
	return s, nil
}

// SetFaults replaces the injected failures from the next token operation on, on every
// agent's tokens and on those of agents started later (nil: none): a run "fixes" its
// tokens, or breaks them, while it goes on. Safe for concurrent use. The failures
// injected so far stay counted (Faults).
func (s *SimTokens) SetFaults(faults []TokenFault) error {
	if err := CheckTokenFaults(faults); err != nil {
		return fmt.Errorf("fleetsim: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setFaultsLocked(faults)
	for _, b := range s.backends {
		if err := b.SetFaults(s.byOp); err != nil {
			return fmt.Errorf("fleetsim: %w", err) // checked above: not expected
		}
	}
	return nil
}

// setFaultsLocked makes faults the current ones; s.mu is held, or s not shared yet.
func (s *SimTokens) setFaultsLocked(faults []TokenFault) {
	s.faults = slices.Clone(faults)
	byOp := make(map[simtoken.Op]simtoken.Fault, len(faults))
	for _, f := range faults {
		rv, _ := simtoken.RVFor(f.Code) // checked by the callers
		byOp[f.Op] = simtoken.Fault{Rate: f.Rate, RV: rv}
		if !slices.ContainsFunc(s.history, func(h TokenFault) bool { return h.Op == f.Op && h.Code == f.Code }) {
			s.history = append(s.history, f)
		}
	}
	s.byOp = byOp // read only from here on: the backends share it
}

// Faults are the failures injected so far, one entry per fault configured so far (at the
// start or by SetFaults), with its rate now (0 for a fault no longer set) (FaultCounter).
func (s *SimTokens) Faults() []FaultCount {
	s.mu.Lock()
	history := slices.Clone(s.history)
	current := slices.Clone(s.faults)
	s.mu.Unlock()
	out := make([]FaultCount, len(history))
	for i, f := range history {
		rate := 0.0
		for _, c := range current {
			if c.Op == f.Op && c.Code == f.Code {
				rate = c.Rate
			}
		}
		rv, _ := simtoken.RVFor(f.Code)
		out[i] = FaultCount{Op: f.Op, Code: f.Code, Rate: rate, Injected: s.injected[f.Op].get(rv)}
	}
	return out
}

// Profiles are the names of the built-in latency profiles.
var Profiles = []string{"instant", "softhsm", "usb-token", "smartcard"}

// Modules names the agent's one module.
func (s *SimTokens) Modules(agentID string) []string { return []string{ModulePrefix + agentID} }

// Serial is the serial of the agent's i-th simulated token: the agent ID and the index
// when that fits in a token serial's 16 bytes, else a hash of the ID.
func Serial(agentID string, i int) string {
	s := fmt.Sprintf("%s.%d", agentID, i)
	if len(s) <= 16 {
		return s
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(agentID))
	return fmt.Sprintf("%012x.%d", h.Sum64()&(1<<48-1), i) // 16 bytes up to 1,000 tokens
}

// Open is agent.Config.OpenModule: a module over the agent's backend, made at its first
// opening.
func (s *SimTokens) Open(path string, opts pkcs11.Options) (*pkcs11.Module, error) {
	agentID, ok := strings.CutPrefix(path, ModulePrefix)
	if !ok || agentID == "" {
		return nil, fmt.Errorf("fleetsim: module %q is not a simulated one (%sAGENT-ID)", path, ModulePrefix)
	}
	b, err := s.backend(agentID)
	if err != nil {
		return nil, err
	}
	return pkcs11.OpenBackend(path, b, opts)
}

func (s *SimTokens) backend(agentID string) (*simtoken.Backend, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b := s.backends[agentID]; b != nil {
		return b, nil
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(agentID))
	// Faults are read only, shared by every backend; the re-insertion time and the count
	// are set even without faults, for those SetFaults may set later.
	opts := simtoken.Options{Profile: s.profile, Seed: s.seed ^ h.Sum64(), Faults: s.byOp, Reinsert: s.reinsert,
		OnFault: func(_ string, op simtoken.Op, rv uint) {
			if n := s.injected[op]; n != nil {
				n.add(rv)
			}
		}}
	b, err := simtoken.New(opts)
	if err != nil {
		return nil, err
	}
	for i := range s.perAgent {
		serial := Serial(agentID, i)
		if _, err := b.AddToken(simtoken.TokenSpec{Serial: serial, Model: s.model}); err != nil {
			return nil, fmt.Errorf("fleetsim: simulated token %s of agent %s: %w", serial, agentID, err)
		}
		s.owner[serial] = b
	}
	s.backends[agentID] = b
	return b, nil
}

// TokenTime is the simulated time spent so far on the token with serial.
func (s *SimTokens) TokenTime(serial string) time.Duration {
	s.mu.Lock()
	b := s.owner[serial]
	s.mu.Unlock()
	if b == nil {
		return 0
	}
	return b.TokenTime(serial)
}
