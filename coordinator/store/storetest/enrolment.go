package storetest

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// testEnrolmentKeys: codes and keys are created in batches with secrets that are never
// stored; a use is taken only while the key may be used, and a one-off code raced for by
// several agents is used once.
func testEnrolmentKeys(t *testing.T, h *harness) {
	f := newFixture(t, h)
	now := time.Now()
	mk := func(k store.EnrolmentKey, n int) ([]store.EnrolmentKey, []string) {
		t.Helper()
		var keys []store.EnrolmentKey
		var secrets []string
		h.tx(t, func(tx store.Tx) error {
			var err error
			keys, secrets, err = tx.CreateEnrolmentKeys(h.ctx, k, n)
			return err
		})
		return keys, secrets
	}
	use := func(secret string) (store.EnrolmentKey, error) {
		var k store.EnrolmentKey
		err := h.s.InTx(h.ctx, func(tx store.Tx) error {
			var err error
			k, err = tx.UseEnrolmentKey(h.ctx, secret, now)
			return err
		})
		return k, err
	}
	reusable, rs := mk(store.EnrolmentKey{Kind: store.EnrolmentReusable, Name: "floor 3", OrganizationID: f.org.ID,
		Tags: []string{"floor3", "accounts", "floor3"}, PreApproved: true, MaxUses: 2, CreatedBy: f.approver.ID,
		Expires: now.Add(time.Hour)}, 1)
	k := reusable[0]
	if k.ID == "" || k.Uses != 0 || k.Created.IsZero() || !strings.HasPrefix(rs[0], "tfe_"+k.ID+"_") ||
		strings.Join(k.Tags, ",") != "accounts,floor3" || k.OrganizationID != f.org.ID {
		t.Fatalf("created %+v / %q", k, rs[0])
	}
	equal(t, "get", must(h.s.GetEnrolmentKey(h.ctx, k.ID))(t), k)

	// Wrong, malformed and unknown secrets are all not found; nothing is counted.
	for _, bad := range []string{"", "tfe_", rs[0] + "x", "tfe_" + k.ID + "_wrong", "tfe_nosuchid_" + strings.Repeat("a", 32), strings.TrimPrefix(rs[0], "tfe_")} {
		if _, err := use(bad); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("use %q: %v, want not found", bad, err)
		}
	}
	for i := 1; i <= 2; i++ {
		got, err := use(rs[0])
		if err != nil || got.Uses != i || got.LastUsed.IsZero() {
			t.Fatalf("use %d: %+v, %v", i, got, err)
		}
	}
	wantUnusable(t, errOf(use(rs[0])), "used")

	// One-off codes, many at once, each its own secret; racing agents get one use.
	codes, cs := mk(store.EnrolmentKey{Kind: store.EnrolmentCode, AgentID: "ws-0042", MaxUses: 1, CreatedBy: f.approver.ID,
		Expires: now.Add(15 * time.Minute)}, 3)
	if len(codes) != 3 || cs[0] == cs[1] || codes[0].ID == codes[1].ID {
		t.Fatalf("codes %+v", codes)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	won, lost := 0, 0
	for range 4 {
		wg.Go(func() {
			_, err := use(cs[0])
			mu.Lock()
			defer mu.Unlock()
			var ku *store.KeyUnusableError
			switch {
			case err == nil:
				won++
			case errors.As(err, &ku) && ku.Reason == "used":
				lost++
			default:
				t.Errorf("racing use: %v", err)
			}
		})
	}
	wg.Wait()
	if won != 1 {
		t.Fatalf("a one-off code raced for by 4 agents was used %d times", won)
	}

	// Revoked and expired.
	revoked := do(t, h, func(tx store.Tx) (store.EnrolmentKey, error) {
		return tx.RevokeEnrolmentKey(h.ctx, codes[1].ID, f.approver.ID, now)
	})
	if revoked.Revoked.IsZero() || revoked.RevokedBy != f.approver.ID {
		t.Fatalf("revoked %+v", revoked)
	}
	again := do(t, h, func(tx store.Tx) (store.EnrolmentKey, error) {
		return tx.RevokeEnrolmentKey(h.ctx, codes[1].ID, f.requester.ID, now.Add(time.Minute))
	})
	equal(t, "revoked twice keeps the first", again, revoked)
	wantUnusable(t, errOf(use(cs[1])), "revoked")
	expired, es := mk(store.EnrolmentKey{Kind: store.EnrolmentReusable, CreatedBy: f.approver.ID, Expires: now.Add(-time.Second)}, 1)
	wantUnusable(t, errOf(use(es[0])), "expired")
	wantErr(t, try(h, func(tx store.Tx) (store.EnrolmentKey, error) {
		return tx.RevokeEnrolmentKey(h.ctx, "nosuchkey", f.approver.ID, now)
	}), store.ErrNotFound)

	// Bad batches.
	for _, bad := range []struct {
		k store.EnrolmentKey
		n int
	}{
		{store.EnrolmentKey{Kind: "forever", CreatedBy: f.approver.ID, Expires: now}, 1},
		{store.EnrolmentKey{Kind: store.EnrolmentCode, Expires: now}, 1},
		{store.EnrolmentKey{Kind: store.EnrolmentCode, CreatedBy: f.approver.ID}, 1},
		{store.EnrolmentKey{Kind: store.EnrolmentCode, CreatedBy: f.approver.ID, Expires: now}, 0},
		{store.EnrolmentKey{Kind: store.EnrolmentCode, CreatedBy: f.approver.ID, Expires: now}, 1001},
	} {
		err := h.s.InTx(h.ctx, func(tx store.Tx) error {
			_, _, err := tx.CreateEnrolmentKeys(h.ctx, bad.k, bad.n)
			return err
		})
		wantErr(t, err, store.ErrInvalid)
	}

	// Listings: all, by kind, only the usable ones; pages in creation order.
	all := listAll(t, 2, func(p store.Page) ([]store.EnrolmentKey, string, error) {
		return h.s.ListEnrolmentKeys(h.ctx, store.EnrolmentKeyFilter{}, p)
	})
	if len(all) != 5 || all[0].ID != k.ID || all[4].ID != expired[0].ID {
		t.Fatalf("listed %d keys: %+v", len(all), all)
	}
	onlyCodes := listAll(t, 2, func(p store.Page) ([]store.EnrolmentKey, string, error) {
		return h.s.ListEnrolmentKeys(h.ctx, store.EnrolmentKeyFilter{Kind: store.EnrolmentCode}, p)
	})
	usable := listAll(t, 2, func(p store.Page) ([]store.EnrolmentKey, string, error) {
		return h.s.ListEnrolmentKeys(h.ctx, store.EnrolmentKeyFilter{Usable: now}, p)
	})
	if len(onlyCodes) != 3 || len(usable) != 1 || usable[0].ID != codes[2].ID {
		t.Fatalf("codes %d, usable %+v", len(onlyCodes), usable)
	}
}

