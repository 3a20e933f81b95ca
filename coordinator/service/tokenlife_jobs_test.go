package service_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/ca"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/coordinator/tokenlife"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/seal"
)

// storeJob records a job on token serial for alice directly in the store, in state
// pending_approval: for kinds whose request needs what this test does not set up.
func (e *escrowEnv) storeJob(kind jobs.Kind, serial string) store.Job {
	e.t.Helper()
	var out store.Job
	err := e.st.InTx(e.ctx, func(tx store.Tx) error {
		p, err := tx.GetProfile(e.ctx, "plain")
		if err != nil {
			return err
		}
		out, err = tx.CreateJob(e.ctx, store.Job{Kind: kind, State: jobs.StatePendingApproval, HolderID: e.alice.ID, ProfileName: "plain",
			ProfileHash: p.ContentHash, AgentID: "ws-01", TokenSerial: serial, RequesterID: e.alice.ID, BindingHash: strings.Repeat("0", 64)})
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// move takes job id through states, as the agent's reports and the dispatcher would.
func (e *escrowEnv) move(id string, states ...jobs.State) {
	e.t.Helper()
	err := e.s.UpdateJobs(e.ctx, func(jt *service.JobTx) error {
		j, err := jt.GetJob(e.ctx, id)
		if err != nil {
			return err
		}
		for _, to := range states {
			if j, err = jt.Transition(e.ctx, j, to, store.JobChange{Actor: "agent:ws-01", Reason: "test"}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

// storeMove moves job j through states in the store alone.
func (e *escrowEnv) storeMove(j store.Job, states ...jobs.State) {
	e.t.Helper()
	err := e.st.InTx(e.ctx, func(tx store.Tx) error {
		for _, to := range states {
			njs, err := tx.UpdateJobStates(e.ctx, []store.JobMove{{ID: j.ID, From: j.State, ExpectedVersion: j.Version}}, to,
				store.JobChange{Actor: "agent:ws-01", Reason: "test"})
			if err != nil {
				return err
			}
			j = njs[0]
		}
		return nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

// told reports whether the outbox holds a cancel message telling the agent job id ended.
func (e *escrowEnv) told(id string) bool {
	e.t.Helper()
	ms, err := e.st.ListUnsentOutbox(e.ctx, 1000)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, m := range ms {
		if m.CorrelationID == id && m.Type == string(protocol.TypeCancel) {
			return true
		}
	}
	return false
}

// soPIN records an SO PIN for serial, as a tokenfleet job's result would have.
func (e *escrowEnv) soPIN(serial string) {
	e.t.Helper()
	j := e.storeJob(jobs.KindInventory, serial)
	sealed, err := seal.Seal(e.resultKey.PublicKey(), []byte("87654321"), seal.Binding{JobID: j.ID, Attempt: 1, Purpose: protocol.PurposeSOPIN})
	if err != nil {
		e.t.Fatal(err)
	}
	raw, err := json.Marshal(sealed)
	if err != nil {
		e.t.Fatal(err)
	}
	err = e.st.InTx(e.ctx, func(tx store.Tx) error {
		_, err := tx.AddTokenPIN(e.ctx, store.TokenPIN{TokenSerial: serial, Purpose: store.PINPurposeSO, JobID: j.ID, Attempt: 1, Sealed: raw})
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

// TestTokenStateEndsOpenJobs: a token leaving active ends, in the same transaction, the
// open jobs on it that its new state does not take, at every stage from pending approval
// to installing, with the new state in the reason, audited, and the agent told of each
// it was sent; revoke and inventory go on, and a wipe goes on for a retired token. The
// same rule refuses such jobs at request time. On SQLite and PostgreSQL.
func TestTokenStateEndsOpenJobs(t *testing.T) {
	t.Parallel()
	bothStores(t, func(t *testing.T, cfg store.Config) {
		e := newEscrowEnv(t, cfg, false)
		ctx := e.ctx
		issue := func(profile string) service.Job {
			t.Helper()
			j, err := e.s.CreateJob(ctx, e.desk, service.JobRequest{Kind: jobs.KindIssue, Holder: "alice", Agent: "ws-01", Profile: profile, TokenSerial: "T1"})
			if err != nil {
				t.Fatalf("%v: %v", err, service.AsError(err).Err)
			}
			return j
		}
		// Created by the service, so that the dispatcher writes what it sends the agent.
		pending := issue("enc-gated")
		running := issue("plain")
		e.move(running.ID, jobs.StateDispatched, jobs.StateRunning)
		// Moved in the store: one issue job at a time runs on a token.
		dispatched := e.storeJob(jobs.KindIssue, "T1")
		e.storeMove(dispatched, jobs.StateApproved, jobs.StateDispatched)
		installing := e.storeJob(jobs.KindIssue, "T1")
		e.storeMove(installing, jobs.StateApproved, jobs.StateDispatched, jobs.StateRunning, jobs.StateAwaitingCertificate, jobs.StateInstalling)
		unblock := e.storeJob(jobs.KindUnblockPIN, "T1")
		wipe := e.storeJob(jobs.KindWipe, "T1")
		inventory := e.storeJob(jobs.KindInventory, "T1")
		revoke := e.storeJob(jobs.KindRevoke, "T1")
		other := e.storeJob(jobs.KindUnblockPIN, "T2")
		failed := e.storeJob(jobs.KindUnblockPIN, "T1")
		e.storeMove(failed, jobs.StateApproved, jobs.StateDispatched, jobs.StateFailed)

		if _, err := e.s.SetTokenState(ctx, e.desk, "T1", tokenlife.Lost, "left on the train"); err != nil {
			t.Fatal(err)
		}
		const why = "token T1 became lost: left on the train"
		for _, tc := range []struct {
			name  string
			id    string
			state jobs.State
			told  bool
		}{
			{"pending approval", pending.ID, jobs.StateCancelled, false}, // never sent
			{"dispatched", dispatched.ID, jobs.StateCancelled, false},    // no dispatch written by this test
			{"running", running.ID, jobs.StateCancelled, true},
			{"installing", installing.ID, jobs.StateFailed, false},
			{"unblock", unblock.ID, jobs.StateCancelled, false},
			{"wipe", wipe.ID, jobs.StateCancelled, false},
			{"inventory", inventory.ID, jobs.StatePendingApproval, false},
			{"revoke", revoke.ID, jobs.StatePendingApproval, false},
			{"another token's", other.ID, jobs.StatePendingApproval, false},
		} {
			j, err := e.st.GetJob(ctx, tc.id)
			if err != nil {
				t.Fatal(err)
			}
			if j.State != tc.state {
				t.Errorf("%s job: %s, want %s", tc.name, j.State, tc.state)
				continue
			}
			if e.told(tc.id) != tc.told {
				t.Errorf("%s job: agent told %v, want %v", tc.name, !tc.told, tc.told)
			}
			if tc.state == jobs.StatePendingApproval {
				continue
			}
			evs, err := e.st.ListJobEvents(ctx, tc.id)
			if err != nil {
				t.Fatal(err)
			}
			if last := evs[len(evs)-1]; last.Reason != why || last.Actor != e.desk.ID() {
				t.Errorf("%s job: last event %+v, want reason %q by olga", tc.name, last, why)
			}
			if tc.state == jobs.StateFailed && j.ErrorCode != "token_lost" {
				t.Errorf("%s job: error code %q, want token_lost", tc.name, j.ErrorCode)
			}
		}
		var cancelled int
		var moved audit.Entry
		for en, err := range e.st.AuditEntries(ctx, 1) {
			if err != nil {
				t.Fatal(err)
			}
			if en.Action == audit.ActionJobCancelled && en.Reason == why {
				cancelled++
			}
			if en.Action == audit.ActionTokenStateChanged && en.Target == "token:T1" {
				moved = en
			}
		}
		// Five cancelled and one failed (the issue job that recorded T1's PIN was
		// superseded by the new ones).
		if cancelled != 5 || !strings.Contains(string(moved.Details), `"jobs_ended":6`) {
			t.Errorf("%d job.cancelled entries, token.state_changed %s", cancelled, moved.Details)
		}

		// The same rule at request time, and for a retry: a lost token takes no
		// certificate and no unblock, and still an inventory.
		if _, err := e.s.RetryJob(ctx, e.desk, failed.ID, service.RetryRequest{}); service.AsError(err).Code != service.CodeTokenNotActive {
			t.Errorf("retry of a failed unblock on a lost token: %v", err)
		}
		_, err := e.s.CreateJob(ctx, e.desk, service.JobRequest{Kind: jobs.KindIssue, Holder: "alice", Agent: "ws-01", Profile: "plain", TokenSerial: "T1"})
		if service.AsError(err).Code != service.CodeTokenNotActive {
			t.Errorf("issue to a lost token: %v", err)
		}
		if _, err := e.s.CreateJob(ctx, e.desk, service.JobRequest{Kind: jobs.KindInventory, Holder: "alice", Agent: "ws-01", Profile: "plain", TokenSerial: "T1"}); err != nil {
			t.Errorf("inventory of a lost token: %v", err)
		}

		// A retired token keeps its wipe: erasing it is its proper end.
		keep := e.storeJob(jobs.KindWipe, "T2")
		if _, err := e.s.SetTokenState(ctx, e.desk, "T2", tokenlife.Retired, "end of contract"); err != nil {
			t.Fatal(err)
		}
		for id, want := range map[string]jobs.State{keep.ID: jobs.StatePendingApproval, other.ID: jobs.StateCancelled} {
			if j, err := e.st.GetJob(ctx, id); err != nil || j.State != want {
				t.Errorf("job %s (%s) on the retired token: %s, %v; want %s", id, j.Kind, j.State, err, want)
			}
		}
	})
}

// TestFoundToken: a lost token found again keeps its certificates revoked for key
// compromise and takes nothing but a wipe; the wipe's success makes it a blank active
// token, issued to again, and the crypto-device register shows its history. On SQLite and
// PostgreSQL.
func TestFoundToken(t *testing.T) {
	t.Parallel()
	bothStores(t, func(t *testing.T, cfg store.Config) {
		e := newEscrowEnv(t, cfg, true)
		ctx := e.ctx
		e.issueEscrowed() // a certificate on T1
		e.soPIN("T1")
		// An issuance the register lists.
		first, err := e.s.CreateJob(ctx, e.desk, service.JobRequest{Kind: jobs.KindIssue, Holder: "alice", Agent: "ws-01", Profile: "plain", TokenSerial: "T1"})
		if err != nil {
			t.Fatal(err)
		}
		e.move(first.ID, jobs.StateDispatched, jobs.StateRunning, jobs.StateAwaitingCertificate, jobs.StateInstalling, jobs.StateSucceeded)

		// found only from lost or stolen.
		if _, err := e.s.SetTokenState(ctx, e.desk, "T1", tokenlife.Found, "in a drawer"); service.AsError(err).Code != service.CodeIllegalTransition {
			t.Fatalf("active -> found: %v", err)
		}
		if _, err := e.s.SetTokenState(ctx, e.desk, "T1", tokenlife.Lost, "not on the desk"); err != nil {
			t.Fatal(err)
		}
		// The holder may report it lost, not found.
		if _, err := e.s.SetTokenState(ctx, e.alice2(), "T1", tokenlife.Found, "it was in my bag"); service.AsError(err).Code != service.CodeForbidden {
			t.Errorf("the holder declares their token found: %v", err)
		}
		l, err := e.s.SetTokenState(ctx, e.desk, "T1", tokenlife.Found, "in a drawer")
		if err != nil || l.State != tokenlife.Found {
			t.Fatalf("lost -> found: %+v, %v", l.State, err)
		}
		certs, _, err := e.st.ListCertificates(ctx, store.CertificateFilter{TokenSerial: "T1"}, store.Page{Limit: 10})
		if err != nil || len(certs) != 1 {
			t.Fatalf("certificates of T1: %v, %v", certs, err)
		}
		if certs[0].RevokedAt.IsZero() || certs[0].RevocationReason != ca.ReasonKeyCompromise {
			t.Errorf("a found token's certificate: revoked %v, reason %d; want keyCompromise", certs[0].RevokedAt, certs[0].RevocationReason)
		}

		// Nothing but a wipe: not active again by hand, no certificate, no unblock.
		if _, err := e.s.SetTokenState(ctx, e.desk, "T1", tokenlife.Active, "back"); service.AsError(err).Code != service.CodeIllegalTransition ||
			!strings.Contains(err.Error(), "wipe") {
			t.Errorf("found -> active by hand: %v", err)
		}
		for _, k := range []jobs.Kind{jobs.KindIssue, jobs.KindUnblockPIN} {
			r := service.JobRequest{Kind: k, Holder: "alice", Agent: "ws-01", Profile: "plain", TokenSerial: "T1"}
			if _, err := e.s.CreateJob(ctx, e.desk, r); service.AsError(err).Code != service.CodeTokenNotActive || !strings.Contains(err.Error(), "wipe it first") {
				t.Errorf("%s on a found token: %v", k, err)
			}
		}
		wipe, err := e.s.CreateJob(ctx, e.desk, service.JobRequest{Kind: jobs.KindWipe, Holder: "alice", Agent: "ws-01", Profile: "plain", TokenSerial: "T1"})
		if err != nil {
			t.Fatalf("wipe of a found token: %v: %v", err, service.AsError(err).Err)
		}
		e.succeed(wipe.ID)

		l, err = e.s.GetTokenLife(ctx, e.desk, "T1")
		if err != nil {
			t.Fatal(err)
		}
		last := l.History[len(l.History)-1]
		if l.State != tokenlife.Active || last.From != tokenlife.Found || last.JobID != wipe.ID || !strings.Contains(last.Reason, "a blank token again") {
			t.Errorf("after the wipe: %s, last change %+v", l.State, last)
		}
		if c, err := e.st.GetCertificate(ctx, certs[0].Serial); err != nil || c.RevocationReason != ca.ReasonKeyCompromise {
			t.Errorf("the wipe lifted the revocation: %+v, %v", c, err)
		}
		if _, err := e.s.CreateJob(ctx, e.desk, service.JobRequest{Kind: jobs.KindIssue, Holder: "alice", Agent: "ws-01", Profile: "plain", TokenSerial: "T1"}); err != nil {
			t.Errorf("issue to the wiped token: %v", err)
		}

		// The register: the first issuance returned by the wipe, with the token's states
		// while it was out.
		reg, err := e.s.ReadRegister(ctx, e.admin, service.RegisterQuery{})
		if err != nil {
			t.Fatal(err)
		}
		var entry *service.RegisterEntry
		for i := range reg.Entries {
			if reg.Entries[i].JobID == first.ID {
				entry = &reg.Entries[i]
			}
		}
		if entry == nil {
			t.Fatalf("no register entry for job %s: %+v", first.ID, reg.Entries)
		}
		var states []string
		for _, h := range entry.History {
			states = append(states, h.State)
		}
		got := strings.Join(states, ",")
		if entry.State != service.DeviceReturned || !strings.Contains(entry.ReturnReason, "wiped by job "+wipe.ID) ||
			!strings.Contains(got, "token lost,token found,token active,returned") {
			t.Errorf("register entry: %s (%s), history %s", entry.State, entry.ReturnReason, got)
		}
	})
}
