package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestRoundTripEveryType(t *testing.T) {
	samples := testSamples(t)
	for _, typ := range MessageTypes() {
		t.Run(string(typ), func(t *testing.T) {
			s, ok := samples[typ]
			if !ok {
				t.Fatalf("no sample for message type %s: add one to testSamples", typ)
			}
			e, err := NewEnvelope(testAgent, s.job, s.body)
			if err != nil {
				t.Fatal(err)
			}
			data, err := Encode(e)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			got, err := Decode(data)
			if err != nil {
				t.Fatalf("Decode: %v\n%s", err, data)
			}
			if got.Version != Version || got.ID != e.ID || got.Type != typ || got.AgentID != testAgent ||
				got.Job() != s.job || !got.Time.Equal(e.Time) {
				t.Errorf("envelope changed in transit:\n sent %+v\n got  %+v", e, got)
			}
			if got.Time.Location() != time.UTC {
				t.Errorf("decoded time in %v, want UTC", got.Time.Location())
			}
			body, err := got.Payload()
			if err != nil {
				t.Fatalf("Payload: %v", err)
			}
			if !reflect.DeepEqual(body, s.body) {
				t.Errorf("body changed in transit:\n sent %#v\n got  %#v", s.body, body)
			}
			again, err := Encode(got)
			if err != nil {
				t.Fatalf("re-Encode: %v", err)
			}
			if !bytes.Equal(again, data) {
				t.Errorf("encoding is not stable:\n first  %s\n second %s", data, again)
			}
			if len(data) > typ.MaxSize() {
				t.Errorf("sample is %d bytes, over its type's limit %d", len(data), typ.MaxSize())
			}
		})
	}
}

func TestDecodeBody(t *testing.T) {
	data := encodeSample(t, TypeDispatch)
	e, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	d, err := DecodeBody[JobDispatch](e)
	if err != nil {
		t.Fatalf("DecodeBody[JobDispatch]: %v", err)
	}
	if want := testSamples(t)[TypeDispatch].body; !reflect.DeepEqual(d, want) {
		t.Errorf("got %#v, want %#v", d, want)
	}
	_, err = DecodeBody[Result](e)
	if CodeOf(err) != CodeBadRequest || !strings.Contains(err.Error(), `"dispatch" does not carry a protocol.Result`) {
		t.Errorf("DecodeBody[Result] on a dispatch: got %v, want bad_request naming both types", err)
	}
}

// TestEncodeNormalises: the sender gets canonical output whatever the
// spelling of its envelope.
func TestEncodeNormalises(t *testing.T) {
	s := testSamples(t)[TypeCancel]
	e, err := NewEnvelope(testAgent, s.job, s.body)
	if err != nil {
		t.Fatal(err)
	}
	paris := time.FixedZone("CET", 3600)
	e.Time = testTime.In(paris)
	e.Body = json.RawMessage("{\n  \"reason\": \"a <newer> request & more\",\n  \"state\": \"superseded\"\n}")
	data, err := Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`"time":"2026-11-21T09:30:15.123456789Z"`,
		`"body":{"state":"superseded","reason":"a <newer> request & more"}`,
	} {
		if !bytes.Contains(data, []byte(want)) {
			t.Errorf("encoding lacks %s:\n%s", want, data)
		}
	}
	if !e.Time.Equal(testTime) || e.Time.Location() != paris {
		t.Errorf("Encode modified the caller's envelope: time %v", e.Time)
	}
}

func TestEncodeRejects(t *testing.T) {
	valid := func() *Envelope {
		s := testSamples(t)[TypeProgress]
		e, err := NewEnvelope(testAgent, s.job, s.body)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	bigInventory := Inventory{}
	for range MaxTokens {
		tok := Token{Serial: "s"}
		for range MaxCertificatesPerToken {
			tok.Certificates = append(tok.Certificates, CertificateInfo{
				Serial: "01", NotBefore: testTime, NotAfter: testTime, SHA256: strings.Repeat("00", 32),
				Subject: strings.Repeat("S", MaxDNLen), Issuer: strings.Repeat("I", MaxDNLen),
			})
		}
		bigInventory.Tokens = append(bigInventory.Tokens, tok)
	}
	tests := []struct {
		name   string
		modify func(*Envelope)
		code   ErrorCode
		want   string
	}{
		{"nil body type", func(e *Envelope) { e.Type = "" }, CodeBadRequest, "type: required"},
		{"unknown type", func(e *Envelope) { e.Type = "telemetry" }, CodeUnknownType, `"telemetry"`},
		{"future version", func(e *Envelope) { e.Version = Version + 1 }, CodeUnsupportedVersion, "version 2"},
		{"zero version", func(e *Envelope) { e.Version = 0 }, CodeUnsupportedVersion, "version 0"},
		{"bad agent", func(e *Envelope) { e.AgentID = "ws.01" }, CodeBadRequest, "agent_id"},
		{"no attempt", func(e *Envelope) { e.Attempt = 0 }, CodeBadRequest, "attempt: required"},
		{"no time", func(e *Envelope) { e.Time = time.Time{} }, CodeBadRequest, "time: required"},
		{"invalid body", func(e *Envelope) { e.Body = json.RawMessage(`{"step":"finished"}`) }, CodeBadRequest, `body.step: unknown value "finished"`},
		{"oversized inventory", func(e *Envelope) {
			e.Type, e.JobID, e.Attempt = TypeInventory, "", 0
			raw, err := json.Marshal(bigInventory)
			if err != nil {
				t.Fatal(err)
			}
			e.Body = raw
		}, CodeTooLarge, "inventory message is"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := valid()
			tc.modify(e)
			_, err := Encode(e)
			checkErr(t, err, tc.code, tc.want)
		})
	}
	if _, err := Encode(nil); CodeOf(err) != CodeBadRequest {
		t.Errorf("Encode(nil) = %v, want bad_request", err)
	}
	if _, err := NewEnvelope(testAgent, JobRef{}, nil); CodeOf(err) != CodeBadRequest {
		t.Errorf("NewEnvelope(nil body) = %v, want bad_request", err)
	}
}

