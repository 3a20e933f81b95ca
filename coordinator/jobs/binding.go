package jobs

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"slices"
)

// bindingDomain separates binding hashes from every other hash the project computes, and
// versions the encoding: changing it voids outstanding approvals, which is the safe side.
const bindingDomain = "tokenfleet/job-binding/v1"

// Binding is what an approval approves. Any change to any field gives a new hash and
// voids the approvals bound to the old one.
type Binding struct {
	Kind          Kind
	HolderID      string
	ProfileName   string
	ProfileHash   string // profile.Profile.Hash(): an edited profile voids approvals
	Subject       string // canonical form of the rendered subject and SANs (profile.Identity.Canonical)
	TargetAgentID string
	TokenSerial   string
	// Params holds kind-specific parameters (the certificate to revoke, a wipe's force
	// flag, ...); keys are encoded in sorted order.
	Params map[string]string
}

// BindingHash returns the hex SHA-256 of an unambiguous encoding of b: every field is
// length-prefixed, so no two different bindings encode alike (("ab","c") ≠ ("a","bc")).
func BindingHash(b Binding) string {
	h := sha256.New()
	writeField(h, bindingDomain)
	for _, f := range []string{string(b.Kind), b.HolderID, b.ProfileName, b.ProfileHash, b.Subject, b.TargetAgentID, b.TokenSerial} {
		writeField(h, f)
	}
	keys := make([]string, 0, len(b.Params))
	for k := range b.Params {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(keys)))
	h.Write(n[:])
	for _, k := range keys {
		writeField(h, k)
		writeField(h, b.Params[k])
	}
	return hex.EncodeToString(h.Sum(nil))
}

func writeField(h hash.Hash, s string) {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(s)))
	h.Write(n[:])
	h.Write([]byte(s))
}

// DocumentParams is the Params entry of the document a request cites (the crypto-device
// register's basis of issuance); nil for none, so that jobs without one keep their hash.
func DocumentParams(number, date string) map[string]string {
	if number == "" && date == "" {
		return nil
	}
	return map[string]string{"document_number": number, "document_date": date}
}
