package service

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	"go.yaml.in/yaml/v3"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/profile"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// Profile is a stored profile with its parsed content.
type Profile struct {
	store.Profile
	Parsed          profile.Profile
	UpdatedByName   string // username of UpdatedBy
	Unchanged       bool   // ApplyProfiles: the same content was already current
	PreviousVersion int64  // ApplyProfiles: the version replaced; 0 for a new profile
}

// profileCache keeps parsed profiles by content hash: a stored version never changes, and
// job views and the sweeper parse the same few profiles over and over.
type profileCache struct {
	mu     sync.Mutex // guards byHash
	byHash map[string]profile.Profile
}

// maxCachedProfiles bounds the cache; past it, it starts again empty.
const maxCachedProfiles = 256

func newProfileCache() *profileCache { return &profileCache{byHash: map[string]profile.Profile{}} }

// parse reads a stored profile, checking that its content still gives its recorded hash.
func (c *profileCache) parse(sp store.Profile) (profile.Profile, error) {
	c.mu.Lock()
	p, ok := c.byHash[sp.ContentHash]
	c.mu.Unlock()
	if ok {
		return p, nil
	}
	ps, err := profile.Load(bytes.NewReader(sp.Content))
	if err != nil {
		return profile.Profile{}, fmt.Errorf("stored profile %s version %d no longer loads: %w", sp.Name, sp.Version, err)
	}
	if len(ps) != 1 {
		return profile.Profile{}, fmt.Errorf("stored profile %s version %d holds %d profiles", sp.Name, sp.Version, len(ps))
	}
	p = ps[0]
	h, err := p.Hash()
	if err != nil {
		return profile.Profile{}, fmt.Errorf("stored profile %s: %w", sp.Name, err)
	}
	if h != sp.ContentHash {
		return profile.Profile{}, fmt.Errorf("stored profile %s version %d hashes to %s, recorded %s", sp.Name, sp.Version, h, sp.ContentHash)
	}
	c.mu.Lock()
	if len(c.byHash) >= maxCachedProfiles {
		c.byHash = map[string]profile.Profile{}
	}
	c.byHash[sp.ContentHash] = p
	c.mu.Unlock()
	return p, nil
}

// profileOfJob returns the profile version a job was created with (its hash), the current
// one or an older one.
func (s *Service) profileOfJob(ctx context.Context, r store.Reader, j store.Job) (profile.Profile, store.Profile, error) {
	cur, err := r.GetProfile(ctx, j.ProfileName)
	if err != nil {
		return profile.Profile{}, store.Profile{}, fmt.Errorf("profile of job %s: %w", j.ID, err)
	}
	sp := cur
	for v := cur.Version - 1; sp.ContentHash != j.ProfileHash && v >= 1; v-- {
		if sp, err = r.GetProfileVersion(ctx, j.ProfileName, v); err != nil {
			return profile.Profile{}, store.Profile{}, fmt.Errorf("profile of job %s: %w", j.ID, err)
		}
	}
	if sp.ContentHash != j.ProfileHash {
		return profile.Profile{}, store.Profile{}, fmt.Errorf("job %s: no version of profile %s has hash %s", j.ID, j.ProfileName, j.ProfileHash)
	}
	p, err := s.profiles.parse(sp)
	if err == nil && j.Kind == jobs.KindRecoverKey {
		// A recovery passes the recovery gate, not the gate that governed issuing.
		p.Approval = s.recoveryApproval(p.Approval)
	}
	return p, sp, err
}

// MaxProfileDocument bounds the YAML ApplyProfiles accepts.
const MaxProfileDocument = 256 << 10

