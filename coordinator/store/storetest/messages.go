package storetest

import (
	"bytes"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

func testOutbox(t *testing.T, h *harness) {
	if got := must(h.s.ListUnsentOutbox(h.ctx, 10))(t); len(got) != 0 {
		t.Fatalf("new outbox holds %d messages", len(got))
	}
	headers := []byte(`{"x-attempt": 1, "content-type": "application/json"}`)
	body := []byte{0x00, 0x01, 0xfe, 0xff, '{', '}'}
	var msgs []store.OutboxMessage
	h.tx(t, func(tx store.Tx) error {
		for i := range 4 {
			m, err := tx.AddOutbox(h.ctx, store.OutboxMessage{Exchange: "tokenfleet.commands", RoutingKey: "ws-0001",
				Type: "job.issue", CorrelationID: "job-" + itoa(i), Body: body, Headers: headers, Created: base.Add(time.Duration(i) * time.Second)})
			if err != nil {
				return err
			}
			msgs = append(msgs, m)
		}
		return nil
	})
	m0 := msgs[0]
	if m0.ID == 0 || !urlSafe.MatchString(m0.MessageID) || m0.Exchange != "tokenfleet.commands" || m0.RoutingKey != "ws-0001" ||
		m0.Type != "job.issue" || m0.CorrelationID != "job-0" || !bytes.Equal(m0.Body, body) ||
		!bytes.Equal(m0.Headers, headers) || !m0.Created.Equal(stored(base)) || !m0.SentAt.IsZero() || m0.Attempts != 0 {
		t.Fatalf("added %+v", m0)
	}
	equal(t, "read back", must(h.s.GetOutbox(h.ctx, m0.ID))(t), m0)

	ids := func(ms []store.OutboxMessage) []int64 {
		out := []int64{}
		for _, m := range ms {
			out = append(out, m.ID)
		}
		return out
	}
	equal(t, "unsent, oldest first", ids(must(h.s.ListUnsentOutbox(h.ctx, 10))(t)), ids(msgs))
	equal(t, "unsent, limited", ids(must(h.s.ListUnsentOutbox(h.ctx, 2))(t)), ids(msgs[:2]))

	h.tx(t, func(tx store.Tx) error { return tx.MarkOutboxSent(h.ctx, msgs[1].ID, base.Add(time.Minute)) })
	// A second confirmation (another publisher, a redelivery) keeps the first time.
	h.tx(t, func(tx store.Tx) error { return tx.MarkOutboxSent(h.ctx, msgs[1].ID, base.Add(time.Hour)) })
	if got := must(h.s.GetOutbox(h.ctx, msgs[1].ID))(t); !got.SentAt.Equal(stored(base.Add(time.Minute))) {
		t.Fatalf("sent at %v", got.SentAt)
	}
	equal(t, "unsent after one was sent", ids(must(h.s.ListUnsentOutbox(h.ctx, 10))(t)), ids([]store.OutboxMessage{msgs[0], msgs[2], msgs[3]}))

	h.tx(t, func(tx store.Tx) error { return tx.RecordOutboxFailure(h.ctx, msgs[0].ID, "broker closed the channel") })
	h.tx(t, func(tx store.Tx) error { return tx.RecordOutboxFailure(h.ctx, msgs[0].ID, "no route") })
	if got := must(h.s.GetOutbox(h.ctx, msgs[0].ID))(t); got.Attempts != 2 || got.LastError != "no route" || !got.SentAt.IsZero() {
		t.Fatalf("after two failures: %+v", got)
	}

	wantErr(t, h.s.InTx(h.ctx, func(tx store.Tx) error { return tx.MarkOutboxSent(h.ctx, 999999, base) }), store.ErrNotFound)
	wantErr(t, h.s.InTx(h.ctx, func(tx store.Tx) error { return tx.RecordOutboxFailure(h.ctx, 999999, "x") }), store.ErrNotFound)
	for _, tc := range []struct {
		name string
		m    store.OutboxMessage
		want error
	}{
		{"message ID taken", store.OutboxMessage{MessageID: m0.MessageID, Exchange: "x", RoutingKey: "k", Type: "t"}, store.ErrConflict},
		{"no exchange", store.OutboxMessage{RoutingKey: "k", Type: "t"}, store.ErrInvalid},
		{"no routing key", store.OutboxMessage{Exchange: "x", Type: "t"}, store.ErrInvalid},
		{"no type", store.OutboxMessage{Exchange: "x", RoutingKey: "k"}, store.ErrInvalid},
		{"headers not JSON", store.OutboxMessage{Exchange: "x", RoutingKey: "k", Type: "t", Headers: []byte("[")}, store.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, try(h, func(tx store.Tx) (store.OutboxMessage, error) { return tx.AddOutbox(h.ctx, tc.m) }), tc.want)
		})
	}

	// Purging removes sent messages older than the cut-off, never unsent ones.
	h.tx(t, func(tx store.Tx) error { return tx.MarkOutboxSent(h.ctx, msgs[2].ID, base.Add(3*time.Hour)) })
	n := do(t, h, func(tx store.Tx) (int64, error) { return tx.PurgeSentOutbox(h.ctx, base.Add(2*time.Hour)) })
	if n != 1 {
		t.Fatalf("purged %d, want 1", n)
	}
	_, err := h.s.GetOutbox(h.ctx, msgs[1].ID)
	wantErr(t, err, store.ErrNotFound)
	must(h.s.GetOutbox(h.ctx, msgs[2].ID))(t)
	// IDs are never reused after a purge, so a late confirmation cannot hit a new message.
	later := do(t, h, func(tx store.Tx) (store.OutboxMessage, error) {
		return tx.AddOutbox(h.ctx, store.OutboxMessage{Exchange: "x", RoutingKey: "k", Type: "t"})
	})
	if later.ID <= msgs[3].ID {
		t.Fatalf("new message got ID %d after %d", later.ID, msgs[3].ID)
	}
	if len(later.Body) != 0 || later.Headers != nil {
		t.Fatalf("empty message read back as %+v", later)
	}
}

