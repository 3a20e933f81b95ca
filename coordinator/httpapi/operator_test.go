package httpapi_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// TestAwaitingMe lists what waits for each person's decision: the rules of approve, at
// both gates, and pages of the filtered list.
func TestAwaitingMe(t *testing.T) {
	t.Parallel() // a service, store and server of its own
	e := newEnv(t)
	e.world(t)
	// A second apart, so that newest first is one order.
	newJob := func(user string, body map[string]any) job {
		e.clock.advance(time.Second)
		return e.newJob(t, user, body)
	}
	one := newJob("hd", issue("ann", "email-signing", "ws-1"))
	dual := newJob("hd", issue("ann", "dual", "ws-1"))
	own := newJob("hd2", issue("ann", "email-signing", "ws-2")) // hd2 may not approve their own request
	globex := newJob("hd", issue("gina", "email-signing", "ws-1"))
	newJob("hd", issue("ann", "open-client", "ws-1")) // needs no approval: approved at once

	awaiting := func(who, query string) []string {
		t.Helper()
		l := ok[list[job]](t, e.as(t, who, "GET", "/api/v1/jobs?awaiting_me=true"+query, nil), 200)
		var ids []string
		for _, j := range l.Items {
			ids = append(ids, j.ID)
		}
		return ids
	}
	same := func(who string, got []string, want ...string) {
		t.Helper()
		if !slices.Equal(got, want) {
			t.Errorf("%s awaits %v, want %v", who, got, want)
		}
	}
	// Newest first, as every job list.
	same("ap1", awaiting("ap1", ""), own.ID, dual.ID, one.ID)
	same("hd2", awaiting("hd2", ""), dual.ID, one.ID)
	same("apg", awaiting("apg", ""), globex.ID)
	same("hd", awaiting("hd", "")) // helpdesk decides nothing
	same("ca", awaiting("ca", "")) // nothing at the CA-operator gate yet
	same("ap1 running", awaiting("ap1", "&state=running"))
	same("ap1 pending", awaiting("ap1", "&state=pending_approval"), own.ID, dual.ID, one.ID)

	// Pages of one walk the filtered list to its end.
	var walked []string
	cursor := ""
	for range 5 {
		l := ok[list[job]](t, e.as(t, "ap1", "GET", "/api/v1/jobs?awaiting_me=true&limit=1&cursor="+cursor, nil), 200)
		for _, j := range l.Items {
			walked = append(walked, j.ID)
		}
		if cursor = l.NextCursor; cursor == "" {
			break
		}
	}
	same("ap1 by pages", walked, own.ID, dual.ID, one.ID)

	// One decision counts once: ap1 no longer sees the dual job, ap2 still does.
	ok[jobDetail](t, e.as(t, "ap1", "POST", "/api/v1/jobs/"+dual.ID+"/approve", nil), 200)
	same("ap1 after deciding", awaiting("ap1", ""), own.ID, one.ID)
	same("ap2", awaiting("ap2", ""), own.ID, dual.ID, one.ID)
	ok[jobDetail](t, e.as(t, "ap2", "POST", "/api/v1/jobs/"+dual.ID+"/approve", nil), 200)
	e.advanceJob(t, dual.ID, jobs.StateDispatched, jobs.StateRunning, jobs.StateAwaitingCertificate)
	same("ca", awaiting("ca", ""), dual.ID)
	same("ap3", awaiting("ap3", ""), own.ID, one.ID)

	wantErr(t, e.as(t, "ap1", "GET", "/api/v1/jobs?awaiting_me=yes", nil), 400, "bad_request", "awaiting_me")
	same("ap1 awaiting_me=false", func() []string {
		l := ok[list[job]](t, e.as(t, "ap1", "GET", "/api/v1/jobs?awaiting_me=false&state=pending_approval", nil), 200)
		var ids []string
		for _, j := range l.Items {
			ids = append(ids, j.ID)
		}
		return ids
	}(), own.ID, one.ID)
}

