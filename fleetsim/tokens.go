package fleetsim

import (
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
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
	faults   []TokenFault
	byOp     map[simtoken.Op]simtoken.Fault
	injected map[simtoken.Op]*atomic.Int64 // by faulted operation; the map is never changed
	reinsert simtoken.Dist

	mu       sync.Mutex                   // guards the fields below
	backends map[string]*simtoken.Backend // by agent ID
	owner    map[string]*simtoken.Backend // token serial → its backend
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
	s := &SimTokens{profile: p, perAgent: cfg.PerAgent, model: cfg.Model, seed: cfg.Seed,
		faults: slices.Clone(cfg.Faults), reinsert: cfg.Reinsert,
		byOp: map[simtoken.Op]simtoken.Fault{}, injected: map[simtoken.Op]*atomic.Int64{},
		backends: map[string]*simtoken.Backend{}, owner: map[string]*simtoken.Backend{}}
	for _, f := range cfg.Faults {
		rv, _ := simtoken.RVFor(f.Code) // checked above
		s.byOp[f.Op] = simtoken.Fault{Rate: f.Rate, RV: rv}
		s.injected[f.Op] = &atomic.Int64{}
	}
	return s, nil
}

// Faults are the failures injected so far, one entry per configured fault (FaultCounter).
func (s *SimTokens) Faults() []FaultCount {
	out := make([]FaultCount, len(s.faults))
	for i, f := range s.faults {
		out[i] = FaultCount{Op: f.Op, Code: f.Code, Rate: f.Rate, Injected: s.injected[f.Op].Load()}
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
	opts := simtoken.Options{Profile: s.profile, Seed: s.seed ^ h.Sum64()}
	if len(s.byOp) > 0 {
		opts.Faults, opts.Reinsert = s.byOp, s.reinsert // read only, shared by every backend
		opts.OnFault = func(_ string, op simtoken.Op, _ uint) {
			if n := s.injected[op]; n != nil {
				n.Add(1)
			}
		}
	}
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
