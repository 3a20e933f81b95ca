package yamlstrict_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tokenfleet/tokenfleet/internal/yamlstrict"
)

type item struct {
	Name    string   `yaml:"name"`
	Size    int      `yaml:"size"`
	Tags    []string `yaml:"tags"`
	Ignored string   `yaml:"-"`
}

type settings struct {
	Listen   string              `yaml:"listen"`
	Enabled  bool                `yaml:"enabled"`
	Port     uint16              `yaml:"port"`
	Ratio    float64             `yaml:"ratio"`
	Interval time.Duration       `yaml:"interval"`
	Items    []item              `yaml:"items"`
	Modules  map[string][]string `yaml:"modules"`
	Optional *bool               `yaml:"optional"`
	Level    level               `yaml:"level"`
	Nested   struct {
		Required int `yaml:"required"`
		Roles    []string
	} `yaml:"nested"`
}

// level reads itself: one of a few words.
type level string

func (l *level) UnmarshalYAML(n *yaml.Node) error {
	switch n.Value {
	case "low", "high":
		*l = level(n.Value)
		return nil
	}
	return fmt.Errorf("%s: want low or high", yamlstrict.Found(n))
}

func TestDecodeValid(t *testing.T) {
	src := `listen: 127.0.0.1:80
enabled: true
port: 8443
ratio: 0.5
interval: 1m30s
items:
  - {name: a, size: 1, tags: [x, y]}
  - name: b
modules:
  linux: [a.so]
  windows: []
optional: false
level: high
nested: {required: 2, roles: [approver]}
`
	var s settings
	s.Listen = "default"
	doc, err := yamlstrict.Decode("s.yaml", []byte(src), &s)
	if err != nil {
		t.Fatal(err)
	}
	if s.Listen != "127.0.0.1:80" || !s.Enabled || s.Port != 8443 || s.Ratio != 0.5 || s.Interval != 90*time.Second ||
		len(s.Items) != 2 || s.Items[0].Tags[1] != "y" || s.Items[1].Name != "b" || len(s.Modules["linux"]) != 1 ||
		s.Modules["windows"] == nil || s.Optional == nil || *s.Optional || s.Level != "high" || s.Nested.Required != 2 ||
		s.Nested.Roles[0] != "approver" {
		t.Fatalf("decoded %+v", s)
	}
	// Positions: a scalar's value, a collection's key, list items, and the nearest
	// enclosing field for one the file leaves out.
	for path, want := range map[string]yamlstrict.Pos{
		"listen":         {1, 9},
		"items":          {6, 1},
		"items[1]":       {8, 5},
		"items[1].name":  {8, 11},
		"items[0].size":  {7, 21},
		"items[1].size":  {8, 5},
		"modules.linux":  {10, 3},
		"nested.missing": {14, 1},
		"absent":         {1, 1},
	} {
		if got := doc.Locate(path); got != want {
			t.Errorf("Locate(%q) = %v, want %v", path, got, want)
		}
	}
	if e := doc.Errorf("items[1].size", "must be positive"); e.Error() != "s.yaml:8:5: items[1].size: must be positive" {
		t.Errorf("Errorf: %q", e)
	}
	if !doc.Has("items[0].tags[1]") || doc.Has("items[1].size") {
		t.Error("Has")
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string // each a whole error, in order
	}{
		{"unknown field", "listen: x\nlisen: y\n",
			[]string{`f.yaml:2:1: lisen: unknown field "lisen"; did you mean "listen"? (known fields: listen, enabled, port, ratio, interval, items, modules, optional, level, nested)`}},
		{"unknown field, nothing close", "colour: blue\n",
			[]string{`f.yaml:1:1: colour: unknown field "colour" (known fields: listen, enabled, port, ratio, interval, items, modules, optional, level, nested)`}},
		{"nested unknown field in list items", "items:\n  - name: a\n  - name: b\n    sise: 3\n",
			[]string{`f.yaml:4:5: items[1].sise: unknown field "sise"; did you mean "size"? (known fields: name, size, tags)`}},
		{"field tagged - is unknown", "items: [{ignored: x}]\n",
			[]string{`f.yaml:1:10: items[0].ignored: unknown field "ignored" (known fields: name, size, tags)`}},
		{"text for a list", "items:\n  - name: a\n    tags: x\n",
			[]string{`f.yaml:3:11: items[0].tags: want a list, got text "x" (write [a, b], or one "- item" a line)`}},
		{"list for text", "listen: [a]\n", []string{`f.yaml:1:9: listen: want text, got a list`}},
		{"text for a number", "port: http\n", []string{`f.yaml:1:7: port: want a whole number from 0 to 65535, got text "http"`}},
		{"number out of range", "port: 70000\n", []string{`f.yaml:1:7: port: want a whole number from 0 to 65535, got the number 70000`}},
		{"text for true or false", "enabled: perhaps\n", []string{`f.yaml:1:10: enabled: want true or false, got text "perhaps"`}},
		{"duration without unit", "interval: 30\n", []string{`f.yaml:1:11: interval: 30 has no unit: write a duration like 30s or 30m`}},
		{"not a duration", "interval: soon\n", []string{`f.yaml:1:11: interval: "soon" is not a duration like 15m (units ms, s, m, h)`}},
		{"mapping for a list item", "items: [a]\n", []string{`f.yaml:1:9: items[0]: want a mapping of fields (name: value), got text "a"`}},
		{"own unmarshaler", "level: medium\n", []string{`f.yaml:1:8: level: text "medium": want low or high`}},
		{"duplicate key", "listen: a\nenabled: true\nlisten: b\n", []string{`f.yaml:3:1: listen: given twice (first on line 1): keep one`}},
		{"duplicate map key", "modules:\n  linux: [a]\n  linux: [b]\n", []string{`f.yaml:3:3: modules.linux: given twice (first on line 2): keep one`}},
		{"not a mapping", "just text\n", []string{`f.yaml:1:1: want a mapping of fields (name: value), got text "just text"`}},
		{"every problem at once", "port: x\nenabled: 3\nnested: {required: [1], extra: 1}\n", []string{
			`f.yaml:1:7: port: want a whole number from 0 to 65535, got text "x"`,
			`f.yaml:2:10: enabled: want true or false, got the number 3`,
			`f.yaml:3:20: nested.required: want a whole number, got a list`,
			`f.yaml:3:25: nested.extra: unknown field "extra" (known fields: required, roles)`,
		}},
		{"two documents", "listen: a\n---\nlisten: b\n", []string{`f.yaml:2:1: a second YAML document: this file holds one; remove the '---' line and what follows`}},
		{"tab indentation", "nested:\n\trequired: 1\n", []string{`f.yaml:2:1: a tab in the indentation: YAML indents with spaces only; replace the tab with spaces`}},
		{"tab after spaces", "items:\n  - name: a\n  \tsize: 1\n", []string{`f.yaml:3:3: a tab in the indentation: YAML indents with spaces only; replace the tab with spaces`}},
		{"unclosed list", "listen: a\nitems: [\n", []string{`f.yaml:2:1: not valid YAML: `}},
		{"merge key", "base: &b {name: a}\nitems:\n  - <<: *b\n", []string{
			`f.yaml:1:1: base: unknown field "base" (known fields: listen, enabled, port, ratio, interval, items, modules, optional, level, nested)`,
			`f.yaml:3:5: items[0]: merge keys (<<) are not supported here: write the fields out`,
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var s settings
			_, err := yamlstrict.Decode("f.yaml", []byte(tc.src), &s)
			if err == nil {
				t.Fatal("accepted")
			}
			var got []string
			for _, e := range unwrap(err) {
				var se *yamlstrict.Error
				if !errors.As(e, &se) {
					t.Errorf("%v is not an *Error", e)
				}
				got = append(got, e.Error())
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d errors:\n%s\nwant %d:\n%s", len(got), strings.Join(got, "\n"), len(tc.want), strings.Join(tc.want, "\n"))
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tc.want[i]) || (!strings.HasSuffix(tc.want[i], ": ") && got[i] != tc.want[i]) {
					t.Errorf("got  %s\nwant %s", got[i], tc.want[i])
				}
				for _, goName := range []string{"yamlstrict", "settings", "int64", "uint16", "[]string", "!!"} {
					if strings.Contains(got[i], goName) {
						t.Errorf("%q speaks Go: %s", got[i], goName)
					}
				}
			}
		})
	}
}

