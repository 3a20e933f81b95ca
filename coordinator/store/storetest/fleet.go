package storetest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

func testAgents(t *testing.T, h *harness) {
	a := do(t, h, func(tx store.Tx) (store.Agent, error) {
		return tx.CreateAgent(h.ctx, store.Agent{ID: "ws-0042", Hostname: "pc42.acme.test", OS: "linux", Version: "1.0.0",
			PublicKey: []byte{0x30, 0x59, 0x01}, BrokerUser: "agent-ws-0042", Enrolled: base})
	})
	want := store.Agent{ID: "ws-0042", Hostname: "pc42.acme.test", OS: "linux", Version: "1.0.0",
		PublicKey: []byte{0x30, 0x59, 0x01}, BrokerUser: "agent-ws-0042", Enrolled: stored(base), State: store.AgentActive}
	equal(t, "enrolled", a, want)
	equal(t, "get", must(h.s.GetAgent(h.ctx, a.ID))(t), want)

	// A second agent with a taken ID is refused, naming the host that holds it.
	err := try(h, func(tx store.Tx) (store.Agent, error) {
		return tx.CreateAgent(h.ctx, store.Agent{ID: "ws-0042", Hostname: "intruder.acme.test"})
	})
	wantErr(t, err, store.ErrConflict)
	if !strings.Contains(err.Error(), "pc42.acme.test") {
		t.Fatalf("duplicate-ID error does not name the holder: %v", err)
	}
	for _, tc := range []struct {
		name  string
		agent store.Agent
		want  error
	}{
		{"broker user taken", store.Agent{ID: "ws-0043", Hostname: "h", BrokerUser: "agent-ws-0042"}, store.ErrConflict},
		{"no hostname", store.Agent{ID: "ws-0044"}, store.ErrInvalid},
		{"no ID", store.Agent{Hostname: "h"}, store.ErrInvalid},
		{"ID unsafe in a routing key", store.Agent{ID: "ws#1", Hostname: "h"}, store.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, try(h, func(tx store.Tx) (store.Agent, error) { return tx.CreateAgent(h.ctx, tc.agent) }), tc.want)
		})
	}

	approved := do(t, h, func(tx store.Tx) (store.Agent, error) { return tx.ApproveAgent(h.ctx, a.ID, "admin1", base) })
	want.Approved, want.ApprovedBy = stored(base), "admin1"
	equal(t, "approved", approved, want)
	wantErr(t, try(h, func(tx store.Tx) (store.Agent, error) { return tx.ApproveAgent(h.ctx, a.ID, "admin2", base) }), store.ErrConflict)
	wantErr(t, try(h, func(tx store.Tx) (store.Agent, error) { return tx.ApproveAgent(h.ctx, "nope", "admin2", base) }), store.ErrNotFound)

	// Presence: any message marks it seen, a heartbeat also records the heartbeat.
	h.tx(t, func(tx store.Tx) error { return tx.RecordAgentSeen(h.ctx, a.ID, base.Add(time.Minute), true) })
	h.tx(t, func(tx store.Tx) error { return tx.RecordAgentSeen(h.ctx, a.ID, base.Add(2*time.Minute), false) })
	got := must(h.s.GetAgent(h.ctx, a.ID))(t)
	if !got.Online || !got.LastHeartbeat.Equal(stored(base.Add(time.Minute))) || !got.LastSeen.Equal(stored(base.Add(2*time.Minute))) {
		t.Fatalf("after heartbeat and message: %+v", got)
	}
	h.tx(t, func(tx store.Tx) error { return tx.SetAgentOffline(h.ctx, a.ID) })
	if must(h.s.GetAgent(h.ctx, a.ID))(t).Online {
		t.Fatal("still online after SetAgentOffline")
	}
	wantErr(t, h.s.InTx(h.ctx, func(tx store.Tx) error { return tx.RecordAgentSeen(h.ctx, "nope", base, true) }), store.ErrNotFound)
	wantErr(t, h.s.InTx(h.ctx, func(tx store.Tx) error { return tx.SetAgentOffline(h.ctx, "nope") }), store.ErrNotFound)

	// The agent reports a new version and hostname.
	a2 := got
	a2.Hostname, a2.Version, a2.BrokerUser = "pc42-renamed.acme.test", "1.1.0", ""
	up := do(t, h, func(tx store.Tx) (store.Agent, error) { return tx.UpdateAgent(h.ctx, a2) })
	a2.Online = false
	equal(t, "updated", up, a2)
	wantErr(t, try(h, func(tx store.Tx) (store.Agent, error) {
		return tx.UpdateAgent(h.ctx, store.Agent{ID: "nope", Hostname: "h"})
	}), store.ErrNotFound)

	// The last refused message claiming to be the agent replaces the one before; an
	// update of the agent leaves it.
	first := store.AgentRefusal{At: base.Add(3 * time.Minute), Code: "forged_sender", Sender: "guest", Reason: "user_id is not the agent's"}
	last := store.AgentRefusal{At: base.Add(4 * time.Minute), Code: "forged_sender", Sender: "agent-ws-0099", Reason: "the envelope claims agent ws-0042"}
	h.tx(t, func(tx store.Tx) error { return tx.RecordAgentRefusal(h.ctx, a.ID, first) })
	h.tx(t, func(tx store.Tx) error { return tx.RecordAgentRefusal(h.ctx, a.ID, last) })
	up = do(t, h, func(tx store.Tx) (store.Agent, error) { return tx.UpdateAgent(h.ctx, a2) })
	last.At = stored(last.At)
	equal(t, "refusal", up.LastRefusal, last)
	equal(t, "refusal read back", must(h.s.GetAgent(h.ctx, a.ID))(t).LastRefusal, last)
	wantErr(t, h.s.InTx(h.ctx, func(tx store.Tx) error { return tx.RecordAgentRefusal(h.ctx, "nope", last) }), store.ErrNotFound)
	wantErr(t, h.s.InTx(h.ctx, func(tx store.Tx) error { return tx.RecordAgentRefusal(h.ctx, a.ID, store.AgentRefusal{}) }), store.ErrInvalid)
}

