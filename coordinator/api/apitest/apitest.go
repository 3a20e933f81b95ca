// Package apitest holds the coordinator's HTTP answers to their description,
// coordinator/api/openapi.yaml. A test wraps the server's handler in Handler (or its
// client's transport in Transport), and every response the test causes is checked: the
// status is one the operation documents, the content type is documented for it, the body
// matches the schema (unknown properties included, where the schema closes the object),
// an unknown path gives not_found and a known path with another method gives
// method_not_allowed with an Allow header naming the methods the path has. A response the
// description does not allow fails the test that caused it.
package apitest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/tokenfleet/tokenfleet/coordinator/api"
)

// Validator checks responses against one API description.
type Validator struct {
	doc    *openapi3.T
	router routers.Router
}

var (
	loadOnce  sync.Once
	loaded    *Validator
	errLoaded error
)

// Load returns the validator of the coordinator's own description (api.OpenAPI), parsed
// and checked once per process.
func Load() (*Validator, error) {
	loadOnce.Do(func() { loaded, errLoaded = New(context.Background(), api.OpenAPI) })
	return loaded, errLoaded
}

// New parses an OpenAPI 3 description and refuses one that is not valid.
func New(ctx context.Context, spec []byte) (*Validator, error) {
	loader := openapi3.NewLoader()
	loader.Context = ctx
	doc, err := loader.LoadFromData(spec)
	if err != nil {
		return nil, fmt.Errorf("apitest: reading the API description: %w", err)
	}
	if err := doc.Validate(ctx); err != nil {
		return nil, fmt.Errorf("apitest: the API description is not valid OpenAPI 3: %w", err)
	}
	// The description names the default listener; servers under test listen on any port,
	// so operations are found by path alone.
	doc.Servers = nil
	router, err := legacy.NewRouter(doc)
	if err != nil {
		return nil, fmt.Errorf("apitest: routing the API description: %w", err)
	}
	return &Validator{doc: doc, router: router}, nil
}

// Check says what is wrong with a response to req, or nil when the description allows it.
func (v *Validator) Check(req *http.Request, status int, header http.Header, body []byte) error {
	if req.Method == http.MethodHead {
		return nil // answered as GET, without a body to check
	}
	route, params, err := v.router.FindRoute(req)
	if err != nil {
		return v.checkUnrouted(req, status, header, body)
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route},
		Status:                 status,
		Header:                 header,
		Options:                &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	in.SetBodyBytes(body)
	if err := openapi3filter.ValidateResponse(req.Context(), in); err != nil {
		return fmt.Errorf("%s %s (operation %s) answered %d %s, which the API description does not allow: %w",
			req.Method, req.URL.Path, route.Operation.OperationID, status, abbreviate(body), err)
	}
	return nil
}

// checkUnrouted checks the answer to a request no operation describes: not_found for a
// path the description lacks, method_not_allowed with Allow for a path it has.
func (v *Validator) checkUnrouted(req *http.Request, status int, header http.Header, body []byte) error {
	allowed := v.methods(req)
	wantStatus, wantCode := http.StatusNotFound, "not_found"
	if len(allowed) > 0 {
		wantStatus, wantCode = http.StatusMethodNotAllowed, "method_not_allowed"
	}
	if status != wantStatus {
		return fmt.Errorf("%s %s: no operation of the API description, answered %d %s; want %d %s",
			req.Method, req.URL.Path, status, abbreviate(body), wantStatus, wantCode)
	}
	if err := v.checkError(header, body, wantCode); err != nil {
		return fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
	}
	if len(allowed) == 0 {
		return nil
	}
	if slices.Contains(allowed, http.MethodGet) {
		allowed = append(allowed, http.MethodHead) // the server answers HEAD as GET
	}
	var got []string
	for _, h := range header.Values("Allow") {
		for m := range strings.SplitSeq(h, ",") {
			if m = strings.TrimSpace(m); m != "" {
				got = append(got, m)
			}
		}
	}
	slices.Sort(allowed)
	slices.Sort(got)
	if !slices.Equal(got, allowed) {
		return fmt.Errorf("%s %s: 405 with Allow %q; the description has %s", req.Method, req.URL.Path,
			header.Values("Allow"), strings.Join(allowed, ", "))
	}
	return nil
}

