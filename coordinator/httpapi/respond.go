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

// statusOf maps a stable error code to its HTTP status (coordinator/api/openapi.yaml).
func statusOf(c service.Code) int {
	switch c {
	case service.CodeUnauthenticated:
		return http.StatusUnauthorized
	case service.CodeForbidden, service.CodeSelfApproval, service.CodeRoleNotPermitted, service.CodeOutOfScope:
		return http.StatusForbidden
	case service.CodeNotFound:
		return http.StatusNotFound
	case service.CodeBadRequest, service.CodeInvalidProfile, service.CodeReasonRequired,
		service.CodeMissingAttribute, service.CodeInvalidAttribute:
		return http.StatusBadRequest
	case service.CodePINsUnknown, service.CodeNotHoldersToken, service.CodeIdempotencyKeyReused,
		service.CodeTokenNotActive, service.CodeTokenNotSuspended:
		return http.StatusUnprocessableEntity
	case service.CodeConflict, service.CodeIllegalTransition, service.CodeAlreadyDecided, service.CodeApprovalExpired,
		service.CodeBindingMismatch, service.CodeNotPending, service.CodeNotCancellable, service.CodeApprovalRequired:
		return http.StatusConflict
	case service.CodeLocked:
		return http.StatusTooManyRequests
	case service.CodeTooLarge:
		return http.StatusRequestEntityTooLarge
	case service.CodeUnavailable:
		return http.StatusServiceUnavailable
	case codeMethodNotAllowed:
		return http.StatusMethodNotAllowed
	case codeUnsupportedMediaType:
		return http.StatusUnsupportedMediaType
	}
	return http.StatusInternalServerError
}

// writeJSON writes v with status.
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