// checkErr asserts err is a protocol error with the code and a message
// containing want.
func checkErr(t *testing.T, err error, code ErrorCode, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %s containing %q", code, want)
	}
	var pe *Error
	if !errors.As(err, &pe) {
		t.Fatalf("got %T %v, want *Error", err, err)
	}
	if pe.Code != code {
		t.Errorf("code %s, want %s (error: %v)", pe.Code, code, err)
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not contain %q", err.Error(), want)
	}
	if !errors.Is(err, &Error{Code: code}) {
		t.Errorf("errors.Is(err, code %s) is false", code)
	}
}

// mutated decodes a valid encoded sample into generic JSON, applies f and
// re-encodes it, to make messages Encode would refuse to produce.
func mutated(t *testing.T, typ MessageType, f func(env, body map[string]any)) []byte {
	t.Helper()
	var env map[string]any
	dec := json.NewDecoder(bytes.NewReader(encodeSample(t, typ)))
	dec.UseNumber()
	if err := dec.Decode(&env); err != nil {
		t.Fatal(err)
	}
	body, _ := env["body"].(map[string]any)
	f(env, body)
	out, err := json.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestDecodeRejects(t *testing.T) {
	heartbeat := string(encodeSample(t, TypeHeartbeat))
	tests := []struct {
		name string
		data []byte
		code ErrorCode
		want string
	}{
		{"empty", nil, CodeMalformed, "empty message"},
		{"white space", []byte("  \n"), CodeMalformed, "empty message"},
		{"null", []byte("null"), CodeMalformed, "not a JSON object"},
		{"array", []byte(`[{"version":1}]`), CodeMalformed, "not a JSON object"},
		{"truncated", []byte(heartbeat[:len(heartbeat)-5]), CodeMalformed, "not valid JSON"},
		{"syntax error", []byte(`{"version":1,}`), CodeMalformed, "not valid JSON"},
		{"trailing object", []byte(heartbeat + `{}`), CodeMalformed, "data after the JSON object"},
		{"trailing garbage", []byte(heartbeat + `x`), CodeMalformed, "malformed"},
		{"over the message limit", append([]byte(heartbeat[:len(heartbeat)-1]), bytes.Repeat([]byte(" "), MaxMessageSize)...), CodeTooLarge, "limit 1048576"},
		{"over the heartbeat limit", []byte(strings.Replace(heartbeat, `{"version"`, `{`+strings.Repeat(" ", 5000)+`"version"`, 1)), CodeTooLarge, "heartbeat message is"},
		{"duplicate key", []byte(strings.Replace(heartbeat, `"version":1`, `"version":1,"version":1`, 1)), CodeMalformed, `duplicate key "version"`},
		{"duplicate key in body", []byte(strings.Replace(heartbeat, `"seq":17`, `"seq":17,"seq":18`, 1)), CodeMalformed, `duplicate key "seq"`},
		{"case-folded key", []byte(strings.Replace(heartbeat, `"agent_id"`, `"Agent_ID"`, 1)), CodeMalformed, "lowercase snake_case"},
		{"too deep", []byte(`{"version":1,"x":` + strings.Repeat("[", 20) + strings.Repeat("]", 20) + `}`), CodeMalformed, "deeper than 16"},
		{"missing version", mutated(t, TypeHeartbeat, func(env, _ map[string]any) { delete(env, "version") }), CodeBadRequest, "version: required"},
		{"future version", mutated(t, TypeHeartbeat, func(env, _ map[string]any) { env["version"] = 2 }), CodeUnsupportedVersion, "version 2"},
		{"version zero", mutated(t, TypeHeartbeat, func(env, _ map[string]any) { env["version"] = 0 }), CodeUnsupportedVersion, "version 0"},
		{"version as string", mutated(t, TypeHeartbeat, func(env, _ map[string]any) { env["version"] = "1" }), CodeMalformed, "version"},
		// A future version may reshape everything: the version is judged
		// before the shape.
		{"future version, other shape", []byte(`{"version":9,"envelope":{}}`), CodeUnsupportedVersion, "version 9"},
		{"missing type", mutated(t, TypeHeartbeat, func(env, _ map[string]any) { delete(env, "type") }), CodeBadRequest, "type: required"},
		{"unknown type", mutated(t, TypeHeartbeat, func(env, _ map[string]any) { env["type"] = "telemetry" }), CodeUnknownType, `"telemetry"`},
		{"unknown envelope field", mutated(t, TypeHeartbeat, func(env, _ map[string]any) { env["priority"] = 5 }), CodeMalformed, `unknown field "priority"`},
		{"unknown body field", mutated(t, TypeHeartbeat, func(_, body map[string]any) { body["load"] = 0.5 }), CodeMalformed, `body: json: unknown field "load"`},
		{"wrong JSON type", mutated(t, TypeHeartbeat, func(_, body map[string]any) { body["seq"] = "17" }), CodeMalformed, "body"},
		{"negative attempt", mutated(t, TypeProgress, func(env, _ map[string]any) { env["attempt"] = -1 }), CodeMalformed, "attempt"},
		{"attempt overflow", mutated(t, TypeProgress, func(env, _ map[string]any) { env["attempt"] = json.Number("4294967296") }), CodeMalformed, "attempt"},
		{"missing id", mutated(t, TypeHeartbeat, func(env, _ map[string]any) { delete(env, "id") }), CodeBadRequest, "id: required"},
		{"upper-case id", mutated(t, TypeHeartbeat, func(env, _ map[string]any) { env["id"] = "0B7E4C1A-2D3F-4E5A-8B6C-7D8E9F0A1B2C" }), CodeBadRequest, "not a lowercase hex digit"},
		{"nil uuid", mutated(t, TypeHeartbeat, func(env, _ map[string]any) { env["id"] = "00000000-0000-0000-0000-000000000000" }), CodeBadRequest, "nil UUID"},
		{"agent id with dot", mutated(t, TypeHeartbeat, func(env, _ map[string]any) { env["agent_id"] = "ws.42" }), CodeBadRequest, "routing-key words"},
		{"agent id with wildcard", mutated(t, TypeHeartbeat, func(env, _ map[string]any) { env["agent_id"] = "#" }), CodeBadRequest, "agent_id"},
		{"job message without job", mutated(t, TypeResult, func(env, _ map[string]any) { delete(env, "job_id") }), CodeBadRequest, "job_id: required"},
		{"job message without attempt", mutated(t, TypeResult, func(env, _ map[string]any) { delete(env, "attempt") }), CodeBadRequest, "attempt: required"},
		{"job on a heartbeat", mutated(t, TypeHeartbeat, func(env, _ map[string]any) { env["job_id"] = testJob }), CodeBadRequest, "not allowed on heartbeat"},
		{"missing time", mutated(t, TypeHeartbeat, func(env, _ map[string]any) { delete(env, "time") }), CodeBadRequest, "time: required"},
		{"time not UTC", mutated(t, TypeHeartbeat, func(env, _ map[string]any) { env["time"] = "2026-11-21T10:30:15+01:00" }), CodeBadRequest, "not UTC"},
		{"time not RFC 3339", mutated(t, TypeHeartbeat, func(env, _ map[string]any) { env["time"] = "yesterday" }), CodeMalformed, "time"},
		{"missing body", mutated(t, TypeHeartbeat, func(env, _ map[string]any) { delete(env, "body") }), CodeBadRequest, "body: required"},
		{"null body", mutated(t, TypeHeartbeat, func(env, _ map[string]any) { env["body"] = nil }), CodeMalformed, "body: not a JSON object"},
		{"array body", mutated(t, TypeHeartbeat, func(env, _ map[string]any) { env["body"] = []any{} }), CodeMalformed, "body: not a JSON object"},
		{"body of another type", mutated(t, TypeResult, func(env, _ map[string]any) {
			env["body"] = map[string]any{"instance_id": "4f6b2d1e-8a3c-4b5d-9e7f-1a2b3c4d5e6f", "seq": 1}
		}), CodeMalformed, `unknown field "instance_id"`},
		{"missing body field", mutated(t, TypeDispatch, func(_, body map[string]any) { delete(body, "deadline") }), CodeBadRequest, "body.deadline: required"},
		{"invalid nested field", mutated(t, TypeHello, func(_, body map[string]any) {
			body["tokens"].([]any)[0].(map[string]any)["label"] = strings.Repeat("x", 33)
		}), CodeTooLarge, "body.tokens[0].label: 33 bytes, limit 32"},
		{"hello outside its own range", mutated(t, TypeHello, func(_, body map[string]any) {
			body["protocol"] = map[string]any{"min": 2, "max": 3}
		}), CodeBadRequest, "does not include the envelope's version 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, err := Decode(tc.data)
			if e != nil {
				t.Errorf("Decode returned an envelope with the error")
			}
			checkErr(t, err, tc.code, tc.want)
		})
	}
}