func testAgentList(t *testing.T, h *harness) {
	at := base
	h.tx(t, func(tx store.Tx) error {
		for i := 1; i <= 6; i++ {
			id := fmt.Sprintf("ws-%04d", 7-i) // created in reverse order
			if _, err := tx.CreateAgent(h.ctx, store.Agent{ID: id, Hostname: id + ".test"}); err != nil {
				return err
			}
			if i%2 == 0 {
				if _, err := tx.ApproveAgent(h.ctx, id, "admin", at); err != nil {
					return err
				}
			}
			// Heartbeats i minutes after base: ws-0006 oldest, ws-0001 newest.
			if err := tx.RecordAgentSeen(h.ctx, id, at.Add(time.Duration(i)*time.Minute), true); err != nil {
				return err
			}
		}
		return nil
	})
	// Agents whose heartbeat is older than base+3m go offline: ws-0006 (1m), ws-0005 (2m).
	n := do(t, h, func(tx store.Tx) (int64, error) { return tx.MarkAgentsOffline(h.ctx, base.Add(3*time.Minute)) })
	if n != 2 {
		t.Fatalf("marked %d agents offline, want 2", n)
	}
	ids := func(agents []store.Agent) []string {
		var out []string
		for _, a := range agents {
			out = append(out, a.ID)
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		filter store.AgentFilter
		want   []string
	}{
		{"all", store.AgentFilter{}, []string{"ws-0001", "ws-0002", "ws-0003", "ws-0004", "ws-0005", "ws-0006"}},
		{"online", store.AgentFilter{Online: ptr(true)}, []string{"ws-0001", "ws-0002", "ws-0003", "ws-0004"}},
		{"offline", store.AgentFilter{Online: ptr(false)}, []string{"ws-0005", "ws-0006"}},
		{"approved", store.AgentFilter{Approved: ptr(true)}, []string{"ws-0001", "ws-0003", "ws-0005"}},
		{"awaiting approval and online", store.AgentFilter{Approved: ptr(false), Online: ptr(true)}, []string{"ws-0002", "ws-0004"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := listAll(t, 2, func(p store.Page) ([]store.Agent, string, error) { return h.s.ListAgents(h.ctx, tc.filter, p) })
			equal(t, "agents", ids(got), tc.want)
		})
	}
}

func testTokens(t *testing.T, h *harness) {
	f := newFixture(t, h)
	other := do(t, h, func(tx store.Tx) (store.Agent, error) {
		return tx.CreateAgent(h.ctx, store.Agent{ID: "ws-0002", Hostname: "ws-0002.acme.test"})
	})
	flags := []byte(`{"initialised": true, "user_pin_locked": false, "label": "x"}`)
	tok := do(t, h, func(tx store.Tx) (store.Token, error) {
		return tx.UpsertToken(h.ctx, store.Token{Serial: "0123456789abcdef", AgentID: f.agent.ID, Label: "alice",
			Manufacturer: "SoftHSM project", Model: "SoftHSM v2", Firmware: "2.6", Flags: flags, LastSeen: base})
	})
	if tok.Serial != "0123456789abcdef" || tok.AgentID != f.agent.ID || tok.Label != "alice" ||
		tok.Manufacturer != "SoftHSM project" || tok.Model != "SoftHSM v2" || tok.Firmware != "2.6" || !tok.LastSeen.Equal(stored(base)) {
		t.Fatalf("recorded %+v", tok)
	}
	jsonEqual(t, "flags", tok.Flags, flags)
	got := must(h.s.GetToken(h.ctx, tok.Serial))(t)
	jsonEqual(t, "flags read back", got.Flags, flags)
	if got.Firmware != "2.6" {
		t.Fatalf("firmware read back: %q", got.Firmware)
	}

	// Moved to another workstation: the same serial, updated in place.
	moved := do(t, h, func(tx store.Tx) (store.Token, error) {
		return tx.UpsertToken(h.ctx, store.Token{Serial: "0123456789abcdef", AgentID: other.ID, Label: "alice",
			Manufacturer: "SoftHSM project", Model: "SoftHSM v2", Firmware: "2.7", LastSeen: base.Add(time.Hour)})
	})
	if moved.AgentID != other.ID || moved.Firmware != "2.7" || !moved.LastSeen.Equal(stored(base.Add(time.Hour))) {
		t.Fatalf("after move: %+v", moved)
	}
	jsonEqual(t, "flags default", moved.Flags, []byte(`{}`))

	h.tx(t, func(tx store.Tx) error {
		for i := range 5 {
			if _, err := tx.UpsertToken(h.ctx, store.Token{Serial: fmt.Sprintf("s%02d", 4-i), AgentID: f.agent.ID}); err != nil {
				return err
			}
		}
		return nil
	})
	var serials []string
	for _, tk := range listAll(t, 2, func(p store.Page) ([]store.Token, string, error) {
		return h.s.ListTokens(h.ctx, store.TokenFilter{AgentID: f.agent.ID}, p)
	}) {
		serials = append(serials, tk.Serial)
	}
	equal(t, "tokens of agent", serials, []string{"s00", "s01", "s02", "s03", "s04"})
	all := listAll(t, 100, func(p store.Page) ([]store.Token, string, error) {
		return h.s.ListTokens(h.ctx, store.TokenFilter{}, p)
	})
	if len(all) != 6 {
		t.Fatalf("%d tokens in all, want 6", len(all))
	}
	if all[0].Serial != moved.Serial || all[0].Firmware != "2.7" {
		t.Fatalf("listed first %+v, want %s with firmware 2.7", all[0], moved.Serial)
	}

	// The agent no longer reports s01 and s03: released, no longer its own, still known.
	released := do(t, h, func(tx store.Tx) (int64, error) {
		return tx.ReleaseAgentTokens(h.ctx, f.agent.ID, []string{"s00", "s02", "s04"})
	})
	if released != 2 {
		t.Fatalf("released %d tokens, want 2", released)
	}
	serials = nil
	for _, tk := range listAll(t, 10, func(p store.Page) ([]store.Token, string, error) {
		return h.s.ListTokens(h.ctx, store.TokenFilter{AgentID: f.agent.ID}, p)
	}) {
		serials = append(serials, tk.Serial)
	}
	equal(t, "tokens of agent after release", serials, []string{"s00", "s02", "s04"})
	if r := must(h.s.GetToken(h.ctx, "s01"))(t); r.AgentID != "" {
		t.Fatalf("released token still held by %q", r.AgentID)
	}
	if got := must(h.s.GetToken(h.ctx, "0123456789abcdef"))(t); got.AgentID != other.ID {
		t.Fatalf("another agent's token released: %+v", got)
	}
	// Nothing reported at all: every token of the agent is released.
	if n := do(t, h, func(tx store.Tx) (int64, error) { return tx.ReleaseAgentTokens(h.ctx, f.agent.ID, nil) }); n != 3 {
		t.Fatalf("released %d tokens, want 3", n)
	}

	for _, tc := range []struct {
		name string
		tok  store.Token
		want error
	}{
		{"no serial", store.Token{AgentID: f.agent.ID}, store.ErrInvalid},
		{"flags not JSON", store.Token{Serial: "s9", Flags: []byte("{")}, store.ErrInvalid},
		{"unknown agent", store.Token{Serial: "s9", AgentID: "nope"}, store.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, try(h, func(tx store.Tx) (store.Token, error) { return tx.UpsertToken(h.ctx, tc.tok) }), tc.want)
		})
	}
}

