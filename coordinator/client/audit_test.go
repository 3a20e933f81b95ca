package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/client"
)

// chain builds a valid log of n entries with details that an encoder may re-space or
// escape differently, and times with microseconds.
func chain(t *testing.T, n int) []audit.Entry {
	t.Helper()
	base := time.Date(2025, 6, 1, 8, 0, 0, 0, time.UTC)
	var out []audit.Entry
	var prev *audit.Entry
	for i := range n {
		e, err := audit.Seal(prev, audit.Entry{
			Time:    base.Add(time.Duration(i)*time.Second + 123456*time.Microsecond),
			Actor:   "u" + strconv.Itoa(i%3),
			Action:  audit.ActionJobApproved,
			JobID:   "job-" + strconv.Itoa(i/2),
			Reason:  "reason <" + strconv.Itoa(i) + "> & more",
			Details: json.RawMessage(`{ "n": ` + strconv.Itoa(i) + `, "html": "<b>&</b>", "nested": {"a": [1, 2]} }`),
		})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
		prev = &out[len(out)-1]
	}
	return out
}

// apiEntry is the entry in the API's shape.
func apiEntry(e audit.Entry) client.AuditEntry {
	return client.AuditEntry{Seq: e.Seq, Time: e.Time, Actor: e.Actor, Action: e.Action, Job: e.JobID,
		Target: e.Target, Reason: e.Reason, Details: e.Details, PrevHash: e.PrevHash, Hash: e.Hash}
}

// auditServer serves entries the way /api/v1/audit does: after_seq, limit, next_after_seq.
// The encoder is set to re-space and not HTML-escape, to show the client undoes both.
func auditServer(t *testing.T, entries []audit.Entry, requests *int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/audit" {
			t.Errorf("path %s", r.URL.Path)
		}
		*requests++
		after, _ := strconv.ParseInt(r.URL.Query().Get("after_seq"), 10, 64)
		limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
		if limit == 0 {
			limit = 500
		}
		var p client.AuditPage
		for _, e := range entries {
			if e.Seq > after && len(p.Items) < limit {
				p.Items = append(p.Items, apiEntry(e))
			}
		}
		if len(p.Items) == limit {
			p.NextAfterSeq = p.Items[len(p.Items)-1].Seq
		}
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "   ")
		if err := enc.Encode(p); err != nil {
			t.Error(err)
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(buf.Bytes())
	}
}

