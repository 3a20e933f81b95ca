package ca_test

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"slices"
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/ca"
	"github.com/tokenfleet/tokenfleet/coordinator/profile"
)

// generalName is one decoded GeneralName: its tag and its value.
type generalName struct {
	tag   int
	value string
}

// decodeSAN decodes a SubjectAltName extension value independently of the encoder,
// reading otherName UPNs down to their UTF8String.
func decodeSAN(t *testing.T, value []byte) []generalName {
	t.Helper()
	var seq []asn1.RawValue
	if rest, err := asn1.Unmarshal(value, &seq); err != nil || len(rest) > 0 {
		t.Fatalf("SAN value is not a SEQUENCE OF GeneralName: %v (rest %d)", err, len(rest))
	}
	var out []generalName
	for _, gn := range seq {
		if gn.Class != asn1.ClassContextSpecific {
			t.Fatalf("GeneralName of class %d", gn.Class)
		}
		switch gn.Tag {
		case 0:
			if !gn.IsCompound {
				t.Fatal("otherName is not constructed")
			}
			var typeID asn1.ObjectIdentifier
			rest, err := asn1.Unmarshal(gn.Bytes, &typeID)
			if err != nil {
				t.Fatalf("otherName type-id: %v", err)
			}
			if !typeID.Equal(profile.OIDUPN) {
				t.Fatalf("otherName type %s, want UPN %s", typeID, profile.OIDUPN)
			}
			var explicit asn1.RawValue
			if _, err := asn1.Unmarshal(rest, &explicit); err != nil || explicit.Class != asn1.ClassContextSpecific || explicit.Tag != 0 || !explicit.IsCompound {
				t.Fatalf("otherName value is not [0] EXPLICIT: %v %+v", err, explicit)
			}
			var str asn1.RawValue
			if _, err := asn1.Unmarshal(explicit.Bytes, &str); err != nil || str.Tag != asn1.TagUTF8String {
				t.Fatalf("UPN value is not a UTF8String: %v tag %d", err, str.Tag)
			}
			out = append(out, generalName{0, string(str.Bytes)})
		case 1, 2:
			if gn.IsCompound {
				t.Fatalf("GeneralName [%d] is constructed", gn.Tag)
			}
			out = append(out, generalName{gn.Tag, string(gn.Bytes)})
		default:
			t.Fatalf("unexpected GeneralName tag %d", gn.Tag)
		}
	}
	return out
}

func TestSubjectAltName(t *testing.T) {
	subject := pkix.Name{CommonName: "Alice Martin", Organization: []string{"Example Org"}}
	tests := []struct {
		name     string
		id       profile.Identity
		wantOK   bool
		critical bool
		want     []generalName
	}{
		{
			name:   "UPN, e-mail and DNS with a subject",
			id:     profile.Identity{Subject: subject, UPNs: []string{"alice@corp.example"}, Emails: []string{"alice@example.org"}, DNSNames: []string{"host.example.org"}},
			wantOK: true,
			want:   []generalName{{0, "alice@corp.example"}, {1, "alice@example.org"}, {2, "host.example.org"}},
		},
		{
			name:     "empty subject makes the extension critical",
			id:       profile.Identity{UPNs: []string{"bob@corp.example"}},
			wantOK:   true,
			critical: true,
			want:     []generalName{{0, "bob@corp.example"}},
		},
		{
			name:   "UPN outside ASCII stays UTF-8",
			id:     profile.Identity{Subject: subject, UPNs: []string{"élodie@corp.example"}},
			wantOK: true,
			want:   []generalName{{0, "élodie@corp.example"}},
		},
		{
			name:   "DNS names only",
			id:     profile.Identity{Subject: subject, DNSNames: []string{"a.example", "b.example"}},
			wantOK: true,
			want:   []generalName{{2, "a.example"}, {2, "b.example"}},
		},
		{
			name: "no SAN",
			id:   profile.Identity{Subject: subject},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ext, ok, err := ca.SubjectAltName(tt.id)
			if err != nil {
				t.Fatal(err)
			}
			if ok != tt.wantOK {
				t.Fatalf("ok = %v, want %v", ok, tt.wantOK)
			}
			if !ok {
				return
			}
			if !ext.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 17}) {
				t.Errorf("extension id %s", ext.Id)
			}
			if ext.Critical != tt.critical {
				t.Errorf("critical = %v, want %v", ext.Critical, tt.critical)
			}
			if got := decodeSAN(t, ext.Value); !slices.Equal(got, tt.want) {
				t.Errorf("names = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSubjectEmpty(t *testing.T) {
	tests := []struct {
		name pkix.Name
		want bool
	}{
		{pkix.Name{}, true},
		{pkix.Name{CommonName: "x"}, false},
		{pkix.Name{Country: []string{"FR"}}, false},
		{pkix.Name{ExtraNames: []pkix.AttributeTypeAndValue{{Type: asn1.ObjectIdentifier{2, 5, 4, 3}, Value: "x"}}}, false},
	}
	for _, tt := range tests {
		if got := ca.SubjectEmpty(tt.name); got != tt.want {
			t.Errorf("SubjectEmpty(%v) = %v, want %v", tt.name, got, tt.want)
		}
	}
}
