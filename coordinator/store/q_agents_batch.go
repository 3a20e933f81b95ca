package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/tokenfleet/tokenfleet/protocol"
)

// agentsPerStatement bounds one INSERT of CreateAgents: 12 parameters a row, well under
// both back ends' limits on parameters (SQLite 32,766, PostgreSQL 65,535).
const agentsPerStatement = 500

// AgentProblem is one agent of a CreateAgents batch that cannot be enrolled.
type AgentProblem struct {
	Index int    // position in the batch, from 0
	ID    string // the agent's ID as given
	Field string // "id", "hostname" or "broker_user"
	// Err says what is wrong; it wraps ErrInvalid (the agent is malformed) or ErrConflict
	// (its ID or broker user is taken, by a stored agent or an earlier one of the batch).
	Err error
}

// AgentBatchError lists every agent of a CreateAgents batch that cannot be enrolled.
// It wraps ErrInvalid when any agent is malformed, else ErrConflict.
type AgentBatchError struct {
	Problems []AgentProblem
}

func (e *AgentBatchError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "store: enrol agents: %d cannot be enrolled", len(e.Problems))
	for i, p := range e.Problems {
		if i == 3 {
			fmt.Fprintf(&b, "; and %d more", len(e.Problems)-i)
			break
		}
		fmt.Fprintf(&b, "; agent %d (%q): %v", p.Index, p.ID, p.Err)
	}
	return b.String()
}

func (e *AgentBatchError) Unwrap() error {
	for _, p := range e.Problems {
		if errors.Is(p.Err, ErrInvalid) {
			return ErrInvalid
		}
	}
	return ErrConflict
}

// CreateAgents enrols agents set-based: the IDs and broker users of the batch are looked
// up in one query and the agents inserted in one statement per agentsPerStatement. The
// batch is all or nothing: when any agent is malformed, repeats an ID or broker user of
// the batch, or has one that is taken, nothing is written and the *AgentBatchError names
// every such agent (a taken ID with the host holding it, as CreateAgent does). The agents
// are returned in the order given.
func (x *q) CreateAgents(ctx context.Context, as []Agent) ([]Agent, error) {
	const op = "enrol agents"
	if len(as) == 0 {
		return nil, nil
	}
	var problems []AgentProblem
	add := func(i int, field string, err error) {
		problems = append(problems, AgentProblem{Index: i, ID: as[i].ID, Field: field, Err: err})
	}
	// The first agent of the batch with each ID and broker user; only those are looked up.
	firstID := make(map[string]int, len(as))
	firstUser := make(map[string]int, len(as))
	lookup := make([]Agent, 0, len(as))
	for i := range as {
		a := &as[i]
		a.Enrolled = orNow(a.Enrolled)
		if err := checkAgentID("agent", a.ID); err != nil {
			add(i, "id", err)
			continue
		}
		if a.Hostname == "" {
			add(i, "hostname", fmt.Errorf("hostname is required: %w", ErrInvalid))
			continue
		}
		if j, dup := firstID[a.ID]; dup {
			add(i, "id", fmt.Errorf("ID %q is also agent %d of the batch: %w", a.ID, j, ErrConflict))
			continue
		}
		firstID[a.ID] = i
		if j, dup := firstUser[a.BrokerUser]; dup && a.BrokerUser != "" {
			add(i, "broker_user", fmt.Errorf("broker user %q is also agent %d's of the batch: %w", a.BrokerUser, j, ErrConflict))
			continue
		}
		if a.BrokerUser != "" {
			firstUser[a.BrokerUser] = i
		}
		lookup = append(lookup, *a)
	}
	taken, err := x.takenAgentKeys(ctx, lookup)
	if err != nil {
		return nil, err
	}
	for _, a := range lookup {
		if holder, ok := taken.ids[a.ID]; ok {
			add(firstID[a.ID], "id", fmt.Errorf("ID %q is already enrolled, held by host %q: %w", a.ID, holder, ErrConflict))
		}
		if holder, ok := taken.users[a.BrokerUser]; ok && a.BrokerUser != "" && holder != a.ID {
			add(firstID[a.ID], "broker_user", fmt.Errorf("broker user %q is taken by agent %q: %w", a.BrokerUser, holder, ErrConflict))
		}
	}
	if len(problems) > 0 {
		slices.SortStableFunc(problems, func(a, b AgentProblem) int {
			return cmp.Or(cmp.Compare(a.Index, b.Index), cmp.Compare(a.Field, b.Field))
		})
		return nil, &AgentBatchError{Problems: problems}
	}

	byID := make(map[string]Agent, len(as))
	for start := 0; start < len(as); start += agentsPerStatement {
		chunk := as[start:min(start+agentsPerStatement, len(as))]
		var b strings.Builder
		args := make([]any, 0, 12*len(chunk))
		for i, a := range chunk {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
			args = append(args, a.ID, a.Hostname, a.OS, a.Version, nullBytes(a.PublicKey), nullStr(a.BrokerUser),
				x.d.ts(a.Enrolled), x.d.ts(a.Approved), a.ApprovedBy, x.d.ts(a.LastSeen), x.d.ts(a.LastHeartbeat), a.Online)
		}
		// No ON CONFLICT: the keys were checked above in this transaction, and a racing
		// coordinator's insert of the same key fails the statement with ErrConflict.
		rows, err := x.query(ctx, `INSERT INTO agents (id, hostname, os, version, public_key, broker_user,
				enrolled_at, approved_at, approved_by, last_seen_at, last_heartbeat_at, online)
			VALUES `+b.String()+` RETURNING `+agentCols, args...)
		if err != nil {
			return nil, x.d.wrap(op, err)
		}
		got, err := collect(rows, x.d, op, func(r scanner) (Agent, error) { return scanAgent(r) })
		if err != nil {
			return nil, err
		}
		for _, a := range got {
			byID[a.ID] = a
		}
	}
	out := make([]Agent, len(as))
	for i, a := range as {
		s, ok := byID[a.ID]
		if !ok {
			return nil, fmt.Errorf("store: %s: agent %q inserted but not returned", op, a.ID)
		}
		out[i] = s
	}
	return out, nil
}

