package executor

import (
	"crypto/rand"
	"errors"
	"slices"

	"github.com/tokenfleet/tokenfleet/protocol"
)

// PIN generation.
//
// PINs come from crypto/rand, each character drawn uniformly (by rejection, no modulo
// bias) from the alphabet: the ten digits when the policy says digits only, otherwise
// digits and letters without the look-alikes 0 O o 1 l I (a person types these PINs once,
// from the coordinator's one-time reveal).
//
// Length: the shortest length both the policy and the token accept. The policy's minimum
// is what its author judged strong enough, the token may demand more, and a longer PIN
// only makes people write it down. No common length is token.pin_len_range. The SO PIN
// has the policy's so_length when it gives one (see soPolicy).
//
// Trivial PINs are drawn again: a PIN is refused when it
//   - repeats one character (000000),
//   - is a straight run up or down by one (123456, 654321, abcdef),
//   - has fewer than three different characters (two when shorter than six: 121212,
//     112211),
//   - equals a PIN it must differ from (the factory PINs it replaces, the other PIN of the
//     same token).
const (
	digits   = "0123456789"
	alphanum = "23456789abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ"
)

// maxDraws bounds redraws; for the shortest legal PIN (4 digits) under 1% of draws are
// refused, so reaching it means a broken random source.
const maxDraws = 1000

// pinLength returns the length to generate under the policy and the token's limits
// (0, 0 when the token reports none).
func pinLength(p protocol.PINPolicy, tokenMin, tokenMax uint) (int, error) {
	lo, hi := p.MinLength, p.MaxLength
	if tokenMin > 0 && int(tokenMin) > lo {
		lo = int(tokenMin)
	}
	// A maximum below the minimum, or absurdly large (CK_UNAVAILABLE_INFORMATION), is no
	// limit worth honouring.
	if tokenMax > 0 && tokenMax >= tokenMin && tokenMax < 1<<16 && int(tokenMax) < hi {
		hi = int(tokenMax)
	}
	if lo > hi {
		return 0, protocol.NewError(protocol.CodeTokenPINLenRange,
			"the PIN policy allows %d to %d characters, the token %d to %d: no length fits both",
			p.MinLength, p.MaxLength, tokenMin, tokenMax)
	}
	return lo, nil
}

// soPolicy is the policy of an SO PIN: exactly so_length characters when the dispatch
// gives one (more only if the token demands it), otherwise the user PIN's policy.
func soPolicy(p protocol.PINPolicy) protocol.PINPolicy {
	if p.SOLength == 0 {
		return p
	}
	p.MinLength, p.MaxLength = p.SOLength, protocol.MaxPINLength
	return p
}

// generatePIN makes a PIN under the policy and the token's limits, different from every
// PIN in avoid.
func generatePIN(p protocol.PINPolicy, tokenMin, tokenMax uint, avoid ...string) (string, error) {
	n, err := pinLength(p, tokenMin, tokenMax)
	if err != nil {
		return "", err
	}
	alphabet := alphanum
	if p.DigitsOnly {
		alphabet = digits
	}
	for range maxDraws {
		pin, err := randomString(alphabet, n)
		if err != nil {
			return "", err
		}
		if !trivialPIN(pin) && !slices.Contains(avoid, pin) {
			return pin, nil
		}
	}
	return "", errors.New("no acceptable PIN drawn: the random source is broken")
}

func randomString(alphabet string, n int) (string, error) {
	// The largest multiple of len(alphabet) that fits a byte: bytes above it are
	// redrawn, so that every character is equally likely.
	limit := 256 - 256%len(alphabet)
	out := make([]byte, 0, n)
	buf := make([]byte, 2*n)
	for len(out) < n {
		if _, err := rand.Read(buf); err != nil {
			return "", err
		}
		for _, b := range buf {
			if int(b) < limit && len(out) < n {
				out = append(out, alphabet[int(b)%len(alphabet)])
			}
		}
	}
	return string(out), nil
}

// trivialPIN applies the rules in the comment above.
func trivialPIN(pin string) bool {
	if len(pin) < 2 {
		return true
	}
	up, down := true, true
	for i := 1; i < len(pin); i++ {
		d := int(pin[i]) - int(pin[i-1])
		up = up && d == 1
		down = down && d == -1
	}
	if up || down {
		return true
	}
	distinct := map[byte]bool{}
	for i := 0; i < len(pin); i++ {
		distinct[pin[i]] = true
	}
	want := 3
	if len(pin) < 6 {
		want = 2
	}
	return len(distinct) < want
}
