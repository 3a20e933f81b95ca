package rollout

import (
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
)

// The signatures other packages code against; a change must fail to compile here first.
var (
	_ func(State) bool                            = State.Valid
	_ func(State) bool                            = State.Final
	_ func(*Spec)                                 = (*Spec).Normalize
	_ func(Spec) error                            = Spec.Validate
	_ func(Plan, []Target) []int                  = AssignWaves
	_ func(Plan, int) int                         = NextWave
	_ func(Spec) *Hasher                          = NewHasher
	_ func(*Hasher, Target)                       = (*Hasher).Add
	_ func(*Hasher) string                        = (*Hasher).Sum
	_ func(Spec, []Target) string                 = BindingHash
	_ func(jobs.State, string) Outcome            = Classify
	_ func(Tally) int                             = Tally.Executed
	_ func(int, []Count) (Tally, []Tally)         = Tallies
	_ func(Trip) string                           = Trip.Summary
	_ func(Brake, Tally, []Tally) *Trip           = CheckBrake
	_ func([]Window, time.Time) (bool, time.Time) = InWindow
	_ func(Run) Step                              = Next
	_ func(int, int, time.Duration) time.Duration = ETA
	_ error                                       = (*FieldError)(nil)
	_                                             = Count{Wave: 0, State: jobs.StateFailed, ErrorCode: "", N: 1}
	_                                             = Example{JobID: "", AgentID: "", Message: ""}
	_                                             = CodeCount{Code: "", Count: 0, Examples: nil}
	_                                             = Target{Seq: 1, Wave: 0, AgentID: "", TokenSerial: "", HolderID: "", CertificateSerial: "", TokenModel: "", OrganizationID: ""}
	_ time.Duration                               = time.Duration(Duration(0))
)
