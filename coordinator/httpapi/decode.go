package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

// Body limits.
const (
	MaxJSONBody    = 1 << 20
	MaxProfileBody = service.MaxProfileDocument
)

func bad(field, format string, args ...any) *service.Error {
	return &service.Error{Code: service.CodeBadRequest, Field: field, Msg: fmt.Sprintf(format, args...)}
}

func tooLarge(limit int64) *service.Error {
	return &service.Error{Code: service.CodeTooLarge, Msg: fmt.Sprintf("request body exceeds %d bytes", limit)}
}

// checkMediaType refuses a body declared as something other than one of want; no
// Content-Type at all is accepted.
func checkMediaType(r *http.Request, want ...string) error {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || !slices.Contains(want, mt) {
		return &service.Error{Code: codeUnsupportedMediaType, Field: "Content-Type",
			Msg: fmt.Sprintf("content type %q; send %s", ct, strings.Join(want, " or "))}
	}
	return nil
}

// decodeJSON reads one JSON object into dst, strictly: unknown fields, trailing data and
// wrong types are refused, naming the field. An empty body is an error when required,
// and leaves dst as it is otherwise.
func decodeJSON(w http.ResponseWriter, r *http.Request, dst any, required bool) error {
	if err := checkMediaType(r, "application/json"); err != nil {
		return err
	}
	body := http.MaxBytesReader(w, r.Body, MaxJSONBody)
	data, err := io.ReadAll(body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return tooLarge(mbe.Limit)
		}
		return bad("", "reading the request body: %v", err)
	}
	if len(strings.TrimSpace(string(data))) == 0 {
		if required {
			return bad("", "the request body is empty; send a JSON object")
		}
		return nil
	}
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return jsonError(err)
	}
	if dec.More() {
		return bad("", "the request body holds more than one JSON value")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return bad("", "the request body holds data after the JSON object")
	}
	return nil
}

// jsonError explains a decoding error, naming the field where it can.
func jsonError(err error) error {
	var (
		syn *json.SyntaxError
		typ *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &syn):
		return bad("", "malformed JSON at byte %d: %v", syn.Offset, syn)
	case errors.As(err, &typ):
		if typ.Field == "" {
			return bad("", "the request body must be a JSON object, not %s", typ.Value)
		}
		return bad(jsonPath(typ.Field), "want %s, got %s", jsonKind(typ.Type.Kind().String()), typ.Value)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return bad("", "malformed JSON: the body ends in the middle of a value")
	}
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		name = strings.Trim(name, `"`)
		return bad(name, "unknown field %q", name)
	}
	return bad("", "malformed JSON: %v", err)
}

// jsonPath drops from a decoding error's field path the names of embedded Go structs,
// which encoding/json puts there: the API's JSON names are all lower case.
func jsonPath(field string) string {
	parts := strings.Split(field, ".")
	for len(parts) > 1 && parts[0] != "" && unicode.IsUpper(rune(parts[0][0])) {
		parts = parts[1:]
	}
	return strings.Join(parts, ".")
}

func jsonKind(k string) string {
	switch k {
	case "string":
		return "a string"
	case "slice", "array":
		return "an array"
	case "map", "struct":
		return "an object"
	case "bool":
		return "a boolean"
	}
	return "a number"
}

// query reads the query string, refusing parameters the endpoint does not take and
// parameters given twice.
type query struct {
	v url.Values
}

func parseQuery(r *http.Request, allowed ...string) (query, error) {
	v, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return query{}, bad("", "malformed query string: %v", err)
	}
	for k, vs := range v {
		if !slices.Contains(allowed, k) {
			if len(allowed) == 0 {
				return query{}, bad(k, "unknown query parameter %q; this endpoint takes none", k)
			}
			return query{}, bad(k, "unknown query parameter %q (known: %s)", k, strings.Join(allowed, ", "))
		}
		if len(vs) > 1 {
			return query{}, bad(k, "query parameter %q given %d times", k, len(vs))
		}
	}
	return query{v: v}, nil
}

func (q query) get(k string) string { return q.v.Get(k) }

// integer reads an optional integer parameter within [lo, hi].
func (q query) integer(k string, def, lo, hi int64) (int64, error) {
	s := q.v.Get(k)
	if s == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < lo || n > hi {
		return 0, bad(k, "%q: want an integer between %d and %d", s, lo, hi)
	}
	return n, nil
}

// Page size of the API's lists.
const (
	defaultLimit = 50
	maxLimit     = 500
)

// page reads limit and cursor.
// boolean reads an optional true or false; absent is false.
func (q query) boolean(k string) (bool, error) {
	switch s := q.v.Get(k); s {
	case "", "false":
		return false, nil
	case "true":
		return true, nil
	default:
		return false, bad(k, "%q: want true or false", s)
	}
}

func (q query) page() (service.Page, error) {
	n, err := q.integer("limit", defaultLimit, 1, maxLimit)
	if err != nil {
		return service.Page{}, err
	}
	c := q.v.Get("cursor")
	if len(c) > 1024 {
		return service.Page{}, bad("cursor", "malformed page cursor")
	}
	return service.Page{Limit: int(n), Cursor: c}, nil
}
