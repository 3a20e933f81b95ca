package executor

import (
	"time"

	"github.com/tokenfleet/tokenfleet/agent/journal"
)

// Observer hears how job attempts end and how long steps take on the token, for the
// agent's metrics. Its methods must return quickly.
type Observer interface {
	// JobFinished: an attempt of kind ended with outcome (succeeded, failed, cancelled,
	// superseded).
	JobFinished(kind, outcome string)
	// TokenOperation: a step (the operation) succeeded on a token of model in took.
	TokenOperation(operation, model string, took time.Duration)
}

type nopObserver struct{}

func (nopObserver) JobFinished(string, string)                   {}
func (nopObserver) TokenOperation(string, string, time.Duration) {}

// outcome names how an attempt ended, in the words the metrics use.
func outcome(s journal.State) string {
	if s == journal.StateDone {
		return "succeeded"
	}
	return string(s)
}

// model is the model of the token the run works on, "none" when it has none (an
// inventory of every token).
func (r *run) model() string {
	if r.slot.Token == nil {
		return "none"
	}
	return r.slot.Token.Model
}
