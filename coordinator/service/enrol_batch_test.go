package service_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/internal/testenv"
)

// batchHook records what it hears, batches apart from single agents.
type batchHook struct {
	mu      sync.Mutex // guards the fields below
	single  []string
	batches [][]string
}

func (h *batchHook) AgentEnrolled(_ context.Context, a store.Agent) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.single = append(h.single, a.ID)
	return nil
}

func (h *batchHook) AgentsEnrolled(_ context.Context, as []store.Agent) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	ids := make([]string, len(as))
	for i, a := range as {
		ids[i] = a.ID
	}
	h.batches = append(h.batches, ids)
	return nil
}

func (h *batchHook) heard() (single []string, batches [][]string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.single...), append([][]string(nil), h.batches...)
}

// enrolFixture is a service with a batch hook over cfg, its store and its administrator.
func enrolFixture(t *testing.T, cfg store.Config) (*service.Service, store.Store, store.User, *batchHook) {
	t.Helper()
	ctx := context.Background()
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	st, err := store.Open(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	hook := &batchHook{}
	s, err := service.New(service.Options{Store: st, Logger: log, AgentHook: hook})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Bootstrap(ctx, func(string) error { return nil }); err != nil {
		t.Fatal(err)
	}
	u, err := st.GetUserByUsername(ctx, "admin")
	if err != nil {
		t.Fatal(err)
	}
	return s, st, u, hook
}

// TestEnrolAgents: a batch is enrolled in one transaction, audited per agent and handed
// to the hook at once; a batch with any bad entry enrols nothing and names every bad
// entry; the rules are the single enrolment's. On both stores.
func TestEnrolAgents(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { t.Parallel(); testEnrolAgents(t, sqlite(t)) })
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		testEnrolAgents(t, store.Config{Driver: store.DriverPostgres, DSN: testenv.PostgresDatabase(t)})
	})
}

