package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/profile"
	"github.com/tokenfleet/tokenfleet/coordinator/rollout"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// RolloutQuery filters ListRollouts.
type RolloutQuery struct {
	State    string // a rollout.State; "" for every state
	Standing *bool
}

// RolloutTargetQuery filters ListRolloutTargets.
type RolloutTargetQuery struct {
	Wave    *int
	Outcome rollout.Outcome // "" for every outcome
}

// storedTrip is the trip as the rollout keeps it: the last brake trip, and the tallies as
// they stood when its resumption was approved. The brake then counts only what happened
// since, so that the failures it tripped on, which the approvers accepted, do not trip it
// again at once.
type storedTrip struct {
	rollout.Trip
	Baseline *tripBaseline `json:"baseline,omitempty"`
}

type tripBaseline struct {
	Overall rollout.Tally   `json:"overall"`
	Waves   []rollout.Tally `json:"waves"`
}

func decodeTrip(r store.Rollout) (*storedTrip, error) {
	if len(r.Trip) == 0 {
		return nil, nil
	}
	var t storedTrip
	if err := json.Unmarshal(r.Trip, &t); err != nil {
		return nil, fmt.Errorf("rollout %s: stored trip: %w", r.ID, err)
	}
	return &t, nil
}

// rolloutStatus is a rollout's progress as the store counts it now.
type rolloutStatus struct {
	overall rollout.Tally
	waves   []rollout.Tally
	run     rollout.Run
}

// statusOf counts a rollout's targets by wave and outcome, and fills what Next reads.
func statusOf(ctx context.Context, r store.Reader, ro store.Rollout, spec rollout.Spec, now time.Time) (rolloutStatus, error) {
	var cs []rollout.Count
	if ro.ID != "" {
		rows, err := r.RolloutCounts(ctx, ro.ID)
		if err != nil {
			return rolloutStatus{}, err
		}
		cs = make([]rollout.Count, len(rows))
		for i, c := range rows {
			cs[i] = rollout.Count{Wave: c.Wave, State: c.State, ErrorCode: c.ErrorCode, N: c.N}
		}
	}
	maxWave, canary := -1, 0
	for _, c := range cs {
		maxWave = max(maxWave, c.Wave)
		if c.Wave == 0 {
			canary += c.N
		}
	}
	// Waves the counts do not show (empty ones at the end; a standing rollout's open wave
	// before its first target) still exist in the plan.
	n := max(maxWave+1, rollout.LastWave(spec.Plan, max(ro.TargetCount-canary, 0))+1)
	overall, per := rollout.Tallies(n, cs)
	sizes := make([]int, len(per))
	for i, t := range per {
		sizes[i] = t.Targets
	}
	return rolloutStatus{overall: overall, waves: per, run: rollout.Run{Plan: spec.Plan, Standing: spec.Standing,
		CurrentWave: ro.CurrentWave, WaveSizes: sizes, Tallies: per, Open: overall.Open, WaveFinishedAt: ro.WaveFinishedAt,
		Promoted: ro.Promoted, Now: now}}, nil
}

// profileOfRollout returns the profile version a rollout was made under (its hash).
func (s *Service) profileOfRollout(ctx context.Context, r store.Reader, name, hash string) (profile.Profile, error) {
	p, _, err := s.profileOfJob(ctx, r, store.Job{ID: "of a rollout", ProfileName: name, ProfileHash: hash})
	return p, err
}

// canReadRollouts checks that actor may read rollouts: any role that reads, or that runs
// rollouts. Rollouts span organisations; approvers read them to decide on them.
func (s *Service) canReadRollouts(ctx context.Context, actor store.User) error {
	a, err := accessOf(ctx, s.st, actor)
	if err != nil {
		return AsError(err)
	}
	if a.canAnywhere(jobs.PermRead) || a.canAnywhere(jobs.PermManageRollouts) {
		return nil
	}
	return s.deny(ctx, actor, "read rollouts", "", "", a.refusal("read rollouts", jobs.PermRead, ""))
}

// GetRollout returns a rollout with its progress.
func (s *Service) GetRollout(ctx context.Context, by Actor, id string) (RolloutView, error) {
	if err := s.canReadRollouts(ctx, by.user); err != nil {
		return RolloutView{}, err
	}
	ro, err := s.getRollout(ctx, s.st, id)
	if err != nil {
		return RolloutView{}, err
	}
	return s.rolloutView(ctx, s.st, newNames(s.st), ro, true)
}

