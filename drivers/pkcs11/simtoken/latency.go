//go:build cgo

package simtoken

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
	"time"
)

// Op is a class of token operation that a latency profile and the injected failures
// name.
type Op string

// The operation classes, and the PKCS#11 calls in each. Calls not listed (GetInfo,
// GetSlotInfo, GetTokenInfo, GetSessionInfo, GetMechanism*, CloseSession, Logout,
// FindObjects, FindObjectsFinal) cost nothing: modules answer them from what they know.
const (
	OpSlotList  Op = "slot_list"  // C_GetSlotList
	OpSession   Op = "session"    // C_OpenSession
	OpInitToken Op = "init_token" // C_InitToken: the token wipes itself
	OpLogin     Op = "login"      // C_Login
	OpPIN       Op = "pin"        // C_InitPIN, C_SetPIN
	OpKeygenRSA Op = "keygen_rsa" // C_GenerateKeyPair, RSA; the figure is for 2048 bits
	OpKeygenEC  Op = "keygen_ec"  // C_GenerateKeyPair, EC
	OpSignRSA   Op = "sign_rsa"   // C_Sign with an RSA key
	OpSignEC    Op = "sign_ec"    // C_Sign with an EC key
	OpDecrypt   Op = "decrypt"    // C_Decrypt
	OpWrite     Op = "write"      // C_CreateObject, C_DestroyObject
	OpFind      Op = "find"       // C_FindObjectsInit
	OpRead      Op = "read"       // C_GetAttributeValue
)

// Ops lists every class, in a fixed order.
var Ops = []Op{OpSlotList, OpSession, OpInitToken, OpLogin, OpPIN, OpKeygenRSA, OpKeygenEC,
	OpSignRSA, OpSignEC, OpDecrypt, OpWrite, OpFind, OpRead}

func validOp(op Op) bool {
	for _, o := range Ops {
		if o == op {
			return true
		}
	}
	return false
}

// Dist is a distribution of latencies: log-normal with the given median, whose 95th
// percentile is P95. P95 equal to Median (or zero) makes it a fixed delay; the zero Dist
// adds nothing. Log-normal because token timings are: a floor of fixed work with a long
// tail (RSA prime search, card retries).
type Dist struct {
	Median time.Duration
	P95    time.Duration
}

// z95 is the standard normal's 95th percentile.
const z95 = 1.6448536269514722

// Validate says what is wrong with the distribution.
func (d Dist) Validate() error {
	switch {
	case d.Median < 0:
		return fmt.Errorf("median %s is negative", d.Median)
	case d.P95 != 0 && d.P95 < d.Median:
		return fmt.Errorf("95th percentile %s is below the median %s: give P95 >= Median, or 0 for a fixed delay", d.P95, d.Median)
	}
	return nil
}

// Sample draws one latency, using r.
func (d Dist) Sample(r *rand.Rand) time.Duration {
	if d.Median <= 0 {
		return 0
	}
	if d.P95 <= d.Median {
		return d.Median
	}
	sigma := math.Log(float64(d.P95)/float64(d.Median)) / z95
	v := float64(d.Median) * math.Exp(sigma*r.NormFloat64())
	if v > float64(math.MaxInt64/2) {
		v = float64(math.MaxInt64 / 2)
	}
	return time.Duration(v)
}

func (d Dist) String() string {
	if d.P95 <= d.Median {
		return d.Median.String()
	}
	return fmt.Sprintf("median %s, p95 %s", d.Median, d.P95)
}

// Profile is the latency of each operation class on one kind of token. Classes it does
// not name cost nothing.
type Profile struct {
	Name string
	Ops  map[Op]Dist
}

// Validate checks every class and distribution of the profile.
func (p Profile) Validate() error {
	for op, d := range p.Ops {
		if !validOp(op) {
			return fmt.Errorf("latency profile %q: unknown operation %q (want one of %s)", p.Name, op, opNames())
		}
		if err := d.Validate(); err != nil {
			return fmt.Errorf("latency profile %q, %s: %w", p.Name, op, err)
		}
	}
	return nil
}

