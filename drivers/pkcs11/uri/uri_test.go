package uri

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func uintp(v uint) *uint { return &v }

// rfcExamples are the example URIs of RFC 7512 section 7 with the fields they decode to.
var rfcExamples = []struct {
	name string
	in   string
	want URI
	// canonical is what String prints, when it differs from in.
	canonical string
}{
	{
		name: "empty",
		in:   "pkcs11:",
		want: URI{},
	},
	{
		name: "public key by label",
		in:   "pkcs11:object=my-pubkey;type=public",
		want: URI{Object: "my-pubkey", Type: TypePublic},
	},
	{
		name: "private key with pin-source",
		in:   "pkcs11:object=my-key;type=private?pin-source=file:/etc/token",
		want: URI{Object: "my-key", Type: TypePrivate, PinSource: "file:/etc/token"},
	},
	{
		name: "full certificate selection with empty serial",
		in: "pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;manufacturer=Snake%20Oil,%20Inc.;" +
			"model=1.0;object=my-certificate;type=cert;id=%69%95%3E%5C%F4%BD%EC%91;serial=" +
			"?pin-source=file:/etc/token_pin",
		want: URI{
			Token:        "The Software PKCS#11 Softtoken",
			Manufacturer: "Snake Oil, Inc.",
			Model:        "1.0",
			Object:       "my-certificate",
			Type:         TypeCert,
			ID:           []byte{0x69, 0x95, 0x3e, 0x5c, 0xf4, 0xbd, 0xec, 0x91},
			PinSource:    "file:/etc/token_pin",
		},
		canonical: "pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;manufacturer=Snake%20Oil,%20Inc.;" +
			"model=1.0;object=my-certificate;type=cert;id=%69%95%3E%5C%F4%BD%EC%91" +
			"?pin-source=file:/etc/token_pin",
	},
	{
		name: "module by name",
		in:   "pkcs11:object=my-sign-key;type=private?module-name=mypkcs11",
		want: URI{Object: "my-sign-key", Type: TypePrivate, ModuleName: "mypkcs11"},
	},
	{
		name: "module by path",
		in:   "pkcs11:object=my-sign-key;type=private?module-path=/mnt/libmypkcs11.so.1",
		want: URI{Object: "my-sign-key", Type: TypePrivate, ModulePath: "/mnt/libmypkcs11.so.1"},
	},
	{
		name: "pin-value",
		in:   "pkcs11:token=Software%20PKCS%2311%20softtoken;manufacturer=Snake%20Oil,%20Inc.?pin-value=the-pin",
		want: URI{Token: "Software PKCS#11 softtoken", Manufacturer: "Snake Oil, Inc.", PinValue: "the-pin"},
	},
	{
		name: "slot description",
		in:   "pkcs11:slot-description=Sun%20Metaslot",
		want: URI{SlotDescription: "Sun Metaslot"},
	},
	{
		name: "library attributes",
		in:   "pkcs11:library-manufacturer=Snake%20Oil,%20Inc.;library-description=Soft%20Token%20Library;library-version=1.23",
		want: URI{LibraryManufacturer: "Snake Oil, Inc.", LibraryDescription: "Soft Token Library", LibraryVersion: "1.23"},
		// grammar order puts library-version before library-description
		canonical: "pkcs11:library-manufacturer=Snake%20Oil,%20Inc.;library-version=1.23;library-description=Soft%20Token%20Library",
	},
	{
		name: "percent sign in label, mixed-case hex in id",
		in:   "pkcs11:token=My%20token%25%20created%20by%20Joe;library-version=3;id=%01%02%03%Ba%dd%Ca%fe%04%05%06",
		want: URI{
			Token:          "My token% created by Joe",
			LibraryVersion: "3",
			ID:             []byte{0x01, 0x02, 0x03, 0xba, 0xdd, 0xca, 0xfe, 0x04, 0x05, 0x06},
		},
		canonical: "pkcs11:token=My%20token%25%20created%20by%20Joe;library-version=3;id=%01%02%03%BA%DD%CA%FE%04%05%06",
	},
	{
		name: "encoded separator in label",
		in:   "pkcs11:token=A%20name%20with%20a%20substring%20%25%3B;object=my-certificate;type=cert",
		want: URI{Token: "A name with a substring %;", Object: "my-certificate", Type: TypeCert},
	},
	{
		name: "UTF-8 label",
		in:   "pkcs11:token=Name%20with%20a%20small%20A%20with%20acute:%20%C3%A1;object=my-certificate;type=cert",
		want: URI{Token: "Name with a small A with acute: á", Object: "my-certificate", Type: TypeCert},
	},
}

