package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/notify"
	"github.com/tokenfleet/tokenfleet/coordinator/rollout"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// RolloutObserver counts what the rollout engine does; Metrics implements it. The
// service's Observer is asked for it, so that observers without it keep working.
type RolloutObserver interface {
	RolloutJobsCreated(n int)
	RolloutBrakeTripped()
}

// RolloutPassObserver counts the engine's passes (Metrics implements it): a pass that
// creates nothing leaves no other trace, and a test or an operator may want to know that
// the engine looked.
type RolloutPassObserver interface {
	RolloutEnginePass()
}

// standingScanEvery is how often a standing rollout looks for certificates entering their
// renewal window.
const standingScanEvery = 30 * time.Second

// rolloutEngine is the engine's state in this process: the nudge, and when each standing
// rollout last looked for certificates. The rollouts themselves are in the store, so that
// another coordinator, or this one after a restart, continues where it stands.
type rolloutEngine struct {
	nudge chan struct{}

	mu       sync.Mutex // guards lastScan
	lastScan map[string]time.Time
}

func newRolloutEngine() *rolloutEngine {
	return &rolloutEngine{nudge: make(chan struct{}, 1), lastScan: map[string]time.Time{}}
}

// nudgeRollouts asks the engine for a pass now (a rollout approved, resumed or promoted,
// a rollout's job ended); nudges while one is pending are one.
func (s *Service) nudgeRollouts() {
	select {
	case s.rollouts.nudge <- struct{}{}:
	default:
	}
}

// errStale: another coordinator (or request) changed the rollout since this pass read
// it; the pass leaves it, and the next one reads it again.
var errStale = errors.New("the rollout changed since it was read")

// engineStates are the states a pass looks at: pending ones only to expire them.
var engineStates = []string{string(rollout.StatePendingApproval), string(rollout.StateApproved), string(rollout.StateRunning)}

// AdvanceRollouts is one pass of the engine over every rollout that may move: it expires
// rollouts not approved in time, starts approved ones, and for each running one checks its
// profile and its brake, takes up a standing rollout's new certificates, advances its
// waves, and creates the jobs its plan allows now. It returns how many jobs it created.
// One rollout's failure is logged and does not stop the others.
func (s *Service) AdvanceRollouts(ctx context.Context) (int, error) {
	var ros []store.Rollout
	p := store.Page{Limit: store.MaxPageLimit}
	for {
		page, next, err := s.st.ListRollouts(ctx, store.RolloutFilter{States: engineStates}, p)
		if err != nil {
			return 0, AsError(err)
		}
		ros = append(ros, page...)
		if next == "" {
			break
		}
		p.Cursor = next
	}
	created := 0
	var firstErr error
	for i := len(ros) - 1; i >= 0; i-- { // oldest first
		if ctx.Err() != nil {
			return created, ctx.Err()
		}
		n, err := s.advance(ctx, ros[i])
		created += n
		if err != nil && !errors.Is(err, errStale) {
			s.log.Error().Err(err).Str("rollout", ros[i].ID).Msg("rollout engine")
			if firstErr == nil {
				firstErr = err
			}
		}
	}
	return created, firstErr
}

// RunRollouts runs the engine: a pass every interval, and at once when nudged, until ctx
// is done.
func (s *Service) RunRollouts(ctx context.Context, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		start := time.Now()
		n, err := s.AdvanceRollouts(ctx)
		if o, ok := s.obs.(RolloutPassObserver); ok && ctx.Err() == nil {
			o.RolloutEnginePass()
		}
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			s.log.Warn().Err(err).Msg("rollout engine pass incomplete")
		case n > 0:
			s.log.Info().Int("jobs", n).Int64("took_ms", time.Since(start).Milliseconds()).Msg("rollout engine created jobs")
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-s.rollouts.nudge:
		}
	}
}

