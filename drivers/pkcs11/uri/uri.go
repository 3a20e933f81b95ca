// Package uri parses and prints PKCS#11 URIs (RFC 7512), the form in which tokenfleet names
// a module, a token or an object on a token in configuration, job payloads and logs.
//
// Decisions beyond the RFC, made so that mistakes surface early:
//   - An attribute that is neither standard nor vendor-specific is an error. RFC 7512 lets a
//     consumer ignore unknown attributes; we refuse them so that a typo such as "tokne=" is
//     caught instead of silently widening a selection to every token.
//   - Vendor-specific attributes must start with "x-" (any case). They are kept, in order,
//     in URI.Vendor. A name without that prefix (such as the RFC's own "vendor-aaa" example)
//     is therefore an unknown attribute and refused.
//   - A URI carrying both pin-value and pin-source is refused: the RFC recommends refusing
//     it, and a consumer could not tell which PIN was meant.
//   - Attribute names are matched case-insensitively (ABNF literals are) and printed in
//     lower case; values are case-sensitive.
//   - An empty value (e.g. "serial=") means the same as an absent attribute: the struct
//     cannot tell them apart, and "match anything" is what the RFC example intends.
//   - Decoded text values must be valid UTF-8 (PKCS#11 labels are UTF-8); "id" may hold any
//     bytes.
package uri

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Scheme is the URI scheme, without the colon. It is matched case-insensitively.
const Scheme = "pkcs11"

// Object classes accepted in the "type" attribute.
const (
	TypeCert      = "cert"
	TypePrivate   = "private"
	TypePublic    = "public"
	TypeSecretKey = "secret-key"
	TypeData      = "data"
)

// URI is a parsed PKCS#11 URI. Every field is optional; an empty field matches anything.
type URI struct {
	// Path attributes.
	Token               string // token label (CK_TOKEN_INFO.label)
	Manufacturer        string // token manufacturer (CK_TOKEN_INFO.manufacturerID)
	Serial              string // token serial number (CK_TOKEN_INFO.serialNumber)
	Model               string // token model (CK_TOKEN_INFO.model)
	LibraryManufacturer string // CK_INFO.manufacturerID
	LibraryDescription  string // CK_INFO.libraryDescription
	LibraryVersion      string // "M" or "M.m", as written (validated)
	SlotDescription     string // CK_SLOT_INFO.slotDescription
	SlotManufacturer    string // CK_SLOT_INFO.manufacturerID
	SlotID              *uint  // CK_SLOT_ID; nil when absent
	Object              string // CKA_LABEL
	Type                string // one of the Type* constants
	ID                  []byte // CKA_ID; nil when absent

	// Query attributes.
	PinValue   string
	PinSource  string
	ModulePath string
	ModuleName string

	// Vendor-specific ("x-" prefixed) attributes, in the order they appeared.
	Vendor []Attr
}

// Attr is a vendor-specific attribute.
type Attr struct {
	Name  string
	Value string
	Query bool // true when the attribute was in the query part, false for the path part
}

// Error is returned by Parse. Attr names the offending attribute when there is one.
type Error struct {
	Attr   string // attribute name, empty when the problem is not tied to one
	Reason string
	Err    error // underlying cause, may be nil
}

func (e *Error) Error() string {
	if e.Attr == "" {
		return "pkcs11 uri: " + e.Reason
	}
	return fmt.Sprintf("pkcs11 uri: attribute %q: %s", e.Attr, e.Reason)
}

func (e *Error) Unwrap() error { return e.Err }

// ErrInvalid is wrapped by every error Parse returns, so callers can test with errors.Is.
var ErrInvalid = errors.New("invalid PKCS#11 URI")

func (e *Error) Is(target error) bool { return target == ErrInvalid }

func errorf(attr, format string, args ...any) *Error {
	return &Error{Attr: attr, Reason: fmt.Sprintf(format, args...)}
}

// attribute names, in the order String prints them (the order of RFC 7512's grammar).
const (
	attrToken        = "token"
	attrManufacturer = "manufacturer"
	attrSerial       = "serial"
	attrModel        = "model"
	attrLibManuf     = "library-manufacturer"
	attrLibVersion   = "library-version"
	attrLibDesc      = "library-description"
	attrObject       = "object"
	attrType         = "type"
	attrID           = "id"
	attrSlotDesc     = "slot-description"
	attrSlotManuf    = "slot-manufacturer"
	attrSlotID       = "slot-id"

	attrPinSource  = "pin-source"
	attrPinValue   = "pin-value"
	attrModuleName = "module-name"
	attrModulePath = "module-path"
)

// textField gives access to a string field of URI by attribute name, so Parse and String
// share one table instead of two switch statements that could drift apart.
type textField struct {
	name string
	get  func(*URI) *string
}

