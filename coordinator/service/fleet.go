package service

import (
	"context"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// ListAgents lists agents by ID with their presence; state "" lists every state.
// SearchAgents filters further.
func (s *Service) ListAgents(ctx context.Context, by Actor, state store.AgentState, page Page) ([]Agent, string, error) {
	return s.SearchAgents(ctx, by, AgentQuery{State: state}, page)
}

// ListTokens lists tokens by serial, as agents last reported them. SearchTokens filters
// further.
func (s *Service) ListTokens(ctx context.Context, by Actor, agentID string, page Page) ([]Token, string, error) {
	return s.SearchTokens(ctx, by, TokenQuery{Agent: agentID}, page)
}

// Certificate is a stored certificate with its holder's username.
type Certificate struct {
	store.Certificate
	Holder string
	// ExpiryWarning is its profile's warning period before expiry (0: the profile has
	// none, or is gone).
	ExpiryWarning time.Duration
}

// CertificateQuery filters ListCertificates; empty fields match everything.
type CertificateQuery struct {
	Holder      string // username
	Agent       string
	TokenSerial string
	Profile     string
	// ExpiresBefore keeps certificates whose validity ends before it.
	ExpiresBefore time.Time
	Revoked       *bool
}

// ListCertificates lists certificates, newest first.
func (s *Service) ListCertificates(ctx context.Context, by Actor, q CertificateQuery, page Page) ([]Certificate, string, error) {
	actor := by.user
	p := page.store()
	if _, err := s.canRead(ctx, actor, resCertificates); err != nil {
		return nil, "", err
	}
	f := store.CertificateFilter{AgentID: q.Agent, TokenSerial: q.TokenSerial, Profile: q.Profile,
		ExpiresBefore: q.ExpiresBefore, Revoked: q.Revoked}
	if q.Holder != "" {
		id, err := s.userID(ctx, "holder", q.Holder)
		if err != nil {
			return nil, "", err
		}
		f.HolderID = id
	}
	cs, next, err := s.st.ListCertificates(ctx, f, p)
	if err != nil {
		return nil, "", pageErr(err)
	}
	warnings, err := s.expiryWarnings(ctx)
	if err != nil {
		return nil, "", AsError(err)
	}
	names := newNames(s.st)
	out := make([]Certificate, len(cs))
	for i, c := range cs {
		out[i] = Certificate{Certificate: c, Holder: names.user(ctx, c.HolderID), ExpiryWarning: warnings[c.Profile]}
	}
	return out, next, nil
}

// AuditEntry is an audit entry as stored, with the actor's username.
type AuditEntry struct {
	audit.Entry
	ActorName string // username, or the actor as recorded when it is not a user
}

// MaxAuditPage bounds one page of ListAudit.
const MaxAuditPage = 5000

// ListAudit returns up to limit audit entries after sequence number afterSeq, as stored,
// and the sequence number to continue after (0 when this was the last page). Admin and
// auditor only.
func (s *Service) ListAudit(ctx context.Context, by Actor, afterSeq int64, limit int) ([]AuditEntry, int64, error) {
	es, next, err := s.listAudit(ctx, by, afterSeq, limit)
	if err != nil {
		return nil, 0, err
	}
	names := newNames(s.st)
	out := make([]AuditEntry, len(es))
	for i, e := range es {
		out[i] = AuditEntry{Entry: e, ActorName: names.user(ctx, e.Actor)}
	}
	return out, next, nil
}

func (s *Service) listAudit(ctx context.Context, by Actor, afterSeq int64, limit int) ([]audit.Entry, int64, error) {
	actor := by.user
	if _, err := s.canRead(ctx, actor, resAudit); err != nil {
		return nil, 0, err
	}
	if afterSeq < 0 {
		return nil, 0, badRequest("after_seq", "must not be negative")
	}
	if limit < 1 || limit > MaxAuditPage {
		return nil, 0, badRequest("limit", "must be between 1 and %d", MaxAuditPage)
	}
	out := make([]audit.Entry, 0, min(limit, store.MaxPageLimit))
	p := store.Page{}
	for len(out) < limit {
		p.Limit = min(limit-len(out), store.MaxPageLimit)
		es, next, err := s.st.ListAudit(ctx, store.AuditFilter{FromSeq: afterSeq + 1}, p)
		if err != nil {
			return nil, 0, AsError(err)
		}
		out = append(out, es...)
		if next == "" {
			return out, 0, nil
		}
		p.Cursor = next
	}
	return out, out[len(out)-1].Seq, nil
}