func wantUnusable(t *testing.T, err error, reason string) {
	t.Helper()
	var ku *store.KeyUnusableError
	if !errors.As(err, &ku) || ku.Reason != reason || !errors.Is(err, store.ErrConflict) {
		t.Fatalf("got %v, want the key refused as %s", err, reason)
	}
}

// testAgentLifeCycle: states move only from the states given, activation approves, and an
// agent that leaves active loses its kept credentials; an agent's secret is checked in
// constant time and replaced when issued again.
func testAgentLifeCycle(t *testing.T, h *harness) {
	f := newFixture(t, h)
	a := do(t, h, func(tx store.Tx) (store.Agent, error) {
		return tx.CreateAgent(h.ctx, store.Agent{ID: "ws-pending", Hostname: "p.acme.test", State: store.AgentPending,
			OrganizationID: f.org.ID, Tags: []string{"b", "a"}, EnrolledWith: "key1"})
	})
	if a.State != store.AgentPending || !a.Approved.IsZero() || strings.Join(a.Tags, ",") != "a,b" || a.EnrolledWith != "key1" {
		t.Fatalf("enrolled %+v", a)
	}
	pending := listAll(t, 2, func(p store.Page) ([]store.Agent, string, error) {
		return h.s.ListAgents(h.ctx, store.AgentFilter{State: store.AgentPending}, p)
	})
	if len(pending) != 1 || pending[0].ID != a.ID {
		t.Fatalf("pending agents %+v", pending)
	}
	// Credentials only for an active agent.
	wantErr(t, h.s.InTx(h.ctx, func(tx store.Tx) error { return tx.SetAgentCredentials(h.ctx, a.ID, []byte("sealed"), base) }), store.ErrConflict)
	at := base.Add(time.Minute)
	active := do(t, h, func(tx store.Tx) (store.Agent, error) {
		return tx.SetAgentState(h.ctx, a.ID, store.AgentStateChange{State: store.AgentActive, Reason: "known laptop", By: f.approver.ID, At: at}, store.AgentPending)
	})
	if active.State != store.AgentActive || !active.Approved.Equal(stored(at)) || active.ApprovedBy != f.approver.ID ||
		active.StateReason != "known laptop" || active.StateBy != f.approver.ID || !active.StateAt.Equal(stored(at)) {
		t.Fatalf("activated %+v", active)
	}
	// Approving again is a conflict naming the state.
	err := try(h, func(tx store.Tx) (store.Agent, error) {
		return tx.SetAgentState(h.ctx, a.ID, store.AgentStateChange{State: store.AgentActive, By: f.approver.ID}, store.AgentPending)
	})
	wantErr(t, err, store.ErrConflict)
	if !strings.Contains(err.Error(), "active") {
		t.Fatalf("conflict does not name the state: %v", err)
	}
	h.tx(t, func(tx store.Tx) error { return tx.SetAgentCredentials(h.ctx, a.ID, []byte("sealed"), at) })
	if c := must(h.s.AgentCredentials(h.ctx, a.ID))(t); string(c) != "sealed" {
		t.Fatalf("credentials %q", c)
	}
	if got := must(h.s.GetAgent(h.ctx, a.ID))(t); !got.CredentialsAt.Equal(stored(at)) {
		t.Fatalf("credentials at %v", got.CredentialsAt)
	}
	disabled := do(t, h, func(tx store.Tx) (store.Agent, error) {
		return tx.SetAgentState(h.ctx, a.ID, store.AgentStateChange{State: store.AgentDisabled, Reason: "stolen", By: f.approver.ID, At: at})
	})
	if disabled.State != store.AgentDisabled || !disabled.CredentialsAt.IsZero() || disabled.Online {
		t.Fatalf("disabled %+v", disabled)
	}
	if c := must(h.s.AgentCredentials(h.ctx, a.ID))(t); c != nil {
		t.Fatalf("a disabled agent keeps credentials %q", c)
	}
	// A heartbeat still queued when the agent was disabled does not show it online.
	if n := do(t, h, func(tx store.Tx) (int64, error) {
		return tx.RecordHeartbeats(h.ctx, []store.Heartbeat{{AgentID: a.ID, At: at.Add(time.Second)}})
	}); n != 0 || must(h.s.GetAgent(h.ctx, a.ID))(t).Online {
		t.Fatalf("a disabled agent's heartbeat was recorded (%d rows)", n)
	}
	wantErr(t, try(h, func(tx store.Tx) (store.Agent, error) {
		return tx.SetAgentState(h.ctx, a.ID, store.AgentStateChange{State: "lost", By: f.approver.ID})
	}), store.ErrInvalid)
	wantErr(t, try(h, func(tx store.Tx) (store.Agent, error) {
		return tx.SetAgentState(h.ctx, "nosuch", store.AgentStateChange{State: store.AgentDisabled, By: f.approver.ID})
	}), store.ErrNotFound)

	// Secrets.
	first := do(t, h, func(tx store.Tx) (string, error) { return tx.IssueAgentSecret(h.ctx, a.ID) })
	if !strings.HasPrefix(first, "tfa_") {
		t.Fatalf("secret %q", first)
	}
	if got, err := h.s.CheckAgentSecret(h.ctx, a.ID, first); err != nil || got.ID != a.ID {
		t.Fatalf("check: %+v, %v", got, err)
	}
	second := do(t, h, func(tx store.Tx) (string, error) { return tx.IssueAgentSecret(h.ctx, a.ID) })
	for _, bad := range []struct{ id, secret string }{{a.ID, first}, {a.ID, ""}, {a.ID, second + "x"}, {"nosuch", second}, {"ws-other", second}} {
		if _, err := h.s.CheckAgentSecret(h.ctx, bad.id, bad.secret); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("check %q for %s: %v, want not found", bad.secret, bad.id, err)
		}
	}
	wantErr(t, try(h, func(tx store.Tx) (string, error) { return tx.IssueAgentSecret(h.ctx, "nosuch") }), store.ErrNotFound)
}

func errOf[T any](_ T, err error) error { return err }
