package service_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// watchScene is a pending job and the people around it.
type watchScene struct {
	s             *service.Service
	st            store.Store
	admin, hd, ap service.Actor
	outsider      service.Actor
	job           service.Job
	agentID       string
}

func newWatchScene(t *testing.T) watchScene {
	t.Helper()
	ctx := context.Background()
	s, st := open(t, sqlite(t))
	sc := watchScene{s: s, st: st, admin: bootstrapAdmin(t, s, st), agentID: "ws-1"}
	for _, org := range []string{"Acme", "Globex"} {
		if _, err := s.CreateOrganization(ctx, sc.admin, org); err != nil {
			t.Fatal(err)
		}
	}
	mk := func(name, org string, roles ...jobs.Role) service.Actor {
		u, err := s.CreateUser(ctx, sc.admin, service.UserRequest{Username: name, DisplayName: name, Organization: org, Roles: roles})
		if err != nil {
			t.Fatal(err)
		}
		return service.ActorFor(u.User)
	}
	sc.hd, sc.ap, sc.outsider = mk("hd", "Acme", jobs.RoleHelpdesk), mk("ap", "Acme", jobs.RoleApprover), mk("out", "Globex", jobs.RoleApprover)
	mk("holder", "Acme")
	if _, err := s.ApplyProfiles(ctx, sc.admin, []byte(dualProfile)); err != nil {
		t.Fatal(err)
	}
	if err := st.InTx(ctx, func(tx store.Tx) error {
		_, err := tx.CreateAgent(ctx, store.Agent{ID: sc.agentID, Hostname: "pc"})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var err error
	if sc.job, err = s.CreateJob(ctx, sc.hd, service.JobRequest{Kind: jobs.KindIssue, Holder: "holder", Profile: "dual", Agent: sc.agentID}); err != nil {
		t.Fatal(err)
	}
	return sc
}

// receive waits for a detail, failing the test after a while.
func receive(t *testing.T, ch <-chan service.JobDetail) service.JobDetail {
	t.Helper()
	select {
	case d, ok := <-ch:
		if !ok {
			t.Fatal("the watch ended")
		}
		return d
	case <-time.After(10 * time.Second):
		t.Fatal("no detail within 10 s")
	}
	return service.JobDetail{}
}

func TestWatchJob(t *testing.T) {
	t.Parallel()
	sc := newWatchScene(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	if _, err := sc.s.WatchJob(ctx, sc.outsider, sc.job.ID); !errors.Is(err, &service.Error{Code: service.CodeOutOfScope}) {
		t.Fatalf("an approver of another organisation watches the job: %v", err)
	}
	if _, err := sc.s.WatchJob(ctx, sc.hd, "nosuchjob"); !errors.Is(err, &service.Error{Code: service.CodeNotFound}) {
		t.Fatalf("watching a job that does not exist: %v", err)
	}

	ch, err := sc.s.WatchJob(ctx, sc.hd, sc.job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if d := receive(t, ch); d.State != jobs.StatePendingApproval || len(d.Decisions) != 0 {
		t.Fatalf("first detail: %s, %d decisions", d.State, len(d.Decisions))
	}
	// A decision that does not move the job yet (two approvals needed) is a change.
	if _, err := sc.s.Approve(ctx, sc.ap, sc.job.ID, service.DecisionRequest{}); err != nil {
		t.Fatal(err)
	}
	if d := receive(t, ch); len(d.Decisions) != 1 || d.Approvals != 1 {
		t.Fatalf("after one approval: %d decisions, %d approvals", len(d.Decisions), d.Approvals)
	}

	// A reader that does not keep up holds up nobody (these calls return while nobody
	// reads), holds one detail at most, and gets the latest state.
	ap2, err := sc.s.CreateUser(ctx, sc.admin, service.UserRequest{Username: "ap2", Organization: "Acme", Roles: []jobs.Role{jobs.RoleApprover}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sc.s.Approve(ctx, service.ActorFor(ap2.User), sc.job.ID, service.DecisionRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := sc.s.Cancel(ctx, sc.hd, sc.job.ID, "wrong workstation"); err != nil {
		t.Fatal(err)
	}
	if n := len(ch); n > 1 {
		t.Fatalf("%d details wait", n)
	}
	deadline := time.Now().Add(10 * time.Second)
	for d := receive(t, ch); d.State != jobs.StateCancelled; d = receive(t, ch) {
		if time.Now().After(deadline) {
			t.Fatalf("the cancel never came: %s", d.State)
		}
	}

	// The watch ends with its context.
	cancel()
	select {
	case _, ok := <-ch:
		for ok {
			_, ok = <-ch
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the watch did not end with its context")
	}
}

// TestWatchJobSeesOtherCoordinators: a change committed by another coordinator sharing the
// database is seen by the periodic read.
func TestWatchJobSeesOtherCoordinators(t *testing.T) {
	t.Parallel()
	sc := newWatchScene(t)
	other, err := service.New(service.Options{Store: sc.st, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := sc.s.WatchJob(ctx, sc.hd, sc.job.ID)
	if err != nil {
		t.Fatal(err)
	}
	receive(t, ch)
	start := time.Now()
	if _, err := other.Cancel(ctx, sc.hd, sc.job.ID, "changed my mind"); err != nil {
		t.Fatal(err)
	}
	d := receive(t, ch)
	if d.State != jobs.StateCancelled {
		t.Fatalf("after another coordinator's cancel: %s", d.State)
	}
	if took := time.Since(start); took > 3*service.WatchRereadEvery {
		t.Errorf("the change took %s to arrive", took)
	}
}
