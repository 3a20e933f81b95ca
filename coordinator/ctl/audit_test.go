package ctl_test

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/client"
)

// auditLog builds a valid chain of n entries.
func auditLog(t *testing.T, n int) []audit.Entry {
	t.Helper()
	var out []audit.Entry
	var prev *audit.Entry
	for i := range n {
		e, err := audit.Seal(prev, audit.Entry{Time: fixedNow.Add(time.Duration(i) * time.Minute), Actor: "u1",
			Action: audit.ActionJobCreated, JobID: "j" + strconv.Itoa(i), Details: json.RawMessage(`{"i":` + strconv.Itoa(i) + `}`)})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
		prev = &out[len(out)-1]
	}
	return out
}

// serveAudit answers /api/v1/audit from entries.
func serveAudit(entries []audit.Entry) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		after, _ := strconv.ParseInt(r.URL.Query().Get("after_seq"), 10, 64)
		limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
		var p client.AuditPage
		for _, e := range entries {
			if e.Seq > after && len(p.Items) < limit {
				p.Items = append(p.Items, client.AuditEntry{Seq: e.Seq, Time: e.Time, Actor: e.Actor, Action: e.Action, Job: e.JobID,
					Target: e.Target, Reason: e.Reason, Details: e.Details, PrevHash: e.PrevHash, Hash: e.Hash})
			}
		}
		if len(p.Items) == limit {
			p.NextAfterSeq = p.Items[len(p.Items)-1].Seq
		}
		writeJSON(w, 200, p)
	}
}

func TestAuditVerify(t *testing.T) {
	good := auditLog(t, 9)
	edited := auditLog(t, 9)
	edited[4].Actor = "someone-else"
	removed := append(auditLog(t, 9)[:6:6], auditLog(t, 9)[7:]...)

	tests := []struct {
		name       string
		entries    []audit.Entry
		wantCode   int
		wantStdout string
		wantStderr string
		wantBroken *struct {
			Seq  int64
			Kind audit.Kind
		}
	}{
		{name: "intact", entries: good, wantCode: 0,
			wantStdout: "audit log verified: 9 entries, head seq 9 hash " + good[8].Hash + "\n"},
		{name: "empty", entries: nil, wantCode: 0,
			wantStdout: "audit log verified: 0 entries, head seq 0 hash " + audit.GenesisHash + "\n"},
		{name: "edited", entries: edited, wantCode: 3,
			wantStderr: "tokenfleetctl: audit verify: the audit log was tampered with: entry 5 edited: its content does not match its hash\n"},
		{name: "removed", entries: removed, wantCode: 3,
			wantStderr: "tokenfleetctl: audit verify: the audit log was tampered with: entry 7 removed: entry 8 follows entry 6\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := newFakeAPI(t)
			api.routes["GET /api/v1/audit"] = serveAudit(tt.entries)
			r := runCtl(t, api.env(), "", "audit", "verify", "--page-size", "2")
			if r.code != tt.wantCode || r.stdout != tt.wantStdout || r.stderr != tt.wantStderr {
				t.Errorf("exit %d stdout %q stderr %q\nwant exit %d stdout %q stderr %q",
					r.code, r.stdout, r.stderr, tt.wantCode, tt.wantStdout, tt.wantStderr)
			}
			if tt.wantCode == 0 && len(tt.entries) > 0 {
				if n := len(api.requests()); n != len(tt.entries)/2+1 {
					t.Errorf("%d requests for %d entries in pages of 2", n, len(tt.entries))
				}
			}

			r = runCtl(t, api.env(), "", "audit", "verify", "--json")
			var rep struct {
				Verified bool
				Entries  int64
				Head     audit.Head
				Broken   *struct {
					Seq    int64
					Kind   audit.Kind
					Detail string
				}
			}
			if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
				t.Fatalf("--json output %q: %v", r.stdout, err)
			}
			if rep.Verified != (tt.wantCode == 0) || r.code != tt.wantCode {
				t.Errorf("--json: exit %d, %+v", r.code, rep)
			}
			if tt.wantCode != 0 && (rep.Broken == nil || !strings.Contains(tt.wantStderr, "entry "+strconv.FormatInt(rep.Broken.Seq, 10)+" "+string(rep.Broken.Kind))) {
				t.Errorf("--json names %+v, want what %q says", rep.Broken, tt.wantStderr)
			}
		})
	}
}

func TestAuditVerifyFetchFailureIsNotTampering(t *testing.T) {
	api := newFakeAPI(t)
	api.routes["GET /api/v1/audit"] = func(w http.ResponseWriter, _ *http.Request) {
		apiError(w, http.StatusForbidden, "forbidden", "auditors and admins only")
	}
	r := runCtl(t, api.env(), "", "audit", "verify")
	if r.code != 1 || r.stderr != "tokenfleetctl: audit verify: reading the audit log after entry 0: forbidden: auditors and admins only\n" {
		t.Errorf("exit %d stderr %q", r.code, r.stderr)
	}
}

func TestAuditList(t *testing.T) {
	entries := auditLog(t, 3)
	entries[1].Reason = "line one\nline two"
	api := newFakeAPI(t)
	api.routes["GET /api/v1/audit"] = serveAudit(entries)
	r := runCtl(t, api.env(), "", "audit", "list", "--after", "1")
	want := `SEQ  TIME                  ACTOR  ACTION       JOB  TARGET  REASON
2    2025-06-01T12:01:00Z  u1     job.created  j1   -       line one\nline two
3    2025-06-01T12:02:00Z  u1     job.created  j2   -       -
`
	if r.code != 0 || r.stdout != want {
		t.Errorf("exit %d stderr %q stdout\n%s\nwant\n%s", r.code, r.stderr, r.stdout, want)
	}
	r = runCtl(t, api.env(), "", "audit", "list", "--json", "--limit", "1")
	var got []client.AuditEntry
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || len(got) != 1 || got[0].Hash != entries[0].Hash {
		t.Errorf("json %q: %v", r.stdout, err)
	}
	if !strings.Contains(r.stderr, "only the first 1 audit entries are shown") {
		t.Errorf("stderr %q", r.stderr)
	}
}