func (s *Service) getRollout(ctx context.Context, r store.Reader, id string) (store.Rollout, error) {
	ro, err := r.GetRollout(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return store.Rollout{}, newErr(CodeNotFound, "", "no rollout %q", id)
	}
	if err != nil {
		return store.Rollout{}, AsError(err)
	}
	return ro, nil
}

// ListRollouts lists rollouts, newest first.
func (s *Service) ListRollouts(ctx context.Context, by Actor, q RolloutQuery, page Page) ([]RolloutView, string, error) {
	if err := s.canReadRollouts(ctx, by.user); err != nil {
		return nil, "", err
	}
	f := store.RolloutFilter{Standing: q.Standing}
	if q.State != "" {
		if !rollout.State(q.State).Valid() {
			return nil, "", badRequest("state", "unknown state %q (known: %v)", q.State, rollout.States())
		}
		f.States = []string{q.State}
	}
	ros, next, err := s.st.ListRollouts(ctx, f, page.store())
	if err != nil {
		return nil, "", pageErr(err)
	}
	names := newNames(s.st)
	out := make([]RolloutView, 0, len(ros))
	for _, ro := range ros {
		v, err := s.rolloutView(ctx, s.st, names, ro, true)
		if err != nil {
			return nil, "", err
		}
		out = append(out, v)
	}
	return out, next, nil
}

// rolloutView builds what the API shows of a rollout; progress false leaves out what
// only a stored rollout has (a dry run's).
func (s *Service) rolloutView(ctx context.Context, r store.Reader, n *names, ro store.Rollout, progress bool) (RolloutView, error) {
	spec, err := decodeSpec(ro)
	if err != nil {
		return RolloutView{}, internal(err)
	}
	v := RolloutView{ID: ro.ID, Name: ro.Name, State: rollout.State(ro.State), Spec: spec, Standing: ro.Standing,
		BindingHash: ro.BindingHash, TargetCount: ro.TargetCount, CreatedBy: n.user(ctx, ro.CreatedBy), Created: ro.Created,
		Updated: ro.Updated, ApprovedAt: ro.ApprovedAt, CurrentWave: ro.CurrentWave, PauseKind: rollout.PauseKind(ro.PauseKind),
		PauseReason: ro.PauseReason, PausedBy: n.user(ctx, ro.PausedBy), PausedAt: ro.PausedAt, PauseRound: ro.PauseRound,
		FinishedAt: ro.FinishedAt, Approvers: []string{}, Waves: []RolloutWaveView{}}
	p, err := s.profileOfRollout(ctx, r, spec.Template.Profile, spec.Template.ProfileHash)
	if err != nil {
		return RolloutView{}, internal(err)
	}
	v.Required, _ = requiredApprovals(p)
	now := s.clock()
	st, err := statusOf(ctx, r, ro, spec, now)
	if err != nil {
		return RolloutView{}, AsError(err)
	}
	v.Overall = st.overall
	if !progress {
		return v, nil
	}
	if trip, err := decodeTrip(ro); err != nil {
		return RolloutView{}, internal(err)
	} else if trip != nil {
		t := trip.Trip
		v.Trip = &t
	}
	approvals, err := r.ListRolloutApprovals(ctx, ro.ID)
	if err != nil {
		return RolloutView{}, AsError(err)
	}
	seen := map[string]bool{}
	for _, a := range approvals {
		if a.Round == ro.PauseRound && a.BoundHash == ro.BindingHash && a.Verdict == jobs.VerdictApprove && !seen[a.ApproverID] {
			seen[a.ApproverID] = true
			v.Approvers = append(v.Approvers, n.user(ctx, a.ApproverID))
		}
	}
	v.Approvals = len(v.Approvers)
	state := rollout.State(ro.State)
	for i, t := range st.waves {
		name := "canary"
		if i > 0 {
			name = fmt.Sprintf("wave %d", i)
		}
		finished := i < ro.CurrentWave || state == rollout.StateCompleted || (i == ro.CurrentWave && !ro.WaveFinishedAt.IsZero())
		v.Waves = append(v.Waves, RolloutWaveView{Wave: i, Name: name, Size: t.Targets, Tally: t,
			Started: i < ro.CurrentWave || t.Targets-t.Pending > 0, Finished: finished})
	}
	if state == rollout.StateRunning || state == rollout.StateApproved {
		v.Waiting = rollout.Next(st.run).Waiting
	}
	done, err := r.RolloutDoneSince(ctx, ro.ID, now.Add(-rolloutRateSpan))
	if err != nil {
		return RolloutView{}, AsError(err)
	}
	v.RatePerMinute = rollout.RatePerMinute(done, rolloutRateSpan)
	if !state.Final() {
		v.ETA = rollout.ETA(st.overall.Pending+st.overall.Open, done, rolloutRateSpan)
	}
	return v, nil
}

