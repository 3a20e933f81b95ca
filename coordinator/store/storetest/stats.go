package storetest

import (
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// testFleetStats: the counts the metrics read follow jobs, the outbox, agents' presence
// and certificates as they change.
func testFleetStats(t *testing.T, h *harness) {
	now := base.Add(time.Hour)
	empty := must(h.s.FleetStats(h.ctx, now))(t)
	if len(empty.Jobs) != 0 || empty.OutboxUnsent != 0 || !empty.OutboxOldest.IsZero() || empty.AgentsOnline+empty.AgentsOffline != 0 ||
		empty.Certificates != (store.CertificateExpiry{}) {
		t.Fatalf("empty store: %+v", empty)
	}

	f := newFixture(t, h)
	f.createJob(t, h, nil)
	f.createJob(t, h, nil)
	f.createJob(t, h, func(j *store.Job) { j.Kind, j.State = jobs.KindWipe, jobs.StateApproved })
	h.tx(t, func(tx store.Tx) error {
		for i := range 3 {
			m, err := tx.AddOutbox(h.ctx, store.OutboxMessage{Exchange: "tokenfleet.commands", RoutingKey: "ws-0001",
				Type: "job.issue", Body: []byte("{}"), Created: base.Add(time.Duration(i) * time.Minute)})
			if err != nil {
				return err
			}
			if i == 0 {
				// The oldest is sent: the next one is the oldest waiting.
				if err := tx.MarkOutboxSent(h.ctx, m.ID, base.Add(time.Hour)); err != nil {
					return err
				}
			}
		}
		if _, err := tx.CreateAgent(h.ctx, store.Agent{ID: "ws-0002", Hostname: "ws-0002.acme.test"}); err != nil {
			return err
		}
		return tx.RecordAgentSeen(h.ctx, f.agent.ID, now, true)
	})
	cert := func(serial, holder, profile, token string, notAfter time.Time) store.Certificate {
		return store.Certificate{Serial: serial, HolderID: holder, Profile: profile, TokenSerial: token, Subject: "CN=x",
			Issuer: "CN=ca", NotBefore: base, NotAfter: notAfter, DER: []byte{0x30, 0x00}, Created: base}
	}
	day := 24 * time.Hour
	h.tx(t, func(tx store.Tx) error {
		for _, c := range []store.Certificate{
			cert("01", f.holder.ID, "signing", "t1", now.Add(3*day)),     // renewed by 02: not counted
			cert("02", f.holder.ID, "signing", "t1", now.Add(365*day)),   // later
			cert("03", f.holder.ID, "signing", "t2", now.Add(3*day)),     // another token: under 7 days
			cert("04", f.holder.ID, "logon", "t2", now.Add(20*day)),      // 7 to 30 days
			cert("05", f.requester.ID, "signing", "t3", now.Add(60*day)), // 30 to 90 days
			cert("06", f.requester.ID, "logon", "t3", now.Add(-day)),     // expired
			cert("07", f.requester.ID, "logon", "t4", now.Add(-60*day)),  // expired long ago: not counted
			cert("08", f.approver.ID, "signing", "t5", now.Add(2*day)),   // revoked below: not counted
		} {
			if _, err := tx.AddCertificate(h.ctx, c); err != nil {
				return err
			}
		}
		_, err := tx.RevokeCertificate(h.ctx, "08", now, 1)
		return err
	})

	got := must(h.s.FleetStats(h.ctx, now))(t)
	counts := map[string]int64{}
	for _, c := range got.Jobs {
		counts[string(c.Kind)+"/"+string(c.State)] = c.Count
	}
	equal(t, "jobs", counts, map[string]int64{"issue/pending_approval": 2, "wipe/approved": 1})
	equal(t, "outbox unsent", got.OutboxUnsent, 2)
	equal(t, "outbox oldest", got.OutboxOldest, stored(base.Add(time.Minute)))
	equal(t, "agents online", got.AgentsOnline, 1)
	equal(t, "agents offline", got.AgentsOffline, 1)
	equal(t, "certificates", got.Certificates, store.CertificateExpiry{Expired: 1, Under7Days: 1, Under30Days: 1, Under90Days: 1, Later: 1})
}
