// Package yamlstrict decodes YAML files strictly into Go structs and reports every problem
// as FILE:LINE:COL: field.path: what is wrong, in the file's terms: an unknown field (with
// the closest known one suggested and all known ones listed), a key given twice, a value of
// the wrong kind ("want a list, got text"), a tab in the indentation, a syntax error.
//
// Documents are parsed into yaml.Node trees first and walked against the target's yaml
// tags, so positions come from the nodes themselves rather than from the library's
// messages. A Doc keeps the position of every field the file sets, so that checks made
// after decoding can point at the line too (Doc.Errorf).
package yamlstrict

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Error is one problem in a YAML file, with where it is.
type Error struct {
	File string // the file's name; "" when the input has none
	Line int    // 1-based; 0 when unknown
	Col  int    // 1-based; 0 when unknown
	Path string // field path, e.g. "devices[2].id"; "" for the document itself
	Msg  string
}

// Where is "FILE:LINE:COL", or as much of it as is known ("line L, column C" without a file).
func (e *Error) Where() string {
	switch {
	case e.Line == 0:
		return e.File
	case e.File == "":
		return fmt.Sprintf("line %d, column %d", e.Line, e.Col)
	}
	return fmt.Sprintf("%s:%d:%d", e.File, e.Line, e.Col)
}