// takenKeys are the IDs (with the hostname holding each) and broker users (with the agent
// holding each) of a batch that stored agents already have.
type takenKeys struct {
	ids   map[string]string
	users map[string]string
}

// takenAgentKeys looks up which IDs and broker users of as are taken, agentsPerStatement
// agents a query.
func (x *q) takenAgentKeys(ctx context.Context, as []Agent) (takenKeys, error) {
	t := takenKeys{ids: map[string]string{}, users: map[string]string{}}
	for start := 0; start < len(as); start += agentsPerStatement {
		chunk := as[start:min(start+agentsPerStatement, len(as))]
		ids := make([]any, 0, len(chunk))
		users := make([]any, 0, len(chunk))
		for _, a := range chunk {
			ids = append(ids, a.ID)
			if a.BrokerUser != "" {
				users = append(users, a.BrokerUser)
			}
		}
		query := "SELECT id, hostname, broker_user FROM agents WHERE id IN (" + placeholders(len(ids)) + ")"
		if len(users) > 0 {
			query += " OR broker_user IN (" + placeholders(len(users)) + ")"
		}
		rows, err := x.query(ctx, query, append(ids, users...)...)
		if err != nil {
			return takenKeys{}, x.d.wrap("enrol agents: taken IDs", err)
		}
		type held struct{ id, host, user string }
		got, err := collect(rows, x.d, "enrol agents: taken IDs", func(r scanner) (held, error) {
			var h held
			err := r.Scan(&h.id, &h.host, strCol{&h.user})
			return h, err
		})
		if err != nil {
			return takenKeys{}, err
		}
		for _, h := range got {
			t.ids[h.id] = h.host
			if h.user != "" {
				t.users[h.user] = h.id
			}
		}
	}
	return t, nil
}

// checkAgentID accepts the IDs agents run with (protocol.ValidateAgentID), which name
// their queues and routing keys: lower case, '.' refused (a routing-key separator), '@'
// allowed (a user's session on a shared host, alice@ts-01).
func checkAgentID(what, id string) error {
	if err := protocol.ValidateAgentID(id); err != nil {
		return fmt.Errorf("%s: %w: %w", what, err, ErrInvalid)
	}
	return nil
}
