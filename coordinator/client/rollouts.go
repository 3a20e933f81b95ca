package client

import (
	"context"
	"iter"
	"net/http"
	"net/url"
	"strconv"

	"github.com/tokenfleet/tokenfleet/coordinator/api"
	"github.com/tokenfleet/tokenfleet/coordinator/rollout"
)

// The rollout types of the API (package api), and the spec a rollout is created from.
type (
	RolloutSpec       = rollout.Spec
	RolloutCreate     = api.RolloutCreate
	RolloutDecision   = api.RolloutDecision
	Rollout           = api.Rollout
	RolloutList       = api.RolloutList
	RolloutWave       = api.RolloutWave
	RolloutTally      = api.RolloutTally
	RolloutTrip       = api.RolloutTrip
	RolloutCodeCount  = api.RolloutCodeCount
	RolloutExample    = api.RolloutExample
	RolloutPreview    = api.RolloutPreview
	RolloutGroup      = api.RolloutGroup
	RolloutTarget     = api.RolloutTarget
	RolloutTargetList = api.RolloutTargetList
)

// RolloutFilter narrows a list of rollouts; empty fields do not filter.
type RolloutFilter struct {
	State    rollout.State
	Standing *bool // true: standing rollouts only; false: one-off rollouts only
}

// RolloutTargetFilter narrows a rollout's targets; empty fields do not filter.
type RolloutTargetFilter struct {
	Wave    *int // 0 is the canary
	Outcome rollout.Outcome
}

// DryRunRollout shows what creating the rollout would do, creating nothing: its targets
// grouped, the first ones, its wave sizes and the binding hash it would have.
func (c *Client) DryRunRollout(ctx context.Context, s RolloutSpec) (Rollout, error) {
	var out Rollout
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/api/v1/rollouts",
		body: RolloutCreate{Spec: s, DryRun: true}, out: &out})
	return out, err
}

// CreateRollout creates a rollout (manage_rollouts), which then waits for approval. Like
// CreateJob, it sends a fresh random idempotency key, and sends the request again with
// that key when the connection closes before the answer: the coordinator then answers
// with the rollout the first request created, never a second one.
func (c *Client) CreateRollout(ctx context.Context, s RolloutSpec) (Rollout, error) {
	out, _, err := c.CreateRolloutWithKey(ctx, s, "")
	return out, err
}

// CreateRolloutWithKey is CreateRollout with the caller's idempotency key (1 to 255
// printable ASCII characters; "" draws a random one): a script that runs again with the
// same key and spec gets the rollout its first run created, as it is now and without its
// preview. replayed says the coordinator had created the rollout for an earlier request
// with the key; the same key with another spec is refused with the code
// idempotency_key_reused.
func (c *Client) CreateRolloutWithKey(ctx context.Context, s RolloutSpec, key string) (r Rollout, replayed bool, err error) {
	if key == "" {
		key = NewIdempotencyKey()
	}
	var got http.Header
	status, err := c.do(ctx, request{method: http.MethodPost, path: "/api/v1/rollouts", body: RolloutCreate{Spec: s},
		header: http.Header{api.IdempotencyKeyHeader: {key}}, resend: createResends, got: &got,
		want: []int{http.StatusCreated, http.StatusOK}, out: &r})
	if err != nil {
		return Rollout{}, false, err
	}
	return r, status == http.StatusOK && got.Get(api.ReplayedHeader) == "true", nil
}

// ListRollouts returns one page of rollouts, newest first, with their progress.
func (c *Client) ListRollouts(ctx context.Context, f RolloutFilter, p Page) (RolloutList, error) {
	q := p.values()
	set(q, "state", string(f.State))
	if f.Standing != nil {
		q.Set("standing", strconv.FormatBool(*f.Standing))
	}
	var l RolloutList
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/api/v1/rollouts", query: q, out: &l})
	return l, err
}

// AllRollouts yields every rollout f selects, newest first.
func (c *Client) AllRollouts(ctx context.Context, f RolloutFilter, pageSize int) iter.Seq2[Rollout, error] {
	return walk(ctx, pageSize, func(ctx context.Context, p Page) ([]Rollout, string, error) {
		l, err := c.ListRollouts(ctx, f, p)
		return l.Items, l.NextCursor, err
	})
}