func testEnrolAgents(t *testing.T, cfg store.Config) {
	ctx := context.Background()
	s, st, adminUser, hook := enrolFixture(t, cfg)
	admin := service.ActorFor(adminUser)
	if _, err := s.EnrolAgent(ctx, admin, service.AgentEnrolment{ID: "ws-held", Hostname: "held.acme.test"}); err != nil {
		t.Fatal(err)
	}
	head := auditHead(t, st)

	batch := []service.AgentEnrolment{
		{ID: "ws-b", Hostname: "b.acme.test"},
		{ID: " ws-a ", Hostname: "a.acme.test", BrokerUser: "custom-a"}, // trimmed, as the single enrolment trims
		{ID: "ws-c", Hostname: "c.acme.test"},
	}
	got, err := s.EnrolAgents(ctx, admin, batch)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].ID != "ws-b" || got[1].ID != "ws-a" || got[2].ID != "ws-c" {
		t.Fatalf("enrolled %+v, want ws-b, ws-a, ws-c in that order", got)
	}
	for _, a := range got {
		if a.Approved.IsZero() || a.Enrolled.IsZero() || a.Online {
			t.Errorf("agent %+v: want enrolled and approved, offline", a)
		}
	}
	if batch[1].ID != " ws-a " {
		t.Errorf("the caller's batch was changed: %+v", batch[1])
	}
	stored, err := st.GetAgent(ctx, "ws-a")
	if err != nil || stored.BrokerUser != "custom-a" || stored.ApprovedBy != adminUser.ID {
		t.Fatalf("ws-a stored as %+v, %v", stored, err)
	}
	if b, _ := st.GetAgent(ctx, "ws-b"); b.BrokerUser != "agent-ws-b" {
		t.Errorf("ws-b's broker user %q, want the default agent-ws-b", b.BrokerUser)
	}
	entries := auditAfter(t, st, head)
	if len(entries) != 3 {
		t.Fatalf("audit after the batch: %+v, want three agent.enrolled", entries)
	}
	for i, e := range entries {
		want := fmt.Sprintf(`"batch_index":%d`, i)
		if e.Action != audit.ActionAgentEnrolled || e.Target != "agent:"+got[i].ID || e.Actor != adminUser.ID ||
			!strings.Contains(string(e.Details), want) || !strings.Contains(string(e.Details), `"batch_size":3`) ||
			!strings.Contains(string(e.Details), `"hostname":"`+got[i].Hostname+`"`) {
			t.Errorf("audit entry %d = %+v %s", i, e, e.Details)
		}
	}
	single, batches := hook.heard()
	if fmt.Sprint(single) != "[ws-held]" || fmt.Sprint(batches) != "[[ws-b ws-a ws-c]]" {
		t.Errorf("hook heard %v one by one and %v in batches", single, batches)
	}

	// Refusals: the code, and each entry named; nothing stored, nothing audited, the hook
	// not told.
	head = auditHead(t, st)
	long := strings.Repeat("h", 200)
	for _, tc := range []struct {
		name    string
		batch   []service.AgentEnrolment
		code    service.Code
		entries []string // "index id field code"
		says    string
	}{
		{"empty", nil, service.CodeBadRequest, nil, "at least one"},
		{"too many", make([]service.AgentEnrolment, service.MaxAgentBatch+1), service.CodeBadRequest, nil, "at most 1000"},
		{"taken ID", []service.AgentEnrolment{{ID: "ws-new", Hostname: "n"}, {ID: "ws-held", Hostname: "x"}},
			service.CodeConflict, []string{"1 ws-held id conflict"}, "held.acme.test"},
		{"taken broker user", []service.AgentEnrolment{{ID: "ws-new", Hostname: "n", BrokerUser: "agent-ws-b"}},
			service.CodeConflict, []string{"0 ws-new broker_user conflict"}, `"ws-b"`},
		{"repeated in the batch", []service.AgentEnrolment{{ID: "ws-new", Hostname: "n"}, {ID: "ws-x", Hostname: "x", BrokerUser: "u"},
			{ID: "ws-new", Hostname: "m"}, {ID: "ws-y", Hostname: "y", BrokerUser: "u"}},
			service.CodeConflict, []string{"2 ws-new id conflict", "3 ws-y broker_user conflict"}, "entry 0"},
		{"malformed and taken", []service.AgentEnrolment{
			{ID: "WS-UPPER", Hostname: "h"}, {ID: "ws-ok", Hostname: "ok"}, {ID: "ws-nohost"}, {ID: "ws-c", Hostname: "c2"},
			{ID: "ws-long", Hostname: long}, {ID: "ws.dot", Hostname: "d"}, {ID: "", Hostname: "e"},
		}, service.CodeBadRequest, []string{"0 WS-UPPER id bad_request", "2 ws-nohost hostname bad_request",
			"3 ws-c id conflict", "4 ws-long hostname bad_request", "5 ws.dot id bad_request", "6  id bad_request"}, "6 of 7 entries"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.EnrolAgents(ctx, admin, tc.batch)
			var se *service.Error
			if !errors.As(err, &se) || se.Code != tc.code || !strings.Contains(se.Msg, tc.says) {
				t.Fatalf("got %v, want %s saying %q", err, tc.code, tc.says)
			}
			var named []string
			for _, e := range se.Entries {
				named = append(named, fmt.Sprintf("%d %s %s %s", e.Index, e.ID, e.Field, e.Code))
				if e.Msg == "" {
					t.Errorf("entry %d without a message", e.Index)
				}
			}
			if fmt.Sprint(named) != fmt.Sprint(tc.entries) {
				t.Errorf("entries %v, want %v", named, tc.entries)
			}
			for _, id := range []string{"ws-new", "ws-ok", "ws-x"} {
				if _, err := st.GetAgent(ctx, id); !errors.Is(err, store.ErrNotFound) {
					t.Errorf("%s stored after a refused batch: %v", id, err)
				}
			}
		})
	}
	if entries := auditAfter(t, st, head); len(entries) != 0 {
		t.Errorf("refused batches audited as %+v", entries)
	}
	if _, batches := hook.heard(); len(batches) != 1 {
		t.Errorf("the hook heard of refused batches: %v", batches)
	}

	// Only an administrator enrols; a refusal is audited as access.denied.
	hd, err := s.CreateUser(ctx, admin, service.UserRequest{Username: "hd", Roles: []jobs.Role{jobs.RoleHelpdesk}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.EnrolAgents(ctx, service.ActorFor(hd.User), []service.AgentEnrolment{{ID: "ws-new", Hostname: "n"}})
	if !errors.Is(err, &service.Error{Code: service.CodeForbidden}) {
		t.Fatalf("helpdesk enrolled agents: %v", err)
	}
	denied := auditAfter(t, st, head)
	if len(denied) < 1 || denied[len(denied)-1].Action != audit.ActionAccessDenied {
		t.Errorf("a refused batch enrolment was not audited: %+v", denied)
	}
}

// TestEnrolAgentsRacePostgres: two coordinators enrolling overlapping batches at once on
// PostgreSQL: one batch wins whole, the other is refused naming the agent taken, and
// nothing of it is stored.
func TestEnrolAgentsRacePostgres(t *testing.T) {
	ctx := context.Background()
	cfg := store.Config{Driver: store.DriverPostgres, DSN: testenv.PostgresDatabase(t)}
	s1, st, adminUser, _ := enrolFixture(t, cfg)
	admin := service.ActorFor(adminUser)
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	st2, err := store.Open(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st2.Close() })
	s2, err := service.New(service.Options{Store: st2, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	for round := range 5 {
		shared := fmt.Sprintf("ws-shared-%d", round)
		batches := [2][]service.AgentEnrolment{}
		for k := range batches {
			for i := range 50 {
				id := fmt.Sprintf("ws-%d-%d-%03d", round, k, i)
				batches[k] = append(batches[k], service.AgentEnrolment{ID: id, Hostname: id})
			}
			batches[k] = append(batches[k], service.AgentEnrolment{ID: shared, Hostname: fmt.Sprintf("host-%d", k)})
		}
		var wg sync.WaitGroup
		errs := [2]error{}
		start := make(chan struct{})
		for k, s := range []*service.Service{s1, s2} {
			wg.Go(func() {
				<-start
				_, errs[k] = s.EnrolAgents(ctx, admin, batches[k])
			})
		}
		close(start)
		wg.Wait()
		won := -1
		for k, err := range errs {
			switch {
			case err == nil:
				if won >= 0 {
					t.Fatalf("round %d: both batches enrolled %s", round, shared)
				}
				won = k
			case errors.Is(err, &service.Error{Code: service.CodeConflict}):
				var se *service.Error
				errors.As(err, &se)
				if len(se.Entries) != 1 || se.Entries[0].ID != shared || se.Entries[0].Index != 50 {
					t.Fatalf("round %d: refusal %v names %+v, want entry 50 (%s)", round, err, se.Entries, shared)
				}
			default:
				t.Fatalf("round %d: batch %d: %v", round, k, err)
			}
		}
		if won < 0 {
			t.Fatalf("round %d: neither batch enrolled: %v", round, errs)
		}
		lost := 1 - won
		if _, err := st.GetAgent(ctx, batches[lost][0].ID); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("round %d: the refused batch's agents were stored: %v", round, err)
		}
	}
}

func auditHead(t *testing.T, st store.Store) int64 {
	t.Helper()
	h, err := st.AuditHead(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return h.Seq
}

// auditAfter returns the audit entries after seq, checking the whole chain.
func auditAfter(t *testing.T, st store.Store, seq int64) []audit.Entry {
	t.Helper()
	var all, out []audit.Entry
	for e, err := range st.AuditEntries(context.Background(), 1) {
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, e)
		if e.Seq > seq {
			out = append(out, e)
		}
	}
	if err := audit.Verify(all); err != nil {
		t.Fatalf("audit chain: %v", err)
	}
	return out
}