// advance moves one rollout as far as it can go now.
func (s *Service) advance(ctx context.Context, ro store.Rollout) (int, error) {
	spec, err := decodeSpec(ro)
	if err != nil {
		return 0, err
	}
	switch rollout.State(ro.State) {
	case rollout.StatePendingApproval:
		return 0, s.expireRollout(ctx, ro, spec)
	case rollout.StateApproved:
		if ro, err = s.engineChange(ctx, ro, func(t *txn, r *store.Rollout) ([]audit.Entry, error) {
			r.State = string(rollout.StateRunning)
			return []audit.Entry{{Action: audit.ActionRolloutStarted, Reason: "approved on " + r.ApprovedAt.UTC().Format(time.RFC3339) + ": its jobs start with the canary",
				Details: audit.Details("targets", r.TargetCount, "binding_hash", r.BindingHash)}}, nil
		}); err != nil {
			return 0, err
		}
	}
	cur, err := s.st.GetProfile(ctx, spec.Template.Profile)
	if err != nil {
		return 0, err
	}
	if cur.ContentHash != spec.Template.ProfileHash {
		_, err := s.engineChange(ctx, ro, func(t *txn, r *store.Rollout) ([]audit.Entry, error) {
			reason := fmt.Sprintf("profile %s changed (version %d) since the rollout was approved; create a new rollout for the new version", cur.Name, cur.Version)
			r.State, r.PauseKind, r.PauseReason, r.PausedBy, r.PausedAt = string(rollout.StatePaused), string(rollout.PauseProfileChanged), reason, systemActor("rollouts"), t.now
			return []audit.Entry{{Action: audit.ActionRolloutPaused, Reason: reason,
				Details: audit.Details("kind", string(rollout.PauseProfileChanged), "profile_hash", cur.ContentHash, "approved_profile_hash", spec.Template.ProfileHash)}}, nil
		})
		return 0, err
	}
	if spec.Standing {
		if err := s.scanStanding(ctx, ro, spec); err != nil {
			return 0, err
		}
	}
	created := 0
	// Each round either changes the rollout (a wave finished or started, the brake tripped)
	// or creates jobs; it stops when the plan allows nothing more now.
	for range 10_000 {
		if ro, err = s.st.GetRollout(ctx, ro.ID); err != nil {
			return created, err
		}
		if rollout.State(ro.State) != rollout.StateRunning {
			return created, nil
		}
		now := s.clock()
		st, err := statusOf(ctx, s.st, ro, spec, now)
		if err != nil {
			return created, err
		}
		if tripped, err := s.checkBrake(ctx, ro, spec, st); tripped || err != nil {
			return created, err
		}
		step := rollout.Next(st.run)
		switch {
		case step.Complete:
			_, err := s.engineChange(ctx, ro, func(t *txn, r *store.Rollout) ([]audit.Entry, error) {
				r.State, r.FinishedAt = string(rollout.StateCompleted), t.now
				if err := t.notifyRollout(ctx, notify.EventRolloutCompleted, *r, st.overall, "", ""); err != nil {
					return nil, err
				}
				if r.WaveFinishedAt.IsZero() {
					r.WaveFinishedAt = t.now
				}
				return []audit.Entry{{Action: audit.ActionRolloutCompleted,
					Reason: fmt.Sprintf("every wave ended: %d succeeded, %d failed, %d cancelled of %d targets", st.overall.Succeeded,
						st.overall.Executed()-st.overall.Succeeded, st.overall.Cancelled, st.overall.Targets),
					Details: audit.Details("succeeded", st.overall.Succeeded,
						"failed", st.overall.Executed()-st.overall.Succeeded, "cancelled", st.overall.Cancelled, "targets", st.overall.Targets)}}, nil
			})
			return created, err
		case step.NextWave:
			_, err := s.engineChange(ctx, ro, func(t *txn, r *store.Rollout) ([]audit.Entry, error) {
				why := rollout.WaveName(r.CurrentWave) + " ended"
				switch {
				case r.Promoted:
					why += " and the rollout was promoted"
				case spec.Plan.Pause.After > 0:
					why += fmt.Sprintf(" and the pause of %s after it is over", spec.Plan.Pause.After)
				}
				r.CurrentWave, r.Promoted, r.WaveFinishedAt = r.CurrentWave+1, false, time.Time{}
				size := 0
				if r.CurrentWave < len(st.waves) {
					size = st.waves[r.CurrentWave].Targets
				}
				return []audit.Entry{{Action: audit.ActionRolloutWaveStarted, Reason: why, Details: audit.Details("wave", r.CurrentWave, "size", size)}}, nil
			})
			if err != nil {
				return created, err
			}
		case step.Finished && ro.WaveFinishedAt.IsZero():
			if _, err := s.engineChange(ctx, ro, func(t *txn, r *store.Rollout) ([]audit.Entry, error) {
				r.WaveFinishedAt = t.now
				return nil, nil
			}); err != nil {
				return created, err
			}
		case step.Create > 0:
			n, err := s.createRolloutJobs(ctx, ro, spec, min(step.Create, rolloutJobBatch))
			created += n
			if err != nil || n == 0 {
				return created, err
			}
		default:
			return created, nil
		}
	}
	return created, nil
}

