//go:build cgo

package simtoken_test

import (
	"context"
	"crypto/sha256"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11/simtoken"
)

// fakeClock is the backend's clock and Sleeper: sleeping advances it, so token time is
// the latencies drawn, and nothing waits.
type fakeClock struct {
	mu    sync.Mutex
	now   time.Time
	slept time.Duration
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Sleep(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.slept += d
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func (c *fakeClock) Slept() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.slept
}

// quantile of sorted durations.
func quantile(ds []time.Duration, q float64) time.Duration {
	return ds[int(q*float64(len(ds)-1))]
}

func within(got, want time.Duration, tolerance float64) bool {
	return float64(got) >= float64(want)*(1-tolerance) && float64(got) <= float64(want)*(1+tolerance)
}

// Every class of every built-in profile draws what it says: the median and the 95th
// percentile of many draws are the profile's, within sampling error.
func TestProfilesDrawWhatTheySay(t *testing.T) {
	for _, name := range []string{"instant", "softhsm", "smartcard", "usb-token"} {
		p, err := simtoken.ProfileByName(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Validate(); err != nil {
			t.Fatal(err)
		}
		r := rand.New(rand.NewPCG(1, 2))
		for _, op := range simtoken.Ops {
			d := p.Ops[op]
			draws := make([]time.Duration, 4000)
			for i := range draws {
				draws[i] = d.Sample(r)
			}
			slices.Sort(draws)
			want95 := d.P95
			if want95 == 0 {
				want95 = d.Median
			}
			if med, p95 := quantile(draws, 0.5), quantile(draws, 0.95); !within(med, d.Median, 0.06) || !within(p95, want95, 0.1) {
				t.Errorf("%s %s: median %s, p95 %s; want %s", name, op, med, p95, d)
			}
		}
	}
	if len(simtoken.Instant.Ops) != 0 {
		t.Error("the instant profile adds latency")
	}
}

// Through the driver on a smart card: each signature's token time follows the profile,
// the token time counter is the sum of every operation's, and the time actually slept is
// that less the simulation's own work (none on the fake clock).
func TestTokenTimeThroughTheDriver(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	var (
		mu     sync.Mutex
		signs  []time.Duration
		byTok  time.Duration
		others int
	)
	opts := simtoken.Options{Profile: simtoken.Smartcard, Seed: 3, Now: clock.Now, Sleeper: clock,
		OnSpend: func(serial string, op simtoken.Op, d time.Duration) {
			mu.Lock()
			defer mu.Unlock()
			switch serial {
			case "SIM0001":
				byTok += d
				if op == simtoken.OpSignEC {
					signs = append(signs, d)
				}
			case "":
				if op != simtoken.OpSlotList {
					t.Errorf("operation %s on no token", op)
				}
			default:
				others++
			}
		}}
	b, _, tok := ready(t, opts)
	addToken(t, b, simtoken.TokenSpec{Serial: "SIM0002"})

	before := b.TokenTime("SIM0001")
	key, _, err := tok.GenerateKey(ctx, pkcs11.KeyRequest{ID: []byte{1}, Spec: pkcs11.KeySpec{Type: pkcs11.EC, Curve: "P-256"}})
	if err != nil {
		t.Fatal(err)
	}
	// A keygen on a smart card is seconds; everything else around it is milliseconds.
	if kg := b.TokenTime("SIM0001") - before; kg < 300*time.Millisecond || kg > 5*time.Second {
		t.Errorf("EC key generation took %s of token time", kg)
	}
	digest := sha256.Sum256([]byte("x"))
	for range 300 {
		if _, err := key.SignContext(ctx, digest[:], nil); err != nil {
			t.Fatal(err)
		}
	}
	slices.Sort(signs)
	if len(signs) != 300 {
		t.Fatalf("%d signatures heard", len(signs))
	}
	d := simtoken.Smartcard.Ops[simtoken.OpSignEC]
	if med, p95 := quantile(signs, 0.5), quantile(signs, 0.95); !within(med, d.Median, 0.15) || !within(p95, d.P95, 0.2) {
		t.Errorf("signature token time: median %s, p95 %s; want %s", med, p95, d)
	}
	mu.Lock()
	defer mu.Unlock()
	if got := b.TokenTime("SIM0001"); got != byTok || got == 0 {
		t.Errorf("TokenTime %s, the operations heard add up to %s", got, byTok)
	}
	if b.TokenTime("SIM0002") != 0 || others != 0 {
		t.Errorf("the idle token spent %s in %d operations", b.TokenTime("SIM0002"), others)
	}
	if total, slept := b.TotalTime(), clock.Slept(); total != slept {
		t.Errorf("TotalTime %s, slept %s: on the fake clock the simulation's own work takes no time", total, slept)
	}
}

// RSA key generation scales with the key size: 3072 bits take (3072/2048)^3 = 3.375 times
// the 2048-bit draw.
func TestRSAKeygenScales(t *testing.T) {
	ctx := context.Background()
	spent := map[int]time.Duration{}
	for _, bits := range []int{2048, 3072} {
		clock := newFakeClock()
		prof := simtoken.Profile{Name: "fixed", Ops: map[simtoken.Op]simtoken.Dist{simtoken.OpKeygenRSA: {Median: 5 * time.Second}}}
		b, _, tok := ready(t, simtoken.Options{Profile: prof, Now: clock.Now, Sleeper: clock})
		before := b.TokenTime("SIM0001")
		if _, _, err := tok.GenerateKey(ctx, pkcs11.KeyRequest{ID: []byte{1}, Spec: pkcs11.KeySpec{Type: pkcs11.RSA, Bits: bits}}); err != nil {
			t.Fatal(err)
		}
		spent[bits] = b.TokenTime("SIM0001") - before
	}
	if spent[2048] != 5*time.Second || spent[3072] != 16875*time.Millisecond {
		t.Fatalf("token time of RSA key generation: %v; want 5s and 16.875s", spent)
	}
}

// Without a fake clock, an operation's token time is at least its real duration: Go's
// key generation is not hidden.
func TestInstantCountsTheWork(t *testing.T) {
	ctx := context.Background()
	b, _, tok := ready(t, simtoken.Options{})
	start := time.Now()
	if _, _, err := tok.GenerateKey(ctx, pkcs11.KeyRequest{ID: []byte{1}, Spec: pkcs11.KeySpec{Type: pkcs11.RSA, Bits: 2048}}); err != nil {
		t.Fatal(err)
	}
	if spent, wall := b.TokenTime("SIM0001"), time.Since(start); spent <= 0 || spent > wall {
		t.Fatalf("token time %s for a key generation of %s wall time", spent, wall)
	}
}

// A token with a profile of its own keeps it in a backend of another.
func TestTokenProfile(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	b := newBackend(t, simtoken.Options{Now: clock.Now, Sleeper: clock})
	card := simtoken.Smartcard
	addToken(t, b, simtoken.TokenSpec{Serial: "CARD", SOPIN: soPIN, Label: "card", UserPIN: userPIN, Profile: &card})
	addToken(t, b, simtoken.TokenSpec{Serial: "FAST", SOPIN: soPIN, Label: "fast", UserPIN: userPIN})
	mod := open(t, b)
	for _, serial := range []string{"CARD", "FAST"} {
		if err := findToken(t, mod, serial).Login(ctx, userPIN); err != nil {
			t.Fatal(err)
		}
	}
	if card, fast := b.TokenTime("CARD"), b.TokenTime("FAST"); card < 50*time.Millisecond || fast != 0 {
		t.Fatalf("token time of a login: %s on the smart card, %s on the instant token", card, fast)
	}
	bad := simtoken.Profile{Name: "bad", Ops: map[simtoken.Op]simtoken.Dist{simtoken.OpLogin: {Median: -1}}}
	if _, err := b.AddToken(simtoken.TokenSpec{Serial: "BAD", Profile: &bad}); err == nil {
		t.Error("a token with an invalid profile was accepted")
	}
}