func testCertificates(t *testing.T, h *harness) {
	f := newFixture(t, h)
	j := f.createJob(t, h, nil)
	der := []byte{0x30, 0x82, 0x01, 0x0a, 0x00, 0xff}
	c := do(t, h, func(tx store.Tx) (store.Certificate, error) {
		return tx.AddCertificate(h.ctx, store.Certificate{
			Serial: "00AbCdEf0123", JobID: j.ID, HolderID: f.holder.ID, Profile: "signing", TokenSerial: "tok1",
			AgentID: f.agent.ID, Subject: "CN=Alice,O=Acme", Issuer: "CN=Acme Issuing CA", NotBefore: base,
			NotAfter: base.AddDate(2, 0, 0), DER: der, Created: base,
		})
	})
	want := store.Certificate{
		Serial: "abcdef0123", JobID: j.ID, HolderID: f.holder.ID, Profile: "signing", TokenSerial: "tok1",
		AgentID: f.agent.ID, Subject: "CN=Alice,O=Acme", Issuer: "CN=Acme Issuing CA", NotBefore: stored(base),
		NotAfter: stored(base.AddDate(2, 0, 0)), DER: der, Created: stored(base),
	}
	equal(t, "added", c, want)
	equal(t, "get by other spelling", must(h.s.GetCertificate(h.ctx, "0ABCDEF0123"))(t), want)

	for _, tc := range []struct {
		name string
		cert store.Certificate
		want error
	}{
		{"serial taken", want, store.ErrConflict},
		{"serial not hex", store.Certificate{Serial: "xyz", Subject: "s", Issuer: "i", NotBefore: base, NotAfter: base, DER: der}, store.ErrInvalid},
		{"no DER", store.Certificate{Serial: "01", Subject: "s", Issuer: "i", NotBefore: base, NotAfter: base}, store.ErrInvalid},
		{"no subject", store.Certificate{Serial: "01", Issuer: "i", NotBefore: base, NotAfter: base, DER: der}, store.ErrInvalid},
		{"unknown holder", store.Certificate{Serial: "01", HolderID: "nope", Subject: "s", Issuer: "i", NotBefore: base, NotAfter: base, DER: der}, store.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, try(h, func(tx store.Tx) (store.Certificate, error) { return tx.AddCertificate(h.ctx, tc.cert) }), tc.want)
		})
	}

	r := do(t, h, func(tx store.Tx) (store.Certificate, error) {
		return tx.RevokeCertificate(h.ctx, "ABCDEF0123", base.Add(time.Hour), 1)
	})
	want.RevokedAt, want.RevocationReason = stored(base.Add(time.Hour)), 1
	equal(t, "revoked", r, want)
	wantErr(t, try(h, func(tx store.Tx) (store.Certificate, error) {
		return tx.RevokeCertificate(h.ctx, "abcdef0123", base.Add(2*time.Hour), 4)
	}), store.ErrConflict)
	equal(t, "first revocation kept", must(h.s.GetCertificate(h.ctx, "abcdef0123"))(t), want)
	wantErr(t, try(h, func(tx store.Tx) (store.Certificate, error) { return tx.RevokeCertificate(h.ctx, "beef", base, 1) }), store.ErrNotFound)
}