func unwrap(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func TestEmptyDocuments(t *testing.T) {
	for _, src := range []string{"", "# only a comment\n", "---\n", "~\n"} {
		s := settings{Listen: "kept"}
		doc, err := yamlstrict.Decode("f.yaml", []byte(src), &s)
		if err != nil || s.Listen != "kept" || !doc.Empty() {
			t.Errorf("%q: %+v, %v", src, s, err)
		}
	}
	s := settings{Listen: "kept", Items: []item{{Name: "x"}}}
	if _, err := yamlstrict.Decode("f.yaml", []byte("listen:\nitems:\n"), &s); err != nil || s.Listen != "kept" || s.Items != nil {
		t.Errorf("null values: %+v, %v", s, err)
	}
}

func TestParseDocuments(t *testing.T) {
	docs, err := yamlstrict.Parse("", []byte("listen: a\n---\n---\nlisten: b\nport: x\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) != 3 || docs[0].Empty() || !docs[1].Empty() || docs[2].Empty() {
		t.Fatalf("%d documents", len(docs))
	}
	var s settings
	err = docs[2].Decode(&s)
	// Lines count from the start of the stream; without a file name, the line is spelt out.
	if err == nil || err.Error() != `line 5, column 7: port: want a whole number from 0 to 65535, got text "x"` {
		t.Fatalf("got %v", err)
	}
	if s.Listen != "b" {
		t.Fatalf("decoded %+v", s)
	}
}

// A type reading a structure of its own decodes it strictly too, its errors placed under
// its field.
type pair struct{ A, B string }

func (p *pair) UnmarshalYAML(n *yaml.Node) error {
	var raw struct {
		First  string `yaml:"first"`
		Second string `yaml:"second"`
	}
	err := yamlstrict.DecodeNode(n, &raw)
	p.A, p.B = raw.First, raw.Second
	return err
}

func TestDecodeNodeInUnmarshaler(t *testing.T) {
	var v struct {
		Pairs []pair `yaml:"pairs"`
	}
	_, err := yamlstrict.Decode("p.yaml", []byte("pairs:\n  - first: a\n    secnd: b\n"), &v)
	want := `p.yaml:3:5: pairs[0].secnd: unknown field "secnd"; did you mean "second"? (known fields: first, second)`
	if err == nil || err.Error() != want {
		t.Fatalf("got %v\nwant %s", err, want)
	}
}

func TestAt(t *testing.T) {
	doc, err := yamlstrict.Decode("f.yaml", []byte("listen: x\n"), &settings{})
	if err != nil {
		t.Fatal(err)
	}
	if e := doc.At("listen", errors.New("not host:port")); e.Error() != "f.yaml:1:9: listen: not host:port" {
		t.Errorf("At: %v", e)
	}
	positioned := doc.Errorf("listen", "already placed")
	if e := doc.At("port", positioned); e != error(positioned) { //nolint:errorlint // the very same *Error, not one wrapping it
		t.Errorf("At moved an *Error: %v", e)
	}
}

func TestConvert(t *testing.T) {
	_, err := yamlstrict.Decode("f.yaml", []byte("a: 1\nb: 2\n"), &struct{}{})
	if err == nil {
		t.Fatal("unknown fields accepted")
	}
	plain := errors.New("read failed")
	got := yamlstrict.Convert(errors.Join(err, plain), func(e *yamlstrict.Error) error {
		return fmt.Errorf("%s at %s:%d", e.Path, e.File, e.Line)
	}, func(e error) error { return fmt.Errorf("other: %w", e) })
	want := "a at f.yaml:1\nb at f.yaml:2\nother: read failed"
	if got == nil || got.Error() != want {
		t.Fatalf("got %v, want %q", got, want)
	}
	if !errors.Is(got, plain) {
		t.Error("the plain error is not wrapped")
	}
	if yamlstrict.Convert(nil, nil, nil) != nil {
		t.Error("nil converted to an error")
	}
}
