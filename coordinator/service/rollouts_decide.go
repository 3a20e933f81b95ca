package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/rollout"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// RolloutVote is an approver's decision on a rollout: approve or reject it while it waits
// for its approval, or approve its resumption after its brake tripped. BindingHash is the
// rollout's binding hash as the approver reviewed it.
type RolloutVote struct {
	Verdict     jobs.Verdict
	BindingHash string
	Reason      string
}

// changeRollout runs fn on the rollout in a transaction and stores what fn made of it
// (compare-and-set on its version: a concurrent change reads again and decides again),
// with the audit entries fn returns. A refusal fn records (t.refuse) changes nothing else.
func (s *Service) changeRollout(ctx context.Context, id string, fn func(t *txn, ro *store.Rollout, spec rollout.Spec) ([]audit.Entry, error)) (store.Rollout, error) {
	var out store.Rollout
	err := s.update(ctx, func(t *txn) error {
		// Locked: a running engine writes the rollout batch after batch, and a plain read
		// would lose every compare-and-set to it.
		ro, err := t.LockRollout(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			return newErr(CodeNotFound, "", "no rollout %q", id)
		}
		if err != nil {
			return err
		}
		spec, err := decodeSpec(ro)
		if err != nil {
			return internal(err)
		}
		version := ro.Version
		out = ro
		entries, err := fn(t, &ro, spec)
		if err != nil || t.refusal != nil {
			return err
		}
		if out, err = t.UpdateRollout(ctx, ro, version); err != nil {
			return casLost(err)
		}
		for i := range entries {
			if entries[i].Target == "" {
				entries[i].Target = "rollout:" + ro.ID
			}
		}
		return t.auditAll(ctx, entries)
	})
	return out, err
}

func validVote(v RolloutVote) error {
	if v.Verdict != jobs.VerdictApprove && v.Verdict != jobs.VerdictReject {
		return badRequest("verdict", "%q is neither %s nor %s", v.Verdict, jobs.VerdictApprove, jobs.VerdictReject)
	}
	if err := checkReason("reason", v.Reason); err != nil {
		return err
	}
	if len(v.BindingHash) != 64 {
		return badRequest("binding_hash", "want the 64 hex digits of the rollout's binding_hash as you reviewed it (tokenfleetctl rollout show)")
	}
	return nil
}