// engineChange is a change of the engine's to a rollout as it read it: if someone changed
// the rollout since, it is left for the next pass (errStale).
func (s *Service) engineChange(ctx context.Context, ro store.Rollout, fn func(t *txn, r *store.Rollout) ([]audit.Entry, error)) (store.Rollout, error) {
	var out store.Rollout
	err := s.update(ctx, func(t *txn) error {
		cur, err := t.GetRollout(ctx, ro.ID)
		if err != nil {
			return err
		}
		if cur.Version != ro.Version {
			return errStale
		}
		entries, err := fn(t, &cur)
		if err != nil {
			return err
		}
		if out, err = t.UpdateRollout(ctx, cur, ro.Version); errors.Is(err, store.ErrConflict) {
			return errStale
		} else if err != nil {
			return err
		}
		for i := range entries {
			entries[i].Actor = systemActor("rollouts")
			entries[i].Target = "rollout:" + ro.ID
		}
		return t.auditAll(ctx, entries)
	})
	return out, err
}

// expireRollout expires a rollout not approved within its profile's approval expiry.
func (s *Service) expireRollout(ctx context.Context, ro store.Rollout, spec rollout.Spec) error {
	p, err := s.profileOfRollout(ctx, s.st, spec.Template.Profile, spec.Template.ProfileHash)
	if err != nil {
		return err
	}
	life := p.Approval.Policy().ExpiresAfter
	if life <= 0 {
		life = DefaultRolloutExpiry
	}
	if s.clock().Before(ro.Created.Add(life)) {
		return nil
	}
	_, err = s.engineChange(ctx, ro, func(t *txn, r *store.Rollout) ([]audit.Entry, error) {
		r.State, r.FinishedAt = string(rollout.StateExpired), t.now
		reason := fmt.Sprintf("not approved within %s", life)
		if err := t.notifyRolloutEnded(ctx, *r, spec, "", reason); err != nil {
			return nil, err
		}
		return []audit.Entry{{Action: audit.ActionRolloutExpired, Reason: reason}}, nil
	})
	return err
}

// minus is what a tally counts beyond a baseline taken earlier: the outcomes since.
func minus(t, base rollout.Tally) rollout.Tally {
	out := t
	out.Succeeded = max(t.Succeeded-base.Succeeded, 0)
	out.Failures = map[rollout.Outcome]int{}
	for o, n := range t.Failures {
		out.Failures[o] = max(n-base.Failures[o], 0)
	}
	out.ByCode = map[string]int{}
	for c, n := range t.ByCode {
		out.ByCode[c] = max(n-base.ByCode[c], 0)
	}
	return out
}

