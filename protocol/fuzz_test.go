package protocol

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

// FuzzDecode: Decode never panics and only fails with a protocol error;
// whatever it accepts, Encode turns into a canonical form that decodes to
// the same message and encodes to the same bytes again.
func FuzzDecode(f *testing.F) {
	for _, typ := range MessageTypes() {
		f.Add(encodeSample(f, typ))
	}
	f.Add([]byte(`{"version":1,"id":"0b7e4c1a-2d3f-4e5a-8b6c-7d8e9f0a1b2c","type":"cancel","agent_id":"a","job_id":"j","attempt":1,"time":"2026-11-21T10:30:15.5+00:00","body":{"state":"expired"}}`))
	f.Add([]byte(`{"version":1,"id":"0b7e4c1a-2d3f-4e5a-8b6c-7d8e9f0a1b2c","type":"dispatch","agent_id":"a","job_id":"j","attempt":1,"time":"2026-11-21T10:30:15Z","body":{"kind":"inventory","deadline":"2026-11-22T00:00:00+00:00","token":{}}}`))
	f.Add([]byte(`{"version":1,"id":"0b7e4c1a-2d3f-4e5a-8b6c-7d8e9f0a1b2c","type":"dispatch","agent_id":"a","job_id":"0193a5c4-7d2e-7b1f-9c3a-2f4e5d6c7b8a","attempt":1,"time":"2026-11-21T10:30:15Z","body":{"kind":"register_certificate","deadline":"2026-11-22T00:00:00Z","token":{"serial":"42"},"key":{"id":"0a1b"}}}`))
	f.Add(encodeDispatch(f, JobDispatch{
		Kind: KindServerKeygen, Deadline: testTime, Token: TokenSelector{Serial: "0a1b2c3d4e5f6789"},
		Key:          &KeyParams{Type: KeyP256, ID: DeriveKeyID(testJob)},
		Certificates: &CertificateChain{Certificate: testMaterial(f).certDER},
		PrivateKey:   sealedKey(7),
		PINs:         &SealedPINs{UserPIN: testSealed(1)},
	}))
	f.Add([]byte(`{"version":2}`))
	f.Add([]byte(`{"version":1,"version":1}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := Decode(data)
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) || !pe.Code.Known() {
				t.Fatalf("Decode error %v (%T) is not a protocol error with a known code", err, err)
			}
			if e != nil {
				t.Fatal("Decode returned an envelope with an error")
			}
			return
		}
		canonical, err := Encode(e)
		if err != nil {
			t.Fatalf("Decode accepted what Encode refuses: %v\ninput: %s", err, data)
		}
		e2, err := Decode(canonical)
		if err != nil {
			t.Fatalf("canonical form does not decode: %v\n%s", err, canonical)
		}
		again, err := Encode(e2)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if !bytes.Equal(again, canonical) {
			t.Fatalf("encoding not stable:\n%s\n%s", canonical, again)
		}
		b1, err1 := e.Payload()
		b2, err2 := e2.Payload()
		if err1 != nil || err2 != nil {
			t.Fatalf("Payload after a successful Decode: %v, %v", err1, err2)
		}
		// Compared as JSON: a time read from "+00:00" and one read from "Z"
		// are the same instant in different *time.Location values.
		j1, err1 := marshal(b1)
		j2, err2 := marshal(b2)
		if err1 != nil || err2 != nil || !bytes.Equal(j1, j2) || reflect.TypeOf(b1) != reflect.TypeOf(b2) {
			t.Fatalf("body changed across re-encoding:\n%s\n%s", j1, j2)
		}
		if e.Version != e2.Version || e.ID != e2.ID || e.Type != e2.Type || e.AgentID != e2.AgentID ||
			e.Job() != e2.Job() || !e.Time.Equal(e2.Time) {
			t.Fatalf("envelope changed across re-encoding:\n%+v\n%+v", e, e2)
		}
	})
}

func encodeDispatch(t testing.TB, d JobDispatch) []byte {
	t.Helper()
	e, err := NewEnvelope(testAgent, testJobRef, d)
	if err != nil {
		t.Fatal(err)
	}
	data, err := Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
