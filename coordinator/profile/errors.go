package profile

import (
	"fmt"
	"strconv"

	"github.com/tokenfleet/tokenfleet/internal/yamlstrict"
)

// Code is a stable error code; the HTTP API returns it as data.
type Code string

// Error codes returned by this package.
const (
	// CodeInvalidProfile: the profile file is malformed or breaks a rule.
	CodeInvalidProfile Code = "invalid_profile"
	// CodeMissingAttribute: the holder lacks an attribute a template needs.
	CodeMissingAttribute Code = "missing_holder_attribute"
	// CodeInvalidAttribute: a holder attribute gives a value the certificate cannot carry.
	CodeInvalidAttribute Code = "invalid_holder_attribute"
	// CodeKeyNotAllowed: a key's type or size is not among the profile's allowed keys.
	CodeKeyNotAllowed Code = "key_not_allowed"
)

// Error is the error type of this package; one problem, with where it is.
type Error struct {
	Code     Code
	Profile  string // profile name, when known
	Document int    // 1-based document of a multi-document input, when the name is unknown
	Field    string // field path, e.g. "key.size" or "approval.roles[1]"
	Msg      string
	// File, Line and Col locate the problem in the YAML it was loaded from (Line 0: not
	// loaded, or the input as a whole).
	File      string
	Line, Col int
}

// Error reads FILE:LINE:COL: profile "NAME": field.path: problem (without a file,
// "line L, column C: ..."); the parts not known are left out.
func (e *Error) Error() string {
	s := "profile"
	if w := (&yamlstrict.Error{File: e.File, Line: e.Line, Col: e.Col}).Where(); w != "" {
		s = w + ": " + s
	}
	switch {
	case e.Profile != "":
		s += " " + strconv.Quote(e.Profile)
	case e.Document > 0:
		s += " document " + strconv.Itoa(e.Document)
	}
	if e.Field != "" {
		s += ": " + e.Field
	}
	return s + ": " + e.Msg
}

// Is matches on the code alone, so errors.Is(err, ErrInvalid) finds any invalid-profile
// problem inside a joined error.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Sentinels for errors.Is.
var (
	ErrInvalid          = &Error{Code: CodeInvalidProfile, Msg: "invalid profile"}
	ErrMissingAttribute = &Error{Code: CodeMissingAttribute, Msg: "missing holder attribute"}
	ErrInvalidAttribute = &Error{Code: CodeInvalidAttribute, Msg: "invalid holder attribute"}
	ErrKeyNotAllowed    = &Error{Code: CodeKeyNotAllowed, Msg: "key not allowed"}
)

// problems collects errors about one profile.
type problems struct {
	profile string
	doc     int
	src     *yamlstrict.Doc // where the profile was read from; nil when not from YAML
	errs    []error
}

func (ps *problems) add(code Code, field, format string, args ...any) {
	e := &Error{Code: code, Profile: ps.profile, Document: ps.doc, Field: field, Msg: fmt.Sprintf(format, args...)}
	if ps.src != nil {
		pos := ps.src.Locate(field)
		e.File, e.Line, e.Col = ps.src.File, pos.Line, pos.Col
	}
	ps.errs = append(ps.errs, e)
}

func (ps *problems) invalid(field, format string, args ...any) {
	ps.add(CodeInvalidProfile, field, format, args...)
}
