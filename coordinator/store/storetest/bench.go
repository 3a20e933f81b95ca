package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// Bench measures what the coordinator adds around a job, per operation: create the job
// with its audit entry (one transaction), then approve it with timeline, audit entry and
// outbox message (a second transaction). It also reports the ratio to a reference
// measured in the same run: a transaction holding a single small insert, the cheapest
// durable write the back end can do.
func Bench(b *testing.B, cfg store.Config) {
	ctx := context.Background()
	s, err := store.Open(ctx, cfg, Logger(b))
	if err != nil {
		b.Fatalf("open %s store: %v", cfg.Driver, err)
	}
	defer func() { _ = s.Close() }()
	var org store.Organization
	var user store.User
	if err := s.InTx(ctx, func(tx store.Tx) error {
		var err error
		if org, err = tx.CreateOrganization(ctx, store.Organization{Name: "Bench"}); err != nil {
			return err
		}
		user, err = tx.CreateUser(ctx, store.User{Username: "bench", OrganizationID: org.ID})
		return err
	}); err != nil {
		b.Fatal(err)
	}

	const refRuns = 50
	refStart := time.Now()
	for range refRuns {
		if err := s.InTx(ctx, func(tx store.Tx) error {
			_, err := tx.RecordInbox(ctx, store.InboxEntry{MessageID: time.Now().String()})
			return err
		}); err != nil {
			b.Fatal(err)
		}
	}
	ref := time.Since(refStart) / refRuns

	b.ResetTimer()
	for b.Loop() {
		var j store.Job
		if err := s.InTx(ctx, func(tx store.Tx) error {
			var err error
			j, err = tx.CreateJob(ctx, store.Job{Kind: jobs.KindIssue, State: jobs.StatePendingApproval, HolderID: user.ID,
				RequesterID: user.ID, OrganizationID: org.ID, ProfileName: "signing"})
			if err != nil {
				return err
			}
			_, err = tx.AppendAudit(ctx, audit.Entry{Actor: user.ID, Action: audit.ActionJobCreated, JobID: j.ID}, audit.Seal)
			return err
		}); err != nil {
			b.Fatal(err)
		}
		if err := s.InTx(ctx, func(tx store.Tx) error {
			if _, err := tx.UpdateJobState(ctx, j.ID, jobs.StatePendingApproval, jobs.StateApproved, j.Version,
				store.JobChange{Actor: user.ID, Reason: "bench"}); err != nil {
				return err
			}
			if _, err := tx.AddOutbox(ctx, store.OutboxMessage{Exchange: "tokenfleet.commands", RoutingKey: "ws-1",
				Type: "job.issue", CorrelationID: j.ID, Body: []byte(`{"job":"` + j.ID + `"}`)}); err != nil {
				return err
			}
			_, err := tx.AppendAudit(ctx, audit.Entry{Actor: user.ID, Action: audit.ActionJobApproved, JobID: j.ID}, audit.Seal)
			return err
		}); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if b.N > 0 && ref > 0 {
		per := b.Elapsed() / time.Duration(b.N)
		b.ReportMetric(float64(per)/float64(ref), "x-single-insert-tx")
		b.ReportMetric(float64(ref.Microseconds()), "ref-µs")
	}
}
