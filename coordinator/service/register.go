package service

import (
	"context"
	"errors"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/coordinator/tokenlife"
)

// Register states of an issued device.
const (
	DeviceIssued   = "issued"   // out with its holder
	DeviceReturned = "returned" // back: wiped, issued again, or (once tokens have states) retired or replaced
)

// Register is the crypto-device register of one organisation, or of all: every device
// issued, oldest first, as regulated users keep it.
type Register struct {
	Organization string // name; "" for every organisation
	Generated    time.Time
	Entries      []RegisterEntry
}

// RegisterEntry is one issued device with its names and its history.
type RegisterEntry struct {
	store.RegisterEntry
	Holder       string // username
	HolderName   string // display name ("" when the holder has none)
	Organization string // name
	State        string // DeviceIssued or DeviceReturned
	// ReturnReason says what took the device back ("" while it is out).
	ReturnReason string
	History      []RegisterEvent
}

// RegisterEvent is one step of a device's history: a transition of its issue job, or what
// took it back.
type RegisterEvent struct {
	At     time.Time
	State  string // a job state, or DeviceReturned
	Actor  string // username, or the actor as recorded when it is not a user
	Reason string
}

// RegisterQuery selects the register to read.
type RegisterQuery struct {
	Organization string // name; "" for the reader's own organisation, or every one for a reader of all
}

// ReadRegister returns the crypto-device register. It reads what the jobs read: who
// reads an organisation's jobs reads its register (the register shows nothing the jobs do
// not), the refusals audited likewise.
func (s *Service) ReadRegister(ctx context.Context, by Actor, q RegisterQuery) (Register, error) {
	actor := by.user
	sc, err := s.canRead(ctx, actor, resJobs)
	if err != nil {
		return Register{}, err
	}
	var f store.RegisterFilter
	if f.OrganizationID, err = orgIDOf(ctx, s.st, q.Organization); err != nil {
		return Register{}, AsError(err)
	}
	if f.OrganizationID, err = s.narrowList(ctx, actor, sc, f.OrganizationID, "crypto-device register"); err != nil {
		return Register{}, err
	}
	out := Register{Generated: s.clock(), Entries: []RegisterEntry{}}
	n := newNames(s.st)
	out.Organization = n.org(ctx, f.OrganizationID)
	users := map[string]store.User{}
	p := store.Page{Limit: store.MaxPageLimit}
	for {
		es, next, err := s.st.ListRegister(ctx, f, p)
		if err != nil {
			return Register{}, pageErr(err)
		}
		ids := make([]string, 0, 2*len(es))
		for _, e := range es {
			ids = append(ids, e.JobID)
		}
		timelines, err := s.st.ListJobEventsOf(ctx, ids)
		if err != nil {
			return Register{}, AsError(err)
		}
		for _, e := range es {
			v := RegisterEntry{RegisterEntry: e, Organization: n.org(ctx, e.OrganizationID), State: DeviceIssued}
			u, ok := users[e.HolderID]
			if !ok && e.HolderID != "" {
				if u, err = s.st.GetUser(ctx, e.HolderID); err != nil && !errors.Is(err, store.ErrNotFound) {
					return Register{}, AsError(err)
				}
				users[e.HolderID] = u
			}
			v.Holder, v.HolderName = u.Username, u.DisplayName
			if v.Holder == "" {
				v.Holder = e.HolderID
			}
			v.History = make([]RegisterEvent, 0, len(timelines[e.JobID])+1)
			for _, ev := range timelines[e.JobID] {
				v.History = append(v.History, RegisterEvent{At: ev.At, State: string(ev.To), Actor: n.user(ctx, ev.Actor), Reason: ev.Reason})
			}
			life, err := s.st.ListTokenLifeEvents(ctx, e.TokenSerial)
			if err != nil {
				return Register{}, AsError(err)
			}
			at, why, returned := deviceReturn(e, life)
			for _, le := range life {
				// The token's own states while this issue held it: lost, suspended, reinstated...
				if le.At.Before(e.Issued) || (returned && le.At.After(at)) || le.From == "" {
					continue
				}
				v.History = append(v.History, RegisterEvent{At: le.At, State: "token " + string(le.To), Actor: n.user(ctx, le.Actor), Reason: le.Reason})
			}
			if returned {
				v.State, v.Returned, v.ReturnReason = DeviceReturned, at, why
				v.History = append(v.History, RegisterEvent{At: at, State: DeviceReturned, Reason: why})
			}
			out.Entries = append(out.Entries, v)
		}
		if next == "" {
			return out, nil
		}
		p.Cursor = next
	}
}

// deviceReturn says whether and when an issued device came back, and why: the earliest of
// a later wipe or issue of the same token that succeeded, and the token leaving service for
// good after the issue (retired or replaced, tokenlife's final states).
func deviceReturn(e store.RegisterEntry, life []store.TokenLifeEvent) (time.Time, string, bool) {
	at, why := e.Returned, ""
	switch {
	case e.Returned.IsZero():
	case jobs.Kind(e.ReturnedByKind) == jobs.KindWipe:
		why = "token wiped by job " + e.ReturnedByJob
	default:
		why = "token issued again by job " + e.ReturnedByJob
	}
	for _, le := range life {
		if le.At.Before(e.Issued) || !tokenlife.Final(le.To) || (!at.IsZero() && !le.At.Before(at)) {
			continue
		}
		at, why = le.At, "token "+string(le.To)
		if le.Reason != "" {
			why += ": " + le.Reason
		}
		break
	}
	return at, why, !at.IsZero()
}