var pathText = []textField{
	{attrToken, func(u *URI) *string { return &u.Token }},
	{attrManufacturer, func(u *URI) *string { return &u.Manufacturer }},
	{attrSerial, func(u *URI) *string { return &u.Serial }},
	{attrModel, func(u *URI) *string { return &u.Model }},
	{attrLibManuf, func(u *URI) *string { return &u.LibraryManufacturer }},
	{attrLibVersion, func(u *URI) *string { return &u.LibraryVersion }},
	{attrLibDesc, func(u *URI) *string { return &u.LibraryDescription }},
	{attrObject, func(u *URI) *string { return &u.Object }},
	{attrType, func(u *URI) *string { return &u.Type }},
	// id sits here in the printed order; it is handled apart because it is bytes.
	{attrSlotDesc, func(u *URI) *string { return &u.SlotDescription }},
	{attrSlotManuf, func(u *URI) *string { return &u.SlotManufacturer }},
	// slot-id follows; handled apart because it is a number.
}

var queryText = []textField{
	{attrPinSource, func(u *URI) *string { return &u.PinSource }},
	{attrPinValue, func(u *URI) *string { return &u.PinValue }},
	{attrModuleName, func(u *URI) *string { return &u.ModuleName }},
	{attrModulePath, func(u *URI) *string { return &u.ModulePath }},
}

func lookup(fields []textField, name string) (textField, bool) {
	for _, f := range fields {
		if f.name == name {
			return f, true
		}
	}
	return textField{}, false
}

func isPathAttr(name string) bool {
	_, ok := lookup(pathText, name)
	return ok || name == attrID || name == attrSlotID
}

func isQueryAttr(name string) bool {
	_, ok := lookup(queryText, name)
	return ok
}

// IsVendorAttr reports whether name is a vendor-specific attribute name ("x-" prefix).
func IsVendorAttr(name string) bool {
	return len(name) > 2 && strings.EqualFold(name[:2], "x-")
}

// Parse parses a PKCS#11 URI. The error names the attribute at fault.
func Parse(s string) (*URI, error) {
	colon := strings.IndexByte(s, ':')
	if colon < 0 || !strings.EqualFold(s[:colon], Scheme) {
		return nil, errorf("", "must start with %q", Scheme+":")
	}
	rest := s[colon+1:]
	if i := strings.IndexByte(rest, '#'); i >= 0 {
		return nil, errorf("", "fragment (%q) is not allowed", rest[i:])
	}
	path, query, hasQuery := strings.Cut(rest, "?")

	u := &URI{}
	seen := map[string]bool{}
	if path != "" {
		for _, part := range strings.Split(path, ";") {
			if err := u.parseAttr(part, false, seen); err != nil {
				return nil, err
			}
		}
	}
	if hasQuery {
		if query == "" {
			return nil, errorf("", "empty query after '?'")
		}
		for _, part := range strings.Split(query, "&") {
			if err := u.parseAttr(part, true, seen); err != nil {
				return nil, err
			}
		}
	}
	if seen[attrPinValue] && seen[attrPinSource] {
		return nil, errorf(attrPinValue, "must not be combined with pin-source (RFC 7512 recommends refusing such a URI)")
	}
	return u, nil
}