// methods lists the methods the description has for req's path.
func (v *Validator) methods(req *http.Request) []string {
	var out []string
	for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodPost, http.MethodDelete, http.MethodPatch} {
		r := req.Clone(req.Context())
		r.Method = m
		if _, _, err := v.router.FindRoute(r); err == nil {
			out = append(out, m)
		}
	}
	return out
}

// checkError checks an error answer against the Error schema and its code.
func (v *Validator) checkError(header http.Header, body []byte, code string) error {
	if ct := header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		return fmt.Errorf("an error answered with content type %q, want application/json", ct)
	}
	var value any
	if err := json.Unmarshal(body, &value); err != nil {
		return fmt.Errorf("an error body that is not JSON: %w: %s", err, abbreviate(body))
	}
	schema := v.doc.Components.Schemas["Error"]
	if schema == nil || schema.Value == nil {
		return errors.New("the API description has no Error schema")
	}
	if err := schema.Value.VisitJSON(value, openapi3.MultiErrors(), openapi3.VisitAsResponse()); err != nil {
		return fmt.Errorf("the error body %s does not match the Error schema: %w", abbreviate(body), err)
	}
	var e api.ErrorResponse
	if err := json.Unmarshal(body, &e); err != nil || e.Error.Code != code {
		return fmt.Errorf("error code %q, want %s", e.Error.Code, code)
	}
	return nil
}

// abbreviate shows a body in an error message without flooding it.
func abbreviate(body []byte) string {
	const max = 400
	if len(body) > max {
		return string(body[:max]) + "..."
	}
	return string(body)
}

// Handler serves h and checks each of its responses, failing t on one the description
// does not allow. The response reaches the client unchanged either way.
func Handler(t testing.TB, h http.Handler) http.Handler {
	t.Helper()
	v, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	return v.Handler(t, h)
}

// Handler serves h and checks each of its responses against v.
func (v *Validator) Handler(t testing.TB, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The request as it arrived: the handler may consume the body and the context.
		req := r.Clone(context.WithoutCancel(r.Context()))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		res := rec.Result()
		// A client that gave up reads no answer: what a proxy makes of the abandoned
		// request (a 502) is not the server's.
		if r.Context().Err() != nil {
			return
		}
		if err := v.Check(req, res.StatusCode, res.Header, rec.Body.Bytes()); err != nil {
			t.Errorf("API response: %v", err)
		}
		for k, vs := range res.Header {
			w.Header()[k] = vs
		}
		w.WriteHeader(res.StatusCode)
		_, _ = w.Write(rec.Body.Bytes()) // the client may be gone; it is its test that fails then
	})
}

// Transport sends requests with rt (nil: http.DefaultTransport) and checks each response,
// failing t on one the description does not allow: for clients of a server the test
// does not build itself.
func Transport(t testing.TB, rt http.RoundTripper) http.RoundTripper {
	t.Helper()
	v, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if rt == nil {
		rt = http.DefaultTransport
	}
	return roundTripper{v: v, t: t, next: rt}
}

type roundTripper struct {
	v    *Validator
	t    testing.TB
	next http.RoundTripper
}

func (rt roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := rt.next.RoundTrip(req)
	if err != nil {
		return res, err
	}
	body, err := io.ReadAll(res.Body)
	_ = res.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("apitest: reading the response to %s %s: %w", req.Method, req.URL.Path, err)
	}
	res.Body = io.NopCloser(bytes.NewReader(body))
	if err := rt.v.Check(req, res.StatusCode, res.Header, body); err != nil {
		rt.t.Errorf("API response: %v", err)
	}
	return res, nil
}
