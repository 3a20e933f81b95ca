package storetest

import (
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

func testRegister(t *testing.T, h *harness) {
	f := newFixture(t, h)
	other := do(t, h, func(tx store.Tx) (store.Organization, error) {
		return tx.CreateOrganization(h.ctx, store.Organization{Name: "Globex"})
	})
	h.tx(t, func(tx store.Tx) error {
		_, err := tx.UpsertToken(h.ctx, store.Token{Serial: "tok-a", AgentID: f.agent.ID, Manufacturer: "Aktiv", Model: "Rutoken ECP 3.0", LastSeen: base})
		return err
	})
	// at moves a job through to state at a given time (the store takes any transition).
	at := func(j store.Job, to jobs.State, when time.Time) store.Job {
		t.Helper()
		return do(t, h, func(tx store.Tx) (store.Job, error) {
			return tx.UpdateJobState(h.ctx, j.ID, j.State, to, j.Version, store.JobChange{Actor: f.requester.ID, At: when})
		})
	}
	doc := store.Document{Number: "Décision 7", Date: "2025-03-01"}
	issued := f.createJob(t, h, func(j *store.Job) { j.TokenSerial, j.Document, j.Created = "tok-a", doc, base })
	issued = at(issued, jobs.StateSucceeded, base.Add(time.Hour))
	// Not in the register: pending, failed, a renew, another organisation's (when filtered),
	// and an issue whose token was never named.
	f.createJob(t, h, func(j *store.Job) { j.TokenSerial, j.Created = "tok-b", base.Add(time.Minute) })
	failed := f.createJob(t, h, func(j *store.Job) { j.TokenSerial, j.Created = "tok-c", base.Add(2*time.Minute) })
	at(failed, jobs.StateFailed, base.Add(2*time.Hour))
	renew := f.createJob(t, h, func(j *store.Job) {
		j.Kind, j.TokenSerial, j.Created = jobs.KindRenew, "tok-a", base.Add(3*time.Minute)
	})
	at(renew, jobs.StateSucceeded, base.Add(3*time.Hour))
	elsewhere := f.createJob(t, h, func(j *store.Job) {
		j.TokenSerial, j.OrganizationID, j.Created = "tok-d", other.ID, base.Add(4*time.Minute)
	})
	elsewhere = at(elsewhere, jobs.StateSucceeded, base.Add(4*time.Hour))

	list := func(f store.RegisterFilter, p store.Page) ([]store.RegisterEntry, string) {
		t.Helper()
		es, next, err := h.s.ListRegister(h.ctx, f, p)
		if err != nil {
			t.Fatalf("list register: %v", err)
		}
		return es, next
	}
	es, next := list(store.RegisterFilter{OrganizationID: f.org.ID}, store.Page{})
	want := store.RegisterEntry{JobID: issued.ID, TokenSerial: "tok-a", Manufacturer: "Aktiv", Model: "Rutoken ECP 3.0",
		HolderID: f.holder.ID, OrganizationID: f.org.ID, ProfileName: "signing", Document: doc,
		Requested: stored(base), Issued: stored(base.Add(time.Hour))}
	if next != "" {
		t.Fatalf("one entry and a next page %q", next)
	}
	equal(t, "register", es, []store.RegisterEntry{want})

	// A wipe of the token takes it back; a later issue to someone else is a new entry that
	// is still out.
	wipe := f.createJob(t, h, func(j *store.Job) { j.Kind, j.TokenSerial, j.Created = jobs.KindWipe, "tok-a", base.Add(5*time.Minute) })
	wipe = at(wipe, jobs.StateSucceeded, base.Add(5*time.Hour))
	again := f.createJob(t, h, func(j *store.Job) {
		j.TokenSerial, j.HolderID, j.Created = "tok-a", f.approver.ID, base.Add(6*time.Minute)
	})
	again = at(again, jobs.StateSucceeded, base.Add(6*time.Hour))
	want.Returned, want.ReturnedByJob, want.ReturnedByKind = stored(base.Add(5*time.Hour)), wipe.ID, string(jobs.KindWipe)
	second := store.RegisterEntry{JobID: again.ID, TokenSerial: "tok-a", Manufacturer: "Aktiv", Model: "Rutoken ECP 3.0",
		HolderID: f.approver.ID, OrganizationID: f.org.ID, ProfileName: "signing",
		Requested: stored(base.Add(6 * time.Minute)), Issued: stored(base.Add(6 * time.Hour))}
	es, _ = list(store.RegisterFilter{OrganizationID: f.org.ID}, store.Page{})
	equal(t, "register after a wipe and a new issue", es, []store.RegisterEntry{want, second})

	// Every organisation, oldest first, a page at a time.
	first, next := list(store.RegisterFilter{}, store.Page{Limit: 2})
	if len(first) != 2 || next == "" || first[0].JobID != issued.ID || first[1].JobID != elsewhere.ID {
		t.Fatalf("first page %+v next %q", first, next)
	}
	if first[1].Manufacturer != "" || first[1].Model != "" {
		t.Fatalf("a token never reported has no model: %+v", first[1])
	}
	rest, next := list(store.RegisterFilter{}, store.Page{Limit: 2, Cursor: next})
	if len(rest) != 1 || next != "" || rest[0].JobID != again.ID {
		t.Fatalf("second page %+v next %q", rest, next)
	}

	// The timelines of the entries in one call.
	tl := must(h.s.ListJobEventsOf(h.ctx, []string{issued.ID, again.ID, "no-such-job"}))(t)
	if len(tl) != 2 || len(tl[issued.ID]) != 2 || tl[issued.ID][0].To != jobs.StatePendingApproval ||
		tl[issued.ID][1].To != jobs.StateSucceeded || !tl[issued.ID][1].At.Equal(stored(base.Add(time.Hour))) {
		t.Fatalf("timelines %+v", tl)
	}
}