func testCertificateList(t *testing.T, h *harness) {
	f := newFixture(t, h)
	// Six certificates, one a day; holders and tokens alternate, the third is revoked.
	h.tx(t, func(tx store.Tx) error {
		for i := range 6 {
			holder, token := f.holder.ID, "tokA"
			if i%2 == 1 {
				holder, token = f.approver.ID, "tokB"
			}
			c := store.Certificate{Serial: fmt.Sprintf("%x", 0x100+i), HolderID: holder, TokenSerial: token,
				AgentID: f.agent.ID, Subject: "CN=" + itoa(i), Issuer: "CN=CA", NotBefore: base.AddDate(0, 0, i),
				NotAfter: base.AddDate(1, 0, i), DER: []byte{byte(i)}}
			if i == 3 {
				c.AgentID = ""
			}
			if _, err := tx.AddCertificate(h.ctx, c); err != nil {
				return err
			}
		}
		_, err := tx.RevokeCertificate(h.ctx, "102", base, 0)
		return err
	})
	serials := func(certs []store.Certificate) []string {
		var out []string
		for _, c := range certs {
			out = append(out, c.Serial)
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		filter store.CertificateFilter
		want   []string
	}{
		{"all, newest first", store.CertificateFilter{}, []string{"105", "104", "103", "102", "101", "100"}},
		{"holder", store.CertificateFilter{HolderID: f.holder.ID}, []string{"104", "102", "100"}},
		{"token", store.CertificateFilter{TokenSerial: "tokB"}, []string{"105", "103", "101"}},
		{"agent", store.CertificateFilter{AgentID: f.agent.ID}, []string{"105", "104", "102", "101", "100"}},
		{"revoked", store.CertificateFilter{Revoked: ptr(true)}, []string{"102"}},
		{"valid of holder", store.CertificateFilter{HolderID: f.holder.ID, Revoked: ptr(false)}, []string{"104", "100"}},
		{"expiring before", store.CertificateFilter{ExpiresBefore: base.AddDate(1, 0, 2), Revoked: ptr(false)}, []string{"101", "100"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, limit := range []int{1, 4} {
				got := listAll(t, limit, func(p store.Page) ([]store.Certificate, string, error) {
					return h.s.ListCertificates(h.ctx, tc.filter, p)
				})
				equal(t, fmt.Sprintf("limit %d", limit), serials(got), tc.want)
			}
		})
	}
}

func testProfiles(t *testing.T, h *harness) {
	v1 := []byte("name: signing\nkey: {type: ec, curve: P-256}\n")
	p := do(t, h, func(tx store.Tx) (store.Profile, error) {
		return tx.PutProfile(h.ctx, store.Profile{Name: "signing", Content: v1, ContentHash: hashOf(v1), UpdatedBy: "admin1", Updated: base}, 0)
	})
	want := store.Profile{Name: "signing", Content: v1, ContentHash: hashOf(v1), Version: 1, Updated: stored(base), UpdatedBy: "admin1"}
	equal(t, "created", p, want)
	equal(t, "get", must(h.s.GetProfile(h.ctx, "signing"))(t), want)

	wantErr(t, try(h, func(tx store.Tx) (store.Profile, error) {
		return tx.PutProfile(h.ctx, store.Profile{Name: "signing", Content: v1, ContentHash: hashOf(v1), UpdatedBy: "admin2"}, 0)
	}), store.ErrConflict)

	v2 := []byte("name: signing\nkey: {type: rsa, bits: 3072}\n")
	p2 := do(t, h, func(tx store.Tx) (store.Profile, error) {
		return tx.PutProfile(h.ctx, store.Profile{Name: "signing", Content: v2, ContentHash: hashOf(v2), UpdatedBy: "admin2",
			Updated: base.Add(time.Hour)}, 1)
	})
	want2 := store.Profile{Name: "signing", Content: v2, ContentHash: hashOf(v2), Version: 2, Updated: stored(base.Add(time.Hour)), UpdatedBy: "admin2"}
	equal(t, "updated", p2, want2)

	// An edit based on version 1 arrives late: refused, nothing lost.
	wantErr(t, try(h, func(tx store.Tx) (store.Profile, error) {
		return tx.PutProfile(h.ctx, store.Profile{Name: "signing", Content: []byte("stale: true\n"), ContentHash: "h", UpdatedBy: "admin3"}, 1)
	}), store.ErrConflict)
	equal(t, "current", must(h.s.GetProfile(h.ctx, "signing"))(t), want2)
	equal(t, "version 1 kept", must(h.s.GetProfileVersion(h.ctx, "signing", 1))(t), want)
	equal(t, "version 2", must(h.s.GetProfileVersion(h.ctx, "signing", 2))(t), want2)

	do(t, h, func(tx store.Tx) (store.Profile, error) {
		return tx.PutProfile(h.ctx, store.Profile{Name: "auth", Content: []byte("{}"), ContentHash: hashOf([]byte("{}")), UpdatedBy: "admin1"}, 0)
	})
	var names []string
	for _, p := range must(h.s.ListProfiles(h.ctx))(t) {
		names = append(names, p.Name)
	}
	equal(t, "profiles", names, []string{"auth", "signing"})

	for _, tc := range []struct {
		name string
		p    store.Profile
		ver  int64
		want error
	}{
		{"update of a missing profile", store.Profile{Name: "nope", Content: v1, ContentHash: "h", UpdatedBy: "a"}, 1, store.ErrNotFound},
		{"empty content", store.Profile{Name: "x", ContentHash: "h", UpdatedBy: "a"}, 0, store.ErrInvalid},
		{"not text", store.Profile{Name: "x", Content: []byte{0xff, 0xfe}, ContentHash: "h", UpdatedBy: "a"}, 0, store.ErrInvalid},
		{"no author", store.Profile{Name: "x", Content: v1, ContentHash: "h"}, 0, store.ErrInvalid},
		{"no content hash", store.Profile{Name: "x", Content: v1, UpdatedBy: "a"}, 0, store.ErrInvalid},
		{"negative version", store.Profile{Name: "x", Content: v1, ContentHash: "h", UpdatedBy: "a"}, -1, store.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, try(h, func(tx store.Tx) (store.Profile, error) { return tx.PutProfile(h.ctx, tc.p, tc.ver) }), tc.want)
		})
	}
}

