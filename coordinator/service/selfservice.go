package service

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/profile"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/coordinator/tokenlife"
)

// Self-service: a holder without a role acts on their own tokens, through the operations
// the help desk uses, where a profile's self_service allows it. A holder's token is one
// the fleet reports (an agent saw it) and that is theirs: its life-cycle record names
// them, or else its newest certificate does. A job is asked for at the agent that last
// reported the token, so a holder cannot aim a job at another workstation. A first
// issuance on a blank token stays with the help desk: a blank token is nobody's yet.

// selfRequest judges a holder's request for themselves (r.Holder is the actor): it
// returns the refusal, or nil when the profile and the token allow it.
func (t *txn) selfRequest(ctx context.Context, r JobRequest, p profile.Profile, holder store.User) (*Error, error) {
	switch r.Kind {
	case jobs.KindIssue, jobs.KindRenew:
		if !p.SelfService.Request {
			return forbidden("profile %s does not let holders request for themselves (self_service.request); ask the help desk", p.Name), nil
		}
	case jobs.KindUnblockPIN:
		if !p.SelfService.UnblockPIN {
			return forbidden("profile %s does not let holders unblock their PIN themselves (self_service.unblock_pin); ask the help desk", p.Name), nil
		}
	default:
		return forbidden("a holder may queue only %s, %s or %s jobs for themselves, not %s", jobs.KindIssue, jobs.KindRenew, jobs.KindUnblockPIN, r.Kind), nil
	}
	if r.TokenSerial == "" {
		return &Error{Code: CodeBadRequest, Field: "token_serial", Msg: "a request for yourself names your token"}, nil
	}
	if refusal, err := t.ownToken(ctx, r.TokenSerial, r.Agent, holder); err != nil || refusal != nil {
		return refusal, err
	}
	if r.Kind == jobs.KindIssue {
		return nil, nil // a new certificate of a profile that lets holders ask for it
	}
	// A renewal or an unblock acts on what the token carries: the profile of the holder's
	// newest certificate on it decides, not one the holder names (whose self_service
	// might allow what the token's does not).
	newest, _, err := t.ListCertificates(ctx, store.CertificateFilter{TokenSerial: r.TokenSerial, HolderID: holder.ID}, store.Page{Limit: 1})
	if err != nil {
		return nil, err
	}
	if len(newest) > 0 && newest[0].Profile != p.Name {
		return &Error{Code: CodeForbidden, Field: "profile", Msg: "token " + r.TokenSerial + " carries a certificate of profile " + newest[0].Profile +
			", not " + p.Name + ": a " + string(r.Kind) + " for yourself is asked with the token's profile"}, nil
	}
	return nil, nil
}

// ownToken refuses a token that is not holder's, or not at agent (when agent is not "").
func (t *txn) ownToken(ctx context.Context, serial, agent string, holder store.User) (*Error, error) {
	tok, err := t.GetToken(ctx, serial)
	if errors.Is(err, store.ErrNotFound) {
		return forbidden("no agent has reported token %s: only a token the fleet sees can be yours", serial), nil
	}
	if err != nil {
		return nil, err
	}
	_, owner, err := t.tokenOwner(ctx, serial)
	if err != nil {
		return nil, err
	}
	if owner.ID == "" || owner.ID != holder.ID {
		return forbidden("token %s is not yours (%s): a holder acts only on their own tokens", serial, holder.Username), nil
	}
	if agent != "" && tok.AgentID != agent {
		return &Error{Code: CodeForbidden, Field: "agent", Msg: "token " + serial + " was last reported at agent " + tok.AgentID + ", not " + agent + ": ask for it where the token is"}, nil
	}
	return nil, nil
}

// selfServiceOf is what profile name lets its holders do now (nothing when it is gone).
func (s *Service) selfServiceOf(ctx context.Context, r store.Reader, name string) (profile.SelfService, error) {
	sp, err := r.GetProfile(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return profile.SelfService{}, nil
	}
	if err != nil {
		return profile.SelfService{}, err
	}
	p, err := s.profiles.parse(sp)
	if err != nil {
		return profile.SelfService{}, err
	}
	return p.SelfService, nil
}

