package service_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/coordinator/tokenlife"
)

// selfProfiles: "mine" lets holders act for themselves, "desk" does not; both need an
// approver of the organisation.
const selfProfiles = `name: mine
key: {type: ec, curve: P-256}
subject: {common_name: "{{.Name}}"}
key_usage: [digitalSignature]
extended_key_usage: [clientAuth]
validity: 90d
pin_policy: {min_length: 6, max_length: 8}
approval: {required: 1, roles: [approver], scope: organization, expires_after: 48h}
self_service: {request: true, reveal_pin: true, unblock_pin: true}
---
name: ask
key: {type: ec, curve: P-256}
subject: {common_name: "{{.Name}}"}
key_usage: [digitalSignature]
extended_key_usage: [clientAuth]
validity: 90d
pin_policy: {min_length: 6, max_length: 8}
approval: {required: 1, roles: [approver], scope: organization, expires_after: 48h}
self_service: {request: true}
---
name: desk
key: {type: ec, curve: P-256}
subject: {common_name: "{{.Name}}"}
key_usage: [digitalSignature]
extended_key_usage: [clientAuth]
validity: 90d
pin_policy: {min_length: 6, max_length: 8}
approval: {required: 1, roles: [approver], scope: organization, expires_after: 48h}
`

type selfEnv struct {
	ctx              context.Context
	s                *service.Service
	st               store.Store
	admin, desk, ap  service.Actor
	alice, bob, arne service.Actor
}

