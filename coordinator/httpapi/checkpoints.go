package httpapi

import (
	"context"
	"crypto/ed25519"
	"errors"
	"net/http"

	"github.com/tokenfleet/tokenfleet/coordinator/api"
	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

// Checkpoints signs and lists checkpoints of the audit chain head (package checkpoint
// implements it).
type Checkpoints interface {
	Make(ctx context.Context) (audit.Checkpoint, error)
	List(ctx context.Context, p service.Page) ([]audit.Checkpoint, string, error)
	PublicKey() ed25519.PublicKey
}

// checkpoints returns the checkpointer, or the error of a coordinator without one.
func (a *server) checkpoints() (Checkpoints, error) {
	if a.cps == nil {
		return nil, &service.Error{Code: service.CodeNotFound, Msg: "this coordinator signs no audit checkpoints"}
	}
	return a.cps, nil
}

func (a *server) listCheckpoints(w http.ResponseWriter, r *http.Request, u service.Actor) {
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
	if list == nil {
		list = []audit.Checkpoint{}
	}
	writeJSON(w, http.StatusOK, api.AuditCheckpointList{Items: list, NextCursor: next})
}

func (a *server) makeCheckpoint(w http.ResponseWriter, r *http.Request, u service.Actor) {
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
	writeJSON(w, http.StatusCreated, c)
}

// checkpointKey serves the public key checkpoints verify with, without authentication:
// it is public, and auditors should rather pin a copy obtained out of band.
func (a *server) checkpointKey(w http.ResponseWriter, r *http.Request) {
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
	writeJSON(w, http.StatusOK, api.AuditCheckpointKey{Algorithm: "ed25519", KeyID: audit.CheckpointKeyID(pub), PEM: string(p)})
}