// TestJobShowsWhatIsApproved: a job's detail carries the names an approver approves, its
// token's PKCS#11 URI and its agent's presence.
func TestJobShowsWhatIsApproved(t *testing.T) {
	t.Parallel() // a service, store and server of its own
	e := newEnv(t)
	e.world(t)
	type detail = jobDetail
	j := e.newJob(t, "hd", map[string]any{"kind": "issue", "holder": "ann", "profile": "email-signing", "agent": "ws-1", "token_serial": "0042"})
	d := ok[detail](t, e.as(t, "ap1", "GET", "/api/v1/jobs/"+j.ID, nil), 200)
	if d.Subject != "CN=Ann Martin,O=Acme" || !slices.Equal(d.SANs, []string{"email:ann@acme.example"}) {
		t.Errorf("subject %q, SANs %q", d.Subject, d.SANs)
	}
	if d.TokenURI != "pkcs11:serial=0042" || d.AgentPresence != "never_connected" || !d.AgentLastSeen.IsZero() {
		t.Errorf("token URI %q (want the serial alone before the token is reported), agent %s, last seen %s", d.TokenURI, d.AgentPresence, d.AgentLastSeen)
	}

	ctx := context.Background()
	seen := e.clock.now()
	err := e.st.InTx(ctx, func(tx store.Tx) error {
		if err := tx.RecordAgentSeen(ctx, "ws-1", seen, true); err != nil {
			return err
		}
		_, err := tx.UpsertToken(ctx, store.Token{Serial: "0042", AgentID: "ws-1", Label: "Ann; token", Manufacturer: "SoftHSM project",
			Model: "SoftHSM v2", LastSeen: seen})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	d = ok[detail](t, e.as(t, "hd", "GET", "/api/v1/jobs/"+j.ID, nil), 200)
	const uri = "pkcs11:token=Ann%3B%20token;manufacturer=SoftHSM%20project;serial=0042;model=SoftHSM%20v2"
	if d.TokenURI != uri || d.AgentPresence != "online" || !d.AgentLastSeen.Equal(seen) {
		t.Errorf("token URI %q, want %q; agent %s, last seen %s, want %s", d.TokenURI, uri, d.AgentPresence, d.AgentLastSeen, seen)
	}
	type token struct {
		Serial       string          `json:"serial"`
		Agent        string          `json:"agent"`
		Label        string          `json:"label"`
		Manufacturer string          `json:"manufacturer"`
		Model        string          `json:"model"`
		URI          string          `json:"uri"`
		Flags        json.RawMessage `json:"flags"`
		LastSeen     time.Time       `json:"last_seen"`
		State        string          `json:"state"`
	}
	ts := ok[list[token]](t, e.as(t, "hd", "GET", "/api/v1/tokens", nil), 200)
	if len(ts.Items) != 1 || ts.Items[0].URI != uri {
		t.Errorf("tokens %+v, want the URI %q", ts.Items, uri)
	}
}

// TestAuditNamesActors: audit entries carry the actor's username beside the ID the
// chain holds.
func TestAuditNamesActors(t *testing.T) {
	t.Parallel() // a service, store and server of its own
	e := newEnv(t)
	e.world(t)
	j := e.newJob(t, "hd", issue("ann", "email-signing", "ws-1"))
	type entry struct {
		Seq       int64           `json:"seq"`
		Time      time.Time       `json:"time"`
		Actor     string          `json:"actor"`
		ActorName string          `json:"actor_name"`
		Action    string          `json:"action"`
		Job       string          `json:"job"`
		Target    string          `json:"target"`
		Reason    string          `json:"reason"`
		Details   json.RawMessage `json:"details"`
		PrevHash  string          `json:"prev_hash"`
		Hash      string          `json:"hash"`
	}
	page := ok[struct {
		Items        []entry `json:"items"`
		NextAfterSeq int64   `json:"next_after_seq"`
	}](t, e.as(t, "aud", "GET", "/api/v1/audit?limit=5000", nil), 200)
	found := false
	for _, en := range page.Items {
		if en.Action == "job.created" && en.Job == j.ID {
			found = true
			if en.Actor != e.user(t, "hd").ID || en.ActorName != "hd" {
				t.Errorf("job.created by %q named %q, want the ID of hd named hd", en.Actor, en.ActorName)
			}
		}
		if en.ActorName == "" && en.Actor != "" {
			t.Errorf("entry %+v has no actor name", en)
		}
	}
	if !found {
		t.Fatal("no job.created entry")
	}
}
