package httpapi

import (
	"encoding/json"
	"net/http"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/api"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

// Codes the HTTP layer adds to the service's.
const (
	codeMethodNotAllowed     service.Code = "method_not_allowed"
	codeUnsupportedMediaType service.Code = "unsupported_media_type"
)

// statusOf maps a stable error code to its HTTP status: the service's table, plus the codes
// only the HTTP layer gives.
func statusOf(c service.Code) int {
	switch c {
	case codeMethodNotAllowed:
		return http.StatusMethodNotAllowed
	case codeUnsupportedMediaType:
		return http.StatusUnsupportedMediaType
	}
	return c.HTTPStatus()
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	// The client may be gone; nothing useful can be done about a failed write.
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

// writeError writes err as the API's error body. Internal errors are logged with their
// cause and shown without it.
func writeError(w http.ResponseWriter, log zerolog.Logger, err error) {
	e := service.AsError(err)
	status := statusOf(e.Code)
	if status >= 500 {
		log.Error().Err(e.Err).Str("code", string(e.Code)).Msg("request failed")
	}
	if e.Code == service.CodeUnauthenticated {
		w.Header().Set("WWW-Authenticate", `Bearer realm="tokenfleet"`)
	}
	d := api.ErrorDetail{Code: string(e.Code), Message: e.Msg, Field: e.Field}
	for _, x := range e.Entries {
		d.Entries = append(d.Entries, api.ErrorEntry{Index: x.Index, ID: x.ID, Code: string(x.Code), Field: x.Field, Message: x.Msg})
	}
	writeJSON(w, status, api.ErrorResponse{Error: d})
}
