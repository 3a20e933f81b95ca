package audit

import (
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"time"
)

// A Checkpoint is the coordinator's signed statement that its audit chain had the head
// (Seq, Hash) at Time, after Certificate Transparency's signed tree heads (RFC 6962,
// section 3.5). The chain alone cannot show a cut tail, or a tail rewritten with the
// hashes recomputed and the head moved: the prefix that is left, or the new chain, is
// valid. A checkpoint kept outside the coordinator's database (by an auditor, in syslog)
// can: the entry at its Seq must still exist and still carry its Hash. Its signature
// makes it evidence — an intruder with the database cannot make one for the chain they
// wrote without the coordinator's checkpoint key, which lives in the data directory, not
// the database.
type Checkpoint struct {
	Seq  int64     `json:"seq"`  // the head's sequence number; 0 for an empty log
	Hash string    `json:"hash"` // the head entry's hash (GenesisHash for an empty log)
	Time time.Time `json:"time"` // when it was signed: UTC, whole microseconds
	// KeyID names the key that signed it (CheckpointKeyID), so a verifier holding the
	// wrong key says so instead of calling the signature forged.
	KeyID     string `json:"key_id"`
	Signature []byte `json:"signature"` // Ed25519 over the checkpoint's signed message
}

// checkpointDomain separates checkpoint signatures from every other use of the key and
// versions the encoding.
const checkpointDomain = "tokenfleet/audit-checkpoint/v1"

// ErrBadCheckpoint marks a checkpoint whose signature does not verify with the key given,
// or that is malformed.
var ErrBadCheckpoint = errors.New("audit checkpoint does not verify")

// signedMessage is what the signature covers: the same unambiguous encoding as entry
// hashes (fixed-width integers, length-prefixed strings), under its own domain.
func (c Checkpoint) signedMessage() []byte {
	h := sha256.New()
	putString(h, checkpointDomain)
	putInt(h, c.Seq)
	putString(h, c.Hash)
	putInt(h, c.Time.UnixMicro())
	putString(h, c.KeyID)
	return h.Sum(nil)
}

// CheckpointKeyID names a checkpoint key: the first 16 hex digits of the SHA-256 of its
// PKIX encoding.
func CheckpointKeyID(pub ed25519.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:8])
}

// SignCheckpoint signs head at time at (put in UTC, whole microseconds, as entry times).
func SignCheckpoint(key ed25519.PrivateKey, head Head, at time.Time) (Checkpoint, error) {
	if len(key) != ed25519.PrivateKeySize {
		return Checkpoint{}, fmt.Errorf("%w: not an Ed25519 private key", ErrBadCheckpoint)
	}
	if head.Seq == 0 && head.Hash == "" {
		head.Hash = GenesisHash
	}
	c := Checkpoint{Seq: head.Seq, Hash: head.Hash, Time: at.UTC().Truncate(time.Microsecond),
		KeyID: CheckpointKeyID(key.Public().(ed25519.PublicKey))}
	if err := c.checkForm(); err != nil {
		return Checkpoint{}, err
	}
	c.Signature = ed25519.Sign(key, c.signedMessage())
	return c, nil
}

// checkForm checks what a signature cannot: a sequence number, a hash of the right shape,
// a time.
func (c Checkpoint) checkForm() error {
	switch {
	case c.Seq < 0:
		return fmt.Errorf("%w: negative sequence number %d", ErrBadCheckpoint, c.Seq)
	case len(c.Hash) != len(GenesisHash) || !isHex(c.Hash):
		return fmt.Errorf("%w: hash %q is not 64 hex digits", ErrBadCheckpoint, c.Hash)
	case c.Seq == 0 && c.Hash != GenesisHash:
		return fmt.Errorf("%w: a checkpoint of the empty log must carry the genesis hash", ErrBadCheckpoint)
	case c.Time.IsZero():
		return fmt.Errorf("%w: no time", ErrBadCheckpoint)
	}
	return nil
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil
}