// ListRolloutTargets lists a rollout's targets by seq with their jobs' progress, of one
// wave or outcome when asked.
func (s *Service) ListRolloutTargets(ctx context.Context, by Actor, id string, q RolloutTargetQuery, page Page) ([]RolloutTargetView, string, error) {
	if err := s.canReadRollouts(ctx, by.user); err != nil {
		return nil, "", err
	}
	if q.Outcome != "" && !q.Outcome.Valid() {
		return nil, "", badRequest("outcome", "unknown outcome %q (known: %v)", q.Outcome, rollout.Outcomes())
	}
	if q.Wave != nil && *q.Wave < 0 {
		return nil, "", badRequest("wave", "%d: waves count from 0 (the canary)", *q.Wave)
	}
	if _, err := s.getRollout(ctx, s.st, id); err != nil {
		return nil, "", err
	}
	f := store.RolloutTargetFilter{Wave: q.Wave}
	switch q.Outcome {
	case "":
	case rollout.OutcomePending:
		f.WithoutJob = true
	default:
		f.HasJob = true
	}
	limit := page.Limit
	if limit <= 0 {
		limit = store.DefaultPageLimit
	}
	limit = min(limit, store.MaxPageLimit)
	n := newNames(s.st)
	hosts := map[string]string{}
	var out []RolloutTargetView
	sp := store.Page{Limit: limit, Cursor: page.Cursor}
	if q.Outcome != "" && q.Outcome != rollout.OutcomePending {
		sp.Limit = store.MaxPageLimit // filtered here: read more at a time
	}
	for {
		ts, next, err := s.st.ListRolloutTargets(ctx, id, f, sp)
		if err != nil {
			return nil, "", pageErr(err)
		}
		views, err := s.targetViews(ctx, n, hosts, ts)
		if err != nil {
			return nil, "", err
		}
		for i, v := range views {
			if q.Outcome != "" && v.Outcome != q.Outcome {
				continue
			}
			out = append(out, v)
			if len(out) == limit {
				if i == len(views)-1 && next == "" {
					return out, "", nil
				}
				return out, store.RolloutTargetCursor(ts[i]), nil
			}
		}
		if next == "" {
			if out == nil {
				out = []RolloutTargetView{}
			}
			return out, "", nil
		}
		sp.Cursor = next
	}
}

// targetViews adds names and the jobs' progress to targets.
func (s *Service) targetViews(ctx context.Context, n *names, hosts map[string]string, ts []store.RolloutTarget) ([]RolloutTargetView, error) {
	var ids []string
	for _, t := range ts {
		if t.JobID != "" {
			ids = append(ids, t.JobID)
		}
	}
	byID := map[string]store.Job{}
	if len(ids) > 0 {
		js, err := s.st.GetJobs(ctx, ids)
		if err != nil {
			return nil, AsError(err)
		}
		for _, j := range js {
			byID[j.ID] = j
		}
	}
	out := make([]RolloutTargetView, len(ts))
	for i, t := range ts {
		host, ok := hosts[t.AgentID]
		if !ok {
			if a, err := s.st.GetAgent(ctx, t.AgentID); err == nil {
				host = a.Hostname
			}
			hosts[t.AgentID] = host
		}
		v := RolloutTargetView{Seq: t.Seq, Wave: t.Wave, AgentID: t.AgentID, Hostname: host, TokenSerial: t.TokenSerial,
			TokenModel: t.TokenModel, Holder: n.user(ctx, t.HolderID), Organization: n.org(ctx, t.OrganizationID),
			CertificateSerial: t.CertificateSerial, JobID: t.JobID, Outcome: rollout.OutcomePending}
		if j, ok := byID[t.JobID]; ok {
			v.JobState, v.ErrorCode, v.ErrorMessage = j.State, j.ErrorCode, j.ErrorMessage
			v.Outcome = rollout.Classify(j.State, j.ErrorCode)
		}
		out[i] = v
	}
	return out, nil
}
