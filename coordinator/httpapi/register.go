package httpapi

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/tokenfleet/tokenfleet/coordinator/api"
	"github.com/tokenfleet/tokenfleet/coordinator/register"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

// getRegister sends the crypto-device register as JSON, CSV or PDF. A file is written
// whole before it is sent, so that a failure is an error response, not half a file.
func (a *server) getRegister(w http.ResponseWriter, r *http.Request, u service.Actor) {
	q, err := parseQuery(r, "organization", "format")
	if err != nil {
		a.fail(w, err)
		return
	}
	format := q.get("format")
	switch format {
	case "", api.RegisterJSON, api.RegisterCSV, api.RegisterPDF:
	default:
		a.fail(w, bad("format", "%q: want json, csv or pdf", format))
		return
	}
	reg, err := a.svc.ReadRegister(r.Context(), u, service.RegisterQuery{Organization: q.get("organization")})
	if err != nil {
		a.fail(w, err)
		return
	}
	out := register.Of(reg)
	if format == "" || format == api.RegisterJSON {
		writeJSON(w, http.StatusOK, out)
		return
	}
	ctype, b, err := register.Render(out, format)
	if err != nil {
		a.fail(w, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", ctype)
	h.Set("Content-Length", strconv.Itoa(len(b)))
	h.Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s"`, register.FileName(out, format)))
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b) // the client may be gone; nothing useful can be done
}