func testInbox(t *testing.T, h *harness) {
	record := func(e store.InboxEntry) bool {
		t.Helper()
		return do(t, h, func(tx store.Tx) (bool, error) { return tx.RecordInbox(h.ctx, e) })
	}
	if record(store.InboxEntry{MessageID: "m1", JobID: "j1", Result: "ok", Received: base}) {
		t.Fatal("first delivery reported as already seen")
	}
	if !record(store.InboxEntry{MessageID: "m1", JobID: "j1", Result: "different", Received: base.Add(time.Hour)}) {
		t.Fatal("redelivery not reported as already seen")
	}
	equal(t, "first record kept", must(h.s.GetInbox(h.ctx, "m1"))(t),
		store.InboxEntry{MessageID: "m1", JobID: "j1", Result: "ok", Received: stored(base)})
	if record(store.InboxEntry{MessageID: "m2", Received: base.Add(2 * time.Hour)}) {
		t.Fatal("m2 reported as already seen")
	}
	_, err := h.s.GetInbox(h.ctx, "m3")
	wantErr(t, err, store.ErrNotFound)
	wantErr(t, try(h, func(tx store.Tx) (bool, error) { return tx.RecordInbox(h.ctx, store.InboxEntry{}) }), store.ErrInvalid)

	// A duplicate inside a transaction does not spoil it (PostgreSQL aborts a transaction
	// on a constraint violation; the store must not cause one here).
	h.tx(t, func(tx store.Tx) error {
		seen, err := tx.RecordInbox(h.ctx, store.InboxEntry{MessageID: "m1"})
		if err != nil || !seen {
			t.Errorf("duplicate in transaction: seen %v, %v", seen, err)
		}
		_, err = tx.RecordInbox(h.ctx, store.InboxEntry{MessageID: "m4"})
		return err
	})
	must(h.s.GetInbox(h.ctx, "m4"))(t)

	n := do(t, h, func(tx store.Tx) (int64, error) { return tx.PurgeInbox(h.ctx, base.Add(90*time.Minute)) })
	if n != 1 {
		t.Fatalf("purged %d, want 1", n)
	}
	_, err = h.s.GetInbox(h.ctx, "m1")
	wantErr(t, err, store.ErrNotFound)
	must(h.s.GetInbox(h.ctx, "m2"))(t)
}