// testHeartbeats: many agents' heartbeats in one call mark them online with their times,
// never move an agent's times back (another coordinator or a hello wrote a later one),
// pass over agents nobody enrolled, and take the latest of an agent named twice.
func testHeartbeats(t *testing.T, h *harness) {
	const n = 1200 // more than one statement's worth
	ids := make([]string, n)
	h.tx(t, func(tx store.Tx) error {
		for i := range ids {
			ids[i] = fmt.Sprintf("ws-%04d", i)
			if _, err := tx.CreateAgent(h.ctx, store.Agent{ID: ids[i], Hostname: ids[i] + ".test"}); err != nil {
				return err
			}
		}
		// ws-0001 already has a later heartbeat and a later message than the batch brings.
		return tx.RecordAgentSeen(h.ctx, ids[1], base.Add(time.Hour), true)
	})
	h.tx(t, func(tx store.Tx) error { return tx.SetAgentOffline(h.ctx, ids[1]) })
	// ws-0002's last message is later than its heartbeat in the batch.
	h.tx(t, func(tx store.Tx) error { return tx.RecordAgentSeen(h.ctx, ids[2], base.Add(time.Hour), false) })
	h.tx(t, func(tx store.Tx) error { return tx.SetAgentOffline(h.ctx, ids[2]) })

	beats := make([]store.Heartbeat, 0, n+2)
	for i, id := range ids {
		beats = append(beats, store.Heartbeat{AgentID: id, At: base.Add(time.Duration(i) * time.Millisecond)})
	}
	beats = append(beats, store.Heartbeat{AgentID: "ws-ghost", At: base},
		store.Heartbeat{AgentID: ids[3], At: base.Add(time.Minute)}, store.Heartbeat{AgentID: ids[3], At: base.Add(-time.Minute)})
	changed := do(t, h, func(tx store.Tx) (int64, error) { return tx.RecordHeartbeats(h.ctx, beats) })
	if changed != n-1 {
		t.Fatalf("%d agents changed, want %d (all but the one with a later heartbeat)", changed, n-1)
	}
	for i, id := range ids {
		a := must(h.s.GetAgent(h.ctx, id))(t)
		beat := stored(base.Add(time.Duration(i) * time.Millisecond))
		seen := beat
		switch i {
		case 1:
			beat, seen = stored(base.Add(time.Hour)), stored(base.Add(time.Hour))
		case 2:
			seen = stored(base.Add(time.Hour))
		case 3:
			beat, seen = stored(base.Add(time.Minute)), stored(base.Add(time.Minute))
		}
		if a.Online != (i != 1) || !a.LastHeartbeat.Equal(beat) || !a.LastSeen.Equal(seen) {
			t.Fatalf("agent %s: online %v, heartbeat %v, seen %v; want online %v, heartbeat %v, seen %v",
				id, a.Online, a.LastHeartbeat, a.LastSeen, i != 1, beat, seen)
		}
	}
	// The same batch again changes nothing: no time moves back, none forward.
	if again := do(t, h, func(tx store.Tx) (int64, error) { return tx.RecordHeartbeats(h.ctx, beats) }); again != 0 {
		t.Fatalf("the same batch again changed %d agents", again)
	}
	if none := do(t, h, func(tx store.Tx) (int64, error) { return tx.RecordHeartbeats(h.ctx, nil) }); none != 0 {
		t.Fatalf("no heartbeats changed %d agents", none)
	}
	wantErr(t, try(h, func(tx store.Tx) (int64, error) {
		return tx.RecordHeartbeats(h.ctx, []store.Heartbeat{{At: base}})
	}), store.ErrInvalid)
}