func TestErrorSentinelsMatchByCode(t *testing.T) {
	_, err := Decode([]byte("{"))
	if !errors.Is(err, ErrMalformed) {
		t.Errorf("errors.Is(%v, ErrMalformed) = false", err)
	}
	if errors.Is(err, ErrTooLarge) {
		t.Errorf("errors.Is(%v, ErrTooLarge) = true", err)
	}
	_, err = Decode(bytes.Repeat([]byte(" "), MaxMessageSize+1))
	if !errors.Is(err, ErrTooLarge) {
		t.Errorf("errors.Is(%v, ErrTooLarge) = false", err)
	}
}

func TestPayloadUnknownType(t *testing.T) {
	e := &Envelope{Type: "telemetry", Body: json.RawMessage(`{}`)}
	_, err := e.Payload()
	checkErr(t, err, CodeUnknownType, "telemetry")
}

// The fields added to version 1 before its release travel under their JSON
// names and survive a round trip; left unset they leave no trace.
func TestDispatchAdditionsRoundTrip(t *testing.T) {
	m := testMaterial(t)
	tests := []struct {
		name string
		body JobDispatch
		keys []string // JSON keys the body must carry
	}{
		{"factory_pins", JobDispatch{
			Kind: KindIssue, Deadline: testTime, Token: TokenSelector{Serial: "0a1b2c3d4e5f6789"},
			FactoryPINs: true, PINPolicy: &PINPolicy{MinLength: 6, MaxLength: 8},
			Key: &KeyParams{Type: KeyP256, ID: DeriveKeyID(testJob)}, ResultKey: m.sealKeyDER,
		}, []string{`"factory_pins":true`}},
		{"key.replaces", JobDispatch{
			Kind: KindRenew, Deadline: testTime, Token: TokenSelector{Serial: "0a1b2c3d4e5f6789"},
			Key:  &KeyParams{Type: KeyP256, ID: DeriveKeyID("renewal"), Replaces: DeriveKeyID(testJob)},
			PINs: &SealedPINs{UserPIN: testSealed(1)},
		}, []string{`"replaces":"` + DeriveKeyID(testJob) + `"`}},
		{"private_key", JobDispatch{
			Kind: KindServerKeygen, Deadline: testTime, Token: TokenSelector{Serial: "0a1b2c3d4e5f6789"},
			Key:          &KeyParams{Type: KeyP256, ID: DeriveKeyID(testJob), Label: "encryption"},
			Certificates: &CertificateChain{Certificate: m.certDER, Chain: [][]byte{m.issuerDER}},
			PrivateKey:   sealedKey(30),
			PINs:         &SealedPINs{UserPIN: testSealed(1)},
		}, []string{`"kind":"server_keygen"`, `"private_key":{"alg":"` + SealAlgorithm + `"`}},
		{"register_certificate", JobDispatch{
			Kind: KindRegisterCertificate, Deadline: testTime, Token: TokenSelector{Serial: "0a1b2c3d4e5f6789"},
			Key: &KeyParams{ID: DeriveKeyID(testJob)},
		}, []string{`"kind":"register_certificate"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, err := NewEnvelope(testAgent, testJobRef, tc.body)
			if err != nil {
				t.Fatal(err)
			}
			data, err := Encode(e)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			for _, k := range tc.keys {
				if !bytes.Contains(data, []byte(k)) {
					t.Errorf("encoded dispatch lacks %s:\n%s", k, data)
				}
			}
			got, err := Decode(data)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			body, err := DecodeBody[JobDispatch](got)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(body, tc.body) {
				t.Errorf("body changed in transit:\n sent %#v\n got  %#v", tc.body, body)
			}
		})
	}
	plain, err := Encode(mustEnvelope(t, testSamples(t)[TypeDispatch]))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"factory_pins", "replaces", "private_key"} {
		if bytes.Contains(plain, []byte(k)) {
			t.Errorf("a dispatch without %s still carries the key:\n%s", k, plain)
		}
	}
}

func mustEnvelope(t *testing.T, s sample) *Envelope {
	t.Helper()
	e, err := NewEnvelope(testAgent, s.job, s.body)
	if err != nil {
		t.Fatal(err)
	}
	return e
}