// MyToken is one of the signed-in holder's tokens with what they may do with it.
type MyToken struct {
	Serial   string
	AgentID  string // the agent that last reported it; "" when none did
	Label    string
	LastSeen time.Time
	State    tokenlife.State
	// Certificates are the holder's certificates on it, newest first.
	Certificates []Certificate
	// Profile is the profile of the newest certificate, which a renewal uses.
	Profile string
	// CanRequest and CanUnblock: the profile lets the holder request a renewal, or an
	// unblock, themselves (and the token is where an agent can do it).
	CanRequest, CanUnblock bool
	// PINJob is the job whose user PIN the holder may still see once ("" for none).
	PINJob string
}

// MyTokens is what the signed-in holder has: their tokens and their recent jobs.
type MyTokens struct {
	Tokens []MyToken
	Jobs   []Job // newest first
}

// myLimit bounds what MyTokens reads: a holder has a few tokens, not hundreds.
const myLimit = 100

// MyTokens lists the actor's own tokens and certificates and their recent jobs. Anyone
// signed in may: it shows only what is theirs.
func (s *Service) MyTokens(ctx context.Context, by Actor) (MyTokens, error) {
	me := by.user
	if me.Disabled {
		return MyTokens{}, forbidden("user %s is disabled", me.Username)
	}
	certs, _, err := s.st.ListCertificates(ctx, store.CertificateFilter{HolderID: me.ID}, store.Page{Limit: myLimit})
	if err != nil {
		return MyTokens{}, AsError(err)
	}
	warnings, err := s.expiryWarnings(ctx)
	if err != nil {
		return MyTokens{}, AsError(err)
	}
	var out MyTokens
	index := map[string]int{}
	for _, c := range certs {
		if c.TokenSerial == "" {
			continue
		}
		i, ok := index[c.TokenSerial]
		if !ok {
			i = len(out.Tokens)
			index[c.TokenSerial] = i
			out.Tokens = append(out.Tokens, MyToken{Serial: c.TokenSerial, Profile: c.Profile})
		}
		out.Tokens[i].Certificates = append(out.Tokens[i].Certificates, Certificate{Certificate: c, Holder: me.Username, ExpiryWarning: warnings[c.Profile]})
	}
	for i := range out.Tokens {
		if err := s.myToken(ctx, me, &out.Tokens[i]); err != nil {
			return MyTokens{}, AsError(err)
		}
	}
	// Tokens last certified for someone else are not theirs any more.
	out.Tokens = slices.DeleteFunc(out.Tokens, func(m MyToken) bool { return m.State == "" })
	js, _, err := s.st.ListJobs(ctx, store.JobFilter{HolderID: me.ID}, store.Page{Limit: 20})
	if err != nil {
		return MyTokens{}, AsError(err)
	}
	n := newNames(s.st)
	for _, j := range js {
		v, err := s.jobView(ctx, s.st, n, j)
		if err != nil {
			return MyTokens{}, err
		}
		out.Jobs = append(out.Jobs, v)
	}
	return out, nil
}

// myToken fills in m (which has its certificates) for holder me; m.State stays "" when
// the token is not theirs after all.
func (s *Service) myToken(ctx context.Context, me store.User, m *MyToken) error {
	tok, err := s.st.GetToken(ctx, m.Serial)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return err
	default:
		m.AgentID, m.Label, m.LastSeen = tok.AgentID, tok.Label, tok.LastSeen
	}
	l, owner, err := tokenHolderID(ctx, s.st, m.Serial)
	if err != nil {
		return err
	}
	if owner != "" && owner != me.ID {
		return nil
	}
	m.State = l.State
	ss, err := s.selfServiceOf(ctx, s.st, m.Profile)
	if err != nil {
		return err
	}
	m.CanRequest = ss.Request && m.AgentID != "" && l.State == tokenlife.Active
	m.CanUnblock = ss.UnblockPIN && m.AgentID != "" && l.State == tokenlife.Active
	pin, err := s.st.GetTokenPIN(ctx, m.Serial, store.PINPurposeUser)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if !pin.Revealed.IsZero() || pin.JobID == "" {
		return nil
	}
	j, err := s.st.GetJob(ctx, pin.JobID)
	if err != nil {
		return err
	}
	if j.HolderID != me.ID || j.State != jobs.StateSucceeded {
		return nil
	}
	if pss, err := s.selfServiceOf(ctx, s.st, j.ProfileName); err != nil {
		return err
	} else if pss.RevealPIN {
		m.PINJob = j.ID
	}
	return nil
}
