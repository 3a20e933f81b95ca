package service

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// MaxAgentBatch bounds one EnrolAgents request: a thousand agents at the longest IDs,
// hostnames and broker users still fit the API's 1 MiB body.
const MaxAgentBatch = 1000

// entryErrorsShown bounds how many refused entries an error's message spells out; its
// Entries hold them all.
const entryErrorsShown = 3

// EnrolAgents records a batch of new agents (admin) in one transaction, by the rules of
// EnrolAgent, all or nothing: when any entry is malformed, repeats an ID or broker user of
// the batch, or has one that is taken, nothing is enrolled and the error's Entries name
// every such entry by position and ID. Each agent gets the agent.enrolled audit entry that
// EnrolAgent writes, with its position in the batch and the batch's size: an auditor
// follows one agent by its target, whichever way it was enrolled. The agents come back in
// the order given.
func (s *Service) EnrolAgents(ctx context.Context, by Actor, es []AgentEnrolment) ([]Agent, error) {
	actor := by.user
	if _, err := s.authorize(ctx, actor, "enrol agents", jobs.PermManageAgents, ""); err != nil {
		return nil, err
	}
	switch {
	case len(es) == 0:
		return nil, badRequest("agents", "is empty; give at least one agent")
	case len(es) > MaxAgentBatch:
		return nil, badRequest("agents", "holds %d agents, at most %d a request; send them in several requests", len(es), MaxAgentBatch)
	}
	es = append([]AgentEnrolment(nil), es...) // check trims and fills in: leave the caller's alone
	var problems []EntryError
	refuse := func(i int, e *Error) {
		problems = append(problems, EntryError{Index: i, ID: es[i].ID, Code: e.Code, Field: e.Field, Msg: e.Msg})
	}
	firstID := make(map[string]int, len(es))
	firstUser := make(map[string]int, len(es))
	valid := make([]int, 0, len(es)) // positions of the entries the store is given
	for i := range es {
		e := &es[i]
		if err := e.check(); err != nil {
			refuse(i, err)
			continue
		}
		if j, dup := firstID[e.ID]; dup {
			refuse(i, newErr(CodeConflict, "id", "ID %q is also entry %d of this request", e.ID, j))
			continue
		}
		firstID[e.ID] = i
		if j, dup := firstUser[e.BrokerUser]; dup {
			refuse(i, newErr(CodeConflict, "broker_user", "broker user %q is also entry %d's (%s) in this request", e.BrokerUser, j, es[j].ID))
			continue
		}
		firstUser[e.BrokerUser] = i
		valid = append(valid, i)
	}

	var out []store.Agent
	errRefused := errors.New("batch refused")
	err := s.update(ctx, func(t *txn) error {
		recs := make([]store.Agent, len(valid))
		for k, i := range valid {
			recs[k] = es[i].record(actor, t)
		}
		// Taken IDs are looked for even when other entries are already refused, so that
		// one answer names every entry to fix; the transaction is then rolled back.
		as, err := t.CreateAgents(ctx, recs)
		var be *store.AgentBatchError
		if errors.As(err, &be) {
			for _, p := range be.Problems {
				i := valid[p.Index]
				code := CodeConflict
				if !errors.Is(p.Err, store.ErrConflict) {
					code = CodeBadRequest
				}
				refuse(i, newErr(code, p.Field, "%s", storeReason(p.Err)))
			}
			return errRefused
		}
		if err != nil {
			return casLost(err) // a racing coordinator took a key: look again
		}
		if len(problems) > 0 {
			return errRefused
		}
		// One entry per agent, chained under one lock of the chain head.
		entries := make([]audit.Entry, len(as))
		for k, a := range as {
			entries[k] = enrolledEntry(actor, a, "batch_index", k, "batch_size", len(as))
			entries[k].Time = t.now
		}
		if _, err := t.AppendAudits(ctx, entries, audit.Seal); err != nil {
			return err
		}
		out = as
		return nil
	})
	if len(problems) > 0 {
		return nil, batchRefused(len(es), problems)
	}
	if err != nil {
		return nil, err
	}
	s.agentsEnrolled(ctx, out)
	return convert(out, agentOf), nil
}

// storeReason is a store error's message for clients, without the sentinel at its end.
func storeReason(err error) string {
	s := trimStore(err)
	for _, sentinel := range []error{store.ErrConflict, store.ErrInvalid, store.ErrNotFound} {
		s = strings.TrimSuffix(s, ": "+sentinel.Error())
	}
	return s
}

// batchRefused is the error of a batch of n entries refused for problems: bad_request
// when any entry is malformed (fix the request first), else conflict.
func batchRefused(n int, problems []EntryError) *Error {
	slices.SortStableFunc(problems, func(a, b EntryError) int {
		return cmp.Or(cmp.Compare(a.Index, b.Index), cmp.Compare(a.Field, b.Field))
	})
	code := CodeConflict
	for _, p := range problems {
		if p.Code != CodeConflict {
			code = CodeBadRequest
			break
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d of %d entries cannot be enrolled, so none was", len(problems), n)
	for k, p := range problems {
		if k == entryErrorsShown {
			fmt.Fprintf(&b, "; and %d more (see entries)", len(problems)-k)
			break
		}
		fmt.Fprintf(&b, "; entry %d (%q): %s: %s", p.Index, p.ID, p.Field, p.Msg)
	}
	return &Error{Code: code, Field: "agents", Msg: b.String(), Entries: problems}
}
