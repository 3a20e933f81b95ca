package httpapi

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/tokenfleet/tokenfleet/coordinator/api"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/rollout"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

// The rollouts of the API (/api/v1/rollouts): the handlers decode and encode; the rules
// (who may, the gate, the binding, the engine) are the service's.

func (a *server) createRollout(w http.ResponseWriter, r *http.Request, u service.Actor) {
	var in api.RolloutCreate
	if err := firstErr(noQuery(r), decodeWithPath(w, r, &in)); err != nil {
		a.fail(w, err)
		return
	}
	key, err := idempotencyKey(r)
	if err != nil {
		a.fail(w, err)
		return
	}
	v, err := a.svc.CreateRollout(r.Context(), u, service.RolloutRequest{Spec: in.Spec, DryRun: in.DryRun, IdempotencyKey: key})
	if err != nil {
		a.fail(w, specFields(err))
		return
	}
	status := http.StatusCreated
	switch {
	case v.Replayed:
		// As for jobs: the rollout an earlier request with this key created.
		w.Header().Set(api.ReplayedHeader, "true")
		status = http.StatusOK
	case in.DryRun:
		status = http.StatusOK
	}
	writeJSON(w, status, rolloutOut(v))
}

// specFields names a field of the spec as the request body has it: the spec's fields are
// the body's own, so "spec.plan.waves[1]" is "plan.waves[1]" here.
func specFields(err error) error {
	var e *service.Error
	if errors.As(err, &e) {
		if f, ok := strings.CutPrefix(e.Field, "spec."); ok {
			c := *e
			c.Field = f
			c.Msg = strings.ReplaceAll(c.Msg, e.Field, f)
			return &c
		}
	}
	return err
}

// decodeWithPath is decodeJSON (a required body) for a nested request, naming the whole
// path of the field at fault ("plan.pause.after") where encoding/json names only its last
// name, or none at all for a value its type refuses itself (a malformed duration).
func decodeWithPath(w http.ResponseWriter, r *http.Request, dst any) error {
	if err := checkMediaType(r, "application/json"); err != nil {
		return err
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxJSONBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return tooLarge(mbe.Limit)
		}
		return bad("", "reading the request body: %v", err)
	}
	r.Body = io.NopCloser(bytes.NewReader(data))
	err = decodeJSON(w, r, dst, true)
	if err == nil {
		return nil
	}
	path, leaf := api.ErrorPath(data, dst)
	if path == "" || leaf == nil {
		return err
	}
	return bad(path, "%v", leaf)
}

func (a *server) listRollouts(w http.ResponseWriter, r *http.Request, u service.Actor) {
	q, err := parseQuery(r, "limit", "cursor", "state", "standing")
	if err != nil {
		a.fail(w, err)
		return
	}
	p, err := q.page()
	if err != nil {
		a.fail(w, err)
		return
	}
	var standing *bool
	if q.get("standing") != "" {
		b, err := q.boolean("standing")
		if err != nil {
			a.fail(w, err)
			return
		}
		standing = &b
	}
	vs, next, err := a.svc.ListRollouts(r.Context(), u, service.RolloutQuery{State: q.get("state"), Standing: standing}, p)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, listOf(vs, next, rolloutOut))
}

func (a *server) getRollout(w http.ResponseWriter, r *http.Request, u service.Actor) {
	if err := noQuery(r); err != nil {
		a.fail(w, err)
		return
	}
	v, err := a.svc.GetRollout(r.Context(), u, r.PathValue("id"))
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, rolloutOut(v))
}

// maxWaves bounds the wave query parameter; no plan has that many.
const maxWaves = 1 << 20

func (a *server) listRolloutTargets(w http.ResponseWriter, r *http.Request, u service.Actor) {
	q, err := parseQuery(r, "limit", "cursor", "wave", "outcome")
	if err != nil {
		a.fail(w, err)
		return
	}
	p, err := q.page()
	if err != nil {
		a.fail(w, err)
		return
	}
	var wave *int
	if q.get("wave") != "" {
		n, err := q.integer("wave", 0, 0, maxWaves)
		if err != nil {
			a.fail(w, err)
			return
		}
		wn := int(n)
		wave = &wn
	}
	ts, next, err := a.svc.ListRolloutTargets(r.Context(), u, r.PathValue("id"),
		service.RolloutTargetQuery{Wave: wave, Outcome: rollout.Outcome(q.get("outcome"))}, p)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, listOf(ts, next, rolloutTargetOut))
}

func (a *server) approveRollout(w http.ResponseWriter, r *http.Request, u service.Actor) {
	a.decideRollout(w, r, u, jobs.VerdictApprove)
}

func (a *server) rejectRollout(w http.ResponseWriter, r *http.Request, u service.Actor) {
	a.decideRollout(w, r, u, jobs.VerdictReject)
}

func (a *server) decideRollout(w http.ResponseWriter, r *http.Request, u service.Actor, verdict jobs.Verdict) {
	var in api.RolloutDecision
	if err := firstErr(noQuery(r), decodeJSON(w, r, &in, true)); err != nil {
		a.fail(w, err)
		return
	}
	// One approval starts thousands of jobs: it is bound to what the approver saw, never
	// to the rollout as it happens to be.
	if in.BindingHash == "" {
		a.fail(w, bad("binding_hash", "missing: send the rollout's binding_hash as you reviewed it (GET /api/v1/rollouts/{id})"))
		return
	}
	v, err := a.svc.DecideRollout(r.Context(), u, r.PathValue("id"),
		service.RolloutVote{Verdict: verdict, BindingHash: in.BindingHash, Reason: in.Reason})
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, rolloutOut(v))
}