// newSelfEnv: holders alice (token tok-a at ws-1) and bob (tok-b at ws-2) without roles,
// the approver arne (tok-r at ws-3), and the help desk's hank, all of Acme.
func newSelfEnv(t *testing.T) *selfEnv {
	t.Helper()
	ctx := t.Context()
	s, st := openWith(t, sqlite(t), service.Options{Issuer: pinIssuer{}})
	e := &selfEnv{ctx: ctx, s: s, st: st, admin: bootstrapAdmin(t, s, st)}
	if _, err := s.CreateOrganization(ctx, e.admin, "Acme"); err != nil {
		t.Fatal(err)
	}
	mk := func(name string, roles ...jobs.Role) (service.Actor, string) {
		u, err := s.CreateUser(ctx, e.admin, service.UserRequest{Username: name, DisplayName: name, Organization: "Acme", Roles: roles})
		if err != nil {
			t.Fatal(err)
		}
		return service.ActorFor(u.User), u.ID
	}
	var aliceID, bobID, arneID string
	e.alice, aliceID = mk("alice")
	e.bob, bobID = mk("bob")
	e.arne, arneID = mk("arne", jobs.RoleApprover)
	e.ap, _ = mk("ines", jobs.RoleApprover)
	var deskID string
	e.desk, deskID = mk("hank", jobs.RoleHelpdesk)
	if _, err := s.ApplyProfiles(ctx, e.admin, []byte(selfProfiles)); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	if err := st.InTx(ctx, func(tx store.Tx) error {
		for i, o := range []struct{ agent, token, holder string }{{"ws-1", "tok-a", aliceID}, {"ws-2", "tok-b", bobID}, {"ws-3", "tok-r", arneID}} {
			if _, err := tx.CreateAgent(ctx, store.Agent{ID: o.agent, Hostname: o.agent + ".acme.example"}); err != nil {
				return err
			}
			if _, err := tx.UpsertToken(ctx, store.Token{Serial: o.token, AgentID: o.agent, Label: "card", Flags: []byte(`{"initialized":true}`), LastSeen: now}); err != nil {
				return err
			}
			if _, err := tx.AddCertificate(ctx, store.Certificate{Serial: string(rune('a'+i)) + "01", HolderID: o.holder, Profile: "mine", TokenSerial: o.token,
				AgentID: o.agent, Subject: "CN=" + o.holder, Issuer: "CN=Test CA", NotBefore: now, NotAfter: now.Add(90 * 24 * time.Hour), DER: []byte{1}, Created: now}); err != nil {
				return err
			}
			// The job that initialised the token left its PINs, the user PIN shown already.
			u, err := tx.GetUser(ctx, o.holder)
			if err != nil {
				return err
			}
			sp, err := tx.GetProfile(ctx, "mine")
			if err != nil {
				return err
			}
			j, err := tx.CreateJob(ctx, store.Job{Kind: jobs.KindIssue, State: jobs.StateSucceeded, HolderID: o.holder, ProfileName: "mine", ProfileHash: sp.ContentHash,
				AgentID: o.agent, TokenSerial: o.token, RequesterID: deskID, OrganizationID: u.OrganizationID, BindingHash: "b",
				Deadline: now.Add(time.Hour), Created: now.Add(-time.Hour)})
			if err != nil {
				return err
			}
			p, err := tx.AddTokenPIN(ctx, store.TokenPIN{TokenSerial: o.token, Purpose: store.PINPurposeUser, JobID: j.ID, Attempt: 1,
				Sealed: []byte(`{"sealed":"opaque"}`), Recorded: now.Add(-time.Hour)})
			if err != nil {
				return err
			}
			if err := tx.MarkTokenPINRevealed(ctx, p.ID, now.Add(-time.Hour)); err != nil {
				return err
			}
			if _, err := tx.AddTokenPIN(ctx, store.TokenPIN{TokenSerial: o.token, Purpose: store.PINPurposeSO, JobID: j.ID, Attempt: 1,
				Sealed: []byte(`{"sealed":"opaque"}`), Recorded: now.Add(-time.Hour)}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return e
}

func wantSelfCode(t *testing.T, what string, err error, code service.Code, in string) {
	t.Helper()
	if e := service.AsError(err); err == nil || e.Code != code || !strings.Contains(e.Msg, in) {
		t.Fatalf("%s: %v, want %s containing %q", what, err, code, in)
	}
}

// succeeded queues r for by, has arne approve it, and ends it as succeeded.
func (e *selfEnv) succeeded(t *testing.T, by service.Actor, r service.JobRequest) service.Job {
	t.Helper()
	j, err := e.s.CreateJob(e.ctx, by, r)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.Approve(e.ctx, e.arne, j.ID, service.DecisionRequest{Reason: "ok"}); err != nil {
		t.Fatal(err)
	}
	e.succeed(t, j.ID)
	return j
}

// succeed ends an approved job as an agent would, with the user PIN it set kept.
func (e *selfEnv) succeed(t *testing.T, id string) {
	t.Helper()
	if err := e.s.UpdateJobs(e.ctx, func(jt *service.JobTx) error {
		cur, err := jt.GetJob(e.ctx, id)
		if err != nil {
			return err
		}
		for _, to := range []jobs.State{jobs.StateDispatched, jobs.StateRunning, jobs.StateAwaitingCertificate, jobs.StateInstalling, jobs.StateSucceeded} {
			if cur, err = jt.Transition(e.ctx, cur, to, store.JobChange{Actor: service.AgentActor(cur.AgentID)}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := e.st.InTx(e.ctx, func(tx store.Tx) error {
		_, err := tx.AddTokenPIN(e.ctx, store.TokenPIN{TokenSerial: "tok-a", Purpose: store.PINPurposeUser, JobID: id, Attempt: 1,
			Sealed: []byte(`{"sealed":"opaque"}`), Recorded: time.Now().UTC()})
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

func TestSelfServiceRequest(t *testing.T) {
	t.Parallel()
	e := newSelfEnv(t)
	renew := func(by service.Actor, holder, profile, agent, token string) (service.Job, error) {
		return e.s.CreateJob(e.ctx, by, service.JobRequest{Kind: jobs.KindRenew, Holder: holder, Profile: profile, Agent: agent, TokenSerial: token})
	}
	// Refusals: another holder, another holder's token, another agent, a profile without
	// self-service, no token, a kind holders do not queue.
	_, err := renew(e.alice, "bob", "mine", "ws-2", "tok-b")
	wantSelfCode(t, "for bob", err, service.CodeForbidden, "")
	_, err = renew(e.alice, "alice", "mine", "ws-2", "tok-b")
	wantSelfCode(t, "bob's token", err, service.CodeForbidden, "not yours")
	_, err = renew(e.alice, "alice", "mine", "ws-2", "tok-a")
	wantSelfCode(t, "other agent", err, service.CodeForbidden, "last reported at agent ws-1")
	_, err = renew(e.alice, "alice", "desk", "ws-1", "tok-a")
	wantSelfCode(t, "desk profile", err, service.CodeForbidden, "self_service.request")
	_, err = renew(e.alice, "alice", "mine", "ws-1", "")
	wantSelfCode(t, "no token", err, service.CodeBadRequest, "names your token")
	_, err = e.s.CreateJob(e.ctx, e.alice, service.JobRequest{Kind: jobs.KindWipe, Holder: "alice", Profile: "mine", Agent: "ws-1", TokenSerial: "tok-a"})
	wantSelfCode(t, "wipe", err, service.CodeForbidden, "only issue, renew or unblock_pin")
	_, err = e.s.CreateJob(e.ctx, e.alice, service.JobRequest{Kind: jobs.KindUnblockPIN, Holder: "alice", Profile: "desk", Agent: "ws-1", TokenSerial: "tok-a"})
	wantSelfCode(t, "unblock, desk profile", err, service.CodeForbidden, "self_service.unblock_pin")
	// Each refusal is in the audit log.
	if es, _, err := e.st.ListAudit(e.ctx, store.AuditFilter{Actor: e.alice.ID()}, store.Page{Limit: 50}); err != nil || len(es) < 7 {
		t.Fatalf("alice's audit entries: %d, %v", len(es), err)
	}

	// Her own renewal waits for an approver, as the help desk's would.
	j, err := renew(e.alice, "alice", "mine", "ws-1", "tok-a")
	if err != nil {
		t.Fatal(err)
	}
	if j.State != jobs.StatePendingApproval || j.Requester != "alice" || j.Holder != "alice" || j.Required != 1 {
		t.Fatalf("job %+v", j)
	}
	// The approver asking for himself may not approve his own request.
	own, err := renew(e.arne, "arne", "mine", "ws-3", "tok-r")
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.s.Approve(e.ctx, e.arne, own.ID, service.DecisionRequest{Reason: "mine"})
	wantSelfCode(t, "self-approval", err, service.CodeSelfApproval, "")
	if _, err := e.s.Approve(e.ctx, e.arne, j.ID, service.DecisionRequest{Reason: "ok"}); err != nil {
		t.Fatal(err)
	}
}

func TestSelfServicePIN(t *testing.T) {
	t.Parallel()
	e := newSelfEnv(t)
	// A job of the desk profile: its holder may not see the PIN; the requester may.
	dj := e.succeeded(t, e.desk, service.JobRequest{Kind: jobs.KindRenew, Holder: "alice", Profile: "desk", Agent: "ws-1", TokenSerial: "tok-a"})
	_, err := e.s.RevealUserPIN(e.ctx, e.alice, dj.ID)
	wantSelfCode(t, "desk PIN", err, service.CodeForbidden, "self_service.reveal_pin")
	// Asking for herself does not make her the requester who hands the token over: a
	// profile without reveal_pin keeps the PIN from her (an issue: a renewal takes the
	// token's profile, "mine").
	aj := e.succeeded(t, e.alice, service.JobRequest{Kind: jobs.KindIssue, Holder: "alice", Profile: "ask", Agent: "ws-1", TokenSerial: "tok-a"})
	_, err = e.s.RevealUserPIN(e.ctx, e.alice, aj.ID)
	wantSelfCode(t, "ask PIN", err, service.CodeForbidden, "self_service.reveal_pin")

	j := e.succeeded(t, e.alice, service.JobRequest{Kind: jobs.KindRenew, Holder: "alice", Profile: "mine", Agent: "ws-1", TokenSerial: "tok-a"})
	mine, err := e.s.MyTokens(e.ctx, e.alice)
	if err != nil || len(mine.Tokens) != 1 || mine.Tokens[0].Serial != "tok-a" || mine.Tokens[0].PINJob != j.ID ||
		!mine.Tokens[0].CanRequest || !mine.Tokens[0].CanUnblock || len(mine.Jobs) != 4 {
		t.Fatalf("alice's tokens: %+v, %v", mine, errors.Unwrap(err))
	}
	_, err = e.s.RevealUserPIN(e.ctx, e.bob, j.ID)
	wantSelfCode(t, "bob sees alice's PIN", err, service.CodeForbidden, "")
	pin, err := e.s.RevealUserPIN(e.ctx, e.alice, j.ID)
	if err != nil || string(pin) != testPIN {
		t.Fatalf("PIN %q, %v", pin, err)
	}
	_, err = e.s.RevealUserPIN(e.ctx, e.alice, j.ID)
	wantSelfCode(t, "second reveal", err, service.CodeConflict, "shown once")
	if mine, err = e.s.MyTokens(e.ctx, e.alice); err != nil || mine.Tokens[0].PINJob != "" {
		t.Fatalf("after the reveal: %+v, %v", mine.Tokens, err)
	}
	// A new PIN: she queues the unblock herself.
	u, err := e.s.CreateJob(e.ctx, e.alice, service.JobRequest{Kind: jobs.KindUnblockPIN, Holder: "alice", Profile: "mine", Agent: "ws-1", TokenSerial: "tok-a"})
	if err != nil || u.Requester != "alice" || u.State != jobs.StatePendingApproval {
		t.Fatalf("unblock: %+v, %v", u, err)
	}
	// Alice's tokens and jobs are not in bob's list.
	if theirs, err := e.s.MyTokens(e.ctx, e.bob); err != nil || len(theirs.Tokens) != 1 || theirs.Tokens[0].Serial != "tok-b" || len(theirs.Jobs) != 1 {
		t.Fatalf("bob's: %+v, %v", theirs, err)
	}
}

func TestSelfServiceTokenState(t *testing.T) {
	t.Parallel()
	e := newLifeEnv(t, sqlite(t)) // suspending holds certificates: a real CA
	ctx := t.Context()
	e.certify(t, "R1")
	alice, arne := service.ActorFor(e.alice), e.boss
	if err := e.st.InTx(ctx, func(tx store.Tx) error {
		if _, err := tx.CreateAgent(ctx, store.Agent{ID: "ws-1", Hostname: "ws-1.acme.example"}); err != nil {
			return err
		}
		for _, serial := range []string{"R1", "R9"} {
			if _, err := tx.UpsertToken(ctx, store.Token{Serial: serial, AgentID: "ws-1", Flags: []byte(`{"initialized":true}`), LastSeen: time.Now()}); err != nil {
				return err
			}
		}
		now := time.Now().UTC()
		_, err := tx.AddCertificate(ctx, store.Certificate{Serial: "9f", HolderID: arne.ID(), TokenSerial: "R9", Subject: "CN=Arne", Issuer: "CN=Test CA",
			NotBefore: now, NotAfter: now.Add(time.Hour), DER: []byte{1}})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	_, err := e.s.SetTokenState(ctx, alice, "R9", tokenlife.Suspended, "found it on my desk")
	wantSelfCode(t, "arne's token", err, service.CodeForbidden, "not yours")
	_, err = e.s.SetTokenState(ctx, arne, "R1", tokenlife.Lost, "alice's")
	wantSelfCode(t, "alice's token by arne", err, service.CodeForbidden, "not yours")
	_, err = e.s.SetTokenState(ctx, alice, "R1", tokenlife.Retired, "done")
	wantSelfCode(t, "retire", err, service.CodeForbidden, "manage_tokens")
	_, err = e.s.SetTokenState(ctx, alice, "R1", tokenlife.Suspended, " ")
	wantSelfCode(t, "no reason", err, service.CodeReasonRequired, "")
	l, err := e.s.SetTokenState(ctx, alice, "R1", tokenlife.Suspended, "left it at home")
	if err != nil || l.State != tokenlife.Suspended || l.ChangedByName != "alice" {
		t.Fatalf("suspend: %+v, %v", l, err)
	}
	// Suspended, she may not reinstate it herself; she may report it lost.
	_, err = e.s.SetTokenState(ctx, alice, "R1", tokenlife.Active, "found it")
	wantSelfCode(t, "reinstate", err, service.CodeForbidden, "manage_tokens")
	if l, err = e.s.SetTokenState(ctx, alice, "R1", tokenlife.Lost, "not at home either"); err != nil || l.State != tokenlife.Lost {
		t.Fatalf("lost: %+v, %v", l, err)
	}
	mine, err := e.s.MyTokens(ctx, alice)
	if err != nil || len(mine.Tokens) != 1 || mine.Tokens[0].State != tokenlife.Lost || mine.Tokens[0].CanRequest {
		t.Fatalf("alice's tokens: %+v, %v", mine, errors.Unwrap(err))
	}
	// Her lost token's certificate is revoked.
	if rs := e.crlReasons(t); len(rs) != 1 {
		t.Fatalf("CRL: %v", rs)
	}
}

// TestSelfServiceProfileOfToken: a renewal or an unblock is judged by the profile of the
// token's newest certificate, not by a profile the holder names: a holder cannot borrow
// another profile's self_service to unblock a token whose profile leaves that to the
// help desk.
func TestSelfServiceProfileOfToken(t *testing.T) {
	t.Parallel()
	e := newSelfEnv(t)
	// tok-a now carries a newer certificate of "ask" (request only: no unblock, no reveal).
	now := time.Now().UTC().Truncate(time.Second)
	if err := e.st.InTx(e.ctx, func(tx store.Tx) error {
		_, err := tx.AddCertificate(e.ctx, store.Certificate{Serial: "a02", HolderID: e.alice.ID(), Profile: "ask", TokenSerial: "tok-a",
			AgentID: "ws-1", Subject: "CN=alice", Issuer: "CN=Test CA", NotBefore: now.Add(time.Minute), NotAfter: now.Add(90 * 24 * time.Hour), DER: []byte{1}, Created: now})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	req := func(kind jobs.Kind, profile string) error {
		_, err := e.s.CreateJob(e.ctx, e.alice, service.JobRequest{Kind: kind, Holder: "alice", Profile: profile, Agent: "ws-1", TokenSerial: "tok-a"})
		return err
	}
	wantSelfCode(t, "unblock under a borrowed profile", req(jobs.KindUnblockPIN, "mine"), service.CodeForbidden, "profile ask")
	wantSelfCode(t, "renew under a borrowed profile", req(jobs.KindRenew, "mine"), service.CodeForbidden, "profile ask")
	wantSelfCode(t, "unblock under the token's profile", req(jobs.KindUnblockPIN, "ask"), service.CodeForbidden, "self_service.unblock_pin")
	if err := req(jobs.KindRenew, "ask"); err != nil {
		t.Fatalf("renew under the token's profile: %v", err)
	}
}

// TestRequesterWithoutRoleSeesNoPIN: the requester sees the PIN to hand the token over
// while they still may request; one whose role was taken away since does not.
func TestRequesterWithoutRoleSeesNoPIN(t *testing.T) {
	t.Parallel()
	e := newSelfEnv(t)
	j := e.succeeded(t, e.desk, service.JobRequest{Kind: jobs.KindRenew, Holder: "alice", Profile: "desk", Agent: "ws-1", TokenSerial: "tok-a"})
	none := []jobs.Role{}
	u, err := e.s.UpdateUser(e.ctx, e.admin, "hank", service.UserUpdate{Roles: &none})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.s.RevealUserPIN(e.ctx, service.ActorFor(u.User), j.ID)
	wantSelfCode(t, "PIN to a requester without a role", err, service.CodeForbidden, "")
	// The PIN was not marked shown: an administrator still gets it.
	if pin, err := e.s.RevealUserPIN(e.ctx, e.admin, j.ID); err != nil || string(pin) != testPIN {
		t.Fatalf("PIN to an administrator: %q, %v", pin, err)
	}
}
