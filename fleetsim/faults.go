package fleetsim

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
	"github.com/tokenfleet/tokenfleet/drivers/pkcs11/simtoken"
)

// DefaultReinsert is how long a simulated token that a removal fault pulled out stays
// out before it comes back: a few seconds, as a person notices and plugs it in again,
// with a tail of slower ones.
var DefaultReinsert = simtoken.Dist{Median: 5 * time.Second, P95: 15 * time.Second}

// TokenFault makes the simulated tokens fail an operation class (simtoken.Ops) with
// probability Rate, answering the CKR_ value that the driver reports as Code. Removal codes
// (token.device_removed, token.not_present) also pull the token out of its slot for a
// while (SimTokensConfig.Reinsert).
type TokenFault struct {
	Op   simtoken.Op
	Rate float64
	Code pkcs11.Code
}

// String is the fault as ParseTokenFault reads it: op=rate:code.
func (f TokenFault) String() string {
	return fmt.Sprintf("%s=%s:%s", f.Op, strconv.FormatFloat(f.Rate, 'g', -1, 64), f.Code)
}

// ParseTokenFault reads op=rate:code, e.g. keygen_ec=0.02:token.device_removed (the
// code's "token." may be left out).
func ParseTokenFault(s string) (TokenFault, error) {
	const form = "want OP=RATE:CODE, e.g. keygen_ec=0.02:token.device_removed"
	op, rest, ok1 := strings.Cut(strings.TrimSpace(s), "=")
	rate, code, ok2 := strings.Cut(rest, ":")
	if !ok1 || !ok2 {
		return TokenFault{}, fmt.Errorf("%q: %s", s, form)
	}
	r, err := strconv.ParseFloat(rate, 64)
	if err != nil {
		return TokenFault{}, fmt.Errorf("%q: rate %q is not a number: %s", s, rate, form)
	}
	if code != "" && !strings.Contains(code, ".") {
		code = "token." + code
	}
	f := TokenFault{Op: simtoken.Op(op), Rate: r, Code: pkcs11.Code(code)}
	if err := f.check(); err != nil {
		return TokenFault{}, fmt.Errorf("%q: %w", s, err)
	}
	return f, nil
}

func (f TokenFault) check() error {
	if !validOp(f.Op) {
		names := make([]string, len(simtoken.Ops))
		for i, o := range simtoken.Ops {
			names[i] = string(o)
		}
		return fmt.Errorf("unknown operation %q: want one of %s", f.Op, strings.Join(names, ", "))
	}
	if !(f.Rate >= 0 && f.Rate <= 1) { // NaN too
		return fmt.Errorf("rate %v for %s: want a probability from 0 to 1, e.g. 0.02 for one call in fifty", f.Rate, f.Op)
	}
	if _, err := simtoken.RVFor(f.Code); err != nil {
		return err
	}
	return nil
}

func validOp(op simtoken.Op) bool {
	for _, o := range simtoken.Ops {
		if o == op {
			return true
		}
	}
	return false
}

// CheckTokenFaults says what is wrong with faults: each must be valid, and an operation
// may be named once (a simulated token fails an operation with one code).
func CheckTokenFaults(faults []TokenFault) error {
	seen := map[simtoken.Op]bool{}
	var errs []error
	for _, f := range faults {
		if err := f.check(); err != nil {
			errs = append(errs, fmt.Errorf("fault %s: %w", f, err))
			continue
		}
		if seen[f.Op] {
			errs = append(errs, fmt.Errorf("fault %s: %s has a fault already: a simulated token fails an operation with one code, so give one fault per operation", f, f.Op))
		}
		seen[f.Op] = true
	}
	return errors.Join(errs...)
}

// ParseReinsert reads how long a token a removal fault pulled out stays out: a duration
// ("5s", always that long) or a median and a 95th percentile ("5s/15s", log-normal).
func ParseReinsert(s string) (simtoken.Dist, error) {
	const form = "want a duration like 5s, or a median and a 95th percentile like 5s/15s"
	med, p95, pair := strings.Cut(strings.TrimSpace(s), "/")
	m, err := time.ParseDuration(med)
	if err != nil {
		return simtoken.Dist{}, fmt.Errorf("%q: %s", s, form)
	}
	d := simtoken.Dist{Median: m, P95: m}
	if pair {
		if d.P95, err = time.ParseDuration(p95); err != nil {
			return simtoken.Dist{}, fmt.Errorf("%q: 95th percentile %q: %s", s, p95, form)
		}
	}
	if m <= 0 {
		return simtoken.Dist{}, fmt.Errorf("%q: want a time above 0 (a removed token comes back after it)", s)
	}
	if err := d.Validate(); err != nil {
		return simtoken.Dist{}, fmt.Errorf("%q: %w", s, err)
	}
	return d, nil
}

// FaultCount is how many failures of one kind the simulated tokens injected.
type FaultCount struct {
	Op       simtoken.Op `json:"op"`
	Code     pkcs11.Code `json:"code"`
	Rate     float64     `json:"rate"`
	Injected int64       `json:"injected"`
}

// FaultCounter is the optional capability of a fleet's Tokens that inject failures: the
// failures injected so far, one entry per configured fault.
type FaultCounter interface {
	Faults() []FaultCount
}

// mergeFaults adds b's counts to a's, by operation and code.
func mergeFaults(a, b []FaultCount) []FaultCount {
next:
	for _, f := range b {
		for i := range a {
			if a[i].Op == f.Op && a[i].Code == f.Code {
				a[i].Injected += f.Injected
				continue next
			}
		}
		a = append(a, f)
	}
	return a
}
