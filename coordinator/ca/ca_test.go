package ca_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/ca"
	"github.com/tokenfleet/tokenfleet/coordinator/profile"
)

// must unwraps a key generator's result; generation does not fail in tests.
func must[K any](k K, err error) K {
	if err != nil {
		panic(err)
	}
	return k
}

func TestSignRequestValidate(t *testing.T) {
	p256 := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	p224 := must(ecdsa.GenerateKey(elliptic.P224(), rand.Reader))
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsa1024 := must(rsa.GenerateKey(rand.Reader, 1024))
	rsa2048 := must(rsa.GenerateKey(rand.Reader, 2048))
	smallE := &rsa.PublicKey{N: rsa2048.N, E: 3}

	good := ca.SignRequest{
		PublicKey: &p256.PublicKey,
		Identity:  profile.Identity{Subject: pkix.Name{CommonName: "Alice"}, Emails: []string{"alice@example.org"}},
		Usages:    profile.Usages{KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}},
		Validity:  24 * time.Hour,
	}
	tests := []struct {
		name   string
		edit   func(r *ca.SignRequest)
		code   ca.Code
		inText string
	}{
		{"good", func(*ca.SignRequest) {}, "", ""},
		{"good RSA", func(r *ca.SignRequest) { r.PublicKey = &rsa2048.PublicKey }, "", ""},
		{"SAN only", func(r *ca.SignRequest) { r.Identity.Subject = pkix.Name{} }, "", ""},
		{"unknown EKU only", func(r *ca.SignRequest) {
			r.Usages.ExtKeyUsage = nil
			r.Usages.UnknownExtKeyUsage = append(r.Usages.UnknownExtKeyUsage, profile.OIDSmartcardLogon)
		}, "", ""},
		{"no key", func(r *ca.SignRequest) { r.PublicKey = nil }, ca.CodeBadRequest, "no public key"},
		{"P-224", func(r *ca.SignRequest) { r.PublicKey = &p224.PublicKey }, ca.CodeWeakKey, "P-224"},
		{"ed25519", func(r *ca.SignRequest) { r.PublicKey = edPub }, ca.CodeWeakKey, "ed25519"},
		{"RSA-1024", func(r *ca.SignRequest) { r.PublicKey = &rsa1024.PublicKey }, ca.CodeWeakKey, "1024"},
		{"exponent 3", func(r *ca.SignRequest) { r.PublicKey = smallE }, ca.CodeWeakKey, "exponent 3"},
		{"no name", func(r *ca.SignRequest) { r.Identity = profile.Identity{} }, ca.CodeBadRequest, "name nobody"},
		{"e-mail not ASCII", func(r *ca.SignRequest) { r.Identity.Emails = []string{"é@example.org"} }, ca.CodeBadRequest, "e-mail"},
		{"wildcard DNS", func(r *ca.SignRequest) { r.Identity.DNSNames = []string{"*.example.org"} }, ca.CodeBadRequest, "DNS"},
		{"UPN with control character", func(r *ca.SignRequest) { r.Identity.UPNs = []string{"a\n@b"} }, ca.CodeBadRequest, "UPN"},
		{"no key usage", func(r *ca.SignRequest) { r.Usages.KeyUsage = 0 }, ca.CodeBadRequest, "key usage"},
		{"no EKU", func(r *ca.SignRequest) { r.Usages.ExtKeyUsage = nil }, ca.CodeBadRequest, "extended key usage"},
		{"zero validity", func(r *ca.SignRequest) { r.Validity = 0 }, ca.CodeBadRequest, "validity"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := good
			r.Identity.Emails = append([]string(nil), good.Identity.Emails...)
			tt.edit(&r)
			err := r.Validate()
			if got := ca.CodeOf(err); got != tt.code {
				t.Fatalf("code %q (%v), want %q", got, err, tt.code)
			}
			if err != nil && !strings.Contains(err.Error(), tt.inText) {
				t.Errorf("error %q does not mention %q", err, tt.inText)
			}
		})
	}
}

// fakeCA is a back end for the registry test.
type fakeCA struct{ opts ca.Options }

func (f *fakeCA) Sign(context.Context, ca.SignRequest) (*x509.Certificate, error) {
	return nil, ca.Errorf(ca.CodeUnavailable, "fake")
}
func (f *fakeCA) Revoke(context.Context, *big.Int, int, time.Time) error { return nil }
func (f *fakeCA) CACertificates() []*x509.Certificate                    { return nil }

func TestRegistry(t *testing.T) {
	ca.Register("registry-test", func(_ context.Context, o ca.Options) (ca.CA, error) {
		return &fakeCA{opts: o}, nil
	})
	got, err := ca.New(context.Background(), ca.Options{Type: "registry-test", DataDir: "/nowhere"})
	if err != nil {
		t.Fatal(err)
	}
	if f, ok := got.(*fakeCA); !ok || f.opts.DataDir != "/nowhere" {
		t.Fatalf("New gave %#v", got)
	}
	if _, isCRL := got.(ca.CRLSource); isCRL {
		t.Error("a back end without CRL method is taken for a CRL source")
	}

	_, err = ca.New(context.Background(), ca.Options{Type: "no-such-ca"})
	if !errors.Is(err, ca.ErrConfig) || !strings.Contains(err.Error(), "registry-test") {
		t.Errorf("unknown type: %v; want a config error listing the registered types", err)
	}

	defer func() {
		if recover() == nil {
			t.Error("registering a type twice did not panic")
		}
	}()
	ca.Register("registry-test", func(context.Context, ca.Options) (ca.CA, error) { return nil, nil })
}

