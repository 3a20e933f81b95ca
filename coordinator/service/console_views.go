package service

import (
	"context"
	"errors"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// AgentQuery filters SearchAgents; empty fields match everything.
type AgentQuery struct {
	State  store.AgentState
	Online *bool
	// Search keeps agents whose ID or hostname contains it, ignoring case.
	Search string
}

// SearchAgents lists agents by ID with their presence, filtered.
func (s *Service) SearchAgents(ctx context.Context, by Actor, q AgentQuery, page Page) ([]Agent, string, error) {
	if _, err := s.canRead(ctx, by.user, resFleet); err != nil {
		return nil, "", err
	}
	if q.State != "" && !q.State.Valid() {
		return nil, "", badRequest("state", "is %q: want pending, active, disabled or removed", q.State)
	}
	as, next, err := s.st.ListAgents(ctx, store.AgentFilter{State: q.State, Online: q.Online, Search: q.Search}, page.store())
	if err != nil {
		return nil, "", pageErr(err)
	}
	return convert(as, agentOf), next, nil
}

// TokenQuery filters SearchTokens; empty fields match everything.
type TokenQuery struct {
	Agent  string
	Holder string // username: tokens carrying one of the holder's certificates
	// Model keeps tokens whose model or manufacturer contains it, ignoring case.
	Model string
	// Search keeps tokens whose serial or label contains it, ignoring case.
	Search string
}

// SearchTokens lists tokens by serial, as agents last reported them, filtered.
func (s *Service) SearchTokens(ctx context.Context, by Actor, q TokenQuery, page Page) ([]Token, string, error) {
	if _, err := s.canRead(ctx, by.user, resFleet); err != nil {
		return nil, "", err
	}
	f := store.TokenFilter{AgentID: q.Agent, Model: q.Model, Search: q.Search}
	if q.Holder != "" {
		id, err := s.userID(ctx, "holder", q.Holder)
		if err != nil {
			return nil, "", err
		}
		f.HolderID = id
	}
	ts, next, err := s.st.ListTokens(ctx, f, page.store())
	if err != nil {
		return nil, "", pageErr(err)
	}
	out := convert(ts, tokenOf)
	for i := range out {
		l, err := tokenLifeOf(ctx, s.st, out[i].Serial)
		if err != nil {
			return nil, "", AsError(err)
		}
		out[i].State = l.State
	}
	return out, next, nil
}

// userID finds a user's ID by username for a filter; an unknown name is the field's error.
func (s *Service) userID(ctx context.Context, field, username string) (string, error) {
	u, err := s.st.GetUserByUsername(ctx, username)
	if errors.Is(err, store.ErrNotFound) {
		return "", badRequest(field, "no user named %q", username)
	}
	if err != nil {
		return "", AsError(err)
	}
	return u.ID, nil
}

// AuditQuery filters SearchAudit; empty fields match everything.
type AuditQuery struct {
	Action string
	// Actor is a username, or an actor as recorded for what is not a user (system:…).
	Actor string
	Job   string
}

// SearchAudit lists audit entries newest first, filtered, as stored (unverified: see
// VerifyAudit). Admin and auditor only.
func (s *Service) SearchAudit(ctx context.Context, by Actor, q AuditQuery, page Page) ([]AuditEntry, string, error) {
	if _, err := s.canRead(ctx, by.user, resAudit); err != nil {
		return nil, "", err
	}
	f := store.AuditFilter{Action: q.Action, JobID: q.Job, Newest: true, Actor: q.Actor}
	if q.Actor != "" {
		// A username is what people know; system actors are recorded as they are.
		u, err := s.st.GetUserByUsername(ctx, q.Actor)
		switch {
		case err == nil:
			f.Actor = u.ID
		case !errors.Is(err, store.ErrNotFound):
			return nil, "", AsError(err)
		}
	}
	es, next, err := s.st.ListAudit(ctx, f, page.store())
	if err != nil {
		return nil, "", pageErr(err)
	}
	names := newNames(s.st)
	out := make([]AuditEntry, len(es))
	for i, e := range es {
		out[i] = AuditEntry{Entry: e, ActorName: names.user(ctx, e.Actor)}
	}
	return out, next, nil
}

// expiryWarnings returns each current profile's expiry warning period (profiles without
// one are left out).
func (s *Service) expiryWarnings(ctx context.Context) (map[string]time.Duration, error) {
	profiles, err := s.st.ListProfiles(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]time.Duration{}
	for _, sp := range profiles {
		p, err := s.profiles.parse(sp)
		if err != nil {
			s.log.Warn().Err(err).Str("profile", sp.Name).Msg("expiry warning: profile does not parse")
			continue
		}
		if w := time.Duration(p.ExpiryWarning); w > 0 {
			out[sp.Name] = w
		}
	}
	return out, nil
}