func opNames() string {
	names := make([]string, len(Ops))
	for i, o := range Ops {
		names[i] = string(o)
	}
	return strings.Join(names, ", ")
}

// The built-in profiles. Where the figures come from:
//
//   - softhsm: SoftHSM2 2.6 on the project's 2-core build machine. Key generation,
//     signing, InitToken and object writes are PLATFORM-NOTES' figures ("Timings on
//     SoftHSM", token directory on disk): InitToken ~3 ms, RSA-2048 keygen median
//     ~110-170 ms with a wide spread, P-256 keygen ~10 ms, RSA sign ~0.6 ms, P-256 sign
//     ~0.07 ms, a certificate write ~4.5 ms. The calls it has none for were timed with
//     miekg/pkcs11 straight on the module, 30 rounds, on 2026-12-06 with the machine
//     loaded (load average 16; keygen ran 3-5x slower than in PLATFORM-NOTES then, so
//     these are upper figures): C_GetSlotList 3-6 us, C_OpenSession 2 us, C_Login
//     0.7-2 ms, C_InitPIN 0.5-1.3 ms, C_FindObjectsInit to Final 1.1-1.6 ms (p95 up to
//     10 ms), C_GetAttributeValue 50 us.
//   - smartcard: a contact smart card behind a PC/SC reader (the slow end of real
//     hardware): RSA-2048 keygen median 8 s with a tail to 20 s (prime search on the
//     card), EC keygen ~1 s, RSA sign ~300 ms, EC sign ~150 ms, login ~100 ms, an object
//     write ~200 ms (EEPROM), a wipe a few seconds. Vendors' data sheets and field reports
//     give RSA-2048 keygen from seconds to over a minute and signatures of 70-700 ms
//     (PLATFORM-NOTES); these are mid-range figures of that span, not a measurement.
//   - usb-token: a current USB token with a faster chip (YubiKey 5 / eToken 5110 class):
//     roughly half the smart card's times.
//
// Keygen RSA is the 2048-bit figure; larger keys take (bits/2048)^3 of it, the growth of
// prime search with the key size.
var (
	Instant = Profile{Name: "instant"}

	SoftHSM = Profile{Name: "softhsm", Ops: map[Op]Dist{
		OpSlotList:  {Median: 5 * time.Microsecond, P95: 30 * time.Microsecond},
		OpSession:   {Median: 2 * time.Microsecond, P95: 3 * time.Microsecond},
		OpInitToken: {Median: 3 * time.Millisecond, P95: 10 * time.Millisecond},
		OpLogin:     {Median: time.Millisecond, P95: 5 * time.Millisecond},
		OpPIN:       {Median: time.Millisecond, P95: 5 * time.Millisecond},
		OpKeygenRSA: {Median: 140 * time.Millisecond, P95: 450 * time.Millisecond},
		OpKeygenEC:  {Median: 10 * time.Millisecond, P95: 30 * time.Millisecond},
		OpSignRSA:   {Median: 600 * time.Microsecond, P95: 900 * time.Microsecond},
		OpSignEC:    {Median: 70 * time.Microsecond, P95: 200 * time.Microsecond},
		OpDecrypt:   {Median: 600 * time.Microsecond, P95: 900 * time.Microsecond},
		OpWrite:     {Median: 4500 * time.Microsecond, P95: 15 * time.Millisecond},
		OpFind:      {Median: 1300 * time.Microsecond, P95: 6 * time.Millisecond},
		OpRead:      {Median: 50 * time.Microsecond, P95: 120 * time.Microsecond},
	}}

	Smartcard = Profile{Name: "smartcard", Ops: map[Op]Dist{
		OpSlotList:  {Median: 5 * time.Millisecond, P95: 15 * time.Millisecond},
		OpSession:   {Median: 20 * time.Millisecond, P95: 40 * time.Millisecond},
		OpInitToken: {Median: 3 * time.Second, P95: 6 * time.Second},
		OpLogin:     {Median: 100 * time.Millisecond, P95: 180 * time.Millisecond},
		OpPIN:       {Median: 150 * time.Millisecond, P95: 300 * time.Millisecond},
		OpKeygenRSA: {Median: 8 * time.Second, P95: 20 * time.Second},
		OpKeygenEC:  {Median: time.Second, P95: 2 * time.Second},
		OpSignRSA:   {Median: 300 * time.Millisecond, P95: 500 * time.Millisecond},
		OpSignEC:    {Median: 150 * time.Millisecond, P95: 250 * time.Millisecond},
		OpDecrypt:   {Median: 300 * time.Millisecond, P95: 500 * time.Millisecond},
		OpWrite:     {Median: 200 * time.Millisecond, P95: 400 * time.Millisecond},
		OpFind:      {Median: 30 * time.Millisecond, P95: 60 * time.Millisecond},
		OpRead:      {Median: 15 * time.Millisecond, P95: 30 * time.Millisecond},
	}}

	USBToken = Profile{Name: "usb-token", Ops: map[Op]Dist{
		OpSlotList:  {Median: 3 * time.Millisecond, P95: 8 * time.Millisecond},
		OpSession:   {Median: 10 * time.Millisecond, P95: 20 * time.Millisecond},
		OpInitToken: {Median: 1500 * time.Millisecond, P95: 3 * time.Second},
		OpLogin:     {Median: 60 * time.Millisecond, P95: 100 * time.Millisecond},
		OpPIN:       {Median: 80 * time.Millisecond, P95: 150 * time.Millisecond},
		OpKeygenRSA: {Median: 4 * time.Second, P95: 10 * time.Second},
		OpKeygenEC:  {Median: 500 * time.Millisecond, P95: time.Second},
		OpSignRSA:   {Median: 150 * time.Millisecond, P95: 250 * time.Millisecond},
		OpSignEC:    {Median: 80 * time.Millisecond, P95: 130 * time.Millisecond},
		OpDecrypt:   {Median: 150 * time.Millisecond, P95: 250 * time.Millisecond},
		OpWrite:     {Median: 100 * time.Millisecond, P95: 200 * time.Millisecond},
		OpFind:      {Median: 15 * time.Millisecond, P95: 30 * time.Millisecond},
		OpRead:      {Median: 8 * time.Millisecond, P95: 15 * time.Millisecond},
	}}
)

var profiles = map[string]Profile{
	Instant.Name: Instant, SoftHSM.Name: SoftHSM, Smartcard.Name: Smartcard, USBToken.Name: USBToken,
}

// ProfileByName returns a built-in profile: instant, softhsm, smartcard or usb-token.
func ProfileByName(name string) (Profile, error) {
	p, ok := profiles[name]
	if !ok {
		names := make([]string, 0, len(profiles))
		for n := range profiles {
			names = append(names, n)
		}
		sort.Strings(names)
		return Profile{}, fmt.Errorf("no latency profile %q: want one of %s", name, strings.Join(names, ", "))
	}
	return p, nil
}

// rsaScale is how much longer than RSA-2048 a key of bits takes to generate.
func rsaScale(bits int) float64 {
	f := float64(bits) / 2048
	return f * f * f
}

// Sleeper spends simulated token time. PKCS#11 calls cannot be cancelled, so it takes no
// context; tests give a fake one that records instead of sleeping.
type Sleeper interface {
	Sleep(d time.Duration)
}

// RealSleeper sleeps for real.
type RealSleeper struct{}

// Sleep implements Sleeper.
func (RealSleeper) Sleep(d time.Duration) {
	if d > 0 {
		time.Sleep(d)
	}
}