func TestVerifyAudit(t *testing.T) {
	edit := func(seq int64, f func(*audit.Entry)) func([]audit.Entry) []audit.Entry {
		return func(es []audit.Entry) []audit.Entry {
			f(&es[seq-1])
			return es
		}
	}
	remove := func(seq int64) func([]audit.Entry) []audit.Entry {
		return func(es []audit.Entry) []audit.Entry {
			return append(es[:seq-1:seq-1], es[seq:]...)
		}
	}
	tests := []struct {
		name     string
		n        int
		pageSize int
		tamper   func([]audit.Entry) []audit.Entry
		wantSeq  int64
		wantKind audit.Kind
	}{
		{name: "empty log", n: 0, pageSize: 10},
		{name: "one page", n: 7, pageSize: 10},
		{name: "many pages", n: 23, pageSize: 5},
		{name: "page size dividing the log", n: 20, pageSize: 5},
		{name: "server default page size", n: 12},
		{name: "edited reason", n: 12, pageSize: 5, wantSeq: 6, wantKind: audit.KindEdited,
			tamper: edit(6, func(e *audit.Entry) { e.Reason = "nothing to see" })},
		{name: "edited actor", n: 12, pageSize: 5, wantSeq: 11, wantKind: audit.KindEdited,
			tamper: edit(11, func(e *audit.Entry) { e.Actor = "someone-else" })},
		{name: "edited details", n: 12, pageSize: 5, wantSeq: 2, wantKind: audit.KindEdited,
			tamper: edit(2, func(e *audit.Entry) { e.Details = json.RawMessage(`{"n":99}`) })},
		{name: "time moved by a microsecond", n: 12, pageSize: 5, wantSeq: 4, wantKind: audit.KindEdited,
			tamper: edit(4, func(e *audit.Entry) { e.Time = e.Time.Add(time.Microsecond) })},
		{name: "removed middle entry", n: 12, pageSize: 5, wantSeq: 5, wantKind: audit.KindRemoved,
			tamper: remove(5)},
		{name: "removed first entry", n: 12, pageSize: 5, wantSeq: 1, wantKind: audit.KindRemoved,
			tamper: remove(1)},
		{name: "removed at a page boundary", n: 12, pageSize: 5, wantSeq: 6, wantKind: audit.KindRemoved,
			tamper: remove(6)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			entries := chain(t, tt.n)
			if tt.tamper != nil {
				entries = tt.tamper(entries)
			}
			var requests int
			c := serve(t, auditServer(t, entries, &requests))
			got, err := c.VerifyAudit(context.Background(), tt.pageSize)
			if tt.wantKind == "" {
				if err != nil {
					t.Fatal(err)
				}
				if got.Entries != int64(tt.n) || got.Head.Seq != int64(tt.n) {
					t.Errorf("verified %+v, want %d entries", got, tt.n)
				}
				if tt.n > 0 && got.Head.Hash != entries[tt.n-1].Hash {
					t.Errorf("head hash %s, want %s", got.Head.Hash, entries[tt.n-1].Hash)
				}
				if tt.pageSize > 0 {
					if want := tt.n/tt.pageSize + 1; requests != want && requests != want-1 {
						t.Errorf("%d requests for %d entries in pages of %d", requests, tt.n, tt.pageSize)
					}
				}
				return
			}
			var ve *audit.VerifyError
			if !errors.As(err, &ve) || !errors.Is(err, audit.ErrTampered) {
				t.Fatalf("err = %v, want a VerifyError", err)
			}
			if ve.Seq != tt.wantSeq || ve.Kind != tt.wantKind {
				t.Errorf("got entry %d %s, want entry %d %s (%v)", ve.Seq, ve.Kind, tt.wantSeq, tt.wantKind, err)
			}
		})
	}
}

func TestAuditEntryRoundTrip(t *testing.T) {
	// What the API sends, decoded, must hash as the entry the log sealed: field names of
	// the OpenAPI schema, details compacted, times to the microsecond.
	for _, e := range chain(t, 3) {
		b, err := json.Marshal(apiEntry(e))
		if err != nil {
			t.Fatal(err)
		}
		for _, field := range []string{`"seq"`, `"time"`, `"actor"`, `"action"`, `"job"`, `"reason"`, `"details"`, `"prev_hash"`, `"hash"`} {
			if !bytes.Contains(b, []byte(field)) {
				t.Errorf("%s is missing from %s", field, b)
			}
		}
		var got client.AuditEntry
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		back := got.Entry()
		if h := audit.ComputeHash(back); h != e.Hash {
			t.Errorf("entry %d hashes to %s after the round trip, want %s", e.Seq, h, e.Hash)
		}
	}
}

func TestAuditEntryDetails(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"", ""},
		{"null", ""},
		{`{}`, `{}`},
		{`{ "a" : 1 }`, `{"a":1}`},
		{`{"h":"<&>"}`, `{"h":"\u003c\u0026\u003e"}`},
	}
	for _, tt := range tests {
		got := client.AuditEntry{Details: json.RawMessage(tt.in)}.Entry().Details
		if string(got) != tt.want {
			t.Errorf("details %q → %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestAuditPagingMustMoveForward(t *testing.T) {
	// A server whose next_after_seq does not move forward would keep the client looping.
	entries := chain(t, 4)
	c := serve(t, func(w http.ResponseWriter, r *http.Request) {
		after, _ := strconv.ParseInt(r.URL.Query().Get("after_seq"), 10, 64)
		writeJSON(w, 200, client.AuditPage{Items: []client.AuditEntry{apiEntry(entries[after])}, NextAfterSeq: 1})
	})
	got, err := c.VerifyAudit(context.Background(), 1)
	if err == nil || !strings.Contains(err.Error(), "paging went back from after_seq 1 to 1") {
		t.Errorf("err = %v", err)
	}
	if errors.Is(err, audit.ErrTampered) {
		t.Errorf("a paging fault was reported as tampering: %v", err)
	}
	if got.Entries != 2 {
		t.Errorf("%d entries checked before the fault, want 2", got.Entries)
	}
}
