package httpapi

import (
	"net/http"

	"github.com/tokenfleet/tokenfleet/coordinator/api"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

func recoveryOut(c service.RecoveryCertificate) api.RecoveryCertificate {
	return api.RecoveryCertificate{ID: c.ID, KeyID: c.KeyID, CommonName: c.CommonName, NotBefore: c.NotBefore,
		NotAfter: c.NotAfter, Certificate: c.PEM(), Added: c.Added, AddedBy: c.AddedBy, Retired: c.Retired,
		RetiredBy: c.RetiredBy, RetireReason: c.RetireReason}
}

func (a *server) listRecoveryCerts(w http.ResponseWriter, r *http.Request, u service.Actor) {
	q, err := parseQuery(r, "all")
	if err != nil {
		a.fail(w, err)
		return
	}
	all, err := q.boolean("all")
	if err != nil {
		a.fail(w, err)
		return
	}
	cs, err := a.svc.ListRecoveryCertificates(r.Context(), u, all)
	if err != nil {
		a.fail(w, err)
		return
	}
	out := api.RecoveryCertificateList{Items: make([]api.RecoveryCertificate, len(cs))}
	for i, c := range cs {
		out.Items[i] = recoveryOut(c)
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *server) addRecoveryCert(w http.ResponseWriter, r *http.Request, u service.Actor) {
	var in api.RecoveryCertificateAdd
	if err := firstErr(noQuery(r), decodeJSON(w, r, &in, true)); err != nil {
		a.fail(w, err)
		return
	}
	c, err := a.svc.AddRecoveryCertificate(r.Context(), u, in.Certificate)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, recoveryOut(c))
}

func (a *server) retireRecoveryCert(w http.ResponseWriter, r *http.Request, u service.Actor) {
	var in api.RecoveryCertificateRetire
	if err := firstErr(noQuery(r), decodeJSON(w, r, &in, true)); err != nil {
		a.fail(w, err)
		return
	}
	c, err := a.svc.RetireRecoveryCertificate(r.Context(), u, r.PathValue("id"), in.Reason)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, recoveryOut(c))
}