func TestErrors(t *testing.T) {
	cause := errors.New("disk on fire")
	err := fmt.Errorf("outer: %w", ca.Errorf(ca.CodeUnavailable, "read: %w", cause))
	if !errors.Is(err, ca.ErrUnavailable) || errors.Is(err, ca.ErrConfig) {
		t.Error("Is does not match by code")
	}
	if !errors.Is(err, cause) {
		t.Error("the cause is not reachable")
	}
	if got := err.Error(); got != "outer: ca: ca_unavailable: read: disk on fire" {
		t.Errorf("message %q", got)
	}
	tests := []struct {
		err  error
		want ca.Code
	}{
		{nil, ""},
		{errors.New("plain"), ca.CodeUnavailable},
		{err, ca.CodeUnavailable},
		{ca.Errorf(ca.CodeAlreadyRevoked, "x"), ca.CodeAlreadyRevoked},
	}
	for _, tt := range tests {
		if got := ca.CodeOf(tt.err); got != tt.want {
			t.Errorf("CodeOf(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

func TestMemRevocations(t *testing.T) {
	ctx := context.Background()
	var m ca.MemRevocations // the zero value is ready
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	serials := []int64{300, 20, 1}
	for _, s := range serials {
		if err := m.Revoke(ctx, ca.Revoked{Serial: big.NewInt(s), RevokedAt: at, Reason: ca.ReasonSuperseded}); err != nil {
			t.Fatal(err)
		}
	}
	err := m.Revoke(ctx, ca.Revoked{Serial: big.NewInt(20), RevokedAt: at})
	if !errors.Is(err, ca.ErrAlreadyRevoked) {
		t.Errorf("second revocation: %v", err)
	}
	if err := m.Revoke(ctx, ca.Revoked{Serial: big.NewInt(0)}); !errors.Is(err, ca.ErrBadRequest) {
		t.Errorf("zero serial: %v", err)
	}
	got, err := m.Revoked(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].Serial.Int64() != 1 || got[1].Serial.Int64() != 20 || got[2].Serial.Int64() != 300 {
		t.Fatalf("Revoked = %v", got)
	}
	if got[0].Reason != ca.ReasonSuperseded || !got[0].RevokedAt.Equal(at) {
		t.Errorf("entry %+v", got[0])
	}
	got[0].Serial.SetInt64(999) // the caller's copy
	again, _ := m.Revoked(ctx)
	if again[0].Serial.Int64() != 1 {
		t.Error("Revoked hands out the store's own serials")
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := m.Revoked(cancelled); !errors.Is(err, ca.ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

func TestCheckReason(t *testing.T) {
	for reason := -1; reason <= 11; reason++ {
		err := ca.CheckReason(reason)
		wantOK := reason >= 0 && reason <= 10 && reason != 7 && reason != 8
		if (err == nil) != wantOK {
			t.Errorf("CheckReason(%d) = %v", reason, err)
		}
		if err != nil && !errors.Is(err, ca.ErrBadRequest) {
			t.Errorf("CheckReason(%d) code %q", reason, ca.CodeOf(err))
		}
	}
}

func TestKeyID(t *testing.T) {
	k := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	a, err := ca.KeyID(&k.PublicKey)
	if err != nil || len(a) != 20 {
		t.Fatalf("KeyID = %x, %v", a, err)
	}
	b, _ := ca.KeyID(k.Public())
	other := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	c, _ := ca.KeyID(&other.PublicKey)
	if string(a) != string(b) || string(a) == string(c) {
		t.Error("KeyID is not a function of the key")
	}
	var bad crypto.PublicKey = struct{}{}
	if _, err := ca.KeyID(bad); err == nil {
		t.Error("KeyID of a non-key succeeded")
	}
}

func TestMemRevocationsHold(t *testing.T) {
	ctx := context.Background()
	var m ca.MemRevocations
	held := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := m.Revoke(ctx, ca.Revoked{Serial: big.NewInt(5), RevokedAt: held, Reason: ca.ReasonCertificateHold}); err != nil {
		t.Fatal(err)
	}
	if err := m.Revoke(ctx, ca.Revoked{Serial: big.NewInt(5), RevokedAt: held.Add(time.Hour), Reason: ca.ReasonCertificateHold}); !errors.Is(err, ca.ErrAlreadyRevoked) {
		t.Errorf("hold twice: %v", err)
	}
	if err := m.ReleaseHold(ctx, big.NewInt(5)); err != nil {
		t.Fatalf("release: %v", err)
	}
	if rs, _ := m.Revoked(ctx); len(rs) != 0 {
		t.Errorf("released hold still listed: %v", rs)
	}
	if err := m.ReleaseHold(ctx, big.NewInt(5)); !errors.Is(err, ca.ErrNotOnHold) {
		t.Errorf("release of a valid certificate: %v", err)
	}
	// Held, then revoked for good: the reason changes, the time stays the hold's.
	_ = m.Revoke(ctx, ca.Revoked{Serial: big.NewInt(6), RevokedAt: held, Reason: ca.ReasonCertificateHold})
	if err := m.Revoke(ctx, ca.Revoked{Serial: big.NewInt(6), RevokedAt: held.Add(time.Hour), Reason: ca.ReasonKeyCompromise}); err != nil {
		t.Fatalf("hold to key compromise: %v", err)
	}
	rs, _ := m.Revoked(ctx)
	if len(rs) != 1 || rs[0].Reason != ca.ReasonKeyCompromise || !rs[0].RevokedAt.Equal(held) {
		t.Errorf("after hold then revoke: %+v", rs)
	}
	if err := m.ReleaseHold(ctx, big.NewInt(6)); !errors.Is(err, ca.ErrNotOnHold) {
		t.Errorf("release of a revoked certificate: %v", err)
	}
}