// GetRollout returns one rollout with its progress.
func (c *Client) GetRollout(ctx context.Context, id string) (Rollout, error) {
	if err := needID("rollout ID", id); err != nil {
		return Rollout{}, err
	}
	var r Rollout
	_, err := c.do(ctx, request{method: http.MethodGet, path: rolloutPath(id), out: &r})
	return r, err
}

// ListRolloutTargets returns one page of a rollout's targets, in their frozen order.
func (c *Client) ListRolloutTargets(ctx context.Context, id string, f RolloutTargetFilter, p Page) (RolloutTargetList, error) {
	if err := needID("rollout ID", id); err != nil {
		return RolloutTargetList{}, err
	}
	q := p.values()
	if f.Wave != nil {
		q.Set("wave", strconv.Itoa(*f.Wave))
	}
	set(q, "outcome", string(f.Outcome))
	var l RolloutTargetList
	_, err := c.do(ctx, request{method: http.MethodGet, path: rolloutPath(id) + "/targets", query: q, out: &l})
	return l, err
}

// AllRolloutTargets yields every target of a rollout that f selects.
func (c *Client) AllRolloutTargets(ctx context.Context, id string, f RolloutTargetFilter, pageSize int) iter.Seq2[RolloutTarget, error] {
	return walk(ctx, pageSize, func(ctx context.Context, p Page) ([]RolloutTarget, string, error) {
		l, err := c.ListRolloutTargets(ctx, id, f, p)
		return l.Items, l.NextCursor, err
	})
}

// ApproveRollout approves the rollout as the approver reviewed it, bindingHash being the
// binding_hash they saw (the server refuses it with binding_mismatch when the rollout no
// longer has it): its approval, or after the brake tripped, its resumption.
func (c *Client) ApproveRollout(ctx context.Context, id, bindingHash, reason string) (Rollout, error) {
	return c.rolloutCall(ctx, id, "approve", RolloutDecision{BindingHash: bindingHash, Reason: reason})
}

// RejectRollout rejects the rollout (or its resumption) as reviewed; the server requires
// a reason.
func (c *Client) RejectRollout(ctx context.Context, id, bindingHash, reason string) (Rollout, error) {
	return c.rolloutCall(ctx, id, "reject", RolloutDecision{BindingHash: bindingHash, Reason: reason})
}

// PauseRollout pauses a running rollout: no new job; running ones finish.
func (c *Client) PauseRollout(ctx context.Context, id, reason string) (Rollout, error) {
	return c.rolloutCall(ctx, id, "pause", api.Reason{Reason: reason})
}

// ResumeRollout resumes a rollout an operator paused. One the brake paused is resumed by
// approvals (ApproveRollout); the server answers approval_required.
func (c *Client) ResumeRollout(ctx context.Context, id, reason string) (Rollout, error) {
	return c.rolloutCall(ctx, id, "resume", api.Reason{Reason: reason})
}

// PromoteRollout starts the next wave now, past the pause after the current one.
func (c *Client) PromoteRollout(ctx context.Context, id, reason string) (Rollout, error) {
	return c.rolloutCall(ctx, id, "promote", api.Reason{Reason: reason})
}

// AbortRollout ends the rollout: no new job, and its jobs not yet running are cancelled.
func (c *Client) AbortRollout(ctx context.Context, id, reason string) (Rollout, error) {
	return c.rolloutCall(ctx, id, "abort", api.Reason{Reason: reason})
}

func (c *Client) rolloutCall(ctx context.Context, id, verb string, body any) (Rollout, error) {
	if err := needID("rollout ID", id); err != nil {
		return Rollout{}, err
	}
	var r Rollout
	_, err := c.do(ctx, request{method: http.MethodPost, path: rolloutPath(id) + "/" + verb, body: body, out: &r})
	return r, err
}

func rolloutPath(id string) string { return "/api/v1/rollouts/" + url.PathEscape(id) }
