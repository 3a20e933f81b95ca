package config

import (
	"fmt"
	"strings"

	"github.com/tokenfleet/tokenfleet/internal/yamlstrict"
)

// fieldErrors turns the decoder's errors into FieldErrors.
func fieldErrors(err error) error {
	return yamlstrict.Convert(err, func(ye *yamlstrict.Error) error {
		return &FieldError{Field: ye.Path, Source: "config " + ye.File, Msg: ye.Msg, File: ye.File, Line: ye.Line, Col: ye.Col}
	}, func(e error) error { return fmt.Errorf("config: %w", e) })
}

// fieldError is a problem with a setting, placed where its value came from: the line in
// the file, or the flag.
func (c *Config) fieldError(field, msg string) *FieldError {
	e := &FieldError{Field: field, Source: c.Source(field), Msg: msg}
	if c.doc != nil && strings.HasPrefix(e.Source, "config ") {
		pos := c.doc.Locate(field)
		e.File, e.Line, e.Col = c.doc.File, pos.Line, pos.Col
	}
	return e
}

// FieldError is a setting that cannot be used.
type FieldError struct {
	Field  string // dotted path, e.g. broker.url or modules[1]
	Source string // "config FILE", "--flag" or "default"
	Msg    string
	// File, Line and Col place a value that came from the configuration file.
	File      string
	Line, Col int
}

// Error reads FILE:LINE:COL: field: problem for a value from the file, "field (--flag):
// problem" for a flag's, "field: problem" for a default.
func (e *FieldError) Error() string {
	if e.Line > 0 {
		return (&yamlstrict.Error{File: e.File, Line: e.Line, Col: e.Col, Path: e.Field, Msg: e.Msg}).Error()
	}
	if e.Source == "" || e.Source == "default" {
		return e.Field + ": " + e.Msg
	}
	return fmt.Sprintf("%s (%s): %s", e.Field, e.Source, e.Msg)
}
