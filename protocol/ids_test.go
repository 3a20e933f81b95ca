package protocol

import (
	"strings"
	"testing"
)

func TestValidateAgentID(t *testing.T) {
	tests := []struct {
		id   string
		code ErrorCode // "" = valid
		want string
	}{
		{"ws-0042", "", ""},
		{"alice@ws-01", "", ""},
		{"a", "", ""},
		{"0_build_agent", "", ""},
		{strings.Repeat("a", MaxAgentIDLen), "", ""},
		{"", CodeBadRequest, "agent_id: required"},
		{strings.Repeat("a", MaxAgentIDLen+1), CodeTooLarge, "agent_id: 129 bytes, limit 128"},
		{"ws.01", CodeBadRequest, `contains '.' at byte 2: agent IDs are AMQP routing-key words`},
		{"ws*", CodeBadRequest, `contains '*'`},
		{"#", CodeBadRequest, `contains '#'`},
		{"WS-01", CodeBadRequest, "contains upper case 'W' at byte 0"},
		{"-ws", CodeBadRequest, `starts with '-'`},
		{"@ws", CodeBadRequest, `starts with '@'`},
		{"ws 01", CodeBadRequest, `contains ' ' at byte 2; allowed: a-z 0-9 _ @ -`},
		{"ws/01", CodeBadRequest, `contains '/'`},
		{"wsé", CodeBadRequest, `contains non-ASCII byte 0xc3 at byte 2`},
	}
	for _, tc := range tests {
		err := ValidateAgentID(tc.id)
		if tc.code == "" {
			if err != nil {
				t.Errorf("ValidateAgentID(%q) = %v, want valid", tc.id, err)
			}
			continue
		}
		t.Run(tc.id, func(t *testing.T) { checkErr(t, err, tc.code, tc.want) })
	}
}

func TestValidateJobID(t *testing.T) {
	tests := []struct {
		id   string
		code ErrorCode
		want string
	}{
		{testJob, "", ""},
		{"01HZY3V8Q4N2K7M5P9R6S0T1WX", "", ""},
		{"42", "", ""},
		{"job_7-b", "", ""},
		{"", CodeBadRequest, "job_id: required"},
		{strings.Repeat("j", MaxJobIDLen+1), CodeTooLarge, "job_id: 65 bytes, limit 64"},
		{"_job", CodeBadRequest, "starts with '_'"},
		{"job.1", CodeBadRequest, "contains '.' at byte 3"},
		{"job 1", CodeBadRequest, "contains ' '"},
		{"jöb", CodeBadRequest, "contains non-ASCII byte 0xc3 at byte 1"},
	}
	for _, tc := range tests {
		err := ValidateJobID(tc.id)
		if tc.code == "" {
			if err != nil {
				t.Errorf("ValidateJobID(%q) = %v, want valid", tc.id, err)
			}
			continue
		}
		t.Run(tc.id, func(t *testing.T) { checkErr(t, err, tc.code, tc.want) })
	}
}

func TestNewMessageID(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := NewMessageID()
		if err := ValidateMessageID(id); err != nil {
			t.Fatalf("NewMessageID() = %q: %v", id, err)
		}
		if id[14] != '4' || !strings.ContainsRune("89ab", rune(id[19])) {
			t.Fatalf("%q is not a version 4, RFC 9562 variant UUID", id)
		}
		if seen[id] {
			t.Fatalf("NewMessageID repeated %q", id)
		}
		seen[id] = true
	}
}

func TestValidateMessageID(t *testing.T) {
	tests := []struct {
		id   string
		code ErrorCode
		want string
	}{
		{"0193a5c4-7d2e-7b1f-9c3a-2f4e5d6c7b8a", "", ""}, // v7 from an outbox row
		{"", CodeBadRequest, "id: required"},
		{"0193a5c47d2e7b1f9c3a2f4e5d6c7b8a", CodeBadRequest, "32 bytes; want a 36-byte lowercase UUID"},
		{"0193a5c4-7d2e-7b1f-9c3a-2f4e5d6c7b8A", CodeBadRequest, "byte 35 ('A') is not a lowercase hex digit"},
		{"0193a5c4_7d2e-7b1f-9c3a-2f4e5d6c7b8a", CodeBadRequest, "byte 8 is '_', want '-'"},
		{"00000000-0000-0000-0000-000000000000", CodeBadRequest, "nil UUID"},
	}
	for _, tc := range tests {
		err := ValidateMessageID(tc.id)
		if tc.code == "" {
			if err != nil {
				t.Errorf("ValidateMessageID(%q) = %v, want valid", tc.id, err)
			}
			continue
		}
		t.Run(tc.id, func(t *testing.T) { checkErr(t, err, tc.code, tc.want) })
	}
}

func TestDeriveKeyID(t *testing.T) {
	a := DeriveKeyID("job-a")
	if a != DeriveKeyID("job-a") {
		t.Error("DeriveKeyID is not deterministic")
	}
	if a == DeriveKeyID("job-b") {
		t.Error("two jobs share a CKA_ID")
	}
	if len(a) != 2*KeyIDSize {
		t.Errorf("len = %d, want %d", len(a), 2*KeyIDSize)
	}
	if err := checkHex("id", a, MaxKeyIDBytes, true); err != nil {
		t.Errorf("derived ID %q invalid on the wire: %v", a, err)
	}
	// Pinned: agents already in the field find keys by this derivation.
	if got, want := DeriveKeyID(testJob), "0eeac31e3cbec4c8236f71977bacefed"; got != want {
		t.Errorf("DeriveKeyID(%q) = %s, want %s: the derivation changed", testJob, got, want)
	}
}

func TestKeyFingerprint(t *testing.T) {
	m := testMaterial(t)
	fp := KeyFingerprint(m.sealKeyDER)
	if len(fp) != 2*FingerprintSize || fp != KeyFingerprint(m.sealKeyDER) || fp == KeyFingerprint(m.pubDER) {
		t.Errorf("KeyFingerprint gave %q", fp)
	}
}
