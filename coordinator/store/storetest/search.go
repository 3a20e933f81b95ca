package storetest

import (
	"fmt"
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// testSearchFilters: the filters the console's lists search with, paged.
func testSearchFilters(t *testing.T, h *harness) {
	f := newFixture(t, h)
	h.tx(t, func(tx store.Tx) error {
		for _, a := range []store.Agent{
			{ID: "ws-0002", Hostname: "Laptop-Paris.acme.test"},
			{ID: "ws-0003", Hostname: "desk_1.acme.test"},
			{ID: "kiosk-9", Hostname: "deskxx.acme.test"},
		} {
			if _, err := tx.CreateAgent(h.ctx, a); err != nil {
				return err
			}
		}
		for _, tok := range []store.Token{
			{Serial: "A100", AgentID: "ws-0001", Label: "alice card", Manufacturer: "Aktiv", Model: "Rutoken ECP"},
			{Serial: "B200", AgentID: "ws-0001", Label: "spare", Manufacturer: "Yubico", Model: "YubiKey 5"},
			{Serial: "C300", AgentID: "ws-0002", Label: "boss key", Manufacturer: "Yubico", Model: "YubiKey 5 NFC"},
		} {
			if _, err := tx.UpsertToken(h.ctx, tok); err != nil {
				return err
			}
		}
		for i, c := range []struct{ holder, token, profile string }{
			{f.holder.ID, "A100", "smartcard-logon"}, {f.approver.ID, "C300", "signing"}, {f.holder.ID, "A100", "signing"},
		} {
			if _, err := tx.AddCertificate(h.ctx, store.Certificate{Serial: fmt.Sprintf("%x", 0x200+i), HolderID: c.holder,
				TokenSerial: c.token, Profile: c.profile, Subject: "CN=x", Issuer: "CN=CA", NotBefore: base.AddDate(0, 0, i),
				NotAfter: base.AddDate(1, 0, i), DER: []byte{byte(i)}}); err != nil {
				return err
			}
		}
		for _, u := range []store.User{
			{Username: "maria", DisplayName: "Maria Dupont", Email: "m.dupont@acme.test"},
			{Username: "pct", DisplayName: "100% sure"},
		} {
			if _, err := tx.CreateUser(h.ctx, u); err != nil {
				return err
			}
		}
		return nil
	})

	agents := func(fl store.AgentFilter) []string {
		var out []string
		for _, a := range listAll(t, 1, func(p store.Page) ([]store.Agent, string, error) { return h.s.ListAgents(h.ctx, fl, p) }) {
			out = append(out, a.ID)
		}
		return out
	}
	equal(t, "agents by host, any case", agents(store.AgentFilter{Search: "laptop-PARIS"}), []string{"ws-0002"})
	equal(t, "agents by ID", agents(store.AgentFilter{Search: "kiosk"}), []string{"kiosk-9"})
	// An underscore is a character, not LIKE's wildcard.
	equal(t, "agents by host with _", agents(store.AgentFilter{Search: "desk_"}), []string{"ws-0003"})
	equal(t, "agents by ID or host", agents(store.AgentFilter{Search: "ws-000"}), []string{"ws-0001", "ws-0002", "ws-0003"})

	tokens := func(fl store.TokenFilter) []string {
		var out []string
		for _, tok := range listAll(t, 1, func(p store.Page) ([]store.Token, string, error) { return h.s.ListTokens(h.ctx, fl, p) }) {
			out = append(out, tok.Serial)
		}
		return out
	}
	equal(t, "tokens of a holder", tokens(store.TokenFilter{HolderID: f.holder.ID}), []string{"A100"})
	equal(t, "tokens by model", tokens(store.TokenFilter{Model: "yubikey"}), []string{"B200", "C300"})
	equal(t, "tokens by manufacturer", tokens(store.TokenFilter{Model: "aktiv"}), []string{"A100"})
	equal(t, "tokens by label", tokens(store.TokenFilter{Search: "KEY"}), []string{"C300"})
	equal(t, "tokens by model on an agent", tokens(store.TokenFilter{Model: "yubikey", AgentID: "ws-0001"}), []string{"B200"})

	certs := func(fl store.CertificateFilter) []string {
		var out []string
		for _, c := range listAll(t, 1, func(p store.Page) ([]store.Certificate, string, error) { return h.s.ListCertificates(h.ctx, fl, p) }) {
			out = append(out, c.Serial)
		}
		return out
	}
	equal(t, "certificates of a profile", certs(store.CertificateFilter{Profile: "signing"}), []string{"202", "201"})
	equal(t, "certificates of a profile and holder", certs(store.CertificateFilter{Profile: "signing", HolderID: f.holder.ID}), []string{"202"})

	users := func(fl store.UserFilter) []string {
		var out []string
		for _, u := range listAll(t, 1, func(p store.Page) ([]store.User, string, error) { return h.s.ListUsers(h.ctx, fl, p) }) {
			out = append(out, u.Username)
		}
		return out
	}
	equal(t, "users by display name", users(store.UserFilter{Search: "dupont"}), []string{"maria"})
	equal(t, "users by e-mail", users(store.UserFilter{Search: "M.DUPONT@"}), []string{"maria"})
	equal(t, "users by username", users(store.UserFilter{Search: "ali"}), []string{"alice"})
	// A percent sign is a character, not LIKE's wildcard.
	equal(t, "users by text with %", users(store.UserFilter{Search: "0%"}), []string{"pct"})

	for i, e := range []audit.Entry{
		{Actor: "u1", Action: "job.created", JobID: "j1"}, {Actor: "u2", Action: "job.approved", JobID: "j1"},
		{Actor: "u1", Action: "job.created", JobID: "j2"}, {Actor: "system:x", Action: "agent.enrolled"},
		{Actor: "u1", Action: "job.approved", JobID: "j2"},
	} {
		e.Reason = itoa(i)
		appendAudit(t, h, h.s, e)
	}
	seqs := func(fl store.AuditFilter) []int64 {
		var out []int64
		for _, e := range listAll(t, 1, func(p store.Page) ([]audit.Entry, string, error) { return h.s.ListAudit(h.ctx, fl, p) }) {
			out = append(out, e.Seq)
		}
		return out
	}
	equal(t, "audit by action", seqs(store.AuditFilter{Action: "job.created"}), []int64{1, 3})
	equal(t, "audit by actor, newest first", seqs(store.AuditFilter{Actor: "u1", Newest: true}), []int64{5, 3, 1})
	equal(t, "audit by job and action", seqs(store.AuditFilter{JobID: "j2", Action: "job.approved"}), []int64{5})
	equal(t, "audit newest first", seqs(store.AuditFilter{Newest: true}), []int64{5, 4, 3, 2, 1})
	equal(t, "audit newest first to a seq", seqs(store.AuditFilter{Newest: true, ToSeq: 3}), []int64{3, 2, 1})
}
