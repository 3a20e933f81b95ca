package httpapi

import (
	"context"
	"crypto/ed25519"
	"errors"
	"net/http"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// Checkpoints signs and lists checkpoints of the audit chain head (package checkpoint
// implements it).
type Checkpoints interface {
	Make(ctx context.Context) (audit.Checkpoint, error)
	List(ctx context.Context, p store.Page) ([]audit.Checkpoint, string, error)
	PublicKey() ed25519.PublicKey
}

type checkpointJSON struct {
	Seq       int64     `json:"seq"`
	Hash      string    `json:"hash"`
	Time      time.Time `json:"time"`
	KeyID     string    `json:"key_id"`
	Signature []byte    `json:"signature"`
}

type checkpointKeyJSON struct {
	Algorithm string `json:"algorithm"`
	KeyID     string `json:"key_id"`
	PEM       string `json:"pem"`
}

func checkpointOut(c audit.Checkpoint) checkpointJSON {
	return checkpointJSON{Seq: c.Seq, Hash: c.Hash, Time: c.Time, KeyID: c.KeyID, Signature: c.Signature}
}

// checkpoints returns the checkpointer, or the error of a coordinator without one.
func (a *api) checkpoints() (Checkpoints, error) {
	if a.cps == nil {
		return nil, &service.Error{Code: service.CodeNotFound, Msg: "this coordinator signs no audit checkpoints"}
	}
	return a.cps, nil
}

func (a *api) listCheckpoints(w http.ResponseWriter, r *http.Request, u store.User) {
	q, err := parseQuery(r, "limit", "cursor")
	if err != nil {
		a.fail(w, err)
		return
	}
	p, err := q.page()
	if err != nil {
		a.fail(w, err)
		return
	}
	cps, err := a.checkpoints()
	if err == nil {
		err = a.svc.CanReadAudit(r.Context(), u)
	}
	if err != nil {
		a.fail(w, err)
		return
	}
	list, next, err := cps.List(r.Context(), p)
	if err != nil {
		a.fail(w, service.AsError(err))
		return
	}
	out := listJSON[checkpointJSON]{Items: make([]checkpointJSON, len(list)), NextCursor: next}
	for i, c := range list {
		out.Items[i] = checkpointOut(c)
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *api) makeCheckpoint(w http.ResponseWriter, r *http.Request, u store.User) {
	if err := noQuery(r); err != nil {
		a.fail(w, err)
		return
	}
	cps, err := a.checkpoints()
	if err == nil {
		err = a.svc.CanReadAudit(r.Context(), u)
	}
	if err != nil {
		a.fail(w, err)
		return
	}
	c, err := cps.Make(r.Context())
	if errors.Is(err, audit.ErrTampered) {
		// Not an internal error: the coordinator refuses to vouch for a log that
		// contradicts what it signed before, and says why.
		a.fail(w, &service.Error{Code: service.CodeConflict, Msg: err.Error(), Err: err})
		return
	}
	if err != nil {
		a.fail(w, service.AsError(err))
		return
	}
	writeJSON(w, http.StatusCreated, checkpointOut(c))
}

// checkpointKey serves the public key checkpoints verify with, without authentication:
// it is public, and auditors should rather pin a copy obtained out of band.
func (a *api) checkpointKey(w http.ResponseWriter, r *http.Request) {
	if err := noQuery(r); err != nil {
		a.fail(w, err)
		return
	}
	cps, err := a.checkpoints()
	if err != nil {
		a.fail(w, err)
		return
	}
	pub := cps.PublicKey()
	p, err := audit.MarshalCheckpointPublicKey(pub)
	if err != nil {
		a.fail(w, service.AsError(err))
		return
	}
	writeJSON(w, http.StatusOK, checkpointKeyJSON{Algorithm: "ed25519", KeyID: audit.CheckpointKeyID(pub), PEM: string(p)})
}