func (e *Error) Error() string {
	var b strings.Builder
	if w := e.Where(); w != "" {
		b.WriteString(w + ": ")
	}
	if e.Path != "" {
		b.WriteString(e.Path + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Pos is a position in a file, 1-based.
type Pos struct{ Line, Col int }

// Doc is one YAML document of a file, with the position of every field it sets.
type Doc struct {
	File  string
	start Pos        // where the document begins
	root  *yaml.Node // the document's content; nil when the document is empty
	pos   map[string]Pos
}

// Parse reads every document of data. A syntax error ends it: the parser cannot resume.
// Empty documents are kept (Doc.Empty), so that callers can number documents as written.
func Parse(file string, data []byte) ([]*Doc, error) {
	var docs []*Doc
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, syntaxError(file, data, err)
		}
		d := &Doc{File: file, start: Pos{n.Line, n.Column}, pos: map[string]Pos{}}
		if len(n.Content) == 1 && !isNull(n.Content[0]) {
			d.root = n.Content[0]
			d.pos[""] = Pos{d.root.Line, d.root.Column}
			index(d.root, "", d.pos)
		}
		docs = append(docs, d)
	}
}

// Decode reads a file of at most one document into v (a pointer to a struct). An empty
// file leaves v as it is. Every problem is returned, joined; each is an *Error.
func Decode(file string, data []byte, v any) (*Doc, error) {
	docs, err := Parse(file, data)
	if err != nil {
		return nil, err
	}
	var doc *Doc
	for _, d := range docs {
		switch {
		case d.Empty():
		case doc == nil:
			doc = d
		default:
			return nil, &Error{File: file, Line: d.start.Line, Col: d.start.Col,
				Msg: "a second YAML document: this file holds one; remove the '---' line and what follows"}
		}
	}
	if doc == nil {
		return &Doc{File: file, start: Pos{1, 1}, pos: map[string]Pos{}}, nil
	}
	return doc, doc.Decode(v)
}

// Empty reports whether the document holds nothing (only comments, or nothing at all).
func (d *Doc) Empty() bool { return d.root == nil }

// Decode fills v, a pointer, from the document: unknown fields, keys given twice and
// values of the wrong kind are refused, each an *Error naming its position and field
// path; every problem is reported, joined. Fields the document leaves out keep their
// values.
func (d *Doc) Decode(v any) error {
	if d.root == nil {
		return nil
	}
	return decodeNode(d.File, d.root, v)
}

// Has reports whether the document sets the field path.
func (d *Doc) Has(path string) bool {
	_, ok := d.pos[path]
	return ok
}

// Paths lists every field path the document sets.
func (d *Doc) Paths() []string {
	out := make([]string, 0, len(d.pos))
	for p := range d.pos {
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Locate returns where path is set; for a field the document leaves out, where its
// nearest enclosing field is (the document's start at worst).
func (d *Doc) Locate(path string) Pos {
	for {
		if p, ok := d.pos[path]; ok {
			return p
		}
		if path == "" {
			return d.start
		}
		path = parent(path)
	}
}

// Errorf returns an *Error about the field path, at its position (see Locate).
func (d *Doc) Errorf(path, format string, args ...any) *Error {
	p := d.Locate(path)
	return &Error{File: d.File, Line: p.Line, Col: p.Col, Path: path, Msg: fmt.Sprintf(format, args...)}
}

// At returns err positioned at path: an *Error as it is, anything else as an Errorf with
// err's message.
func (d *Doc) At(path string, err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	return d.Errorf(path, "%s", err.Error())
}

// Join appends a field to a path: Join("a", "b") is "a.b"; Join("a", "[2]") is "a[2]".
func Join(path, sub string) string {
	switch {
	case sub == "":
		return path
	case path == "":
		return sub
	case strings.HasPrefix(sub, "["):
		return path + sub
	}
	return path + "." + sub
}

// Index is the path of a list item: Index("a", 2) is "a[2]".
func Index(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

// parent drops the last element of a path: "a.b[2]" → "a.b" → "a" → "".
func parent(path string) string {
	if strings.HasSuffix(path, "]") {
		if i := strings.LastIndexByte(path, '['); i >= 0 {
			return path[:i]
		}
	}
	if i := strings.LastIndexByte(path, '.'); i >= 0 {
		return path[:i]
	}
	return ""
}

// index records the position of every field and list item under n. A field's position is
// its value's when that is a scalar (the thing to fix), its key's otherwise.
func index(n *yaml.Node, path string, pos map[string]Pos) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := Join(path, k.Value)
			if _, dup := pos[p]; dup {
				continue // the first one stands; decoding reports the second
			}
			at := Pos{k.Line, k.Column}
			if v.Kind == yaml.ScalarNode && !isNull(v) {
				at = Pos{v.Line, v.Column}
			}
			pos[p] = at
			index(v, p, pos)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := Index(path, i)
			pos[p] = Pos{c.Line, c.Column}
			index(c, p, pos)
		}
	}
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!null" }

// syntaxError positions a parse failure. The parser's error carries no structured
// position, so the line is found by parsing ever longer prefixes of the input: the first
// prefix that fails ends on the line at fault.
func syntaxError(file string, data []byte, err error) error {
	lines := bytes.SplitAfter(data, []byte("\n"))
	lo, hi := 1, len(lines) // the whole input fails; find the shortest prefix that does
	for lo < hi {
		mid := (lo + hi) / 2
		if parses(bytes.Join(lines[:mid], nil)) {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	line, col := lo, 1
	if line <= len(lines) {
		indent := leading(lines[line-1])
		if t := bytes.IndexByte(indent, '\t'); t >= 0 {
			return &Error{File: file, Line: line, Col: t + 1,
				Msg: "a tab in the indentation: YAML indents with spaces only; replace the tab with spaces"}
		}
		col = len(indent) + 1
	}
	msg := strings.TrimPrefix(err.Error(), fmt.Sprintf("yaml: line %d: ", line))
	msg = strings.TrimPrefix(msg, "yaml: ")
	return &Error{File: file, Line: line, Col: col, Msg: "not valid YAML: " + msg}
}

func leading(line []byte) []byte {
	return line[:len(line)-len(bytes.TrimLeft(line, " \t"))]
}

func parses(data []byte) bool {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return true
		}
		if err != nil {
			return false
		}
	}
}

// Convert turns each problem of err (one error, or several joined) into the caller's own
// error type: f gets each *Error, other each error that is not one (a read failure, say).
// The result joins them in order; nil when err is nil.
func Convert(err error, f func(*Error) error, other func(error) error) error {
	if err == nil {
		return nil
	}
	var out []error
	for _, e := range flatten(err) {
		if ye := (*Error)(nil); errors.As(e, &ye) {
			out = append(out, f(ye))
		} else {
			out = append(out, other(e))
		}
	}
	return errors.Join(out...)
}
