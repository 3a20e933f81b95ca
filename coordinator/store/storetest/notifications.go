package storetest

import (
	"bytes"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// notice is a notification to add.
func notice(key, channel, recipient string, created time.Time) store.Notification {
	return store.Notification{DedupeKey: key, Event: "job.decided", Channel: channel, Recipient: recipient,
		Language: "fr", Subject: "Demande " + key, Body: []byte("corps\r\n" + key), HTML: "<p>corps é " + key + "</p>", Created: created}
}

func ids(ns []store.Notification) []string {
	out := []string{}
	for _, n := range ns {
		out = append(out, n.ID)
	}
	return out
}

func testNotifications(t *testing.T, h *harness) {
	var added int
	h.tx(t, func(tx store.Tx) error {
		var err error
		added, err = tx.AddNotifications(h.ctx, []store.Notification{
			notice("a", store.ChannelEmail, "alice@acme.test", base),
			notice("b", store.ChannelWebhook, "chat", base.Add(time.Second)),
			notice("c", store.ChannelEmail, "bob@acme.test", base.Add(2*time.Second)),
		})
		return err
	})
	if added != 3 {
		t.Fatalf("added %d of 3", added)
	}
	// The same keys again (a transaction run again, another coordinator): nothing added,
	// and the transaction goes on.
	h.tx(t, func(tx store.Tx) error {
		n, err := tx.AddNotifications(h.ctx, []store.Notification{notice("a", store.ChannelEmail, "alice@acme.test", base.Add(time.Hour)),
			notice("d", store.ChannelEmail, "dora@acme.test", base.Add(3*time.Second))})
		if err != nil {
			return err
		}
		if n != 1 {
			return fmt.Errorf("added %d of a repeat and a new one, want 1", n)
		}
		_, err = tx.CreateOrganization(h.ctx, store.Organization{Name: "after the repeat"})
		return err
	})
	// A rolled-back transaction adds nothing.
	_ = h.s.InTx(h.ctx, func(tx store.Tx) error {
		if _, err := tx.AddNotifications(h.ctx, []store.Notification{notice("e", store.ChannelEmail, "eve@acme.test", base)}); err != nil {
			return err
		}
		return fmt.Errorf("rolled back")
	})
	all := listAll(t, 2, func(p store.Page) ([]store.Notification, string, error) {
		return h.s.ListNotifications(h.ctx, store.NotificationFilter{}, p)
	})
	keys := []string{}
	for _, n := range all {
		keys = append(keys, n.DedupeKey)
	}
	equal(t, "newest first", keys, []string{"d", "c", "b", "a"})
	a := all[3]
	if a.State != store.NotificationPending || a.Attempts != 0 || !a.NextAttempt.Equal(stored(base)) || !a.Created.Equal(stored(base)) ||
		a.Subject != "Demande a" || !bytes.Equal(a.Body, []byte("corps\r\na")) || a.HTML != "<p>corps é a</p>" || a.Language != "fr" || a.Channel != store.ChannelEmail ||
		a.Recipient != "alice@acme.test" || !a.LeaseUntil.IsZero() || a.Held || !a.SentAt.IsZero() {
		t.Fatalf("stored %+v", a)
	}
	equal(t, "get", must(h.s.GetNotification(h.ctx, a.ID))(t), a)
	wantErr(t, try(h, func(tx store.Tx) (int, error) {
		return tx.AddNotifications(h.ctx, []store.Notification{notice("f", "pigeon", "x", base)})
	}), store.ErrInvalid)
	wantErr(t, try(h, func(tx store.Tx) (int, error) {
		return tx.AddNotifications(h.ctx, []store.Notification{{Event: "x", Channel: store.ChannelEmail, Recipient: "x"}})
	}), store.ErrInvalid)

	// Sent, retried, failed, held.
	h.tx(t, func(tx store.Tx) error {
		if err := tx.MarkNotificationsSent(h.ctx, []string{all[3].ID}, all[3].ID, base.Add(time.Minute)); err != nil {
			return err
		}
		if err := tx.RetryNotification(h.ctx, all[2].ID, base.Add(time.Hour), "HTTP 500"); err != nil {
			return err
		}
		if err := tx.FailNotification(h.ctx, all[1].ID, "550 no such user"); err != nil {
			return err
		}
		return tx.HoldNotifications(h.ctx, []string{all[0].ID}, base.Add(2*time.Hour))
	})
	// Marking sent again keeps the first time; retrying or failing a row that is not
	// pending is not found.
	h.tx(t, func(tx store.Tx) error {
		return tx.MarkNotificationsSent(h.ctx, []string{all[3].ID}, "other", base.Add(time.Hour))
	})
	wantErr(t, try(h, func(tx store.Tx) (struct{}, error) {
		return struct{}{}, tx.RetryNotification(h.ctx, all[3].ID, base, "x")
	}), store.ErrNotFound)
	wantErr(t, try(h, func(tx store.Tx) (struct{}, error) {
		return struct{}{}, tx.FailNotification(h.ctx, all[1].ID, "x")
	}), store.ErrNotFound)
	wantErr(t, try(h, func(tx store.Tx) (struct{}, error) {
		return struct{}{}, tx.MarkNotificationsSent(h.ctx, []string{"nosuch"}, "nosuch", base)
	}), store.ErrNotFound)

	sent := must(h.s.GetNotification(h.ctx, all[3].ID))(t)
	if sent.State != store.NotificationSent || !sent.SentAt.Equal(stored(base.Add(time.Minute))) || sent.DeliveryID != all[3].ID || sent.Attempts != 1 {
		t.Fatalf("sent: %+v", sent)
	}
	retried := must(h.s.GetNotification(h.ctx, all[2].ID))(t)
	if retried.State != store.NotificationPending || retried.Attempts != 1 || retried.LastError != "HTTP 500" || !retried.NextAttempt.Equal(stored(base.Add(time.Hour))) {
		t.Fatalf("retried: %+v", retried)
	}
	failed := must(h.s.GetNotification(h.ctx, all[1].ID))(t)
	if failed.State != store.NotificationFailed || failed.Attempts != 1 || failed.LastError != "550 no such user" {
		t.Fatalf("failed: %+v", failed)
	}
	held := must(h.s.GetNotification(h.ctx, all[0].ID))(t)
	if !held.Held || held.Attempts != 0 || !held.NextAttempt.Equal(stored(base.Add(2*time.Hour))) {
		t.Fatalf("held: %+v", held)
	}
	for state, want := range map[string][]string{store.NotificationSent: {"a"}, store.NotificationFailed: {"c"}, store.NotificationPending: {"d", "b"}} {
		got := listAll(t, 1, func(p store.Page) ([]store.Notification, string, error) {
			return h.s.ListNotifications(h.ctx, store.NotificationFilter{State: state}, p)
		})
		keys := []string{}
		for _, n := range got {
			keys = append(keys, n.DedupeKey)
		}
		equal(t, state, keys, want)
	}
	got, _ := must2(h.s.ListNotifications(h.ctx, store.NotificationFilter{Channel: store.ChannelWebhook}, store.Page{}))(t)
	equal(t, "webhooks", ids(got), []string{all[2].ID})

	// Deliveries: a digest of two rows is one message.
	h.tx(t, func(tx store.Tx) error {
		_, err := tx.AddNotifications(h.ctx, []store.Notification{notice("g1", store.ChannelEmail, "gil@acme.test", base),
			notice("g2", store.ChannelEmail, "gil@acme.test", base), notice("g3", store.ChannelEmail, "gil@acme.test", base)})
		return err
	})
	pending, _ := must2(h.s.ListNotifications(h.ctx, store.NotificationFilter{State: store.NotificationPending}, store.Page{}))(t)
	var gs []store.Notification
	for _, n := range pending {
		if n.Recipient == "gil@acme.test" {
			gs = append(gs, n)
		}
	}
	h.tx(t, func(tx store.Tx) error {
		if err := tx.MarkNotificationsSent(h.ctx, []string{gs[0].ID}, gs[0].ID, base.Add(10*time.Minute)); err != nil {
			return err
		}
		return tx.MarkNotificationsSent(h.ctx, []string{gs[1].ID, gs[2].ID}, "digest1", base.Add(20*time.Minute))
	})
	n, oldest, err := h.s.NotificationDeliveries(h.ctx, store.ChannelEmail, "gil@acme.test", base)
	if err != nil || n != 2 || !oldest.Equal(stored(base.Add(10*time.Minute))) {
		t.Fatalf("deliveries: %d, oldest %v, %v; want 2 since %v", n, oldest, err, stored(base.Add(10*time.Minute)))
	}
	n, _, err = h.s.NotificationDeliveries(h.ctx, store.ChannelEmail, "gil@acme.test", base.Add(15*time.Minute))
	if err != nil || n != 1 {
		t.Fatalf("deliveries in the last window: %d, %v; want 1", n, err)
	}
	n, oldest, err = h.s.NotificationDeliveries(h.ctx, store.ChannelEmail, "nobody@acme.test", base)
	if err != nil || n != 0 || !oldest.IsZero() {
		t.Fatalf("deliveries to nobody: %d, %v, %v", n, oldest, err)
	}
}

func testNotificationClaims(t *testing.T, h *harness) {
	h.tx(t, func(tx store.Tx) error {
		var ns []store.Notification
		for i := range 5 {
			n := notice("k"+itoa(i), store.ChannelEmail, "alice@acme.test", base)
			n.NextAttempt = base.Add(time.Duration(4-i) * time.Minute) // k4 due first
			ns = append(ns, n)
		}
		_, err := tx.AddNotifications(h.ctx, ns)
		return err
	})
	claim := func(owner string, at time.Time, limit int) []store.Notification {
		t.Helper()
		return do(t, h, func(tx store.Tx) ([]store.Notification, error) {
			return tx.ClaimNotifications(h.ctx, store.NotificationClaim{Now: at, LeaseUntil: at.Add(time.Minute), Owner: owner, Limit: limit})
		})
	}
	keys := func(ns []store.Notification) []string {
		out := []string{}
		for _, n := range ns {
			out = append(out, n.DedupeKey)
		}
		return out
	}
	// At base+2m, k4, k3 and k2 are due: the soonest due first, two at a time.
	first := claim("one", base.Add(2*time.Minute), 2)
	equal(t, "first claim", keys(first), []string{"k4", "k3"})
	if first[0].LeaseOwner != "one" || !first[0].LeaseUntil.Equal(stored(base.Add(3*time.Minute))) {
		t.Fatalf("lease: %+v", first[0])
	}
	equal(t, "second claim", keys(claim("two", base.Add(2*time.Minute), 10)), []string{"k2"})
	equal(t, "nothing left due", keys(claim("two", base.Add(2*time.Minute), 10)), []string{})
	// Once the first lease ran out (its sender died), its rows are claimed again; k1 and
	// k0 are due by then too.
	equal(t, "after the leases", keys(claim("three", base.Add(4*time.Minute), 10)), []string{"k4", "k3", "k2", "k1", "k0"})
	// A retried row is due at its next attempt, unleased.
	h.tx(t, func(tx store.Tx) error {
		return tx.RetryNotification(h.ctx, first[0].ID, base.Add(10*time.Minute), "refused")
	})
	equal(t, "retried row not due yet", keys(claim("four", base.Add(6*time.Minute), 10)), []string{"k3", "k2", "k1", "k0"})
	// (the others' leases ran out meanwhile)
	equal(t, "retried row due", keys(claim("four", base.Add(10*time.Minute), 10)), []string{"k3", "k2", "k1", "k0", "k4"})
	// Sent and failed rows are never claimed.
	h.tx(t, func(tx store.Tx) error {
		if err := tx.MarkNotificationsSent(h.ctx, []string{first[0].ID}, first[0].ID, base); err != nil {
			return err
		}
		return tx.FailNotification(h.ctx, first[1].ID, "gave up")
	})
	equal(t, "sent and failed not claimed", keys(claim("five", base.Add(time.Hour), 10)), []string{"k2", "k1", "k0"})
	// Released rows are due again at once; another owner's release changes nothing.
	h.tx(t, func(tx store.Tx) error {
		rows, _, err := tx.ListNotifications(h.ctx, store.NotificationFilter{State: store.NotificationPending}, store.Page{})
		if err != nil {
			return err
		}
		if err := tx.ReleaseNotifications(h.ctx, "someone else", ids(rows)); err != nil {
			return err
		}
		for _, n := range rows {
			if n.DedupeKey == "k0" {
				return tx.ReleaseNotifications(h.ctx, "five", []string{n.ID})
			}
		}
		return fmt.Errorf("k0 not pending")
	})
	equal(t, "released", keys(claim("six", base.Add(time.Hour), 10)), []string{"k0"})
	wantErr(t, try(h, func(tx store.Tx) ([]store.Notification, error) {
		return tx.ClaimNotifications(h.ctx, store.NotificationClaim{Now: base, Limit: 1})
	}), store.ErrInvalid)
}

// testNotificationClaimsConcurrent has senders claim at once on stores of their own (as
// coordinators sharing the database do): no row is claimed twice.
func testNotificationClaimsConcurrent(t *testing.T, h *harness) {
	const rows, senders = 60, 4
	h.tx(t, func(tx store.Tx) error {
		var ns []store.Notification
		for i := range rows {
			ns = append(ns, notice("c"+itoa(i), store.ChannelEmail, "alice@acme.test", base))
		}
		_, err := tx.AddNotifications(h.ctx, ns)
		return err
	})
	stores := make([]store.Store, senders)
	for i := range stores {
		stores[i] = h.open(t)
	}
	var (
		mu      sync.Mutex
		claimed []string
		wg      sync.WaitGroup
		errs    = make(chan error, senders)
	)
	for i, st := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				var got []store.Notification
				err := st.InTx(h.ctx, func(tx store.Tx) error {
					var err error
					got, err = tx.ClaimNotifications(h.ctx, store.NotificationClaim{Now: base, LeaseUntil: base.Add(time.Hour),
						Owner: "sender" + itoa(i), Limit: 7})
					return err
				})
				if err != nil {
					errs <- err
					return
				}
				if len(got) == 0 {
					return
				}
				mu.Lock()
				claimed = append(claimed, ids(got)...)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	slices.Sort(claimed)
	if len(claimed) != rows || len(slices.Compact(slices.Clone(claimed))) != rows {
		t.Fatalf("claimed %d rows (%d distinct), want each of %d once", len(claimed), len(slices.Compact(slices.Clone(claimed))), rows)
	}
}

func testUserLanguage(t *testing.T, h *harness) {
	u := do(t, h, func(tx store.Tx) (store.User, error) {
		return tx.CreateUser(h.ctx, store.User{Username: "claire", Language: "fr"})
	})
	if u.Language != "fr" {
		t.Fatalf("created with language %q", u.Language)
	}
	u.Language = "en"
	do(t, h, func(tx store.Tx) (store.User, error) { return tx.UpdateUser(h.ctx, u) })
	if got := must(h.s.GetUserByUsername(h.ctx, "claire"))(t); got.Language != "en" {
		t.Fatalf("updated language %q", got.Language)
	}
	all, _ := must2(h.s.ListUsers(h.ctx, store.UserFilter{}, store.Page{}))(t)
	if len(all) != 1 || all[0].Language != "en" {
		t.Fatalf("listed %+v", all)
	}
}
