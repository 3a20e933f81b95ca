package fleetsim

import (
	"fmt"
	"hash/fnv"
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
// initialises them), of the given model and latency profile. Every opening of an agent's
// module (the executor's, each inventory scan's) is over the same backend, as every
// opening of a real module sees the same tokens.
type SimTokens struct {
	profile  simtoken.Profile
	perAgent int
	model    *simtoken.Model
	seed     uint64

	mu       sync.Mutex                   // guards the fields below
	backends map[string]*simtoken.Backend // by agent ID
	owner    map[string]*simtoken.Backend // token serial → its backend
}

// NewSimTokens makes simulated tokens of the named latency profile (simtoken.ProfileByName)
// and model (nil: simtoken.DefaultModel), perAgent per agent, their random draws seeded
// from seed and the agent's ID, so that a run can be replayed.
func NewSimTokens(profile string, perAgent int, model *simtoken.Model, seed uint64) (*SimTokens, error) {
	p, err := simtoken.ProfileByName(profile)
	if err != nil {
		return nil, err
	}
	if perAgent < 1 {
		return nil, fmt.Errorf("fleetsim: %d simulated tokens per agent: want 1 or more", perAgent)
	}
	return &SimTokens{profile: p, perAgent: perAgent, model: model, seed: seed,
		backends: map[string]*simtoken.Backend{}, owner: map[string]*simtoken.Backend{}}, nil
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
	b, err := simtoken.New(simtoken.Options{Profile: s.profile, Seed: s.seed ^ h.Sum64()})
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
