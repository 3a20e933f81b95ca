package yamlstrict

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Types with a YAML form of their own implement yaml.Unmarshaler (go.yaml.in/yaml/v3).
// A plain error they return is reported at their node; an *Error (from DecodeNode or
// built by hand) keeps its position, its path taken as relative to the node's field.

// DecodeNode decodes n strictly into v, for an UnmarshalYAML that reads a structure of
// its own: errors carry paths relative to n.
func DecodeNode(n *yaml.Node, v any) error { return decodeNode("", n, v) }

// Duration reads a duration such as 15m or 1h30m; a bare number is refused, its unit
// would be a guess.
func Duration(n *yaml.Node) (time.Duration, error) {
	if n.Kind != yaml.ScalarNode || isNull(n) {
		return 0, fmt.Errorf("want a duration like 15m, got %s", found(n))
	}
	if n.Tag == "!!int" || n.Tag == "!!float" {
		return 0, fmt.Errorf("%s has no unit: write a duration like %ss or %sm", n.Value, n.Value, n.Value)
	}
	d, err := time.ParseDuration(n.Value)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration like 15m (units ms, s, m, h)", n.Value)
	}
	return d, nil
}

// Found describes a node as the file's author sees it: "a list", "a mapping", "text
// \"abc\"", "the number 42", "true", "nothing".
func Found(n *yaml.Node) string { return found(n) }

func decodeNode(file string, n *yaml.Node, v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("yamlstrict: decoding into %T, which is not a pointer", v)
	}
	d := &decoder{file: file}
	d.value(n, "", rv.Elem())
	return errors.Join(d.errs...)
}

type decoder struct {
	file string
	errs []error
}

func (d *decoder) fail(n *yaml.Node, path, format string, args ...any) {
	d.errs = append(d.errs, &Error{File: d.file, Line: n.Line, Col: n.Column, Path: path, Msg: fmt.Sprintf(format, args...)})
}

var (
	durationType    = reflect.TypeFor[time.Duration]()
	unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()
)

func (d *decoder) value(n *yaml.Node, path string, v reflect.Value) {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if v.CanAddr() && v.Addr().Type().Implements(unmarshalerType) {
		if v.Kind() == reflect.Pointer && isNull(n) {
			v.SetZero()
			return
		}
		d.custom(n, path, v.Addr().Interface().(yaml.Unmarshaler))
		return
	}
	if v.Kind() == reflect.Pointer {
		if isNull(n) {
			v.SetZero()
			return
		}
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.value(n, path, v.Elem())
		return
	}
	if isNull(n) {
		// "key:" with nothing after it: an empty list or mapping, else the value stays.
		if v.Kind() == reflect.Slice || v.Kind() == reflect.Map {
			v.SetZero()
		}
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		d.structure(n, path, v)
	case reflect.Map:
		d.mapping(n, path, v)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.fail(n, path, "want a list, got %s (write [a, b], or one \"- item\" a line)", found(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, c := range n.Content {
			d.value(c, Index(path, i), s.Index(i))
		}
		v.Set(s)
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			d.fail(n, path, "want text, got %s", found(n))
			return
		}
		v.SetString(n.Value)
	case reflect.Bool:
		var b bool
		if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" || n.Decode(&b) != nil {
			d.fail(n, path, "want true or false, got %s", found(n))
			return
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if v.Type() == durationType {
			dur, err := Duration(n)
			if err != nil {
				d.fail(n, path, "%v", err)
				return
			}
			v.SetInt(int64(dur))
			return
		}
		var i int64
		if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || n.Decode(&i) != nil || v.OverflowInt(i) {
			d.fail(n, path, "want a whole number%s, got %s", intRange(v.Type()), found(n))
			return
		}
		v.SetInt(i)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		var u uint64
		if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || n.Decode(&u) != nil || v.OverflowUint(u) {
			d.fail(n, path, "want a whole number%s, got %s", intRange(v.Type()), found(n))
			return
		}
		v.SetUint(u)
	case reflect.Float32, reflect.Float64:
		var f float64
		if n.Kind != yaml.ScalarNode || (n.Tag != "!!int" && n.Tag != "!!float") || n.Decode(&f) != nil {
			d.fail(n, path, "want a number, got %s", found(n))
			return
		}
		v.SetFloat(f)
	case reflect.Interface:
		var x any
		if err := n.Decode(&x); err != nil {
			d.fail(n, path, "cannot be read")
			return
		}
		v.Set(reflect.ValueOf(x))
	default:
		// A setting of a kind YAML cannot give: a mistake in the program, not the file.
		d.fail(n, path, "cannot be set from a file")
	}
}

// custom runs a type's own UnmarshalYAML and positions what it reports.
func (d *decoder) custom(n *yaml.Node, path string, u yaml.Unmarshaler) {
	err := u.UnmarshalYAML(n)
	for _, e := range flatten(err) {
		var se *Error
		if !errors.As(e, &se) {
			d.fail(n, path, "%s", e.Error())
			continue
		}
		c := *se
		c.File, c.Path = d.file, Join(path, se.Path)
		if c.Line == 0 {
			c.Line, c.Col = n.Line, n.Column
		}
		d.errs = append(d.errs, &c)
	}
}

func flatten(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

// keys walks a mapping's keys, refusing merge keys and keys given twice.
func (d *decoder) keys(n *yaml.Node, path string, each func(k, v *yaml.Node, fpath string)) {
	seen := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		fpath := Join(path, k.Value)
		if k.Tag == "!!merge" {
			d.fail(k, path, "merge keys (<<) are not supported here: write the fields out")
			continue
		}
		if k.Kind != yaml.ScalarNode {
			d.fail(k, path, "want a name as the key, got %s", found(k))
			continue
		}
		if first, dup := seen[k.Value]; dup {
			d.fail(k, fpath, "given twice (first on line %d): keep one", first.Line)
			continue
		}
		seen[k.Value] = k
		each(k, v, fpath)
	}
}

func (d *decoder) structure(n *yaml.Node, path string, v reflect.Value) {
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "want a mapping of fields (name: value), got %s", found(n))
		return
	}
	fields, names := fieldsOf(v.Type())
	d.keys(n, path, func(k, val *yaml.Node, fpath string) {
		idx, ok := fields[k.Value]
		if !ok {
			d.fail(k, fpath, "%s", unknownField(k.Value, names))
			return
		}
		d.value(val, fpath, v.FieldByIndex(idx))
	})
}

