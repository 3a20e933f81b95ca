package storetest

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// testAgentsBatch: CreateAgents enrols a batch, more than one statement's worth, in the
// order given; a batch with any malformed, repeated or taken ID or broker user writes
// nothing and names every such agent by its position.
func testAgentsBatch(t *testing.T, h *harness) {
	do(t, h, func(tx store.Tx) (store.Agent, error) {
		return tx.CreateAgent(h.ctx, store.Agent{ID: "ws-held", Hostname: "held.acme.test", BrokerUser: "agent-held"})
	})
	const n = 1203 // three INSERT statements
	batch := make([]store.Agent, n)
	for i := range batch {
		id := fmt.Sprintf("ws-%05d", n-i) // not in ID order: the answer keeps the batch's
		batch[i] = store.Agent{ID: id, Hostname: id + ".acme.test", BrokerUser: "agent-" + id, Enrolled: base,
			Approved: base, ApprovedBy: "admin1"}
	}
	got := do(t, h, func(tx store.Tx) ([]store.Agent, error) { return tx.CreateAgents(h.ctx, batch) })
	if len(got) != n {
		t.Fatalf("got %d agents, want %d", len(got), n)
	}
	for i, a := range got {
		want := batch[i]
		want.Enrolled, want.Approved = stored(base), stored(base)
		want.State = store.AgentActive
		equal(t, "agent "+fmt.Sprint(i), a, want)
	}
	equal(t, "read back", must(h.s.GetAgent(h.ctx, batch[7].ID))(t), got[7])
	// IDs are agents' IDs, which name queues and routing keys: a user's session on a
	// shared host is fine, a routing-key separator or upper case is not.
	shared := do(t, h, func(tx store.Tx) ([]store.Agent, error) {
		return tx.CreateAgents(h.ctx, []store.Agent{{ID: "alice@ts-01", Hostname: "ts-01.acme.test"}})
	})
	equal(t, "a session's agent", shared[0].ID, "alice@ts-01")
	equal(t, "a session's agent, alone", do(t, h, func(tx store.Tx) (store.Agent, error) {
		return tx.CreateAgent(h.ctx, store.Agent{ID: "bob@ts-01", Hostname: "ts-01.acme.test"})
	}).ID, "bob@ts-01")
	for _, id := range []string{"ws.1", "WS-1"} {
		err := try(h, func(tx store.Tx) ([]store.Agent, error) {
			return tx.CreateAgents(h.ctx, []store.Agent{{ID: id, Hostname: "h"}})
		})
		wantErr(t, err, store.ErrInvalid)
		wantErr(t, try(h, func(tx store.Tx) (store.Agent, error) {
			return tx.CreateAgent(h.ctx, store.Agent{ID: id, Hostname: "h"})
		}), store.ErrInvalid)
	}
	if all := listAll(t, 500, func(p store.Page) ([]store.Agent, string, error) {
		return h.s.ListAgents(h.ctx, store.AgentFilter{}, p)
	}); len(all) != n+3 {
		t.Fatalf("%d agents stored, want %d", len(all), n+3)
	}
	equal(t, "empty batch", do(t, h, func(tx store.Tx) ([]store.Agent, error) { return tx.CreateAgents(h.ctx, nil) }), []store.Agent(nil))

	bad := []store.Agent{
		{ID: "ok-1", Hostname: "ok-1.test"},                           // 0: fine
		{ID: "ws-held", Hostname: "other.test"},                       // 1: ID taken
		{ID: "ok-2", Hostname: "ok-2.test", BrokerUser: "agent-held"}, // 2: broker user taken
		{ID: "ok-1", Hostname: "again.test"},                          // 3: ID repeated in the batch
		{ID: "bad id", Hostname: "h"},                                 // 4: malformed ID
		{ID: "ok-3"},                                                  // 5: no hostname
		{ID: "ok-4", Hostname: "ok-4.test", BrokerUser: "agent-x"},    // 6: fine
		{ID: "ok-5", Hostname: "ok-5.test", BrokerUser: "agent-x"},    // 7: broker user repeated
	}
	err := try(h, func(tx store.Tx) ([]store.Agent, error) { return tx.CreateAgents(h.ctx, bad) })
	wantErr(t, err, store.ErrInvalid)
	var be *store.AgentBatchError
	if !errors.As(err, &be) {
		t.Fatalf("got %T %v, want *store.AgentBatchError", err, err)
	}
	type problem struct {
		index int
		field string
		kind  error
		says  string
	}
	want := []problem{
		{1, "id", store.ErrConflict, "held.acme.test"},
		{2, "broker_user", store.ErrConflict, "ws-held"},
		{3, "id", store.ErrConflict, "agent 0"},
		{4, "id", store.ErrInvalid, "bad id"},
		{5, "hostname", store.ErrInvalid, "hostname"},
		{7, "broker_user", store.ErrConflict, "agent 6"},
	}
	if len(be.Problems) != len(want) {
		t.Fatalf("problems %+v, want %d", be.Problems, len(want))
	}
	for i, w := range want {
		p := be.Problems[i]
		if p.Index != w.index || p.Field != w.field || p.ID != bad[w.index].ID || !errors.Is(p.Err, w.kind) || !strings.Contains(p.Err.Error(), w.says) {
			t.Errorf("problem %d = %+v (%v), want agent %d, field %s, %v, saying %q", i, p, p.Err, w.index, w.field, w.kind, w.says)
		}
	}
	// Conflicts alone are a conflict; nothing of a refused batch was written.
	err = try(h, func(tx store.Tx) ([]store.Agent, error) { return tx.CreateAgents(h.ctx, bad[:4]) })
	wantErr(t, err, store.ErrConflict)
	if errors.Is(err, store.ErrInvalid) {
		t.Fatalf("conflicts only, yet invalid: %v", err)
	}
	for _, id := range []string{"ok-1", "ok-2", "ok-4"} {
		_, err := h.s.GetAgent(h.ctx, id)
		wantErr(t, err, store.ErrNotFound)
	}
}