// ApplyProfiles creates or replaces the profiles of a YAML document (one profile per YAML
// document), all or none: an invalid profile stores nothing and the error names the
// field. A profile whose content means the same as the current version is left as it is.
// Each change is audited with the new hash. Admin only.
func (s *Service) ApplyProfiles(ctx context.Context, by Actor, text []byte) ([]Profile, error) {
	actor := by.user
	if _, err := s.authorize(ctx, actor, "apply profiles", jobs.PermManageProfiles, ""); err != nil {
		return nil, err
	}
	if len(text) > MaxProfileDocument {
		return nil, newErr(CodeTooLarge, "", "profile document is %d bytes, at most %d", len(text), MaxProfileDocument)
	}
	ps, err := profile.Load(bytes.NewReader(text))
	if err != nil {
		e := AsError(err)
		if e.Code != CodeInvalidProfile {
			e = &Error{Code: CodeInvalidProfile, Field: e.Field, Msg: e.Msg, Err: err}
		}
		return nil, e
	}
	texts, err := splitDocuments(text, len(ps))
	if err != nil {
		return nil, &Error{Code: CodeInvalidProfile, Msg: err.Error(), Err: err}
	}
	type item struct {
		p    profile.Profile
		hash string
		text []byte
	}
	items := make([]item, len(ps))
	for i, p := range ps {
		// The job rules read the policy too; a profile they refuse cannot be applied.
		if err := p.Approval.Policy().Validate(); err != nil {
			return nil, &Error{Code: CodeInvalidProfile, Field: "approval", Msg: fmt.Sprintf("profile %q: %s", p.Name, AsError(err).Msg), Err: err}
		}
		h, err := p.Hash()
		if err != nil {
			return nil, internal(err)
		}
		items[i] = item{p: p, hash: h, text: texts[i]}
	}
	var out []Profile
	err = s.update(ctx, func(t *txn) error {
		out = out[:0]
		for _, it := range items {
			if err := gateRolesApprove(ctx, t, it.p); err != nil {
				return err
			}
			cur, err := t.GetProfile(ctx, it.p.Name)
			switch {
			case errors.Is(err, store.ErrNotFound):
				cur = store.Profile{}
			case err != nil:
				return err
			}
			if cur.Version > 0 && cur.ContentHash == it.hash {
				out = append(out, Profile{Profile: cur, Parsed: it.p, Unchanged: true, PreviousVersion: cur.Version})
				continue
			}
			sp, err := t.PutProfile(ctx, store.Profile{Name: it.p.Name, Content: it.text, ContentHash: it.hash,
				Updated: t.now, UpdatedBy: actor.ID}, cur.Version)
			if err != nil {
				return casLost(err)
			}
			if err := t.audit(ctx, audit.Entry{Actor: actor.ID, Action: audit.ActionProfileApplied, Target: "profile:" + sp.Name,
				Details: audit.Details("hash", sp.ContentHash, "version", sp.Version, "previous_hash", cur.ContentHash)}); err != nil {
				return err
			}
			out = append(out, Profile{Profile: sp, Parsed: it.p, PreviousVersion: cur.Version})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	names := newNames(s.st)
	for i := range out {
		out[i].UpdatedByName = names.user(ctx, out[i].UpdatedBy)
	}
	return out, nil
}

// splitDocuments returns the text of each of the n YAML documents in text. A single
// document is kept byte for byte; several are re-encoded one by one (comments survive,
// layout may not).
func splitDocuments(text []byte, n int) ([][]byte, error) {
	if n == 1 {
		return [][]byte{text}, nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(text))
	var out [][]byte
	for {
		var node yaml.Node
		err := dec.Decode(&node)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("split YAML documents: %w", err)
		}
		var b bytes.Buffer
		enc := yaml.NewEncoder(&b)
		enc.SetIndent(2)
		if err := enc.Encode(&node); err != nil {
			return nil, fmt.Errorf("split YAML documents: %w", err)
		}
		if err := enc.Close(); err != nil {
			return nil, fmt.Errorf("split YAML documents: %w", err)
		}
		out = append(out, b.Bytes())
	}
	if len(out) != n {
		return nil, fmt.Errorf("the input holds %d YAML documents for %d profiles; give one profile per document", len(out), n)
	}
	return out, nil
}

// ListProfiles returns the current version of every profile.
func (s *Service) ListProfiles(ctx context.Context, by Actor) ([]Profile, error) {
	actor := by.user
	if _, err := s.canRead(ctx, actor, resProfiles); err != nil {
		return nil, err
	}
	sps, err := s.st.ListProfiles(ctx)
	if err != nil {
		return nil, AsError(err)
	}
	names := newNames(s.st)
	out := make([]Profile, 0, len(sps))
	for _, sp := range sps {
		p, err := s.profiles.parse(sp)
		if err != nil {
			return nil, internal(err)
		}
		out = append(out, Profile{Profile: sp, Parsed: p, UpdatedByName: names.user(ctx, sp.UpdatedBy)})
	}
	return out, nil
}

// GetProfile returns the current version of one profile.
func (s *Service) GetProfile(ctx context.Context, by Actor, name string) (Profile, error) {
	actor := by.user
	if _, err := s.canRead(ctx, actor, resProfiles); err != nil {
		return Profile{}, err
	}
	sp, err := s.st.GetProfile(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return Profile{}, newErr(CodeNotFound, "", "no profile named %q", name)
	}
	if err != nil {
		return Profile{}, AsError(err)
	}
	p, err := s.profiles.parse(sp)
	if err != nil {
		return Profile{}, internal(err)
	}
	return Profile{Profile: sp, Parsed: p, UpdatedByName: newNames(s.st).user(ctx, sp.UpdatedBy)}, nil
}

// gateRolesApprove checks that every custom role a profile's request gate names exists and
// holds the approve permission: a gate naming anything else could never be passed. Role
// changes check the same from the other side (UpdateRole, DeleteRole).
func gateRolesApprove(ctx context.Context, r store.Reader, p profile.Profile) error {
	for i, role := range p.Approval.Roles {
		if role.Valid() {
			continue
		}
		field := fmt.Sprintf("approval.roles[%d]", i)
		c, err := r.GetCustomRole(ctx, string(role))
		if errors.Is(err, store.ErrNotFound) {
			return newErr(CodeInvalidProfile, field, "profile %q: no built-in or custom role named %q; create it first (tokenfleetctl role create)", p.Name, role)
		}
		if err != nil {
			return err
		}
		if !slices.Contains(c.Permissions, jobs.PermApprove) {
			return newErr(CodeInvalidProfile, field, "profile %q: custom role %q lacks the %s permission, so its holders could not decide at this gate; add it to the role first", p.Name, role, jobs.PermApprove)
		}
	}
	return nil
}
