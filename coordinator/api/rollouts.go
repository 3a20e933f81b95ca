package api

import (
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/rollout"
)

// The rollout's own spec (rollout.Spec: template, selector, plan, brake) is the request
// and the file tokenfleetctl reads: one definition, snake_case keys, durations as "30d",
// "12h" or "1h30m". The views below are the rollout as the coordinator reports it.

// The lists of rollouts.
type (
	RolloutList       = List[Rollout]
	RolloutTargetList = List[RolloutTarget]
)

// RolloutCreate creates a rollout: the spec's fields, and DryRun to see its targets and
// waves without creating anything.
type RolloutCreate struct {
	rollout.Spec
	DryRun bool `json:"dry_run,omitempty"`
}

// RolloutDecision approves or rejects a rollout, or approves its resumption after the
// brake tripped. BindingHash is the rollout's binding_hash as the approver reviewed it: a
// rollout that no longer has it is not decided (binding_mismatch).
type RolloutDecision struct {
	BindingHash string `json:"binding_hash"`
	Reason      string `json:"reason,omitempty"` // required to reject
}

// Rollout is a rollout with its progress.
type Rollout struct {
	ID          string        `json:"id"`
	Name        string        `json:"name"`
	State       rollout.State `json:"state"`
	Spec        rollout.Spec  `json:"spec"`
	Standing    bool          `json:"standing"`
	BindingHash string        `json:"binding_hash"`
	TargetCount int           `json:"target_count"`
	CreatedBy   string        `json:"created_by"` // username
	Created     time.Time     `json:"created"`
	Updated     time.Time     `json:"updated"`
	ApprovedAt  time.Time     `json:"approved_at,omitzero"`
	// Approvals of Required are the valid approvals of the current round: the rollout's
	// own, or, after the brake tripped, those of its resumption. Approvers are their
	// usernames.
	Approvals   int           `json:"approvals"`
	Required    int           `json:"required"`
	Approvers   []string      `json:"approvers"`
	CurrentWave int           `json:"current_wave"`
	Waves       []RolloutWave `json:"waves"`
	Overall     RolloutTally  `json:"overall"`
	// PauseKind says why a paused rollout creates no job: operator, brake, promote or
	// profile_changed; "" when it is not paused.
	PauseKind   rollout.PauseKind `json:"pause_kind,omitempty"`
	PauseReason string            `json:"pause_reason,omitempty"`
	PausedBy    string            `json:"paused_by,omitempty"`
	PausedAt    time.Time         `json:"paused_at,omitzero"`
	PauseRound  int               `json:"pause_round"` // how many times the brake tripped
	Trip        *RolloutTrip      `json:"trip,omitempty"`
	// Waiting says why a running rollout creates no job now (a maintenance window, the
	// pause between waves, the concurrency cap).
	Waiting       string    `json:"waiting,omitempty"`
	RatePerMinute float64   `json:"rate_per_minute"` // jobs ended per minute, recently
	ETASeconds    int64     `json:"eta_seconds"`     // 0: unknown
	FinishedAt    time.Time `json:"finished_at,omitzero"`
	// Preview is what the selector found: on creation and on a dry run only.
	Preview *RolloutPreview `json:"preview,omitempty"`
}

// RolloutWave is one wave's progress; wave 0 is the canary.
type RolloutWave struct {
	Wave     int          `json:"wave"`
	Name     string       `json:"name"` // "canary", "wave 1", ...
	Size     int          `json:"size"`
	Tally    RolloutTally `json:"tally"`
	Started  bool         `json:"started"`
	Finished bool         `json:"finished"`
}

// RolloutTally counts the targets of a wave, or of the whole rollout, by outcome.
type RolloutTally struct {
	Targets   int `json:"targets"`
	Pending   int `json:"pending"` // no job yet
	Open      int `json:"open"`    // a job not ended yet
	Succeeded int `json:"succeeded"`
	Cancelled int `json:"cancelled"`
	// Failures counts the failure outcomes: failed, timed_out, refused, token_absent.
	Failures map[rollout.Outcome]int `json:"failures"`
	// ByCode counts the failures by error code.
	ByCode map[string]int `json:"by_code"`
	// Executed is succeeded plus every failure: what the brake's percentage is of.
	Executed int `json:"executed"`
}

// RolloutTrip is why the brake stopped the rollout.
type RolloutTrip struct {
	Scope     string             `json:"scope"` // "overall" or "wave 2"
	Wave      int                `json:"wave"`  // -1 for overall
	Executed  int                `json:"executed"`
	Failed    int                `json:"failed"`
	Percent   float64            `json:"percent"`
	Threshold float64            `json:"threshold_percent"`
	ByCode    []RolloutCodeCount `json:"by_code"`
	At        time.Time          `json:"at"`
	Summary   string             `json:"summary"` // the trip in one line
}

// RolloutCodeCount is how many failures had one error code, with a few examples.
type RolloutCodeCount struct {
	Code     string           `json:"code"`
	Count    int              `json:"count"`
	Examples []RolloutExample `json:"examples"`
}

// RolloutExample is one failed job of a rollout.
type RolloutExample struct {
	JobID   string `json:"job_id"`
	AgentID string `json:"agent_id"`
	Message string `json:"message"`
}

// RolloutPreview is what a rollout's selector found: its targets grouped, its waves, the
// first targets and what it found but cannot target.
type RolloutPreview struct {
	Targets        int             `json:"targets"`
	ByOrganization []RolloutGroup  `json:"by_organization"`
	ByAgentState   []RolloutGroup  `json:"by_agent_state"`
	ByTokenModel   []RolloutGroup  `json:"by_token_model"`
	WaveSizes      []int           `json:"wave_sizes"`
	First          []RolloutTarget `json:"first"`
	Skipped        []RolloutSkip   `json:"skipped"`
	SkippedCount   int             `json:"skipped_count"`
}

// RolloutGroup is how many targets share one key (an organisation, a state, a model).
type RolloutGroup struct {
	Key   string `json:"key"`
	Count int    `json:"count"`
}

// RolloutSkip is something the selector found that cannot be a target, and why.
type RolloutSkip struct {
	AgentID           string `json:"agent_id"`
	TokenSerial       string `json:"token_serial,omitempty"`
	CertificateSerial string `json:"certificate_serial,omitempty"`
	Reason            string `json:"reason"`
}

// RolloutTarget is one target of a rollout: where a job goes, and how its job went.
type RolloutTarget struct {
	Seq               int             `json:"seq"`
	Wave              int             `json:"wave"`
	AgentID           string          `json:"agent_id"`
	Hostname          string          `json:"hostname,omitempty"`
	TokenSerial       string          `json:"token_serial,omitempty"`
	TokenModel        string          `json:"token_model,omitempty"`
	Holder            string          `json:"holder,omitempty"` // username
	Organization      string          `json:"organization,omitempty"`
	CertificateSerial string          `json:"certificate_serial,omitempty"`
	JobID             string          `json:"job_id,omitempty"`
	JobState          jobs.State      `json:"job_state,omitempty"`
	Outcome           rollout.Outcome `json:"outcome"`
	ErrorCode         string          `json:"error_code,omitempty"`
	ErrorMessage      string          `json:"error_message,omitempty"`
}