func TestParseRFCExamples(t *testing.T) {
	for _, tc := range rfcExamples {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.in)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tc.in, err)
			}
			if !reflect.DeepEqual(*got, tc.want) {
				t.Fatalf("Parse(%q)\n got  %+v\n want %+v", tc.in, *got, tc.want)
			}
			canonical := tc.canonical
			if canonical == "" {
				canonical = tc.in
			}
			if s := got.String(); s != canonical {
				t.Fatalf("String()\n got  %s\n want %s", s, canonical)
			}
			again, err := Parse(got.String())
			if err != nil {
				t.Fatalf("re-parse %q: %v", got.String(), err)
			}
			if !again.Equal(got) || !reflect.DeepEqual(again, got) {
				t.Fatalf("round trip changed the URI:\n got  %+v\n want %+v", *again, *got)
			}
		})
	}
}

// The RFC's last example uses vendor attributes without the "x-" prefix. We refuse unknown
// attributes, so it must fail naming the attribute, while the same URI with "x-" names
// parses and keeps the vendor attributes in order and in their part.
func TestRFCVendorExample(t *testing.T) {
	const rfc = "pkcs11:token=my-token;object=my-certificate;type=cert;vendor-aaa=value-a" +
		"?pin-source=file:/etc/token_pin&vendor-bbb=value-b"
	_, err := Parse(rfc)
	if err == nil {
		t.Fatal("Parse accepted a non-x- vendor attribute")
	}
	var e *Error
	if !errors.As(err, &e) || e.Attr != "vendor-aaa" || !strings.Contains(err.Error(), `"x-"`) {
		t.Fatalf("error %v does not name vendor-aaa and the x- rule", err)
	}

	const prefixed = "pkcs11:token=my-token;object=my-certificate;type=cert;x-vendor-aaa=value-a" +
		"?pin-source=file:/etc/token_pin&X-Vendor-bbb=value-b"
	u, err := Parse(prefixed)
	if err != nil {
		t.Fatal(err)
	}
	want := URI{
		Token: "my-token", Object: "my-certificate", Type: TypeCert, PinSource: "file:/etc/token_pin",
		Vendor: []Attr{
			{Name: "x-vendor-aaa", Value: "value-a"},
			{Name: "X-Vendor-bbb", Value: "value-b", Query: true},
		},
	}
	if !reflect.DeepEqual(*u, want) {
		t.Fatalf("got %+v\nwant %+v", *u, want)
	}
	if u.String() != prefixed {
		t.Fatalf("String() = %s, want %s", u.String(), prefixed)
	}
	if v, ok := u.VendorAttr("x-vendor-bbb"); !ok || v != "value-b" {
		t.Fatalf("VendorAttr = %q, %v", v, ok)
	}
}