// parseAttr parses one "name=value" element of the path (query=false) or the query.
func (u *URI) parseAttr(part string, query bool, seen map[string]bool) error {
	where := "path"
	if query {
		where = "query"
	}
	if part == "" {
		return errorf("", "empty attribute in %s (stray separator)", where)
	}
	rawName, rawValue, ok := strings.Cut(part, "=")
	if !ok {
		return errorf(rawName, "missing '=' and value")
	}
	if rawName == "" {
		return errorf("", "attribute with an empty name in %s (%q)", where, part)
	}
	if err := checkName(rawName); err != nil {
		return err
	}
	vendor := IsVendorAttr(rawName)
	name := rawName
	if !vendor {
		name = strings.ToLower(rawName)
	}
	key := strings.ToLower(rawName) // duplicates are found regardless of case
	if seen[key] {
		return errorf(name, "appears more than once")
	}
	seen[key] = true

	if err := checkChars(name, rawValue, query); err != nil {
		if name == attrPinValue {
			return errorf(name, "contains a character that must be percent-encoded (value not shown)")
		}
		return err
	}
	value, err := decode(rawValue)
	if err != nil {
		if name == attrPinValue {
			// The escape quoted in err would show part of the PIN.
			return errorf(name, "bad percent-encoding (value not shown)")
		}
		return &Error{Attr: name, Reason: err.Error(), Err: err}
	}

	if vendor {
		if !utf8.Valid(value) {
			return errorf(name, "value is not valid UTF-8 after percent-decoding")
		}
		u.Vendor = append(u.Vendor, Attr{Name: name, Value: string(value), Query: query})
		return nil
	}

	if query {
		if !isQueryAttr(name) {
			if isPathAttr(name) {
				return errorf(name, "is a path attribute but appears in the query")
			}
			return errorf(name, "unknown query attribute (vendor attributes must start with \"x-\")")
		}
	} else if !isPathAttr(name) {
		if isQueryAttr(name) {
			return errorf(name, "is a query attribute but appears in the path")
		}
		return errorf(name, "unknown path attribute (vendor attributes must start with \"x-\")")
	}

	switch name {
	case attrID:
		if len(value) > 0 {
			u.ID = value
		}
		return nil
	case attrSlotID:
		id, err := parseSlotID(string(value))
		if err != nil {
			return &Error{Attr: name, Reason: err.Error(), Err: err}
		}
		u.SlotID = &id
		return nil
	}

	if !utf8.Valid(value) {
		return errorf(name, "value is not valid UTF-8 after percent-decoding")
	}
	v := string(value)
	switch name {
	case attrType:
		if !validType(v) {
			return errorf(name, "%q is not one of cert, private, public, secret-key, data", v)
		}
	case attrLibVersion:
		if _, _, err := ParseVersion(v); err != nil {
			return &Error{Attr: name, Reason: err.Error(), Err: err}
		}
	}
	fields := pathText
	if query {
		fields = queryText
	}
	f, _ := lookup(fields, name)
	*f.get(u) = v
	return nil
}

// checkName accepts the characters RFC 7512 allows in an attribute name.
func checkName(name string) error {
	for i := 0; i < len(name); i++ {
		c := name[i]
		if isAlpha(c) || isDigit(c) || c == '-' || c == '_' {
			continue
		}
		return errorf(name, "invalid character %q in attribute name", c)
	}
	return nil
}

// checkChars rejects characters that RFC 7512 requires to be percent-encoded in a value.
func checkChars(name, raw string, query bool) error {
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c == '%' || allowedLiteral(c, query) {
			continue
		}
		where := "path"
		if query {
			where = "query"
		}
		if c < 0x20 || c >= 0x7f {
			return errorf(name, "byte 0x%02X must be percent-encoded", c)
		}
		return errorf(name, "character %q must be percent-encoded in the %s", c, where)
	}
	return nil
}

func isAlpha(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// allowedLiteral reports whether c may appear unencoded in a value: RFC 3986 unreserved
// characters plus pk11-res-avail, plus "&" in the path and "/", "?", "|" in the query.
func allowedLiteral(c byte, query bool) bool {
	if isAlpha(c) || isDigit(c) {
		return true
	}
	switch c {
	case '-', '.', '_', '~', // unreserved
		':', '[', ']', '@', '!', '$', '\'', '(', ')', '*', '+', ',', '=': // pk11-res-avail
		return true
	case '&':
		return !query
	case '/', '?', '|':
		return query
	}
	return false
}

// decode percent-decodes raw strictly: every '%' must be followed by two hex digits.
func decode(raw string) ([]byte, error) {
	if !strings.Contains(raw, "%") {
		return []byte(raw), nil
	}
	out := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c != '%' {
			out = append(out, c)
			continue
		}
		if i+2 >= len(raw) {
			return nil, fmt.Errorf("truncated percent-escape %q", raw[i:])
		}
		hi, ok1 := unhex(raw[i+1])
		lo, ok2 := unhex(raw[i+2])
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("bad percent-escape %q", raw[i:i+3])
		}
		out = append(out, hi<<4|lo)
		i += 2
	}
	return out, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func validType(t string) bool {
	switch t {
	case TypeCert, TypePrivate, TypePublic, TypeSecretKey, TypeData:
		return true
	}
	return false
}

func parseSlotID(v string) (uint, error) {
	if v == "" {
		return 0, errors.New("empty: want a decimal slot number")
	}
	for i := 0; i < len(v); i++ {
		if !isDigit(v[i]) {
			return 0, fmt.Errorf("%q is not a decimal number", v)
		}
	}
	n, err := strconv.ParseUint(v, 10, strconv.IntSize)
	if err != nil {
		return 0, fmt.Errorf("%q is out of range", v)
	}
	return uint(n), nil
}

