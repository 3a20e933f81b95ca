package dispatch

import (
	"bytes"
	"context"
	"fmt"
	"sync"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/profile"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// profileCache keeps parsed profiles by content hash: a stored version never changes.
type profileCache struct {
	mu     sync.Mutex // guards byHash
	byHash map[string]profile.Profile
}

// maxCachedProfiles bounds the cache; past it, it starts again empty.
const maxCachedProfiles = 256

func newProfileCache() *profileCache { return &profileCache{byHash: map[string]profile.Profile{}} }

// jobProfile returns the profile version the job was approved under (its hash), checking
// that the stored text still gives that hash.
func (d *Dispatcher) jobProfile(ctx context.Context, r store.Reader, j store.Job) (profile.Profile, error) {
	d.profiles.mu.Lock()
	p, ok := d.profiles.byHash[j.ProfileHash]
	d.profiles.mu.Unlock()
	if ok {
		return p, nil
	}
	sp, err := r.GetProfile(ctx, j.ProfileName)
	if err != nil {
		return profile.Profile{}, fmt.Errorf("profile of job %s: %w", j.ID, err)
	}
	for v := sp.Version - 1; sp.ContentHash != j.ProfileHash && v >= 1; v-- {
		if sp, err = r.GetProfileVersion(ctx, j.ProfileName, v); err != nil {
			return profile.Profile{}, fmt.Errorf("profile of job %s: %w", j.ID, err)
		}
	}
	if sp.ContentHash != j.ProfileHash {
		return profile.Profile{}, fmt.Errorf("job %s: no version of profile %s has hash %s", j.ID, j.ProfileName, j.ProfileHash)
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
	d.profiles.mu.Lock()
	if len(d.profiles.byHash) >= maxCachedProfiles {
		clear(d.profiles.byHash)
	}
	d.profiles.byHash[j.ProfileHash] = p
	d.profiles.mu.Unlock()
	return p, nil
}

// identity renders what the profile gives the job's holder: the certificate's names and
// the token label, from the holder's record as it is now.
func identity(ctx context.Context, r store.Reader, p profile.Profile, j store.Job) (profile.Identity, error) {
	u, err := r.GetUser(ctx, j.HolderID)
	if err != nil {
		return profile.Identity{}, fmt.Errorf("holder of job %s: %w", j.ID, err)
	}
	org := ""
	if u.OrganizationID != "" {
		o, err := r.GetOrganization(ctx, u.OrganizationID)
		if err != nil {
			return profile.Identity{}, fmt.Errorf("organisation of the holder of job %s: %w", j.ID, err)
		}
		org = o.Name
	}
	// The same view of the holder the service renders when the request is made, so the
	// binding hash can be compared.
	return p.Render(profile.Holder{ID: u.Username, Name: u.DisplayName, Email: u.Email, UPN: u.UPN, Organization: org,
		Attributes: u.Attributes})
}

// bindingHolds reports whether id is still what the approvers approved: the job's
// binding hash covers the rendered subject. The request's token serial is either the
// job's (named at request time) or empty (learnt later from the agent).
func bindingHolds(j store.Job, id profile.Identity) bool {
	for _, serial := range []string{j.TokenSerial, ""} {
		h := jobs.BindingHash(jobs.Binding{Kind: j.Kind, HolderID: j.HolderID, ProfileName: j.ProfileName,
			ProfileHash: j.ProfileHash, Subject: id.Canonical(), TargetAgentID: j.AgentID, TokenSerial: serial,
			Params: jobs.DocumentParams(j.Document.Number, j.Document.Date)})
		if h == j.BindingHash {
			return true
		}
	}
	return false
}

// keyType maps a profile's key to the protocol's key type.
func keyType(k profile.KeySpec) (protocol.KeyType, error) {
	var t protocol.KeyType
	switch {
	case k.Type == profile.KeyRSA:
		t = protocol.KeyType(fmt.Sprintf("rsa%d", k.Size))
	case k.Type == profile.KeyEC && k.Curve == "P-256":
		t = protocol.KeyP256
	case k.Type == profile.KeyEC && k.Curve == "P-384":
		t = protocol.KeyP384
	}
	if !t.Valid() {
		return "", fmt.Errorf("the profile's key %s has no protocol key type (known: %v)", k, protocol.KeyTypes())
	}
	return t, nil
}