func (d *decoder) mapping(n *yaml.Node, path string, v reflect.Value) {
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "want a mapping (name: value), got %s", found(n))
		return
	}
	kt, et := v.Type().Key(), v.Type().Elem()
	if kt.Kind() != reflect.String {
		d.fail(n, path, "cannot be set from a file")
		return
	}
	if v.IsNil() {
		v.Set(reflect.MakeMap(v.Type()))
	}
	d.keys(n, path, func(k, val *yaml.Node, fpath string) {
		key := reflect.New(kt).Elem()
		key.SetString(k.Value)
		elem := reflect.New(et).Elem()
		d.value(val, fpath, elem)
		v.SetMapIndex(key, elem)
	})
}

// fieldsOf maps each YAML name of a struct's fields to the field, and lists the names in
// declaration order. Fields tagged "-" and unexported ones are not settable from YAML;
// ",inline" structs lend their fields.
func fieldsOf(t reflect.Type) (map[string][]int, []string) {
	fields := map[string][]int{}
	var names []string
	var walk func(t reflect.Type, prefix []int)
	walk = func(t reflect.Type, prefix []int) {
		for i := range t.NumField() {
			f := t.Field(i)
			tag := f.Tag.Get("yaml")
			name, opts, _ := strings.Cut(tag, ",")
			if !f.IsExported() || name == "-" {
				continue
			}
			idx := append(append([]int(nil), prefix...), i)
			if strings.Contains(","+opts+",", ",inline,") && f.Type.Kind() == reflect.Struct {
				walk(f.Type, idx)
				continue
			}
			if name == "" {
				name = strings.ToLower(f.Name) // yaml.v3's default
			}
			if _, dup := fields[name]; !dup {
				fields[name] = idx
				names = append(names, name)
			}
		}
	}
	walk(t, nil)
	return fields, names
}

func unknownField(name string, known []string) string {
	msg := fmt.Sprintf("unknown field %q", name)
	if s := suggest(name, known); s != "" {
		msg += fmt.Sprintf("; did you mean %q?", s)
	}
	if len(known) == 0 {
		return msg + " (this mapping has no fields)"
	}
	return msg + " (known fields: " + strings.Join(known, ", ") + ")"
}

// suggest returns the known name closest to name, when it is close enough to be a typo.
func suggest(name string, known []string) string {
	best, bestD := "", 0
	for _, k := range known {
		d := distance(strings.ToLower(name), k)
		if best == "" || d < bestD {
			best, bestD = k, d
		}
	}
	if best == "" || bestD > max(1, min(3, len(best)/3)) {
		return ""
	}
	return best
}

// distance is the Levenshtein distance between a and b, in bytes.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func intRange(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int8, reflect.Int16, reflect.Int32:
		bits := t.Bits()
		return fmt.Sprintf(" from %d to %d", -(int64(1) << (bits - 1)), int64(1)<<(bits-1)-1)
	case reflect.Uint8, reflect.Uint16, reflect.Uint32:
		return fmt.Sprintf(" from 0 to %d", uint64(1)<<t.Bits()-1)
	case reflect.Uint, reflect.Uint64:
		return " of 0 or more"
	}
	return ""
}

func found(n *yaml.Node) string {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!null":
			return "nothing"
		case "!!bool":
			return n.Value
		case "!!int", "!!float":
			return "the number " + n.Value
		}
		v := n.Value
		if r := []rune(v); len(r) > 40 {
			v = string(r[:37]) + "..."
		}
		return "text " + strconv.Quote(v)
	}
	return "something else"
}