// ParseVersion parses a library version written "M" or "M.m" (decimal, each part 0-255
// because CK_VERSION holds bytes). "M" means "M.0", as in common PKCS#11 URI
// implementations.
func ParseVersion(v string) (major, minor uint8, err error) {
	maj, min, hasMinor := strings.Cut(v, ".")
	parse := func(part, what string) (uint8, error) {
		if part == "" {
			return 0, fmt.Errorf("%q: %s version is empty, want M or M.m", v, what)
		}
		for i := 0; i < len(part); i++ {
			if !isDigit(part[i]) {
				return 0, fmt.Errorf("%q: want M or M.m with decimal digits", v)
			}
		}
		n, err := strconv.ParseUint(part, 10, 8)
		if err != nil {
			return 0, fmt.Errorf("%q: %s version exceeds 255", v, what)
		}
		return uint8(n), nil
	}
	if major, err = parse(maj, "major"); err != nil {
		return 0, 0, err
	}
	if hasMinor {
		if minor, err = parse(min, "minor"); err != nil {
			return 0, 0, err
		}
	}
	return major, minor, nil
}

// String prints the URI in canonical form: standard path attributes in RFC 7512 grammar
// order, then vendor path attributes, then the query in the same manner. Characters that
// must be are percent-encoded (as %XX, upper-case hex); id is always fully encoded. Empty
// attributes are omitted. The result contains pin-value when set: use Redacted for logs.
func (u *URI) String() string { return u.format(false) }

// Redacted is String with the pin-value replaced, for logs and error messages.
func (u *URI) Redacted() string { return u.format(true) }

func (u *URI) format(redact bool) string {
	var b strings.Builder
	b.WriteString(Scheme)
	b.WriteByte(':')
	sep := ""
	add := func(name, value string, query bool) {
		b.WriteString(sep)
		b.WriteString(name)
		b.WriteByte('=')
		b.WriteString(encode(value, query))
	}
	for _, f := range pathText {
		if v := *f.get(u); v != "" {
			add(f.name, v, false)
			sep = ";"
		}
		if f.name == attrType && len(u.ID) > 0 {
			b.WriteString(sep)
			b.WriteString(attrID + "=")
			for _, c := range u.ID {
				writeEscape(&b, c)
			}
			sep = ";"
		}
	}
	if u.SlotID != nil {
		b.WriteString(sep + attrSlotID + "=" + strconv.FormatUint(uint64(*u.SlotID), 10))
		sep = ";"
	}
	for _, a := range u.Vendor {
		if !a.Query {
			add(a.Name, a.Value, false)
			sep = ";"
		}
	}
	sep = "?"
	for _, f := range queryText {
		v := *f.get(u)
		if v == "" {
			continue
		}
		if redact && f.name == attrPinValue {
			v = "REDACTED"
		}
		add(f.name, v, true)
		sep = "&"
	}
	for _, a := range u.Vendor {
		if a.Query {
			add(a.Name, a.Value, true)
			sep = "&"
		}
	}
	return b.String()
}

func encode(v string, query bool) string {
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		// '=' is allowed literally by the grammar, but encoding it keeps values readable by
		// parsers that split on every '='.
		if allowedLiteral(c, query) && c != '=' {
			b.WriteByte(c)
			continue
		}
		writeEscape(&b, c)
	}
	return b.String()
}

func writeEscape(b *strings.Builder, c byte) {
	const hexUpper = "0123456789ABCDEF"
	b.WriteByte('%')
	b.WriteByte(hexUpper[c>>4])
	b.WriteByte(hexUpper[c&0x0f])
}

// Equal reports whether two URIs carry the same attributes, vendor attributes in the same
// order within each part.
func (u *URI) Equal(o *URI) bool {
	if u == nil || o == nil {
		return u == o
	}
	for _, f := range pathText {
		if *f.get(u) != *f.get(o) {
			return false
		}
	}
	for _, f := range queryText {
		if *f.get(u) != *f.get(o) {
			return false
		}
	}
	if !bytes.Equal(u.ID, o.ID) {
		return false
	}
	if (u.SlotID == nil) != (o.SlotID == nil) || u.SlotID != nil && *u.SlotID != *o.SlotID {
		return false
	}
	// Order matters within the path and within the query, not across them: the printed
	// form always puts path attributes first.
	return equalAttrs(u.vendorIn(false), o.vendorIn(false)) && equalAttrs(u.vendorIn(true), o.vendorIn(true))
}

func (u *URI) vendorIn(query bool) []Attr {
	var out []Attr
	for _, a := range u.Vendor {
		if a.Query == query {
			out = append(out, a)
		}
	}
	return out
}

func equalAttrs(a, b []Attr) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// VendorAttr returns the value of the vendor attribute name (case-insensitive).
func (u *URI) VendorAttr(name string) (string, bool) {
	for _, a := range u.Vendor {
		if strings.EqualFold(a.Name, name) {
			return a.Value, true
		}
	}
	return "", false
}
