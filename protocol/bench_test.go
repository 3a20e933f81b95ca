package protocol

import (
	"encoding/json"
	"testing"
	"time"
)

// BenchmarkDecode times Decode (all checks) and reports it as a ratio to a
// plain json.Unmarshal of the same bytes measured in the same run: the
// price of the strictness.
func BenchmarkDecode(b *testing.B) {
	inventory := func() []byte {
		var inv Inventory
		m := testMaterial(b)
		for range MaxTokens {
			tok := testToken(m)
			tok.Keys, tok.Certificates = nil, nil
			for range MaxCertificatesPerToken {
				tok.Keys = append(tok.Keys, testToken(m).Keys[0])
				tok.Certificates = append(tok.Certificates, testToken(m).Certificates[0])
			}
			inv.Tokens = append(inv.Tokens, tok)
		}
		e, err := NewEnvelope(testAgent, JobRef{}, inv)
		if err != nil {
			b.Fatal(err)
		}
		data, err := Encode(e)
		if err != nil {
			b.Fatal(err)
		}
		return data
	}
	cases := []struct {
		name string
		data []byte
	}{
		{"dispatch", encodeSample(b, TypeDispatch)},
		{"heartbeat", encodeSample(b, TypeHeartbeat)},
		{"inventory_at_caps", inventory()},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			const refRounds = 20
			start := time.Now()
			for range refRounds {
				var e Envelope
				if err := json.Unmarshal(tc.data, &e); err != nil {
					b.Fatal(err)
				}
				var body map[string]any
				if err := json.Unmarshal(e.Body, &body); err != nil {
					b.Fatal(err)
				}
			}
			ref := time.Since(start) / refRounds
			b.SetBytes(int64(len(tc.data)))
			b.ResetTimer()
			for b.Loop() {
				if _, err := Decode(tc.data); err != nil {
					b.Fatal(err)
				}
			}
			perOp := b.Elapsed() / time.Duration(b.N)
			b.ReportMetric(float64(perOp)/float64(ref), "x_plain_json")
		})
	}
}
