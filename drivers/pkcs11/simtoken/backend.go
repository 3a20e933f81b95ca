//go:build cgo

package simtoken

import (
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	p11 "github.com/miekg/pkcs11"

	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
)

// Model is a kind of simulated token: what it says of itself and what it can do.
type Model struct {
	Manufacturer string
	Model        string // CK_TOKEN_INFO.model, 16 bytes at most
	// PIN lengths the token takes, and wrong tries before a PIN locks.
	MinPINLen, MaxPINLen   int
	UserPINTries, SOTries  int
	MinRSABits, MaxRSABits int
	Curves                 []string // of P-256, P-384
	PSS                    bool     // offers CKM_RSA_PKCS_PSS
	// Memory is the bytes objects may take; 0 for no limit (reported as unavailable).
	Memory int
}

// DefaultModel is a smart card of the common kind: PINs of 4 to 16 characters, 3 tries for
// the user PIN and 3 for the SO PIN, RSA 2048-4096, P-256 and P-384, PSS, 80 KB of object
// memory.
var DefaultModel = Model{
	Manufacturer: "tokenfleet", Model: "SimToken",
	MinPINLen: 4, MaxPINLen: 16, UserPINTries: 3, SOTries: 3,
	MinRSABits: 2048, MaxRSABits: 4096, Curves: []string{"P-256", "P-384"}, PSS: true,
	Memory: 80 << 10,
}

// Validate says what is wrong with the model.
func (m *Model) Validate() error {
	switch {
	case len(m.Manufacturer) > 32 || len(m.Model) > 16:
		return fmt.Errorf("token model %q of %q: manufacturer up to 32 bytes, model up to 16", m.Model, m.Manufacturer)
	case m.MinPINLen < 1 || m.MaxPINLen < m.MinPINLen:
		return fmt.Errorf("token model %q: PIN lengths %d to %d; want 1 <= min <= max", m.Model, m.MinPINLen, m.MaxPINLen)
	case m.UserPINTries < 1 || m.SOTries < 1:
		return fmt.Errorf("token model %q: PIN tries must be at least 1", m.Model)
	case m.MinRSABits != 0 && (m.MinRSABits < 1024 || m.MaxRSABits < m.MinRSABits):
		return fmt.Errorf("token model %q: RSA sizes %d to %d; want 1024 <= min <= max, or 0 for no RSA", m.Model, m.MinRSABits, m.MaxRSABits)
	case m.Memory < 0:
		return fmt.Errorf("token model %q: negative memory", m.Model)
	}
	for _, c := range m.Curves {
		if _, ok := curves[c]; !ok {
			return fmt.Errorf("token model %q: curve %q; want P-256 or P-384", m.Model, c)
		}
	}
	return nil
}

// Fault makes an operation class fail: each call fails with probability Rate, answering
// RV (a CKR_ value). CKR_DEVICE_REMOVED and CKR_TOKEN_NOT_PRESENT also pull the token out
// of its slot, as if it was unplugged during the call.
type Fault struct {
	Rate float64
	RV   uint
}

// Options configure a Backend. The zero value is instant, without failures, seeded 0.
type Options struct {
	// Profile is the tokens' latency; the zero Profile adds none.
	Profile Profile
	// Sleeper spends the latency; nil sleeps for real.
	Sleeper Sleeper
	// Seed seeds every random draw (latencies, failures, re-insertion times).
	Seed uint64
	// Faults per operation class.
	Faults map[Op]Fault
	// Reinsert is how long a token a fault pulled out stays out, on Now's clock; the zero
	// Dist leaves it out until Insert.
	Reinsert Dist
	// Now is the clock: it times the simulation's own work in an operation and brings
	// tokens back. nil is time.Now. A test gives a fake clock that its Sleeper advances,
	// so that token time is exactly the latencies drawn.
	Now func() time.Time
	// OnSpend, when set, hears every operation's token time, outside the backend's locks.
	OnSpend func(serial string, op Op, d time.Duration)
	// OnFault, when set, hears every injected failure (the CKR_ value answered; serial
	// empty for calls of no token), outside the backend's locks: a simulator counts them.
	OnFault func(serial string, op Op, rv uint)
}

// Backend is a simulated PKCS#11 module: a pkcs11.Backend. Safe for concurrent use.
type Backend struct {
	opts    Options
	sleeper Sleeper
	now     func() time.Time
	faults  atomic.Pointer[map[Op]Fault] // read by every operation, replaced by SetFaults

	mu       sync.Mutex // guards the fields below
	slots    []*token   // slot i+firstSlot holds slots[i] (or nothing while it is out)
	bySerial map[string]*token
	sessions map[p11.SessionHandle]*session
	rng      *rand.Rand // draws for calls of no token (slot listing)
	total    time.Duration
}

