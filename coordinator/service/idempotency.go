package service

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// MaxIdempotencyKey is the longest idempotency key a job creation request may carry.
const MaxIdempotencyKey = 255

// IdempotencyKeyField names the key in errors: it travels as the Idempotency-Key header.
const IdempotencyKeyField = "Idempotency-Key"

// checkIdempotencyKey refuses a key that is not 1 to 255 printable ASCII characters ("" is
// no key).
func checkIdempotencyKey(key string) error {
	if len(key) > MaxIdempotencyKey {
		return badRequest(IdempotencyKeyField, "is %d characters long; use 1 to %d printable ASCII characters", len(key), MaxIdempotencyKey)
	}
	for i := range len(key) {
		if c := key[i]; c < 0x20 || c > 0x7e {
			return badRequest(IdempotencyKeyField, "holds byte 0x%02x at position %d; use 1 to %d printable ASCII characters", c, i, MaxIdempotencyKey)
		}
	}
	return nil
}

// requestHash identifies a job creation request as its requester sent it (after trimming),
// so that a key used again with another request is told apart from a repeat.
func (r JobRequest) requestHash() string {
	deadline := ""
	if !r.Deadline.IsZero() {
		deadline = r.Deadline.UTC().Format(time.RFC3339Nano)
	}
	// A fixed struct: the field order, and so the hash, does not depend on the caller.
	b, err := json.Marshal(struct {
		Kind        string `json:"kind"`
		Holder      string `json:"holder"`
		Profile     string `json:"profile"`
		Agent       string `json:"agent"`
		TokenSerial string `json:"token_serial"`
		Deadline    string `json:"deadline"`
		// Omitted when empty: requests without a document keep the hash they had before.
		DocumentNumber string `json:"document_number,omitempty"`
		DocumentDate   string `json:"document_date,omitempty"`
		CertificateID  string `json:"certificate_id,omitempty"`
	}{string(r.Kind), r.Holder, r.Profile, r.Agent, r.TokenSerial, deadline, r.Document.Number, r.Document.Date, r.CertificateID})
	if err != nil {
		panic(err) // strings only: cannot fail
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// priorJob returns the job requester created with key, when there is one: ok is false when
// the key is unused, and an idempotency_key_reused error when it named another request.
func priorJob(ctx context.Context, r store.Reader, requesterID, key, hash string) (store.Job, bool, error) {
	j, err := r.GetJobByIdempotencyKey(ctx, requesterID, key)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return store.Job{}, false, nil
	case err != nil:
		return store.Job{}, false, err
	case j.RequestHash != hash:
		return store.Job{}, false, newErr(CodeIdempotencyKeyReused, IdempotencyKeyField,
			"key %q was used for another request (job %s); send a new key for a new request", key, j.ID)
	}
	return j, true, nil
}
