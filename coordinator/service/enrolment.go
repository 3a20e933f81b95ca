package service

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// Validity of activation codes and enrolment keys. A one-off code is for a person at a
// workstation (15 minutes) or for a package sent out ahead (up to three weeks before its
// first use); a reusable key is for software distribution and lives longer, but not for
// ever: a key that leaks enrols machines until it expires or is revoked.
const (
	DefaultCodeValidity = 15 * time.Minute
	MaxCodeValidity     = 21 * 24 * time.Hour
	DefaultKeyValidity  = 30 * 24 * time.Hour
	MaxKeyValidity      = 366 * 24 * time.Hour
	// MaxCodesAtOnce bounds one request for codes (a CSV for a software-distribution run).
	MaxCodesAtOnce = 1000
	maxTags        = 32
	maxTagLen      = 64
)

var tagRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.:-]*$`)

// EnrolmentKeyRequest asks for activation codes or an enrolment key.
type EnrolmentKeyRequest struct {
	Kind         store.EnrolmentKind // code (one-off) or key (reusable)
	Count        int                 // codes only: how many, 1 to MaxCodesAtOnce (0 means 1)
	Name         string              // what it is for, shown in listings
	Organization string              // organisation name given to its agents; "" for none
	Tags         []string            // given to its agents
	AgentID      string              // codes only: the one agent ID it may enrol
	PreApproved  bool                // keys: its agents are active at once, else they wait for an administrator; codes always are
	MaxUses      int                 // keys only: 0 for no limit
	ExpiresIn    time.Duration       // 0: the kind's default
}

// EnrolmentKey is a code or key as listed: never its secret.
type EnrolmentKey struct {
	store.EnrolmentKey
	Organization string // its name
	CreatedBy    string // username
}

// IssuedEnrolmentKey is a created code or key with its secret, shown once.
type IssuedEnrolmentKey struct {
	EnrolmentKey
	Secret string
}

func (r *EnrolmentKeyRequest) check() error {
	r.Name = strings.TrimSpace(r.Name)
	r.Organization = strings.TrimSpace(r.Organization)
	r.AgentID = strings.TrimSpace(r.AgentID)
	if err := checkText("name", r.Name, maxNameLen); err != nil {
		return err
	}
	if err := checkText("organization", r.Organization, maxNameLen); err != nil {
		return err
	}
	tags, err := checkTags(r.Tags)
	if err != nil {
		return err
	}
	r.Tags = tags
	if r.ExpiresIn < 0 {
		return badRequest("expires_in", "is negative")
	}
	switch r.Kind {
	case store.EnrolmentCode:
		if r.Count == 0 {
			r.Count = 1
		}
		if r.Count < 1 || r.Count > MaxCodesAtOnce {
			return badRequest("count", "is %d: ask for 1 to %d codes at once", r.Count, MaxCodesAtOnce)
		}
		if r.MaxUses != 0 && r.MaxUses != 1 {
			return badRequest("max_uses", "a one-off code is used once; ask for a key (kind key) to enrol several agents")
		}
		r.MaxUses = 1
		// A one-off code is the administrator's approval of the one agent it enrols (as
		// pre-activated codes are elsewhere); holding for approval is for reusable keys.
		r.PreApproved = true
		if r.AgentID != "" {
			if err := checkAgentID("agent_id", r.AgentID); err != nil {
				return err
			}
			if r.Count != 1 {
				return badRequest("count", "a code for agent %s enrols that agent only: ask for one", r.AgentID)
			}
		}
		if r.ExpiresIn == 0 {
			r.ExpiresIn = DefaultCodeValidity
		}
		if r.ExpiresIn > MaxCodeValidity {
			return badRequest("expires_in", "is %v; a one-off code is valid at most %v (three weeks) before its use", r.ExpiresIn, MaxCodeValidity)
		}
	case store.EnrolmentReusable:
		if r.Count > 1 {
			return badRequest("count", "one reusable key enrols many agents: ask for codes (kind code) to get several secrets")
		}
		r.Count = 1
		if r.AgentID != "" {
			return badRequest("agent_id", "a reusable key enrols many agents; a code (kind code) is for one named agent")
		}
		if r.MaxUses < 0 {
			return badRequest("max_uses", "is negative; 0 means no limit")
		}
		if r.ExpiresIn == 0 {
			r.ExpiresIn = DefaultKeyValidity
		}
		if r.ExpiresIn > MaxKeyValidity {
			return badRequest("expires_in", "is %v; an enrolment key is valid at most %v: create a new one when it expires", r.ExpiresIn, MaxKeyValidity)
		}
	default:
		return badRequest("kind", "is %q: want code (one-off activation code) or key (reusable enrolment key)", r.Kind)
	}
	return nil
}

func checkTags(tags []string) ([]string, error) {
	if len(tags) > maxTags {
		return nil, badRequest("tags", "has %d tags, at most %d", len(tags), maxTags)
	}
	out := make([]string, 0, len(tags))
	for _, t := range tags {
		t = strings.ToLower(strings.TrimSpace(t))
		if len(t) > maxTagLen || !tagRE.MatchString(t) {
			return nil, badRequest("tags", "tag %q: want lower-case letters, digits and _ . : - (starting with a letter or digit), at most %d", t, maxTagLen)
		}
		out = append(out, t)
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

func checkAgentID(field, id string) error {
	if err := protocol.ValidateAgentID(id); err != nil {
		return badRequest(field, "%v", err)
	}
	return nil
}

// CreateEnrolmentKeys creates activation codes or a reusable enrolment key (admin). The
// secrets are in the answer only: the store keeps their hashes.
func (s *Service) CreateEnrolmentKeys(ctx context.Context, by Actor, r EnrolmentKeyRequest) ([]IssuedEnrolmentKey, error) {
	actor := by.user
	if _, err := s.authorize(ctx, actor, "create enrolment key", jobs.PermManageAgents, ""); err != nil {
		return nil, err
	}
	if err := r.check(); err != nil {
		return nil, err
	}
	var out []IssuedEnrolmentKey
	err := s.update(ctx, func(t *txn) error {
		out = nil
		var orgID string
		if r.Organization != "" {
			o, err := t.GetOrganizationByName(ctx, r.Organization)
			if errors.Is(err, store.ErrNotFound) {
				return badRequest("organization", "no organisation named %q", r.Organization)
			}
			if err != nil {
				return err
			}
			orgID, r.Organization = o.ID, o.Name
		}
		keys, secrets, err := t.CreateEnrolmentKeys(ctx, store.EnrolmentKey{Kind: r.Kind, Name: r.Name, OrganizationID: orgID,
			Tags: r.Tags, AgentID: r.AgentID, PreApproved: r.PreApproved, MaxUses: r.MaxUses, CreatedBy: actor.ID,
			Expires: t.now.Add(r.ExpiresIn)}, r.Count)
		if err != nil {
			return err
		}
		entries := make([]audit.Entry, len(keys))
		for i, k := range keys {
			out = append(out, IssuedEnrolmentKey{EnrolmentKey: EnrolmentKey{EnrolmentKey: k, Organization: r.Organization,
				CreatedBy: actor.Username}, Secret: secrets[i]})
			entries[i] = audit.Entry{Actor: actor.ID, Action: audit.ActionEnrolmentKeyCreated, Target: "enrolment_key:" + k.ID,
				Details: audit.Details("kind", string(k.Kind), "name", k.Name, "organization", r.Organization, "tags", strings.Join(k.Tags, ","),
					"agent_id", k.AgentID, "pre_approved", k.PreApproved, "max_uses", k.MaxUses, "expires", k.Expires.Format(time.RFC3339))}
		}
		return t.auditAll(ctx, entries)
	})
	return out, err
}

// EnrolmentKeyQuery selects codes and keys to list.
type EnrolmentKeyQuery struct {
	Kind   store.EnrolmentKind // "" for both
	Usable bool                // only those that could enrol an agent now
}

// ListEnrolmentKeys lists codes and keys, oldest first (admin).
func (s *Service) ListEnrolmentKeys(ctx context.Context, by Actor, q EnrolmentKeyQuery, page Page) ([]EnrolmentKey, string, error) {
	actor := by.user
	if _, err := s.authorize(ctx, actor, "list enrolment keys", jobs.PermManageAgents, ""); err != nil {
		return nil, "", err
	}
	if q.Kind != "" && q.Kind != store.EnrolmentCode && q.Kind != store.EnrolmentReusable {
		return nil, "", badRequest("kind", "is %q: want code or key", q.Kind)
	}
	f := store.EnrolmentKeyFilter{Kind: q.Kind}
	if q.Usable {
		f.Usable = s.clock()
	}
	keys, next, err := s.st.ListEnrolmentKeys(ctx, f, page.store())
	if err != nil {
		return nil, "", AsError(err)
	}
	n := newNames(s.st)
	out := make([]EnrolmentKey, len(keys))
	for i, k := range keys {
		out[i] = EnrolmentKey{EnrolmentKey: k, Organization: n.org(ctx, k.OrganizationID), CreatedBy: n.user(ctx, k.CreatedBy)}
	}
	return out, next, nil
}

// RevokeEnrolmentKey revokes a code or key (admin): it enrols no more agents; those it
// enrolled stay.
func (s *Service) RevokeEnrolmentKey(ctx context.Context, by Actor, id, reason string) (EnrolmentKey, error) {
	actor := by.user
	if _, err := s.authorize(ctx, actor, "revoke enrolment key", jobs.PermManageAgents, ""); err != nil {
		return EnrolmentKey{}, err
	}
	if err := checkReason("reason", reason); err != nil {
		return EnrolmentKey{}, err
	}
	var out store.EnrolmentKey
	err := s.update(ctx, func(t *txn) error {
		before, err := t.GetEnrolmentKey(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			return newErr(CodeNotFound, "", "no enrolment key or code %q", id)
		}
		if err != nil {
			return err
		}
		if out, err = t.RevokeEnrolmentKey(ctx, id, actor.ID, t.now); err != nil {
			return err
		}
		if !before.Revoked.IsZero() {
			return nil // revoked before: nothing new to audit
		}
		return t.audit(ctx, audit.Entry{Actor: actor.ID, Action: audit.ActionEnrolmentKeyRevoked, Target: "enrolment_key:" + id,
			Reason: strings.TrimSpace(reason), Details: audit.Details("kind", string(out.Kind), "name", out.Name, "uses", out.Uses)})
	})
	if err != nil {
		return EnrolmentKey{}, err
	}
	n := newNames(s.st)
	return EnrolmentKey{EnrolmentKey: out, Organization: n.org(ctx, out.OrganizationID), CreatedBy: n.user(ctx, out.CreatedBy)}, nil
}

// newBrokerPassword makes a broker password: 256 random bits, URL-safe so that it fits
// an amqp:// URL unescaped.
func newBrokerPassword() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails: crypto/rand crashes the program instead
	return base64.RawURLEncoding.EncodeToString(b)
}

// keyActor names an enrolment key as the actor of what an agent did with it.
func keyActor(id string) string { return "enrolment_key:" + id }

func describeKey(k store.EnrolmentKey) string {
	if k.Kind == store.EnrolmentCode {
		return fmt.Sprintf("activation code %s", k.ID)
	}
	return fmt.Sprintf("enrolment key %s", k.ID)
}