// rolloutAction is pause, resume, promote or abort: a reason, and the rollout after.
func (a *server) rolloutAction(act func(ctx context.Context, by service.Actor, id, reason string) (service.RolloutView, error)) func(w http.ResponseWriter, r *http.Request, u service.Actor) {
	return func(w http.ResponseWriter, r *http.Request, u service.Actor) {
		var in api.Reason
		if err := firstErr(noQuery(r), decodeJSON(w, r, &in, false)); err != nil {
			a.fail(w, err)
			return
		}
		v, err := act(r.Context(), u, r.PathValue("id"), in.Reason)
		if err != nil {
			a.fail(w, err)
			return
		}
		writeJSON(w, http.StatusOK, rolloutOut(v))
	}
}

// The service's rollout views as the API's types. Lists are never null.

func rolloutOut(v service.RolloutView) api.Rollout {
	out := api.Rollout{ID: v.ID, Name: v.Name, State: v.State, Spec: v.Spec, Standing: v.Standing, BindingHash: v.BindingHash,
		TargetCount: v.TargetCount, CreatedBy: v.CreatedBy, Created: v.Created, Updated: v.Updated, ApprovedAt: v.ApprovedAt,
		Approvals: v.Approvals, Required: v.Required, Approvers: nonNil(v.Approvers), CurrentWave: v.CurrentWave,
		Waves: make([]api.RolloutWave, len(v.Waves)), Overall: tallyOut(v.Overall), PauseKind: v.PauseKind,
		PauseReason: v.PauseReason, PausedBy: v.PausedBy, PausedAt: v.PausedAt, PauseRound: v.PauseRound,
		Waiting: v.Waiting, RatePerMinute: v.RatePerMinute, ETASeconds: int64(v.ETA.Seconds()), FinishedAt: v.FinishedAt}
	for i, wv := range v.Waves {
		out.Waves[i] = api.RolloutWave{Wave: wv.Wave, Name: wv.Name, Size: wv.Size, Tally: tallyOut(wv.Tally),
			Started: wv.Started, Finished: wv.Finished}
	}
	if v.Trip != nil {
		out.Trip = tripOut(*v.Trip)
	}
	if p := v.Preview; p != nil {
		out.Preview = &api.RolloutPreview{Targets: p.Targets, ByOrganization: groupsOut(p.ByOrganization),
			ByAgentState: groupsOut(p.ByAgentState), ByTokenModel: groupsOut(p.ByTokenModel), WaveSizes: nonNil(p.WaveSizes),
			First: make([]api.RolloutTarget, len(p.First)), Skipped: make([]api.RolloutSkip, len(p.Skipped)),
			SkippedCount: p.SkippedCount}
		for i, t := range p.First {
			out.Preview.First[i] = rolloutTargetOut(t)
		}
		for i, s := range p.Skipped {
			out.Preview.Skipped[i] = api.RolloutSkip{AgentID: s.AgentID, TokenSerial: s.TokenSerial,
				CertificateSerial: s.CertificateSerial, Reason: s.Reason}
		}
	}
	return out
}

func tallyOut(t rollout.Tally) api.RolloutTally {
	out := api.RolloutTally{Targets: t.Targets, Pending: t.Pending, Open: t.Open, Succeeded: t.Succeeded,
		Cancelled: t.Cancelled, Failures: map[rollout.Outcome]int{}, ByCode: map[string]int{}, Executed: t.Executed()}
	for k, n := range t.Failures {
		out.Failures[k] = n
	}
	for k, n := range t.ByCode {
		out.ByCode[k] = n
	}
	return out
}

func tripOut(t rollout.Trip) *api.RolloutTrip {
	out := &api.RolloutTrip{Scope: t.Scope, Wave: t.Wave, Executed: t.Executed, Failed: t.Failed, Percent: t.Percent,
		Threshold: t.Threshold, ByCode: make([]api.RolloutCodeCount, len(t.ByCode)), At: t.At, Summary: t.Summary()}
	for i, c := range t.ByCode {
		cc := api.RolloutCodeCount{Code: c.Code, Count: c.Count, Examples: make([]api.RolloutExample, len(c.Examples))}
		for j, x := range c.Examples {
			cc.Examples[j] = api.RolloutExample{JobID: x.JobID, AgentID: x.AgentID, Message: x.Message}
		}
		out.ByCode[i] = cc
	}
	return out
}

func groupsOut(gs []service.RolloutGroup) []api.RolloutGroup {
	out := make([]api.RolloutGroup, len(gs))
	for i, g := range gs {
		out[i] = api.RolloutGroup{Key: g.Key, Count: g.Count}
	}
	return out
}

func rolloutTargetOut(t service.RolloutTargetView) api.RolloutTarget {
	return api.RolloutTarget{Seq: t.Seq, Wave: t.Wave, AgentID: t.AgentID, Hostname: t.Hostname, TokenSerial: t.TokenSerial,
		TokenModel: t.TokenModel, Holder: t.Holder, Organization: t.Organization, CertificateSerial: t.CertificateSerial,
		JobID: t.JobID, JobState: t.JobState, Outcome: t.Outcome, ErrorCode: t.ErrorCode, ErrorMessage: t.ErrorMessage}
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
