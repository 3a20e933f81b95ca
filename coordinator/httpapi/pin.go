package httpapi

import (
	"encoding/json"
	"net/http"

	"github.com/tokenfleet/tokenfleet/coordinator/api"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

// revealPIN shows a job's user PIN once. POST, because it changes what the coordinator
// will show next time; no-store, so no cache between keeps it.
func (a *server) revealPIN(w http.ResponseWriter, r *http.Request, u service.Actor) {
	var in struct{}
	if err := firstErr(noQuery(r), decodeJSON(w, r, &in, false)); err != nil {
		a.fail(w, err)
		return
	}
	pin, err := a.svc.RevealUserPIN(r.Context(), u, r.PathValue("id"))
	if err != nil {
		a.fail(w, err)
		return
	}
	defer clear(pin)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(w).Encode(api.UserPIN{PIN: string(pin)})
}