// checkBrake trips the brake when the rollout's failures, since the approval of its last
// resumption, reach its threshold: the rollout pauses, the trip records the failures by
// code with a few examples, and it is audited, logged and counted.
func (s *Service) checkBrake(ctx context.Context, ro store.Rollout, spec rollout.Spec, st rolloutStatus) (bool, error) {
	if spec.Brake.Disabled {
		return false, nil
	}
	prev, err := decodeTrip(ro)
	if err != nil {
		return false, err
	}
	overall, waves := st.overall, st.waves
	if prev != nil && prev.Baseline != nil {
		overall = minus(overall, prev.Baseline.Overall)
		waves = make([]rollout.Tally, len(st.waves))
		for i, w := range st.waves {
			if i < len(prev.Baseline.Waves) {
				w = minus(w, prev.Baseline.Waves[i])
			}
			waves[i] = w
		}
	}
	trip := rollout.CheckBrake(spec.Brake, overall, waves)
	if trip == nil {
		return false, nil
	}
	trip.At = s.clock()
	if err := s.tripExamples(ctx, ro.ID, trip); err != nil {
		return false, err
	}
	summary := trip.Summary()
	stored, err := json.Marshal(storedTrip{Trip: *trip})
	if err != nil {
		return false, err
	}
	_, err = s.engineChange(ctx, ro, func(t *txn, r *store.Rollout) ([]audit.Entry, error) {
		r.State, r.PauseKind, r.PauseReason, r.PausedBy, r.PausedAt = string(rollout.StatePaused), string(rollout.PauseBrake), summary, systemActor("brake"), t.now
		r.PauseRound++
		r.Trip = stored
		if err := t.notifyRollout(ctx, notify.EventRolloutBrakeTripped, *r, st.overall, summary, ""); err != nil {
			return nil, err
		}
		t.events = append(t.events, func(o Observer) {
			if ro, ok := o.(RolloutObserver); ok {
				ro.RolloutBrakeTripped()
			}
		})
		return []audit.Entry{{Action: audit.ActionRolloutBrakeTripped, Reason: summary,
			Details: audit.Details("round", r.PauseRound, "scope", trip.Scope, "executed", trip.Executed, "failed", trip.Failed,
				"percent", trip.Percent, "threshold_percent", trip.Threshold, "trip", json.RawMessage(stored))}}, nil
	})
	if err != nil {
		return false, err
	}
	s.log.Warn().Str("rollout", ro.ID).Str("name", ro.Name).Str("scope", trip.Scope).Int("executed", trip.Executed).
		Int("failed", trip.Failed).Msg(summary + "; the rollout is paused until approved again")
	return true, nil
}

// tripExamples fills a trip's examples: up to rollout.MaxExamples of the rollout's ended
// jobs for each error code, newest first.
func (s *Service) tripExamples(ctx context.Context, rolloutID string, trip *rollout.Trip) error {
	want := map[string]int{}
	for i, c := range trip.ByCode {
		want[c.Code] = i
	}
	missing := len(want) * rollout.MaxExamples
	p := store.Page{Limit: store.MaxPageLimit}
	for pages := 0; missing > 0 && pages < 10; pages++ {
		js, next, err := s.st.ListJobs(ctx, store.JobFilter{RolloutID: rolloutID,
			States: []jobs.State{jobs.StateFailed, jobs.StateExpired, jobs.StateRejected}}, p)
		if err != nil {
			return err
		}
		for _, j := range js {
			code := j.ErrorCode
			if _, ok := want[code]; !ok {
				// Codes the tally names for outcomes without one of their own.
				switch j.State {
				case jobs.StateExpired:
					code = "job_expired"
				case jobs.StateRejected:
					code = "rejected"
				}
			}
			i, ok := want[code]
			if !ok || len(trip.ByCode[i].Examples) >= rollout.MaxExamples {
				continue
			}
			trip.ByCode[i].Examples = append(trip.ByCode[i].Examples, rollout.Example{JobID: j.ID, AgentID: j.AgentID, Message: j.ErrorMessage})
			missing--
		}
		if next == "" {
			break
		}
		p.Cursor = next
	}
	return nil
}

