package service_test

import (
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

// auditLen is how many entries the audit log holds.
func (r *rig) auditLen() int {
	r.t.Helper()
	n := 0
	for _, err := range r.st.AuditEntries(r.ctx, 1) {
		if err != nil {
			r.t.Fatal(err)
		}
		n++
	}
	return n
}

// TestRolloutIdempotencyKey: a creation sent again with its key (a lost answer) gets the
// rollout the first one created, marked replayed, and nothing new; the key with another
// request is refused; keys are per user; a dry run neither uses nor takes one.
func TestRolloutIdempotencyKey(t *testing.T) {
	t.Parallel()
	r := newRig(t, sqlite(t))
	r.agents(4)
	create := func(by service.Actor, key string, dry bool, name string) (service.RolloutView, error) {
		return r.s.CreateRollout(r.ctx, by, service.RolloutRequest{Spec: inventorySpec(name), IdempotencyKey: key, DryRun: dry})
	}
	// A dry run with the key first: it takes nothing.
	if v, err := create(r.owner, "order-1", true, "inventory"); err != nil || v.ID != "" || v.Replayed {
		t.Fatalf("dry run: %+v %v", v, err)
	}
	first, err := create(r.owner, "order-1", false, "inventory")
	if err != nil || first.ID == "" || first.Replayed || first.Preview == nil {
		t.Fatalf("first: %+v %v", first, err)
	}
	entries := r.auditLen()
	again, err := create(r.owner, "order-1", false, "inventory")
	if err != nil || again.ID != first.ID || !again.Replayed || again.BindingHash != first.BindingHash || again.Preview != nil {
		t.Fatalf("again: %+v %v", again, err)
	}
	if n := r.auditLen(); n != entries {
		t.Fatalf("the replay audited %d entries", n-entries)
	}
	// The same request spelt differently (defaults left out or written) is the same request.
	spelt := inventorySpec("  inventory ")
	spelt.Selector.Agents.States = []string{"active"}
	if v, err := r.s.CreateRollout(r.ctx, r.owner, service.RolloutRequest{Spec: spelt, IdempotencyKey: "order-1"}); err != nil || v.ID != first.ID {
		t.Fatalf("the same request spelt otherwise: %+v %v", v.ID, err)
	}
	// Another request with the key is refused, naming the key and the rollout.
	_, err = create(r.owner, "order-1", false, "inventory again")
	wantCode(t, err, service.CodeIdempotencyKeyReused)
	var se *service.Error
	if !errors.As(err, &se) || se.Field != service.IdempotencyKeyField || !strings.Contains(se.Msg, first.ID) {
		t.Fatalf("reused key: %v", err)
	}
	// Answered as it is now: approved since, a profile edited since — still the replay.
	r.approve(r.ap1, first)
	if _, err := r.s.ApplyProfiles(r.ctx, r.admin, []byte(strings.Replace(fleetProfile, "validity: 30d", "validity: 31d", 1))); err != nil {
		t.Fatal(err)
	}
	if v, err := create(r.owner, "order-1", false, "inventory"); err != nil || v.ID != first.ID || v.State != "approved" {
		t.Fatalf("replay after approval: %+v %v", v.State, err)
	}
	// Another user's key is theirs.
	other := r.user("oscar", "Acme", jobs.RoleRolloutOwner)
	if v, err := create(other, "order-1", false, "inventory"); err != nil || v.ID == first.ID || v.Replayed {
		t.Fatalf("another user's key: %+v %v", v.ID, err)
	}
	if ros, _, err := r.s.ListRollouts(r.ctx, r.admin, service.RolloutQuery{}, service.Page{}); err != nil || len(ros) != 2 {
		t.Fatalf("%d rollouts (%v), want 2", len(ros), err)
	}
	_, err = create(r.owner, strings.Repeat("k", 256), false, "x")
	wantCode(t, err, service.CodeBadRequest)
}

// TestRolloutIdempotencyConcurrentPostgres: the same creation sent at once to two
// coordinators makes one rollout; every answer names it.
func TestRolloutIdempotencyConcurrentPostgres(t *testing.T) {
	cfg := store.Config{Driver: store.DriverPostgres, DSN: testenv.PostgresDatabase(t)}
	r := newRig(t, cfg)
	r.agents(50)
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	st2, err := store.Open(r.ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st2.Close() })
	s2, err := service.New(service.Options{Store: st2, Logger: log, Now: r.clock.now})
	if err != nil {
		t.Fatal(err)
	}
	const racers = 6
	ids := make([]string, racers)
	var wg sync.WaitGroup
	for i := range racers {
		s := []*service.Service{r.s, s2}[i%2]
		wg.Go(func() {
			v, err := s.CreateRollout(r.ctx, r.owner, service.RolloutRequest{Spec: inventorySpec("raced"), IdempotencyKey: "same"})
			if err != nil {
				t.Errorf("racer %d: %v", i, err)
			}
			ids[i] = v.ID
		})
	}
	wg.Wait()
	for _, id := range ids {
		if id != ids[0] || id == "" {
			t.Fatalf("rollouts %v", ids)
		}
	}
	if ros, _, err := r.s.ListRollouts(r.ctx, r.admin, service.RolloutQuery{}, service.Page{}); err != nil || len(ros) != 1 {
		t.Fatalf("%d rollouts (%v)", len(ros), err)
	}
}
