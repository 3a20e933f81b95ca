package ca_test

import (
	"errors"
	"math/big"
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/ca"
)

func TestRandomSerial(t *testing.T) {
	const n = 5000
	seen := make(map[string]bool, n)
	long := 0
	for range n {
		s, err := ca.RandomSerial()
		if err != nil {
			t.Fatal(err)
		}
		if s.Sign() <= 0 {
			t.Fatalf("serial %v is not positive", s)
		}
		if s.BitLen() > ca.SerialBits {
			t.Fatalf("serial of %d bits", s.BitLen())
		}
		if s.BitLen() > ca.SerialBits-8 {
			long++
		}
		k := ca.FormatSerial(s)
		if seen[k] {
			t.Fatalf("serial %s drawn twice", k)
		}
		seen[k] = true
	}
	// Uniform 128-bit values have their top byte non-zero with probability 255/256.
	if long < n*95/100 {
		t.Errorf("only %d of %d serials use the top byte: not 128 random bits", long, n)
	}
}

func TestParseSerial(t *testing.T) {
	tests := []struct {
		in      string
		want    string // FormatSerial of the result; empty for an error
		wantErr bool
	}{
		{in: "1a2b", want: "1a2b"},
		{in: "1A:2B", want: "1a2b"},
		{in: "0x001A2B", want: "1a2b"},
		{in: "00ff", want: "ff"},
		{in: "", wantErr: true},
		{in: "0", wantErr: true},
		{in: "-1", wantErr: true},
		{in: "+1", wantErr: true},
		{in: "xyz", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ca.ParseSerial(tt.in)
		if tt.wantErr {
			if !errors.Is(err, ca.ErrBadRequest) {
				t.Errorf("ParseSerial(%q) = %v, %v; want a bad-request error", tt.in, got, err)
			}
			continue
		}
		if err != nil || ca.FormatSerial(got) != tt.want {
			t.Errorf("ParseSerial(%q) = %v, %v; want %s", tt.in, got, err, tt.want)
		}
	}
	big1, _ := new(big.Int).SetString("ffeeddccbbaa99887766554433221100", 16)
	if got, err := ca.ParseSerial(ca.FormatSerial(big1)); err != nil || got.Cmp(big1) != 0 {
		t.Errorf("round trip: %v, %v", got, err)
	}
}