// createRolloutJobs creates the jobs of up to n targets of the current wave that have none,
// in one transaction that first moves the rollout's version on (compare-and-set): of two
// coordinators passing at once, one creates and the other finds the rollout changed. A
// target that can no longer take its job gets one that fails at once
// (target_unavailable), so that it shows and counts.
func (s *Service) createRolloutJobs(ctx context.Context, ro store.Rollout, spec rollout.Spec, n int) (int, error) {
	created := 0
	err := s.update(ctx, func(t *txn) error {
		created = 0
		cur, err := t.GetRollout(ctx, ro.ID)
		if err != nil {
			return err
		}
		if cur.Version != ro.Version || rollout.State(cur.State) != rollout.StateRunning {
			return errStale
		}
		if cur, err = t.UpdateRollout(ctx, cur, ro.Version); errors.Is(err, store.ErrConflict) {
			return errStale
		} else if err != nil {
			return err
		}
		wave := cur.CurrentWave
		targets, _, err := t.ListRolloutTargets(ctx, cur.ID, store.RolloutTargetFilter{Wave: &wave, WithoutJob: true}, store.Page{Limit: n})
		if err != nil || len(targets) == 0 {
			return err
		}
		sp, err := t.GetProfile(ctx, spec.Template.Profile)
		if err != nil {
			return err
		}
		if sp.ContentHash != spec.Template.ProfileHash {
			return errStale // the next pass pauses it
		}
		p, err := s.profiles.parse(sp)
		if err != nil {
			return err
		}
		life := time.Duration(spec.Template.Deadline)
		if life <= 0 {
			life = DefaultJobDeadline
		}
		users := map[string]store.User{}
		var (
			ready, gone, done []store.Job
			reasons, whyDone  []string
			links             = make([]store.RolloutJobLink, 0, len(targets))
			entries           = make([]audit.Entry, 0, len(targets))
		)
		for _, tg := range targets {
			holder, ok := users[tg.HolderID]
			if !ok {
				if holder, err = t.GetUser(ctx, tg.HolderID); errors.Is(err, store.ErrNotFound) {
					holder = store.User{ID: tg.HolderID, Username: tg.HolderID, OrganizationID: tg.OrganizationID, Disabled: true}
				} else if err != nil {
					return err
				}
				users[tg.HolderID] = holder
			}
			c := jobCore{Kind: spec.Template.Kind, Holder: holder, Profile: sp, Parsed: p, AgentID: tg.AgentID, TokenSerial: tg.TokenSerial,
				Deadline: t.now.Add(life), RequesterID: cur.CreatedBy, Rollout: cur, RolloutBinding: cur.BindingHash}
			subject, unavailable, err := t.rolloutTargetReady(ctx, c, tg)
			if err != nil {
				return err
			}
			replaced := ""
			if unavailable == "" {
				if replaced, err = t.certificateReplaced(ctx, tg); err != nil {
					return err
				}
			}
			j, entry, err := t.insertJob(ctx, c, subject)
			if err != nil {
				return err
			}
			entries = append(entries, entry)
			links = append(links, store.RolloutJobLink{Seq: tg.Seq, JobID: j.ID})
			switch {
			case unavailable != "":
				gone, reasons = append(gone, j), append(reasons, unavailable)
			case replaced != "":
				done, whyDone = append(done, j), append(whyDone, replaced)
			default:
				ready = append(ready, j)
			}
		}
		if err := t.AttachRolloutJobs(ctx, cur.ID, links); errors.Is(err, store.ErrConflict) {
			return errStale
		} else if err != nil {
			return err
		}
		if err := t.auditAll(ctx, entries); err != nil {
			return err
		}
		// A job that fails at once replaces nothing: only the others supersede.
		for _, j := range ready {
			if err := t.supersede(ctx, rolloutActor(cur.ID), j); err != nil {
				return err
			}
		}
		if _, err := t.transitionAll(ctx, ready, jobs.StateApproved, rolloutApproval(cur), ""); err != nil {
			return err
		}
		for i, j := range gone {
			// Approved by the rollout like the others, then failed before anything is
			// sent: the dispatcher is not involved.
			aj, err := t.moveAll(ctx, []store.Job{j}, jobs.StateApproved, rolloutApproval(cur), "", false)
			if err != nil {
				return err
			}
			msg := "target unavailable: " + reasons[i]
			if _, err := t.moveAll(ctx, aj, jobs.StateFailed, store.JobChange{Actor: rolloutActor(cur.ID), Reason: msg,
				Error: &store.JobError{Code: JobErrTargetUnavailable, Message: msg}}, "", false); err != nil {
				return err
			}
		}
		for i, j := range done {
			// Nothing is left to do for this target: the job ends before it is approved,
			// and neither counts as a failure nor reaches the agent.
			if _, err := t.moveAll(ctx, []store.Job{j}, jobs.StateCancelled, store.JobChange{Actor: rolloutActor(cur.ID), Reason: whyDone[i]},
				audit.ActionJobCancelled, false); err != nil {
				return err
			}
		}
		created = len(links)
		t.events = append(t.events, func(o Observer) {
			if ro, ok := o.(RolloutObserver); ok {
				ro.RolloutJobsCreated(len(links))
			}
		})
		return nil
	})
	if errors.Is(err, errStale) {
		return 0, nil
	}
	return created, err
}