// DecideRollout records an approval or a rejection: of a rollout waiting for its approval,
// or of the resumption of a rollout its brake paused (that round's approvals). The
// profile's gate rules apply, with at least one approval; never by the rollout's creator
// nor by a holder of one of its targets; with an organisation scope, only for holders of
// the approver's own organisation, all of them. Enough approvals approve it (the engine
// starts it) or resume it; one rejection rejects it for good.
func (s *Service) DecideRollout(ctx context.Context, by Actor, id string, v RolloutVote) (RolloutView, error) {
	actor := by.user
	v.Reason = strings.TrimSpace(v.Reason)
	if err := validVote(v); err != nil {
		return RolloutView{}, err
	}
	op := string(v.Verdict) + " rollout"
	var (
		nudge     bool
		cancelRun bool
	)
	out, err := s.changeRollout(ctx, id, func(t *txn, ro *store.Rollout, spec rollout.Spec) ([]audit.Entry, error) {
		nudge, cancelRun = false, false
		refuse := func(err *Error) ([]audit.Entry, error) {
			return nil, t.refuse(ctx, actor, op, "", "rollout:"+ro.ID, err)
		}
		state := rollout.State(ro.State)
		round := 0
		switch {
		case state == rollout.StatePendingApproval:
		case state == rollout.StatePaused && rollout.PauseKind(ro.PauseKind) == rollout.PauseBrake:
			round = ro.PauseRound
		default:
			why := string(state)
			if ro.PauseKind != "" {
				why += " (" + ro.PauseKind + ")"
			}
			return refuse(newErr(CodeNotPending, "", "rollout %s is %s; nothing awaits a decision (only a rollout waiting for its approval, or paused by its brake, is decided on)", ro.ID, why))
		}
		p, err := s.profileOfRollout(ctx, t, spec.Template.Profile, spec.Template.ProfileHash)
		if err != nil {
			return nil, internal(err)
		}
		if cur, err := t.GetProfile(ctx, spec.Template.Profile); err != nil {
			return nil, err
		} else if cur.ContentHash != spec.Template.ProfileHash {
			return refuse(newErr(CodeBindingMismatch, "", "profile %s changed (version %d) since rollout %s was created; create a new rollout for it", cur.Name, cur.Version, ro.ID))
		}
		policy := p.Approval.Policy()
		required, roles := requiredApprovals(p)
		if state == rollout.StatePendingApproval {
			life := policy.ExpiresAfter
			if life <= 0 {
				life = DefaultRolloutExpiry
			}
			if !t.now.Before(ro.Created.Add(life)) {
				return refuse(newErr(CodeApprovalExpired, "", "rollout %s was not approved within %s (by %s)", ro.ID, life, ro.Created.Add(life).Format(time.RFC3339)))
			}
		}
		if actor.ID == ro.CreatedBy {
			return refuse(newErr(CodeSelfApproval, "", "%s created rollout %s and may not decide on it", actor.Username, ro.ID))
		}
		orgs, holds, err := targetOrgs(ctx, t, ro.ID, actor.ID)
		if err != nil {
			return nil, err
		}
		if holds {
			return refuse(newErr(CodeSelfApproval, "", "%s is the holder of a target of rollout %s and may not decide on it", actor.Username, ro.ID))
		}
		if ro.Standing {
			for _, name := range spec.Selector.Holders.Organizations {
				if o, err := t.GetOrganizationByName(ctx, name); err == nil {
					orgs[o.ID] = true
				} else if !errors.Is(err, store.ErrNotFound) {
					return nil, err
				}
			}
		}
		acc, err := accessOf(ctx, t, actor)
		if err != nil {
			return nil, err
		}
		concerned := keysOf(orgs)
		if len(concerned) == 0 {
			concerned = []string{""}
		}
		for _, org := range concerned {
			if who := acc.jobActor(org); !slices.ContainsFunc(roles, who.HasRole) {
				return refuse(newErr(CodeRoleNotPermitted, "", "%s holds none of the roles that decide on rollouts of profile %s (%s)", actor.Username, p.Name, joinRoleNames(roles)))
			}
		}
		if policy.Scope == jobs.ScopeOrganization {
			if ro.Standing && len(spec.Selector.Holders.Organizations) == 0 {
				return refuse(newErr(CodeOutOfScope, "", "profile %s is approved within the holder's organisation: a standing rollout of it must name its holders' organisation (selector.holders.organizations), so that its approval covers every certificate it will take up", p.Name))
			}
			for _, org := range keysOf(orgs) {
				if actor.OrganizationID == "" || org != actor.OrganizationID {
					return refuse(newErr(CodeOutOfScope, "", "%s may decide only for holders of their own organisation, and rollout %s targets holders of %d organisations; the profile's approvals are per organisation: split the rollout by holders.organizations",
						actor.Username, ro.ID, len(orgs)))
				}
			}
		}
		approvals, err := t.ListRolloutApprovals(ctx, ro.ID)
		if err != nil {
			return nil, err
		}
		approvers := map[string]bool{}
		for _, a := range approvals {
			if a.Round != round || a.BoundHash != ro.BindingHash {
				continue
			}
			if a.ApproverID == actor.ID {
				return refuse(newErr(CodeAlreadyDecided, "", "%s already decided (%s) on rollout %s%s", actor.Username, a.Verdict, ro.ID, roundName(round)))
			}
			if a.Verdict == jobs.VerdictApprove {
				approvers[a.ApproverID] = true
			}
		}
		if v.BindingHash != ro.BindingHash {
			return refuse(newErr(CodeBindingMismatch, "", "rollout %s is not what %s reviewed: its binding hash is %s; review it again", ro.ID, actor.Username, ro.BindingHash))
		}
		if v.Verdict == jobs.VerdictReject && v.Reason == "" {
			return refuse(newErr(CodeReasonRequired, "", "a rejection needs a reason"))
		}
		if _, err := t.AddRolloutApproval(ctx, store.RolloutApproval{RolloutID: ro.ID, ApproverID: actor.ID, Verdict: v.Verdict,
			BoundHash: v.BindingHash, Round: round, Reason: v.Reason, At: t.now}); err != nil {
			return nil, casLost(err)
		}
		if v.Verdict == jobs.VerdictApprove {
			approvers[actor.ID] = true
		}
		action := audit.ActionRolloutApproved
		if v.Verdict == jobs.VerdictReject {
			action = audit.ActionRolloutRejected
		}
		reason := v.Reason
		if reason == "" {
			// The approver gave none: say what the decision counts for.
			reason = fmt.Sprintf("approved by %s%s: %d of %d approvals", actor.Username, roundName(round), len(approvers), required)
		}
		entries := []audit.Entry{{Actor: actor.ID, Action: action, Reason: reason,
			Details: audit.Details("round", round, "binding_hash", ro.BindingHash, "approvals", len(approvers), "required", required)}}
		t.events = append(t.events, func(o Observer) { o.Decision(jobs.GateRequest, v.Verdict) })
		switch {
		case v.Verdict == jobs.VerdictReject:
			ro.State, ro.FinishedAt = string(rollout.StateRejected), t.now
			cancelRun = round > 0
			if err := t.notifyRolloutEnded(ctx, *ro, spec, actor.ID, v.Reason); err != nil {
				return nil, err
			}
		case len(approvers) < required:
		case state == rollout.StatePendingApproval:
			ro.State, ro.ApprovedAt = string(rollout.StateApproved), t.now
			nudge = true
		default:
			// The brake's failures were accepted with this approval: from now on it
			// counts what happens after it.
			st, err := statusOf(ctx, t, *ro, spec, t.now)
			if err != nil {
				return nil, err
			}
			trip, err := decodeTrip(*ro)
			if err != nil {
				return nil, internal(err)
			}
			if trip == nil {
				trip = &storedTrip{}
			}
			trip.Baseline = &tripBaseline{Overall: st.overall, Waves: st.waves}
			if ro.Trip, err = json.Marshal(trip); err != nil {
				return nil, internal(err)
			}
			ro.State = string(rollout.StateRunning)
			ro.PauseKind, ro.PauseReason, ro.PausedBy, ro.PausedAt = "", "", "", time.Time{}
			entries = append(entries, audit.Entry{Actor: actor.ID, Action: audit.ActionRolloutResumed,
				Reason:  fmt.Sprintf("%d of %d approvals to resume after brake trip %d", len(approvers), required, round),
				Details: audit.Details("round", round, "binding_hash", ro.BindingHash)})
			nudge = true
		}
		return entries, nil
	})
	if err != nil {
		return RolloutView{}, err
	}
	if cancelRun {
		if _, err := s.cancelRolloutJobs(ctx, out, actor.ID, fmt.Sprintf("rollout %s (%s) rejected by %s", out.Name, out.ID, actor.Username)); err != nil {
			return RolloutView{}, err
		}
	}
	if nudge {
		s.nudgeRollouts()
	}
	return s.rolloutView(ctx, s.st, newNames(s.st), out, true)
}

