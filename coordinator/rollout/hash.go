package rollout

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"hash"
	"slices"
	"strconv"
)

// bindingDomain separates rollout binding hashes from every other hash the project
// computes (jobs use "tokenfleet/job-binding/v1"), and versions the encoding: changing it
// voids outstanding approvals, which is the safe side.
const bindingDomain = "tokenfleet/rollout-binding/v1"

// Hasher computes a rollout's binding hash a target at a time, so that a list of any length
// is hashed without holding it: NewHasher(spec), Add every target in seq order, Sum.
type Hasher struct {
	h hash.Hash
}

// NewHasher starts the hash with the domain and the canonical JSON of the spec: normalized
// (so defaults written out or left implicit hash alike), encoded by encoding/json, whose
// output is fixed by the field order of the types. The profile's content hash is part of
// the spec (Template.ProfileHash), so an edited profile gives a new hash.
func NewHasher(s Spec) *Hasher {
	h := &Hasher{h: sha256.New()}
	writeField(h.h, []byte(bindingDomain))
	writeField(h.h, CanonicalJSON(s))
	return h
}

// CanonicalJSON is the spec as the binding hash encodes it: normalized, its lists that are
// sets (organisations, tags, IDs, states, models, firmware, days, brake outcomes) sorted,
// then JSON.
func CanonicalJSON(s Spec) []byte {
	s.Normalize()
	a := &s.Selector.Agents
	for _, l := range []*[]string{&a.Organizations, &a.Tags, &a.IDs, &a.States, &s.Selector.Tokens.Models,
		&s.Selector.Tokens.Firmware, &s.Selector.Holders.Organizations} {
		*l = sorted(*l)
	}
	for i := range s.Plan.Windows {
		s.Plan.Windows[i].Days = sorted(s.Plan.Windows[i].Days)
	}
	s.Brake.Outcomes = sorted(s.Brake.Outcomes)
	b, err := json.Marshal(s)
	if err != nil {
		// Only a NaN or an infinity can fail here (Validate refuses them); encode the
		// error instead, which hashes differently from any valid spec.
		return []byte("invalid spec: " + err.Error())
	}
	return b
}

// Add appends one target: seq, wave, agent, token, holder, certificate, each
// length-prefixed (the model and organisation are not bound: they describe the target,
// they do not choose it).
func (h *Hasher) Add(t Target) {
	for _, f := range []string{strconv.Itoa(t.Seq), strconv.Itoa(t.Wave), t.AgentID, t.TokenSerial, t.HolderID, t.CertificateSerial} {
		writeField(h.h, []byte(f))
	}
}

// Sum returns the hex SHA-256 of everything added so far; the Hasher can go on taking
// targets. Every target adds the same six length-prefixed fields, so the encoding of a
// list is unambiguous without a count.
func (h *Hasher) Sum() string { return hex.EncodeToString(h.h.Sum(nil)) }

// BindingHash is the hash of a spec and its whole target list, in order.
func BindingHash(s Spec, ts []Target) string {
	h := NewHasher(s)
	for _, t := range ts {
		h.Add(t)
	}
	return h.Sum()
}

// sorted returns a sorted copy (nil stays nil).
func sorted[T cmp.Ordered](l []T) []T {
	if l == nil {
		return nil
	}
	l = slices.Clone(l)
	slices.Sort(l)
	return l
}

func writeField(h hash.Hash, b []byte) {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(b)))
	h.Write(n[:])
	h.Write(b)
}