func TestParseAccepts(t *testing.T) {
	tests := []struct {
		in   string
		want URI
	}{
		{"PKCS11:token=a", URI{Token: "a"}},
		{"Pkcs11:TOKEN=a;Type=cert", URI{Token: "a", Type: TypeCert}},
		{"pkcs11:slot-id=0", URI{SlotID: uintp(0)}},
		{"pkcs11:slot-id=007", URI{SlotID: uintp(7)}},
		{"pkcs11:slot-id=%31%32", URI{SlotID: uintp(12)}},
		{"pkcs11:library-version=255.0", URI{LibraryVersion: "255.0"}},
		{"pkcs11:id=", URI{}},
		{"pkcs11:object=a&b=c", URI{Object: "a&b=c"}},
		{"pkcs11:token=x?pin-source=|/usr/bin/pinentry%20--x", URI{Token: "x", PinSource: "|/usr/bin/pinentry --x"}},
		{"pkcs11:type=secret-key", URI{Type: TypeSecretKey}},
		{"pkcs11:type=data", URI{Type: TypeData}},
		{"pkcs11:slot-manufacturer=ACME;slot-description=Reader%200", URI{SlotManufacturer: "ACME", SlotDescription: "Reader 0"}},
		{"pkcs11:x-a=", URI{Vendor: []Attr{{Name: "x-a"}}}},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			u, err := Parse(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*u, tc.want) {
				t.Fatalf("got %+v, want %+v", *u, tc.want)
			}
			again, err := Parse(u.String())
			if err != nil || !reflect.DeepEqual(again, u) {
				t.Fatalf("round trip of %q: %+v, %v", u.String(), again, err)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		in       string
		attr     string // attribute the error must name ("" = none)
		contains string
	}{
		{"", "", `must start with "pkcs11:"`},
		{"pkcs12:token=a", "", `must start with "pkcs11:"`},
		{"token=a", "", `must start with "pkcs11:"`},
		{"pkcs11:token=a#frag", "", "fragment"},
		{"pkcs11:token=a;", "", "empty attribute in path"},
		{"pkcs11:;token=a", "", "empty attribute in path"},
		{"pkcs11:token=a?", "", "empty query"},
		{"pkcs11:token=a?pin-source=x&", "", "empty attribute in query"},
		{"pkcs11:=a", "", "empty name"},
		{"pkcs11:token", "token", "missing '='"},
		{"pkcs11:tok%65n=a", "tok%65n", "invalid character"},
		{"pkcs11:tokne=a", "tokne", "unknown path attribute"},
		{"pkcs11:?pin=1234", "pin", "unknown query attribute"},
		{"pkcs11:pin-value=1", "pin-value", "query attribute but appears in the path"},
		{"pkcs11:?token=a", "token", "path attribute but appears in the query"},
		{"pkcs11:token=a;token=b", "token", "more than once"},
		{"pkcs11:token=a;TOKEN=b", "token", "more than once"},
		{"pkcs11:x-a=1?X-A=2", "X-A", "more than once"},
		{"pkcs11:token=a%2", "token", "truncated percent-escape"},
		{"pkcs11:token=a%", "token", "truncated percent-escape"},
		{"pkcs11:token=a%zz", "token", `bad percent-escape "%zz"`},
		{"pkcs11:id=%0g", "id", "bad percent-escape"},
		{"pkcs11:token=a b", "token", `character ' ' must be percent-encoded in the path`},
		{"pkcs11:object=a/b", "object", `character '/' must be percent-encoded in the path`},
		{"pkcs11:token=x?pin-source=a&&b", "", "empty attribute in query"},
		{"pkcs11:token=é", "token", "must be percent-encoded"},
		{"pkcs11:token=%FF", "token", "not valid UTF-8"},
		{"pkcs11:x-v=%C3", "x-v", "not valid UTF-8"},
		{"pkcs11:type=key", "type", `"key" is not one of`},
		{"pkcs11:type=", "type", `"" is not one of`},
		{"pkcs11:type=Cert", "type", "is not one of"},
		{"pkcs11:slot-id=", "slot-id", "empty"},
		{"pkcs11:slot-id=abc", "slot-id", "not a decimal number"},
		{"pkcs11:slot-id=-1", "slot-id", "not a decimal number"},
		{"pkcs11:slot-id=+1", "slot-id", "not a decimal number"},
		{"pkcs11:slot-id=99999999999999999999999", "slot-id", "out of range"},
		{"pkcs11:library-version=", "library-version", "empty"},
		{"pkcs11:library-version=1.", "library-version", "minor version is empty"},
		{"pkcs11:library-version=.1", "library-version", "major version is empty"},
		{"pkcs11:library-version=1.2.3", "library-version", "decimal digits"},
		{"pkcs11:library-version=v1", "library-version", "decimal digits"},
		{"pkcs11:library-version=256", "library-version", "exceeds 255"},
		{"pkcs11:?pin-value=1&pin-source=file:/p", "pin-value", "must not be combined with pin-source"},
		{"pkcs11:x-=1", "x-", "unknown path attribute"},
		// PIN values never appear in errors, not even in part
		{"pkcs11:?pin-value=QZ%7", "pin-value", "bad percent-encoding (value not shown)"},
		{"pkcs11:?pin-value=QZ%7q", "pin-value", "bad percent-encoding (value not shown)"},
		{"pkcs11:?pin-value=QZ WX", "pin-value", "must be percent-encoded (value not shown)"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			u, err := Parse(tc.in)
			if err == nil {
				t.Fatalf("Parse(%q) = %+v, want error", tc.in, *u)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T is not *Error", err)
			}
			if e.Attr != tc.attr {
				t.Errorf("error names attribute %q, want %q (%v)", e.Attr, tc.attr, err)
			}
			if !strings.Contains(err.Error(), tc.contains) {
				t.Errorf("error %q does not contain %q", err, tc.contains)
			}
			if e.Attr == "pin-value" && (strings.Contains(err.Error(), "QZ") || strings.Contains(err.Error(), "WX") || strings.Contains(err.Error(), "%7")) {
				t.Errorf("error %q shows part of the PIN", err)
			}
		})
	}
}