func roundName(round int) string {
	if round == 0 {
		return ""
	}
	return fmt.Sprintf(" (resumption after brake trip %d)", round)
}

func joinRoleNames(rs []jobs.Role) string {
	names := make([]string, len(rs))
	for i, r := range rs {
		names[i] = string(r)
	}
	return strings.Join(names, ", ")
}

func keysOf(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// targetOrgs reads a rollout's targets: the organisations of their holders, and whether
// user is one of those holders.
func targetOrgs(ctx context.Context, r store.Reader, rolloutID, user string) (map[string]bool, bool, error) {
	orgs := map[string]bool{}
	holds := false
	p := store.Page{Limit: store.MaxPageLimit}
	for {
		ts, next, err := r.ListRolloutTargets(ctx, rolloutID, store.RolloutTargetFilter{}, p)
		if err != nil {
			return nil, false, err
		}
		for _, t := range ts {
			orgs[t.OrganizationID] = true
			holds = holds || t.HolderID == user
		}
		if next == "" {
			return orgs, holds, nil
		}
		p.Cursor = next
	}
}

// rolloutOp checks what pause, resume, promote and abort ask: the manage_rollouts
// permission and a reason that reads.
func (s *Service) rolloutOp(ctx context.Context, actor store.User, op, reason string) (string, error) {
	if _, err := s.authorize(ctx, actor, op, jobs.PermManageRollouts, ""); err != nil {
		return "", err
	}
	if err := checkReason("reason", reason); err != nil {
		return "", err
	}
	return strings.TrimSpace(reason), nil
}

// PauseRollout stops a running (or approved) rollout from creating jobs; the jobs it
// created go on. ResumeRollout undoes it.
func (s *Service) PauseRollout(ctx context.Context, by Actor, id, reason string) (RolloutView, error) {
	actor := by.user
	reason, err := s.rolloutOp(ctx, actor, "pause rollout", reason)
	if err != nil {
		return RolloutView{}, err
	}
	if reason == "" {
		reason = "paused by " + actor.Username
	}
	out, err := s.changeRollout(ctx, id, func(t *txn, ro *store.Rollout, _ rollout.Spec) ([]audit.Entry, error) {
		if st := rollout.State(ro.State); st != rollout.StateRunning && st != rollout.StateApproved {
			return nil, newErr(CodeConflict, "", "rollout %s is %s; only a running or approved rollout pauses", ro.ID, st)
		}
		ro.State, ro.PauseKind, ro.PauseReason, ro.PausedBy, ro.PausedAt = string(rollout.StatePaused), string(rollout.PauseOperator), reason, actor.ID, t.now
		return []audit.Entry{{Actor: actor.ID, Action: audit.ActionRolloutPaused, Reason: reason,
			Details: audit.Details("kind", string(rollout.PauseOperator), "wave", ro.CurrentWave)}}, nil
	})
	if err != nil {
		return RolloutView{}, err
	}
	return s.rolloutView(ctx, s.st, newNames(s.st), out, true)
}

// ResumeRollout resumes a rollout an operator paused. One its brake paused resumes only
// by approvals (approval_required: DecideRollout); one paused because its profile changed
// does not resume (a new rollout is needed).
func (s *Service) ResumeRollout(ctx context.Context, by Actor, id, reason string) (RolloutView, error) {
	actor := by.user
	reason, err := s.rolloutOp(ctx, actor, "resume rollout", reason)
	if err != nil {
		return RolloutView{}, err
	}
	out, err := s.changeRollout(ctx, id, func(t *txn, ro *store.Rollout, spec rollout.Spec) ([]audit.Entry, error) {
		if rollout.State(ro.State) != rollout.StatePaused {
			return nil, newErr(CodeConflict, "", "rollout %s is %s; only a paused rollout resumes", ro.ID, ro.State)
		}
		switch rollout.PauseKind(ro.PauseKind) {
		case rollout.PauseBrake:
			n := 1
			if p, err := s.profileOfRollout(ctx, t, spec.Template.Profile, spec.Template.ProfileHash); err == nil {
				n, _ = requiredApprovals(p)
			}
			return nil, newErr(CodeApprovalRequired, "", "rollout %s was paused by its failure brake (%s); it resumes only when approved again, like its creation (%d %s): tokenfleetctl rollout approve %s",
				ro.ID, ro.PauseReason, n, plural(n, "approval", "approvals"), ro.ID)
		case rollout.PauseProfileChanged:
			return nil, newErr(CodeConflict, "", "rollout %s was paused because profile %s changed since its approval (%s); it cannot resume under another profile version: abort it and create a new rollout",
				ro.ID, spec.Template.Profile, ro.PauseReason)
		}
		if reason == "" {
			reason = "resumed by " + actor.Username
		}
		ro.State, ro.PauseKind, ro.PauseReason, ro.PausedBy, ro.PausedAt = string(rollout.StateRunning), "", "", "", time.Time{}
		return []audit.Entry{{Actor: actor.ID, Action: audit.ActionRolloutResumed, Reason: reason,
			Details: audit.Details("wave", ro.CurrentWave)}}, nil
	})
	if err != nil {
		return RolloutView{}, err
	}
	s.nudgeRollouts()
	return s.rolloutView(ctx, s.st, newNames(s.st), out, true)
}

// PromoteRollout starts the next wave of a running rollout whose current wave is done,
// without waiting for the rest of the pause between waves (or for a promote, when the
// plan waits for one).
func (s *Service) PromoteRollout(ctx context.Context, by Actor, id, reason string) (RolloutView, error) {
	actor := by.user
	reason, err := s.rolloutOp(ctx, actor, "promote rollout", reason)
	if err != nil {
		return RolloutView{}, err
	}
	if reason == "" {
		reason = "promoted by " + actor.Username
	}
	out, err := s.changeRollout(ctx, id, func(t *txn, ro *store.Rollout, spec rollout.Spec) ([]audit.Entry, error) {
		if rollout.State(ro.State) != rollout.StateRunning {
			return nil, newErr(CodeConflict, "", "rollout %s is %s; only a running rollout is promoted", ro.ID, ro.State)
		}
		if ro.Promoted {
			return nil, newErr(CodeConflict, "", "rollout %s is already promoted past %s", ro.ID, rollout.WaveName(ro.CurrentWave))
		}
		st, err := statusOf(ctx, t, *ro, spec, t.now)
		if err != nil {
			return nil, err
		}
		w := ro.CurrentWave
		if w < len(st.waves) {
			if tl := st.waves[w]; tl.Pending > 0 || tl.Open > 0 {
				return nil, newErr(CodeConflict, "", "%s of rollout %s is not finished (%d targets without a job, %d jobs open); promote it once it is",
					rollout.WaveName(w), ro.ID, tl.Pending, tl.Open)
			}
		}
		if w >= len(st.waves)-1 {
			return nil, newErr(CodeConflict, "", "%s is the last wave of rollout %s: there is nothing to promote to", rollout.WaveName(w), ro.ID)
		}
		ro.Promoted = true
		if ro.WaveFinishedAt.IsZero() {
			ro.WaveFinishedAt = t.now
		}
		return []audit.Entry{{Actor: actor.ID, Action: audit.ActionRolloutPromoted, Reason: reason,
			Details: audit.Details("wave", w, "next_wave", w+1)}}, nil
	})
	if err != nil {
		return RolloutView{}, err
	}
	s.nudgeRollouts()
	return s.rolloutView(ctx, s.st, newNames(s.st), out, true)
}

// AbortRollout ends a rollout for good: it creates no more jobs, and every job of it that
// has not started (approved, dispatched) is cancelled, its agent told. Running jobs
// finish. Aborting an aborted rollout again cancels what an interrupted abort left.
func (s *Service) AbortRollout(ctx context.Context, by Actor, id, reason string) (RolloutView, error) {
	actor := by.user
	reason, err := s.rolloutOp(ctx, actor, "abort rollout", reason)
	if err != nil {
		return RolloutView{}, err
	}
	given := reason
	if reason == "" {
		reason = "aborted by " + actor.Username
	}
	out, err := s.changeRollout(ctx, id, func(t *txn, ro *store.Rollout, spec rollout.Spec) ([]audit.Entry, error) {
		st := rollout.State(ro.State)
		if st == rollout.StateAborted {
			return nil, nil // cancel what is left, below
		}
		if st.Final() {
			return nil, newErr(CodeConflict, "", "rollout %s is %s already", ro.ID, st)
		}
		cs, err := t.RolloutCounts(ctx, ro.ID)
		if err != nil {
			return nil, err
		}
		toCancel, running, pending := 0, 0, 0
		for _, c := range cs {
			switch {
			case c.State == "":
				pending += c.N
			case c.State == jobs.StateApproved || c.State == jobs.StateDispatched:
				toCancel += c.N
			case !jobs.Terminal(c.State):
				running += c.N
			}
		}
		ro.State, ro.FinishedAt = string(rollout.StateAborted), t.now
		if err := t.notifyRolloutEnded(ctx, *ro, spec, actor.ID, given); err != nil {
			return nil, err
		}
		return []audit.Entry{{Actor: actor.ID, Action: audit.ActionRolloutAborted, Reason: reason,
			Details: audit.Details("jobs_cancelled", toCancel, "jobs_running", running, "targets_without_job", pending, "wave", ro.CurrentWave)}}, nil
	})
	if err != nil {
		return RolloutView{}, err
	}
	if _, err := s.cancelRolloutJobs(ctx, out, actor.ID, fmt.Sprintf("rollout %s (%s) aborted: %s", out.Name, out.ID, reason)); err != nil {
		return RolloutView{}, err
	}
	return s.rolloutView(ctx, s.st, newNames(s.st), out, true)
}

// cancelRolloutJobs cancels every job of the rollout that has not started, a few hundred
// to a transaction, through the normal transition: their agents are told.
func (s *Service) cancelRolloutJobs(ctx context.Context, ro store.Rollout, actorID, reason string) (int, error) {
	total := 0
	for {
		n := 0
		err := s.update(ctx, func(t *txn) error {
			js, _, err := t.ListJobs(ctx, store.JobFilter{RolloutID: ro.ID, States: []jobs.State{jobs.StateApproved, jobs.StateDispatched}},
				store.Page{Limit: rolloutCancelBatch})
			if err != nil {
				return err
			}
			moved, err := t.transitionAll(ctx, js, jobs.StateCancelled, store.JobChange{Actor: actorID, Reason: reason}, audit.ActionJobCancelled)
			if err != nil {
				return casLost(err)
			}
			n = len(moved)
			return nil
		})
		if err != nil {
			return total, err
		}
		if n == 0 {
			return total, nil
		}
		total += n
	}
}

// rolloutRetryRefusal says why a rollout's failed job may not be tried again now (nil when
// it may, or when the job is no rollout's). A retry is a new attempt under the rollout's
// approval, which covers its jobs only while the rollout runs: it never restarts what the
// brake, an operator's pause, an abort or a rejection stopped, nor a job of a rollout
// that has ended.
func rolloutRetryRefusal(ctx context.Context, r store.Reader, j store.Job) (error, error) {
	if j.RolloutID == "" {
		return nil, nil
	}
	ro, err := r.GetRollout(ctx, j.RolloutID)
	if err != nil {
		return nil, err
	}
	st, kind := rollout.State(ro.State), rollout.PauseKind(ro.PauseKind)
	switch {
	case st == rollout.StateRunning:
		return nil, nil
	case st == rollout.StatePaused && kind == rollout.PauseBrake:
		return newErr(CodeApprovalRequired, "", "job %s is one of rollout %s (%s), which its failure brake paused: its jobs are tried again only once approvals resume it (tokenfleetctl rollout approve %s)",
			j.ID, ro.Name, ro.ID, ro.ID), nil
	case st == rollout.StatePaused && kind == rollout.PauseProfileChanged:
		return newErr(CodeConflict, "", "job %s is one of rollout %s (%s), which is paused because its profile changed since its approval: it never runs again; queue a job of its own for this target, or create a new rollout",
			j.ID, ro.Name, ro.ID), nil
	case st == rollout.StatePaused:
		return newErr(CodeConflict, "", "job %s is one of rollout %s (%s), which is paused (%s): resume the rollout first (tokenfleetctl rollout resume %s)",
			j.ID, ro.Name, ro.ID, kind, ro.ID), nil
	}
	return newErr(CodeConflict, "", "job %s is one of rollout %s (%s), which is %s: its approval no longer covers a new attempt; queue a job of its own for this target",
		j.ID, ro.Name, ro.ID, st), nil
}

// rolloutCAGateRefusal refuses the CA-operator decision of someone who approved the
// rollout that made the job (nil when they did not, or the job is no rollout's): the
// rollout's approval passed the job's request gate, and one person never passes both
// gates of a job.
func rolloutCAGateRefusal(ctx context.Context, r store.Reader, actor store.User, j store.Job) (error, error) {
	if j.RolloutID == "" {
		return nil, nil
	}
	as, err := r.ListRolloutApprovals(ctx, j.RolloutID)
	if err != nil {
		return nil, err
	}
	for _, a := range as {
		if a.ApproverID == actor.ID && a.Verdict == jobs.VerdictApprove {
			return newErr(CodeAlreadyDecided, "", "%s approved rollout %s, whose approval passed the request gate of job %s: one person never passes both gates of a job; another CA operator decides",
				actor.Username, j.RolloutID, j.ID), nil
		}
	}
	return nil, nil
}
