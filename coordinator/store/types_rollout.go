package store

import (
	"encoding/json"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
)

// Rollout is one approved request for many jobs, made in waves. The store keeps what the
// rollout package decides (spec, states, waves, pauses) without reading it: Spec and
// Trip are kept as given, State and PauseKind are that package's names.
type Rollout struct {
	ID          string // random and URL-safe; generated when empty
	Name        string
	State       string          // rollout.State
	Spec        json.RawMessage // kept byte for byte: what the approvers approved
	Standing    bool
	ProfileName string // the template's profile; one open standing rollout per profile
	BindingHash string
	// TargetCount is how many targets the rollout has: set by CreateRollout and
	// AddRolloutTargets, never by UpdateRollout.
	TargetCount int
	CreatedBy   string // user ID
	Created     time.Time
	Updated     time.Time // the store's time of the last write
	ApprovedAt  time.Time

	CurrentWave    int       // 0: the canary
	WaveFinishedAt time.Time // when every job of CurrentWave ended; zero while not
	Promoted       bool      // promoted past the pause after CurrentWave

	PauseKind   string // rollout.PauseKind; "" when not paused
	PauseReason string
	PausedBy    string
	PausedAt    time.Time
	PauseRound  int             // brake trips so far: approvals of round n resume after the n-th
	Trip        json.RawMessage // the last brake trip (rollout.Trip as JSON); nil for none

	FinishedAt time.Time
	Version    int64 // row version for compare-and-set; 1 on creation, +1 per UpdateRollout

	// IdempotencyKey is the key the creator's request carried ("" for none): unique per
	// creator, it finds the rollout again (GetRolloutByIdempotencyKey). RequestHash says
	// which request it named. Both are written by CreateRollout only.
	IdempotencyKey string
	RequestHash    string
}

// RolloutTarget is one job a rollout makes: at most one, ever (JobID is set once).
type RolloutTarget struct {
	RolloutID         string
	Seq               int // 1.. in the frozen order
	Wave              int // 0: the canary
	AgentID           string
	TokenSerial       string
	HolderID          string
	CertificateSerial string
	TokenModel        string
	OrganizationID    string
	JobID             string // "" until its job is made
	Added             time.Time
}

// RolloutApproval is one approver's decision on a rollout, bound to the hash approved.
// Round 0 decides on the rollout itself; round n on resuming it after the n-th brake trip.
type RolloutApproval struct {
	ID         int64
	RolloutID  string
	ApproverID string
	Verdict    jobs.Verdict
	BoundHash  string
	Round      int
	Reason     string
	At         time.Time
}

// RolloutFilter selects rollouts; empty fields match everything. Rollouts are listed
// newest first.
type RolloutFilter struct {
	States      []string
	Standing    *bool
	ProfileName string
}

// RolloutTargetFilter selects a rollout's targets; they are listed by seq.
type RolloutTargetFilter struct {
	Wave       *int
	WithoutJob bool // only targets that have no job yet
	HasJob     bool // only targets that have their job
}

// RolloutCount is one row of a rollout's progress: N targets of Wave whose job is in
// State with ErrorCode as its last error. State "" counts targets without a job yet.
type RolloutCount struct {
	Wave      int
	State     jobs.State
	ErrorCode string
	N         int
}

// RolloutJobLink gives the target Seq its job.
type RolloutJobLink struct {
	Seq   int
	JobID string
}