func TestStringEncoding(t *testing.T) {
	slot := uint(42)
	tests := []struct {
		name string
		u    URI
		want string
	}{
		{
			name: "path specials are encoded, query keeps slash",
			u:    URI{Object: "a/b?c;d#e%f g=h&i", PinSource: "file:/a?b|c&d;e"},
			want: "pkcs11:object=a%2Fb%3Fc%3Bd%23e%25f%20g%3Dh&i?pin-source=file:/a?b|c%26d%3Be",
		},
		{
			name: "id is fully encoded, even printable bytes",
			u:    URI{ID: []byte("AZ09")},
			want: "pkcs11:id=%41%5A%30%39",
		},
		{
			name: "order follows the grammar, vendor attributes last in each part",
			u: URI{
				Vendor:     []Attr{{Name: "x-q", Value: "1", Query: true}, {Name: "x-p", Value: "2"}},
				SlotID:     &slot,
				Token:      "t",
				ModuleName: "m",
				PinValue:   "1234",
				Type:       TypePrivate,
			},
			want: "pkcs11:token=t;type=private;slot-id=42;x-p=2?pin-value=1234&module-name=m&x-q=1",
		},
		{
			name: "non-ASCII bytes become UTF-8 escapes",
			u:    URI{Token: "ключ"},
			want: "pkcs11:token=%D0%BA%D0%BB%D1%8E%D1%87",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.u.String(); got != tc.want {
				t.Fatalf("String()\n got  %s\n want %s", got, tc.want)
			}
			back, err := Parse(tc.want)
			if err != nil {
				t.Fatal(err)
			}
			if !back.Equal(&tc.u) {
				t.Fatalf("Parse(String()) = %+v, want %+v", *back, tc.u)
			}
		})
	}
}

func TestRedacted(t *testing.T) {
	u, err := Parse("pkcs11:token=t?pin-value=123456&module-name=m")
	if err != nil {
		t.Fatal(err)
	}
	r := u.Redacted()
	if strings.Contains(r, "123456") {
		t.Fatalf("Redacted() leaks the PIN: %s", r)
	}
	if want := "pkcs11:token=t?pin-value=REDACTED&module-name=m"; r != want {
		t.Fatalf("Redacted() = %s, want %s", r, want)
	}
	if !strings.Contains(u.String(), "pin-value=123456") {
		t.Fatalf("String() lost the PIN: %s", u.String())
	}
}

func TestEqual(t *testing.T) {
	a := func() *URI {
		return &URI{Token: "t", ID: []byte{1}, SlotID: uintp(1), Vendor: []Attr{{Name: "x-a", Value: "1"}}}
	}
	tests := []struct {
		name   string
		mutate func(*URI)
		equal  bool
	}{
		{"same", func(*URI) {}, true},
		{"token", func(u *URI) { u.Token = "u" }, false},
		{"id", func(u *URI) { u.ID = []byte{2} }, false},
		{"slot nil", func(u *URI) { u.SlotID = nil }, false},
		{"slot value", func(u *URI) { u.SlotID = uintp(2) }, false},
		{"vendor part", func(u *URI) { u.Vendor[0].Query = true }, false},
		{"vendor extra", func(u *URI) { u.Vendor = append(u.Vendor, Attr{Name: "x-b"}) }, false},
		{"query", func(u *URI) { u.ModulePath = "/m" }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			x, y := a(), a()
			tc.mutate(y)
			if got := x.Equal(y); got != tc.equal {
				t.Fatalf("Equal = %v, want %v", got, tc.equal)
			}
		})
	}
	// Order counts within a part, not across parts: String prints path attributes first.
	p, q := Attr{Name: "x-p", Value: "1"}, Attr{Name: "x-q", Value: "2", Query: true}
	p2 := Attr{Name: "x-p2", Value: "3"}
	if !(&URI{Vendor: []Attr{p, q}}).Equal(&URI{Vendor: []Attr{q, p}}) {
		t.Error("vendor order across parts made URIs unequal")
	}
	if (&URI{Vendor: []Attr{p, p2}}).Equal(&URI{Vendor: []Attr{p2, p}}) {
		t.Error("vendor order within the path was ignored")
	}
	var n *URI
	if !n.Equal(nil) || n.Equal(a()) || a().Equal(nil) {
		t.Fatal("nil handling of Equal is wrong")
	}
}