// firstSlot keeps slot IDs from starting at 0, so a zero slot ID is never valid by chance.
const firstSlot = 1

var _ pkcs11.Backend = (*Backend)(nil)

// New makes a backend with no slots; add tokens with AddToken.
func New(opts Options) (*Backend, error) {
	if err := opts.Profile.Validate(); err != nil {
		return nil, err
	}
	if err := opts.Reinsert.Validate(); err != nil {
		return nil, fmt.Errorf("re-insertion time: %w", err)
	}
	if err := checkFaults(opts.Faults); err != nil {
		return nil, err
	}
	b := &Backend{opts: opts, sleeper: opts.Sleeper, now: opts.Now,
		bySerial: map[string]*token{}, sessions: map[p11.SessionHandle]*session{},
		rng: rand.New(rand.NewPCG(opts.Seed, 0))}
	b.faults.Store(&opts.Faults)
	if b.sleeper == nil {
		b.sleeper = RealSleeper{}
	}
	if b.now == nil {
		b.now = time.Now
	}
	return b, nil
}

func checkFaults(faults map[Op]Fault) error {
	for op, f := range faults {
		if !validOp(op) {
			return fmt.Errorf("fault for unknown operation %q (want one of %s)", op, opNames())
		}
		if f.Rate < 0 || f.Rate > 1 {
			return fmt.Errorf("fault rate %v for %s: want 0 to 1", f.Rate, op)
		}
		if f.RV == p11.CKR_OK {
			return fmt.Errorf("fault for %s: give the CKR_ value it answers (RV)", op)
		}
	}
	return nil
}

// SetFaults replaces Options.Faults from the next operation on (nil: none), for a fault
// campaign that changes over a run. The map must not be changed afterwards.
func (b *Backend) SetFaults(faults map[Op]Fault) error {
	if err := checkFaults(faults); err != nil {
		return err
	}
	b.faults.Store(&faults)
	return nil
}

// TokenSpec describes a token to put in a new slot.
type TokenSpec struct {
	// Serial is the token's identity, 1 to 16 bytes; unique in the backend.
	Serial string
	// Model is the kind of token; nil is DefaultModel.
	Model *Model
	// SOPIN makes the token initialised, with Label; empty leaves it blank.
	SOPIN string
	Label string
	// UserPIN sets the user PIN of an initialised token; empty leaves it unset.
	UserPIN string
	// Profile, when set, is this token's latency instead of Options.Profile: a fleet of
	// mixed tokens in one backend.
	Profile *Profile
}

