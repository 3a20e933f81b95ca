package store

import (
	"context"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
)

// FleetStats is what the coordinator's metrics read from the database at each scrape: a
// few aggregate queries, no rows.
type FleetStats struct {
	// Jobs counts jobs by kind and state; combinations with no job are absent.
	Jobs []JobCount
	// OutboxUnsent counts outbox messages the broker has not confirmed yet, and
	// OutboxOldest is when the oldest of them was written (zero when there is none).
	OutboxUnsent int64
	OutboxOldest time.Time
	// AgentsOnline and AgentsOffline count enrolled agents by presence.
	AgentsOnline  int64
	AgentsOffline int64
	// Certificates counts the certificates that are in use, by time left to their expiry.
	Certificates CertificateExpiry
}

// JobCount is the number of jobs of one kind in one state.
type JobCount struct {
	Kind  jobs.Kind
	State jobs.State
	Count int64
}

// CertificateExpiry counts certificates in use by time left before they expire. In use:
// not revoked, and no later certificate of the same holder, profile and token exists (a
// renewed certificate stops counting, though it stays valid until it expires).
type CertificateExpiry struct {
	Expired     int64 // expired within the last 30 days; older ones are not counted
	Under7Days  int64
	Under30Days int64 // 7 to 30 days
	Under90Days int64 // 30 to 90 days
	Later       int64 // 90 days or more
}

// expiredWindow is how long an expired certificate still counts as expired: long enough
// for an alert and a look, short enough that the count does not grow forever.
const expiredWindow = 30 * 24 * time.Hour

func (x *q) FleetStats(ctx context.Context, now time.Time) (FleetStats, error) {
	var st FleetStats
	rows, err := x.query(ctx, "SELECT kind, state, COUNT(*) FROM jobs GROUP BY kind, state")
	if err != nil {
		return st, x.d.wrap("fleet stats: jobs", err)
	}
	for rows.Next() {
		var c JobCount
		if err := rows.Scan(&c.Kind, &c.State, &c.Count); err != nil {
			_ = rows.Close()
			return st, x.d.wrap("fleet stats: jobs", err)
		}
		st.Jobs = append(st.Jobs, c)
	}
	if err := rows.Err(); err != nil {
		return st, x.d.wrap("fleet stats: jobs", err)
	}
	if err := rows.Close(); err != nil {
		return st, x.d.wrap("fleet stats: jobs", err)
	}

	if err := x.queryRow(ctx, "SELECT COUNT(*), MIN(created_at) FROM outbox WHERE sent_at IS NULL").
		Scan(&st.OutboxUnsent, timeCol{&st.OutboxOldest}); err != nil {
		return st, x.d.wrap("fleet stats: outbox", err)
	}

	var agents int64
	if err := x.queryRow(ctx, "SELECT COUNT(*), COALESCE(SUM(CASE WHEN online THEN 1 ELSE 0 END), 0) FROM agents").
		Scan(&agents, &st.AgentsOnline); err != nil {
		return st, x.d.wrap("fleet stats: agents", err)
	}
	st.AgentsOffline = agents - st.AgentsOnline

	now = normTime(now)
	day := 24 * time.Hour
	c := &st.Certificates
	err = x.queryRow(ctx, `SELECT
			COALESCE(SUM(CASE WHEN c.not_after < ? THEN 1 ELSE 0 END), 0),
			COALESCE(SUM(CASE WHEN c.not_after >= ? AND c.not_after < ? THEN 1 ELSE 0 END), 0),
			COALESCE(SUM(CASE WHEN c.not_after >= ? AND c.not_after < ? THEN 1 ELSE 0 END), 0),
			COALESCE(SUM(CASE WHEN c.not_after >= ? AND c.not_after < ? THEN 1 ELSE 0 END), 0),
			COALESCE(SUM(CASE WHEN c.not_after >= ? THEN 1 ELSE 0 END), 0)
		FROM certificates c
		WHERE c.revoked_at IS NULL AND c.not_after >= ?
		AND NOT EXISTS (SELECT 1 FROM certificates n
			WHERE n.holder_id = c.holder_id AND n.profile = c.profile
			AND COALESCE(n.token_serial, '') = COALESCE(c.token_serial, '')
			AND n.revoked_at IS NULL AND n.not_after > c.not_after)`,
		x.d.ts(now),
		x.d.ts(now), x.d.ts(now.Add(7*day)),
		x.d.ts(now.Add(7*day)), x.d.ts(now.Add(30*day)),
		x.d.ts(now.Add(30*day)), x.d.ts(now.Add(90*day)),
		x.d.ts(now.Add(90*day)),
		x.d.ts(now.Add(-expiredWindow))).
		Scan(&c.Expired, &c.Under7Days, &c.Under30Days, &c.Under90Days, &c.Later)
	if err != nil {
		return st, x.d.wrap("fleet stats: certificates", err)
	}
	return st, nil
}
