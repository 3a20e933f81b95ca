package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// ErrorPath finds where a JSON document fails to decode strictly (unknown fields refused)
// into a value of v's type: the path of the field at fault, such as
// "plan.windows[1].start", and what is wrong with that field alone ("want a number, got
// string", a type's own error, "unknown field"). encoding/json names no field for an error a
// type's own UnmarshalJSON returns (a malformed duration) and only the last name of an
// unknown one; a person fixing a rollout spec needs the whole path. An empty path means
// the document as a whole (malformed JSON, not an object); a nil error, no fault found.
func ErrorPath(data []byte, v any) (string, error) {
	t := reflect.TypeOf(v)
	if t == nil {
		return "", nil
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if decodeErr(data, t) == nil {
		return "", nil
	}
	return errorPath(data, t, "")
}

var jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()

// errorPath descends into data, which does not decode into t, to the innermost member
// that does not.
func errorPath(data []byte, t reflect.Type, path string) (string, error) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(jsonUnmarshaler) {
		return path, decodeErr(data, t) // the type's own words: what it wants
	}
	leaf := func() (string, error) { return path, typeError(decodeErr(data, t)) }
	switch t.Kind() {
	case reflect.Struct:
		keys, values, ok := objectMembers(data)
		if !ok {
			return leaf()
		}
		fields := structFields(t)
		for i, k := range keys {
			at := joinPath(path, k)
			j := slices.IndexFunc(fields, func(f structField) bool { return strings.EqualFold(f.name, k) })
			if j < 0 {
				return at, fmt.Errorf("unknown field %q", k)
			}
			if decodeErr(values[i], fields[j].typ) != nil {
				return errorPath(values[i], fields[j].typ, at)
			}
		}
	case reflect.Map:
		keys, values, ok := objectMembers(data)
		if !ok {
			return leaf()
		}
		for i, k := range keys {
			if decodeErr(values[i], t.Elem()) != nil {
				return errorPath(values[i], t.Elem(), joinPath(path, k))
			}
		}
	case reflect.Slice, reflect.Array:
		var items []json.RawMessage
		if t.Elem().Kind() == reflect.Uint8 || json.Unmarshal(data, &items) != nil {
			return leaf()
		}
		for i, it := range items {
			if decodeErr(it, t.Elem()) != nil {
				return errorPath(it, t.Elem(), path+"["+strconv.Itoa(i)+"]")
			}
		}
	}
	return leaf()
}

// typeError says what encoding/json's type error means, in the API's words.
func typeError(err error) error {
	var te *json.UnmarshalTypeError
	if !errors.As(err, &te) {
		return err
	}
	want := "a number"
	switch te.Type.Kind() {
	case reflect.String:
		want = "a string"
	case reflect.Bool:
		want = "a boolean"
	case reflect.Slice, reflect.Array:
		want = "an array"
	case reflect.Map, reflect.Struct:
		want = "an object"
	}
	return fmt.Errorf("want %s, got %s", want, te.Value)
}

// decodeErr is the error of decoding data strictly into a new value of type t.
func decodeErr(data []byte, t reflect.Type) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	return dec.Decode(reflect.New(t).Interface())
}

// objectMembers returns a JSON object's keys and values in document order.
func objectMembers(data []byte) ([]string, []json.RawMessage, bool) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, nil, false
	}
	var (
		keys   []string
		values []json.RawMessage
	)
	for dec.More() {
		tok, err := dec.Token()
		k, isKey := tok.(string)
		if err != nil || !isKey {
			return nil, nil, false
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, nil, false
		}
		keys, values = append(keys, k), append(values, v)
	}
	return keys, values, true
}

type structField struct {
	name string
	typ  reflect.Type
}

// structFields lists the JSON members of a struct type, embedded structs flattened.
func structFields(t reflect.Type) []structField {
	var out []structField
	for f := range t.Fields() {
		tag := f.Tag.Get("json")
		if tag == "-" || !f.IsExported() && !f.Anonymous {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			out = append(out, structFields(f.Type)...)
			continue
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, structField{name: name, typ: f.Type})
	}
	return out
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