// AddToken puts a new token in a new slot and returns the slot's ID.
func (b *Backend) AddToken(spec TokenSpec) (uint, error) {
	if spec.Serial == "" || len(spec.Serial) > 16 {
		return 0, fmt.Errorf("token serial %q: want 1 to 16 bytes", spec.Serial)
	}
	m := spec.Model
	if m == nil {
		m = &DefaultModel
	}
	if err := m.Validate(); err != nil {
		return 0, err
	}
	if spec.Profile != nil {
		if err := spec.Profile.Validate(); err != nil {
			return 0, err
		}
	}
	t := newToken(spec.Serial, m, b.opts.Seed)
	t.profile = spec.Profile
	if spec.SOPIN != "" {
		if len(spec.Label) > 32 {
			return 0, fmt.Errorf("token label %q: want at most 32 bytes", spec.Label)
		}
		t.initialise(spec.SOPIN, spec.Label)
		if spec.UserPIN != "" {
			t.setUserPIN(spec.UserPIN)
		}
	} else if spec.UserPIN != "" || spec.Label != "" {
		return 0, errors.New("a blank token has no label or user PIN: give an SO PIN to initialise it")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.bySerial[spec.Serial] != nil {
		return 0, fmt.Errorf("a token with serial %q exists already", spec.Serial)
	}
	t.slot = uint(len(b.slots)) + firstSlot
	b.slots = append(b.slots, t)
	b.bySerial[spec.Serial] = t
	return t.slot, nil
}

// Remove pulls the token out of its slot: the slot empties, its sessions die and the
// login with them. It stays out until Insert.
func (b *Backend) Remove(serial string) error {
	t, err := b.token(serial)
	if err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.removeLocked(time.Time{})
	return nil
}

// Insert puts the token back in its slot, logged out.
func (b *Backend) Insert(serial string) error {
	t, err := b.token(serial)
	if err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.present, t.backAt = true, time.Time{}
	return nil
}

// TokenTime is the token time spent so far on the token with the serial: each
// operation's drawn latency, or the time its simulation took when that is longer.
func (b *Backend) TokenTime(serial string) time.Duration {
	t, err := b.token(serial)
	if err != nil {
		return 0
	}
	return time.Duration(t.spent.Load())
}

// TotalTime is the token time spent so far on every token, and on slot listings.
func (b *Backend) TotalTime() time.Duration {
	b.mu.Lock()
	total := b.total
	ts := b.slots
	b.mu.Unlock()
	for _, t := range ts {
		total += time.Duration(t.spent.Load())
	}
	return total
}

func (b *Backend) token(serial string) (*token, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.bySerial[serial]
	if t == nil {
		return nil, fmt.Errorf("no simulated token with serial %q", serial)
	}
	return t, nil
}

// slotToken returns the token whose slot is id, present or not.
func (b *Backend) slotToken(id uint) (*token, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if id < firstSlot || id-firstSlot >= uint(len(b.slots)) {
		return nil, p11.Error(p11.CKR_SLOT_ID_INVALID)
	}
	return b.slots[id-firstSlot], nil
}

// presentToken returns the token in slot id, or CKR_TOKEN_NOT_PRESENT.
func (b *Backend) presentToken(id uint) (*token, error) {
	t, err := b.slotToken(id)
	if err != nil {
		return nil, err
	}
	if !t.isPresent(b.now) {
		return nil, p11.Error(p11.CKR_TOKEN_NOT_PRESENT)
	}
	return t, nil
}

// handleCounter is the last session or object handle given out. It is shared by every
// Backend of the process, so that a handle of one is never valid on another.
var handleCounter atomic.Uint64

func (b *Backend) newHandle() uint { return uint(handleCounter.Add(1)) }

// spend runs one operation of class op on t (nil for calls of no token): it holds the
// token for the operation, draws its latency and whether it fails, runs fn unless it
// fails, and sleeps what the latency leaves after fn's own time (Go's RSA key generation
// takes real time). The token time is the longer of the two. A drawn removal pulls the
// token out.
func (b *Backend) spend(t *token, op Op, fn func() error) error {
	return b.spendScaled(t, op, 1, fn)
}

// spendScaled is spend with the drawn latency multiplied by scale.
func (b *Backend) spendScaled(t *token, op Op, scale float64, fn func() error) error {
	var (
		lat   time.Duration
		fault uint
		held  bool // t.busy, released before OnSpend (or by the deferred call on a panic)
	)
	dist := b.opts.Profile.Ops[op]
	if t != nil && t.profile != nil {
		dist = t.profile.Ops[op]
	}
	f, hasFault := (*b.faults.Load())[op]
	if t != nil {
		// The token is held until its time is spent; OnSpend is called after, free to
		// call the backend.
		t.busy.Lock()
		held = true
		defer func() {
			if held {
				t.busy.Unlock()
			}
		}()
		t.mu.Lock()
		lat = dist.Sample(t.latRNG)
		if hasFault && t.faultRNG.Float64() < f.Rate {
			fault = f.RV
		}
		t.mu.Unlock()
	} else {
		b.mu.Lock()
		lat = dist.Sample(b.rng)
		if hasFault && b.rng.Float64() < f.Rate {
			fault = f.RV
		}
		b.mu.Unlock()
	}
	if scale != 1 {
		lat = time.Duration(float64(lat) * scale)
	}
	start := b.now()
	var err error
	if fault != 0 {
		err = p11.Error(fault)
		if t != nil && (fault == p11.CKR_DEVICE_REMOVED || fault == p11.CKR_TOKEN_NOT_PRESENT) {
			b.pullOut(t)
		}
	} else {
		err = fn()
	}
	took := b.now().Sub(start)
	if lat > took {
		b.sleeper.Sleep(lat - took)
	} else {
		lat = took
	}
	serial := ""
	if t != nil {
		t.spent.Add(int64(lat))
		serial = t.serial
		held = false
		t.busy.Unlock()
	} else {
		b.mu.Lock()
		b.total += lat
		b.mu.Unlock()
	}
	if b.opts.OnSpend != nil {
		b.opts.OnSpend(serial, op, lat)
	}
	if fault != 0 && b.opts.OnFault != nil {
		b.opts.OnFault(serial, op, fault)
	}
	return err
}

// pullOut removes t for a drawn time, as a fault does.
func (b *Backend) pullOut(t *token) {
	t.mu.Lock()
	var back time.Time
	if d := b.opts.Reinsert; d.Median > 0 {
		back = b.now().Add(d.Sample(t.faultRNG))
	}
	t.removeLocked(back)
	t.mu.Unlock()
}

// serialKey turns a serial into the second PCG seed word.
func serialKey(serial string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(serial))
	return h.Sum64()
}
