package rollout

import (
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
)

func hashTargets() []Target {
	return []Target{
		{Seq: 1, Wave: 0, AgentID: "a1", TokenSerial: "t1", HolderID: "u1", CertificateSerial: "c1", TokenModel: "m", OrganizationID: "o"},
		{Seq: 2, Wave: 1, AgentID: "a2", TokenSerial: "t2", HolderID: "u2", CertificateSerial: "c2"},
	}
}

func TestBindingHash(t *testing.T) {
	t.Parallel()
	spec := validSpec()
	spec.Template.ProfileHash = "p1"
	base := BindingHash(spec, hashTargets())
	if len(base) != 64 || base != BindingHash(spec, hashTargets()) {
		t.Fatalf("hash %q is not stable", base)
	}
	// Pinned: a change of the encoding voids every outstanding approval, so it must be
	// deliberate (and come with a new domain version).
	if got := BindingHash(Spec{Name: "pinned", Template: Template{Kind: jobs.KindRenew, Profile: "p", ProfileHash: "h"}}, hashTargets()); got != pinnedHash {
		t.Errorf("the encoding changed: %s", got)
	}

	// Streaming gives the same hash as the whole list.
	h := NewHasher(spec)
	for _, x := range hashTargets() {
		h.Add(x)
	}
	first := h.Sum()
	if first != base || h.Sum() != first {
		t.Error("Hasher differs from BindingHash, or Sum changed its state")
	}

	// Defaults written out or left implicit hash alike.
	n := spec
	n.Normalize()
	if BindingHash(n, hashTargets()) != base {
		t.Error("normalizing changed the hash")
	}

	changes := map[string]func(*Spec, []Target) []Target{
		"profile hash":     func(s *Spec, ts []Target) []Target { s.Template.ProfileHash = "p2"; return ts },
		"kind":             func(s *Spec, ts []Target) []Target { s.Template.Kind = jobs.KindIssue; return ts },
		"threshold":        func(s *Spec, ts []Target) []Target { s.Brake.ThresholdPercent = 21; return ts },
		"window":           func(s *Spec, ts []Target) []Target { s.Plan.Windows[0].End = "05:00"; return ts },
		"one target less":  func(s *Spec, ts []Target) []Target { return ts[:1] },
		"order":            func(s *Spec, ts []Target) []Target { return []Target{ts[1], ts[0]} },
		"seq":              func(s *Spec, ts []Target) []Target { ts[1].Seq = 3; return ts },
		"wave":             func(s *Spec, ts []Target) []Target { ts[1].Wave = 2; return ts },
		"agent":            func(s *Spec, ts []Target) []Target { ts[0].AgentID = "a9"; return ts },
		"token":            func(s *Spec, ts []Target) []Target { ts[0].TokenSerial = "t9"; return ts },
		"holder":           func(s *Spec, ts []Target) []Target { ts[0].HolderID = "u9"; return ts },
		"certificate":      func(s *Spec, ts []Target) []Target { ts[0].CertificateSerial = "c9"; return ts },
		"shifted boundary": func(s *Spec, ts []Target) []Target { ts[0].AgentID, ts[0].TokenSerial = "a1t", "1"; return ts },
	}
	for name, change := range changes {
		s := validSpec()
		s.Template.ProfileHash = "p1"
		ts := change(&s, hashTargets())
		if BindingHash(s, ts) == base {
			t.Errorf("%s: same hash", name)
		}
	}
	// Lists that are sets hash alike in any order.
	reordered := spec
	reordered.Selector.Agents.Tags = []string{"desk", "paris"}
	reordered.Plan.Windows = []Window{{Days: []string{"tue", "mon"}, Start: "22:00", End: "06:00", TimeZone: "Europe/Paris"}}
	if BindingHash(reordered, hashTargets()) != base || spec.Selector.Agents.Tags[0] != "paris" {
		t.Error("the order of a set changed the hash, or hashing sorted the caller's list")
	}
	// The model and organisation describe a target; they do not choose it.
	ts := hashTargets()
	ts[0].TokenModel, ts[0].OrganizationID = "other", "other"
	if BindingHash(spec, ts) != base {
		t.Error("model or organisation changed the hash")
	}
}

const pinnedHash = "a0de71312e256d1de1c6dd3c7004d7c1d7dc9d49587df5673be1b152fb963814"