// VerifyCheckpoint checks c's signature with pub. It says nothing about any log: give
// the verified checkpoints to VerifySeqCheckpoints for that.
func VerifyCheckpoint(pub ed25519.PublicKey, c Checkpoint) error {
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: not an Ed25519 public key", ErrBadCheckpoint)
	}
	if err := c.checkForm(); err != nil {
		return err
	}
	if id := CheckpointKeyID(pub); c.KeyID != id {
		return fmt.Errorf("%w: %s was signed with key %s, not with key %s", ErrBadCheckpoint, c, c.KeyID, id)
	}
	if !ed25519.Verify(pub, c.signedMessage(), c.Signature) {
		return fmt.Errorf("%w: the signature of %s is not key %s's: the checkpoint was altered", ErrBadCheckpoint, c, c.KeyID)
	}
	return nil
}

// String names the checkpoint in messages.
func (c Checkpoint) String() string {
	return fmt.Sprintf("the checkpoint of entry %d signed %s", c.Seq, c.Time.UTC().Format(time.RFC3339))
}

// Checkpoint keys travel as PEM: the private key PKCS#8, the public key PKIX.
const (
	CheckpointPrivateKeyPEM = "PRIVATE KEY"
	CheckpointPublicKeyPEM  = "PUBLIC KEY"
)

// MarshalCheckpointPublicKey returns pub as a PEM "PUBLIC KEY" block.
func MarshalCheckpointPublicKey(pub ed25519.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("audit: checkpoint public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: CheckpointPublicKeyPEM, Bytes: der}), nil
}

// ParseCheckpointPublicKey reads a PEM "PUBLIC KEY" block holding an Ed25519 key.
func ParseCheckpointPublicKey(data []byte) (ed25519.PublicKey, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != CheckpointPublicKeyPEM {
		return nil, fmt.Errorf("audit: checkpoint public key: want a PEM block of type %q", CheckpointPublicKeyPEM)
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("audit: checkpoint public key: %w", err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("audit: checkpoint public key: a %T, not an Ed25519 key", k)
	}
	return pub, nil
}

// anchors are the checkpoints a Verifier holds the chain to.
type anchors struct {
	bySeq   map[int64][]Checkpoint
	highest *Checkpoint // the one with the largest Seq: the log must reach it
	matched int64       // the Seq of the last checkpoint the chain matched
}

func (a *anchors) add(c Checkpoint) {
	if a.bySeq == nil {
		a.bySeq = map[int64][]Checkpoint{}
	}
	a.bySeq[c.Seq] = append(a.bySeq[c.Seq], c)
	if a.highest == nil || c.Seq > a.highest.Seq {
		a.highest = &c
	}
}

// Expect holds the chain to checkpoints whose signatures the caller verified
// (VerifyCheckpoint): the entry at each checkpoint's Seq must carry the checkpoint's
// hash — else the log was rewritten up to there and its head moved (KindRewritten) — and
// the log must reach the highest one — else its tail was cut (KindRemoved). Call it
// before the first Add.
func (v *Verifier) Expect(cs ...Checkpoint) {
	for _, c := range cs {
		v.anchors.add(c)
	}
}

// checkAnchors compares an accepted entry with the checkpoints of its Seq.
func (v *Verifier) checkAnchors(e Entry) error {
	for _, c := range v.anchors.bySeq[e.Seq] {
		if c.Hash != e.Hash {
			from := "some entry"
			if v.anchors.matched > 0 {
				from = fmt.Sprintf("some entry after %d (the last checkpoint it matched)", v.anchors.matched)
			}
			return v.failAt(&c, e.Seq, KindRewritten, "%s says entry %d has hash %s, the log's has hash %s: "+
				"the log was rewritten from %s up to here, with its hashes recomputed and its head moved", c, c.Seq, c.Hash, e.Hash, from)
		}
		v.anchors.matched = e.Seq
	}
	return nil
}

// checkReach runs at the end of a stream that broke nowhere: the log must reach the
// highest checkpoint.
func (v *Verifier) checkReach() error {
	c := v.anchors.highest
	if c == nil {
		return nil
	}
	last := v.next - 1
	if c.Seq <= last {
		return nil
	}
	what := fmt.Sprintf("entry %d was cut", last+1)
	if c.Seq > last+1 {
		what = fmt.Sprintf("entries %d to %d were cut", last+1, c.Seq)
	}
	return v.failAt(c, last+1, KindRemoved, "the log ends at entry %d, but %s shows it reached entry %d (hash %s): %s from its end",
		last, c, c.Seq, c.Hash, what)
}
