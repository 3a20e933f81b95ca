package ca

import (
	"crypto/rand"
	"fmt"
	"math/big"
	"strings"
)

// SerialBits is the entropy of a serial number. 128 random bits make serials
// unpredictable (which defeats chosen-prefix collisions) and collisions negligible; the
// DER encoding stays within RFC 5280's 20 octets.
const SerialBits = 128

// RandomSerial returns a positive serial of SerialBits random bits from crypto/rand.
func RandomSerial() (*big.Int, error) {
	b := make([]byte, SerialBits/8)
	for {
		if _, err := rand.Read(b); err != nil {
			return nil, fmt.Errorf("serial: %w", err)
		}
		// Read as unsigned, the value is non-negative; zero is not a serial.
		if n := new(big.Int).SetBytes(b); n.Sign() > 0 {
			return n, nil
		}
	}
}

// FormatSerial writes a serial as the store keeps it: lower-case hex, no leading zeros.
func FormatSerial(n *big.Int) string {
	return n.Text(16)
}

// ParseSerial reads a hex serial, with or without colons or a 0x prefix, in either case.
func ParseSerial(s string) (*big.Int, error) {
	t := strings.TrimPrefix(strings.TrimPrefix(strings.ReplaceAll(s, ":", ""), "0x"), "0X")
	n, ok := new(big.Int).SetString(t, 16)
	if !ok || t == "" || strings.HasPrefix(t, "-") || strings.HasPrefix(t, "+") {
		return nil, Errorf(CodeBadRequest, "serial %q is not hexadecimal", s)
	}
	if n.Sign() <= 0 {
		return nil, Errorf(CodeBadRequest, "serial %q is not positive", s)
	}
	return n, nil
}