// rolloutTargetReady is jobReady for a rollout's target: the rendered subject, or why the
// target can no longer take its job ("" and nil when it can). A holder moved to another
// organisation since the rollout was created is one such target: the approval covered
// the organisation the holder was in (with an organisation scope, it was given by an
// approver of that organisation).
func (t *txn) rolloutTargetReady(ctx context.Context, c jobCore, tg store.RolloutTarget) (string, string, error) {
	if !c.Holder.Disabled && c.Holder.OrganizationID != tg.OrganizationID {
		orgName := func(id string) string {
			if id == "" {
				return "none"
			}
			if o, err := t.GetOrganization(ctx, id); err == nil {
				return o.Name
			}
			return id
		}
		return "", fmt.Sprintf("holder %s moved from organisation %s to %s since the rollout was created; its approval covered %s only",
			c.Holder.Username, orgName(tg.OrganizationID), orgName(c.Holder.OrganizationID), orgName(tg.OrganizationID)), nil
	}
	subject, err := t.jobReady(ctx, c)
	if err != nil {
		e := AsError(err)
		if e.Code == CodeInternal {
			return "", "", err
		}
		return "", e.Msg, nil
	}
	return subject, "", nil
}

// certificateReplaced says why a renewal target has nothing left to renew ("" when it
// has): its certificate was revoked, or renewed by other means (a newer valid
// certificate of the same holder and profile on its token), while it waited for its
// wave. Renewing it again would give the holder a second new certificate.
func (t *txn) certificateReplaced(ctx context.Context, tg store.RolloutTarget) (string, error) {
	if tg.CertificateSerial == "" {
		return "", nil
	}
	c, err := t.GetCertificate(ctx, tg.CertificateSerial)
	if errors.Is(err, store.ErrNotFound) {
		return "", nil
	} else if err != nil {
		return "", err
	}
	if !c.RevokedAt.IsZero() {
		return fmt.Sprintf("certificate %s was revoked on %s, after the rollout was created: nothing to renew",
			c.Serial, c.RevokedAt.UTC().Format(time.RFC3339)), nil
	}
	if c.TokenSerial == "" {
		return "", nil
	}
	valid := false
	cs, _, err := t.ListCertificates(ctx, store.CertificateFilter{TokenSerial: c.TokenSerial, HolderID: c.HolderID, Revoked: &valid},
		store.Page{Limit: store.MaxPageLimit})
	if err != nil {
		return "", err
	}
	for _, n := range cs { // newest first
		if n.Serial != c.Serial && n.Profile == c.Profile && n.NotBefore.After(c.NotBefore) {
			return fmt.Sprintf("certificate %s was renewed after the rollout was created: certificate %s (valid until %s) replaced it on token %s; nothing to renew",
				c.Serial, n.Serial, n.NotAfter.UTC().Format(time.RFC3339), c.TokenSerial), nil
		}
	}
	return "", nil
}

// scanStanding adds to a standing rollout, at most every standingScanEvery, the valid
// certificates of its profile that entered their renewal window (not_after − renew_before
// ≤ now), are the newest of their holder and token, pass its selector, and are not
// targets yet. Each addition is audited with its count.
func (s *Service) scanStanding(ctx context.Context, ro store.Rollout, spec rollout.Spec) error {
	now := s.clock()
	e := s.rollouts
	e.mu.Lock()
	last := e.lastScan[ro.ID]
	due := last.IsZero() || now.Sub(last) >= standingScanEvery || now.Before(last)
	if due {
		e.lastScan[ro.ID] = now
	}
	e.mu.Unlock()
	if !due {
		return nil
	}
	p, err := s.profileOfRollout(ctx, s.st, spec.Template.Profile, spec.Template.ProfileHash)
	if err != nil {
		return err
	}
	if p.RenewBefore <= 0 {
		return nil
	}
	sel, err := s.newSelection(ctx, s.st, spec, nil, now)
	if err != nil {
		return err
	}
	res, err := sel.resolve(ctx, time.Duration(p.RenewBefore), func(serial string) (bool, error) {
		return s.st.HasRolloutTarget(ctx, ro.ID, serial)
	})
	if err != nil {
		return err
	}
	if n := res.reasons[renewalLoop]; n > 0 {
		s.log.Warn().Str("rollout", ro.ID).Int("certificates", n).Str("renew_before", p.RenewBefore.String()).
			Msg("certificates issued inside their renewal window are left out of the standing rollout (is the issuing CA's certificate about to expire?)")
	}
	targets, err := withoutApprovers(ctx, s.st, ro, res.targets)
	if err != nil || len(targets) == 0 {
		return err
	}
	if left := len(res.targets) - len(targets); left > 0 {
		s.log.Warn().Str("rollout", ro.ID).Int("certificates", left).
			Msg("certificates of the standing rollout's approvers are left out of it: renew them by jobs of their own")
	}
	cs, err := s.st.RolloutCounts(ctx, ro.ID)
	if err != nil {
		return err
	}
	canary := 0
	for _, c := range cs {
		if c.Wave == 0 {
			canary += c.N
		}
	}
	const batch = 500
	for start := 0; start < len(targets); start += batch {
		chunk := targets[start:min(start+batch, len(targets))]
		ts := make([]store.RolloutTarget, len(chunk))
		for i, c := range chunk {
			w := rollout.NextWave(spec.Plan, canary)
			if w == 0 {
				canary++
			}
			ts[i] = store.RolloutTarget{Wave: w, AgentID: c.AgentID, TokenSerial: c.TokenSerial, HolderID: c.HolderID,
				CertificateSerial: c.CertificateSerial, TokenModel: c.TokenModel, OrganizationID: c.OrganizationID, Added: now}
		}
		err := s.update(ctx, func(t *txn) error {
			added, err := t.AddRolloutTargets(ctx, ro.ID, ts)
			if err != nil || added == 0 {
				return err
			}
			return t.audit(ctx, audit.Entry{Actor: systemActor("rollouts"), Action: audit.ActionRolloutTargetsAdded, Target: "rollout:" + ro.ID,
				Reason:  fmt.Sprintf("%d certificates of profile %s entered their renewal window (%s before expiry)", added, p.Name, p.RenewBefore),
				Details: audit.Details("added", added, "renew_before", p.RenewBefore.String())})
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// withoutApprovers leaves out the targets held by someone who approved the rollout: no
// approver holds a target, and a standing rollout's targets arrive after its approvals.
func withoutApprovers(ctx context.Context, r store.Reader, ro store.Rollout, ts []rollout.Target) ([]rollout.Target, error) {
	as, err := r.ListRolloutApprovals(ctx, ro.ID)
	if err != nil {
		return nil, err
	}
	approvers := map[string]bool{}
	for _, a := range as {
		if a.Verdict == jobs.VerdictApprove {
			approvers[a.ApproverID] = true
		}
	}
	out := ts[:0:0]
	for _, t := range ts {
		if !approvers[t.HolderID] {
			out = append(out, t)
		}
	}
	return out, nil
}

// plural picks the word for n things.
func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
