package builtin_test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/ca"
	"github.com/tokenfleet/tokenfleet/coordinator/ca/builtin"
	"github.com/tokenfleet/tokenfleet/protocol"
)

func currentCRL(t *testing.T, c *builtin.CA) (*x509.RevocationList, []byte) {
	t.Helper()
	der, err := c.CRL(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(c.CACertificates()[0]); err != nil {
		t.Fatalf("CRL signature: %v", err)
	}
	return crl, der
}

func TestRevokeAndCRL(t *testing.T) {
	ctx := context.Background()
	authority := newCA(t, testOptions(t))
	dir := t.TempDir()
	caFile := writeCAFile(t, authority, dir)
	p := loadProfiles(t)[0]
	req := signRequest(t, p, testKey(t, protocol.KeyP256).Public())
	revoked, err := authority.Sign(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	kept, err := authority.Sign(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	revokedFile := writePEM(t, dir, "revoked.pem", "CERTIFICATE", revoked.Raw)
	keptFile := writePEM(t, dir, "kept.pem", "CERTIFICATE", kept.Raw)

	before, _ := currentCRL(t, authority)
	if len(before.RevokedCertificateEntries) != 0 {
		t.Fatalf("fresh CA's CRL lists %d certificates", len(before.RevokedCertificateEntries))
	}
	at := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := authority.Revoke(ctx, revoked.SerialNumber, ca.ReasonKeyCompromise, at); err != nil {
		t.Fatal(err)
	}

	crl, der := currentCRL(t, authority)
	if crl.Number.Cmp(before.Number) <= 0 {
		t.Errorf("CRL number %v after %v", crl.Number, before.Number)
	}
	if len(crl.RevokedCertificateEntries) != 1 {
		t.Fatalf("CRL lists %d certificates, want 1", len(crl.RevokedCertificateEntries))
	}
	e := crl.RevokedCertificateEntries[0]
	if e.SerialNumber.Cmp(revoked.SerialNumber) != 0 || e.ReasonCode != ca.ReasonKeyCompromise || !e.RevocationTime.Equal(at) {
		t.Errorf("entry %x reason %d at %s", e.SerialNumber, e.ReasonCode, e.RevocationTime)
	}
	if got, want := crl.NextUpdate.Sub(crl.ThisUpdate), builtin.DefaultCRLValidity; got != want {
		t.Errorf("nextUpdate - thisUpdate = %s, want %s", got, want)
	}

	crlDER := filepath.Join(dir, "crl.der")
	if err := os.WriteFile(crlDER, der, 0o644); err != nil {
		t.Fatal(err)
	}
	text := mustOpenSSL(t, "crl", "-inform", "DER", "-in", crlDER, "-noout", "-text", "-CAfile", caFile)
	for _, want := range []string{
		"verify OK",
		"Serial Number: " + fmt.Sprintf("%X", revoked.SerialNumber.Bytes()),
		"Key Compromise",
		"X509v3 CRL Number",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("openssl crl output lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, fmt.Sprintf("%X", kept.SerialNumber.Bytes())) {
		t.Error("the CRL lists the certificate that was not revoked")
	}

	crlPEM := writePEM(t, dir, "crl.pem", "X509 CRL", der)
	out, err := openssl(t, "verify", "-crl_check", "-CAfile", caFile, "-CRLfile", crlPEM, revokedFile)
	if err == nil || !strings.Contains(out, "certificate revoked") {
		t.Errorf("openssl accepted the revoked certificate: %v\n%s", err, out)
	}
	if out := mustOpenSSL(t, "verify", "-crl_check", "-CAfile", caFile, "-CRLfile", crlPEM, keptFile); !strings.Contains(out, ": OK") {
		t.Errorf("openssl refused the valid certificate:\n%s", out)
	}

	if err := authority.Revoke(ctx, revoked.SerialNumber, ca.ReasonSuperseded, time.Time{}); !errors.Is(err, ca.ErrAlreadyRevoked) {
		t.Errorf("second revocation: %v", err)
	}
}

func TestRevokeRefusals(t *testing.T) {
	authority := newCA(t, testOptions(t))
	tests := []struct {
		name   string
		serial *big.Int
		reason int
		at     time.Time
	}{
		{"nil serial", nil, ca.ReasonUnspecified, time.Time{}},
		{"zero serial", big.NewInt(0), ca.ReasonUnspecified, time.Time{}},
		{"remove from CRL", big.NewInt(7), ca.ReasonRemoveFromCRL, time.Time{}},
		{"unassigned reason", big.NewInt(7), 7, time.Time{}},
		{"future time", big.NewInt(7), ca.ReasonSuperseded, time.Now().Add(time.Hour)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := authority.Revoke(context.Background(), tt.serial, tt.reason, tt.at); !errors.Is(err, ca.ErrBadRequest) {
				t.Errorf("Revoke: %v, want a bad-request error", err)
			}
		})
	}
	if crl, _ := currentCRL(t, authority); len(crl.RevokedCertificateEntries) != 0 {
		t.Error("a refused revocation reached the CRL")
	}
}

// TestHoldAndRelease: a certificate on hold is listed with reason certificateHold, and
// leaves the next CRL when the hold is released, as openssl reads it.
func TestHoldAndRelease(t *testing.T) {
	ctx := context.Background()
	authority := newCA(t, testOptions(t))
	dir := t.TempDir()
	caFile := writeCAFile(t, authority, dir)
	p := loadProfiles(t)[0]
	cert, err := authority.Sign(ctx, signRequest(t, p, testKey(t, protocol.KeyP256).Public()))
	if err != nil {
		t.Fatal(err)
	}
	serialHex := fmt.Sprintf("%X", cert.SerialNumber.Bytes())
	crlText := func(name string) string {
		_, der := currentCRL(t, authority)
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, der, 0o644); err != nil {
			t.Fatal(err)
		}
		return mustOpenSSL(t, "crl", "-inform", "DER", "-in", f, "-noout", "-text", "-CAfile", caFile)
	}
	if err := authority.ReleaseHold(ctx, cert.SerialNumber); !errors.Is(err, ca.ErrNotOnHold) {
		t.Errorf("release of a valid certificate: %v", err)
	}
	if err := authority.Revoke(ctx, cert.SerialNumber, ca.ReasonCertificateHold, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if text := crlText("held.der"); !strings.Contains(text, serialHex) || !strings.Contains(text, "Certificate Hold") {
		t.Errorf("held certificate not on the CRL with Certificate Hold:\n%s", text)
	}
	if err := authority.ReleaseHold(ctx, cert.SerialNumber); err != nil {
		t.Fatal(err)
	}
	if text := crlText("released.der"); strings.Contains(text, serialHex) {
		t.Errorf("released certificate still on the CRL:\n%s", text)
	}
}

func TestCRLRefresh(t *testing.T) {
	clk := &clock{t: time.Now().Truncate(time.Second)}
	opts := testOptions(t)
	opts.Now = clk.Now
	opts.Builtin.CRLValidity = 48 * time.Hour
	opts.Builtin.CRLRefresh = time.Hour
	authority := newCA(t, opts)

	first, firstDER := currentCRL(t, authority)
	if !first.ThisUpdate.Equal(clk.Now()) || !first.NextUpdate.Equal(clk.Now().Add(48*time.Hour)) {
		t.Errorf("thisUpdate %s nextUpdate %s", first.ThisUpdate, first.NextUpdate)
	}
	clk.Add(30 * time.Minute)
	if _, der := currentCRL(t, authority); string(der) != string(firstDER) {
		t.Error("CRL made again before the refresh interval")
	}
	clk.Add(31 * time.Minute)
	second, _ := currentCRL(t, authority)
	if !second.ThisUpdate.Equal(clk.Now()) || second.Number.Cmp(first.Number) <= 0 {
		t.Errorf("after the refresh interval: thisUpdate %s number %v (first %v)", second.ThisUpdate, second.Number, first.Number)
	}
	if !second.NextUpdate.After(first.NextUpdate) {
		t.Error("nextUpdate did not move on")
	}
}

// sharedStore is a revocation store that also numbers CRLs, as a database shared by
// several coordinators would.
type sharedStore struct {
	ca.MemRevocations
	mu   sync.Mutex
	next int64
}

func (s *sharedStore) NextCRLNumber(context.Context) (*big.Int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.next++
	return big.NewInt(1000 + s.next), nil
}

func TestCRLNumbers(t *testing.T) {
	t.Run("file in the data directory survives restarts", func(t *testing.T) {
		opts := testOptions(t)
		first := newCA(t, opts)
		a, _ := currentCRL(t, first)
		revs := opts.Revocations
		if err := first.Revoke(context.Background(), big.NewInt(42), ca.ReasonSuperseded, time.Time{}); err != nil {
			t.Fatal(err)
		}
		b, _ := currentCRL(t, first)

		opts.Revocations = revs // the store outlives the process
		second := newCA(t, opts)
		c, _ := currentCRL(t, second)
		if a.Number.Cmp(b.Number) >= 0 || b.Number.Cmp(c.Number) >= 0 {
			t.Errorf("CRL numbers %v, %v, then after a restart %v", a.Number, b.Number, c.Number)
		}
		if len(c.RevokedCertificateEntries) != 1 {
			t.Error("the revocation did not survive the restart")
		}
		data, err := os.ReadFile(filepath.Join(opts.DataDir, builtin.CRLNumberFileName))
		if err != nil || strings.TrimSpace(string(data)) != c.Number.String() {
			t.Errorf("number file %q (%v), last CRL %v", data, err, c.Number)
		}
	})
	t.Run("store that numbers CRLs", func(t *testing.T) {
		opts := testOptions(t)
		opts.Revocations = &sharedStore{}
		crl, _ := currentCRL(t, newCA(t, opts))
		if crl.Number.Int64() <= 1000 {
			t.Errorf("CRL number %v does not come from the store", crl.Number)
		}
		if _, err := os.Stat(filepath.Join(opts.DataDir, builtin.CRLNumberFileName)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("number file written although the store numbers CRLs: %v", err)
		}
	})
	t.Run("corrupt number file", func(t *testing.T) {
		opts := testOptions(t)
		if err := os.WriteFile(filepath.Join(opts.DataDir, builtin.CRLNumberFileName), []byte("twelve\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := builtin.New(context.Background(), opts); ca.CodeOf(err) != ca.CodeConfig || !strings.Contains(err.Error(), "twelve") {
			t.Errorf("New with a corrupt CRL number: %v", err)
		}
	})
}

// expiringStore lists one revoked certificate that has expired and one that has not.
type expiringStore struct{ ca.MemRevocations }

func (s *expiringStore) Revoked(context.Context) ([]ca.Revoked, error) {
	now := time.Now()
	return []ca.Revoked{
		{Serial: big.NewInt(1), RevokedAt: now.Add(-48 * time.Hour), NotAfter: now.Add(-time.Hour)},
		{Serial: big.NewInt(2), RevokedAt: now.Add(-48 * time.Hour), NotAfter: now.Add(time.Hour)},
		{Serial: big.NewInt(3), RevokedAt: now.Add(-48 * time.Hour)},
	}, nil
}

func TestCRLDropsExpired(t *testing.T) {
	opts := testOptions(t)
	opts.Revocations = &expiringStore{}
	crl, _ := currentCRL(t, newCA(t, opts))
	var got []int64
	for _, e := range crl.RevokedCertificateEntries {
		got = append(got, e.SerialNumber.Int64())
	}
	if fmt.Sprint(got) != "[2 3]" {
		t.Errorf("CRL lists %v, want [2 3]", got)
	}
}

// failingStore fails to list revocations once told to.
type failingStore struct {
	ca.MemRevocations
	mu   sync.Mutex
	fail bool
}

func (s *failingStore) Revoked(ctx context.Context) ([]ca.Revoked, error) {
	s.mu.Lock()
	fail := s.fail
	s.mu.Unlock()
	if fail {
		return nil, errors.New("database unreachable")
	}
	return s.MemRevocations.Revoked(ctx)
}

func TestCRLAfterStoreFailure(t *testing.T) {
	store := &failingStore{}
	opts := testOptions(t)
	opts.Revocations = store
	authority := newCA(t, opts)
	store.mu.Lock()
	store.fail = true
	store.mu.Unlock()
	// The revocation is recorded even though the CRL cannot be made now…
	if err := authority.Revoke(context.Background(), big.NewInt(99), ca.ReasonKeyCompromise, time.Time{}); err != nil {
		t.Fatal(err)
	}
	// …and no stale CRL is served in the meantime.
	if _, err := authority.CRL(context.Background()); !errors.Is(err, ca.ErrUnavailable) {
		t.Errorf("CRL while the store fails: %v", err)
	}
	store.mu.Lock()
	store.fail = false
	store.mu.Unlock()
	crl, _ := currentCRL(t, authority)
	if len(crl.RevokedCertificateEntries) != 1 || crl.RevokedCertificateEntries[0].SerialNumber.Int64() != 99 {
		t.Errorf("CRL after recovery lists %v", crl.RevokedCertificateEntries)
	}
}

func TestCRLHandlerServesBuiltin(t *testing.T) {
	authority := newCA(t, testOptions(t))
	srv := httptest.NewServer(ca.CRLHandler(authority, zerolog.Nop()))
	defer srv.Close()
	get := func() *x509.RevocationList {
		t.Helper()
		req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, srv.URL, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		if cerr := resp.Body.Close(); err == nil {
			err = cerr
		}
		if err != nil || resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/pkix-crl" {
			t.Fatalf("GET: %v %s %q", err, resp.Status, resp.Header.Get("Content-Type"))
		}
		crl, err := x509.ParseRevocationList(body)
		if err != nil {
			t.Fatal(err)
		}
		return crl
	}
	if n := len(get().RevokedCertificateEntries); n != 0 {
		t.Fatalf("%d entries before any revocation", n)
	}
	if err := authority.Revoke(context.Background(), big.NewInt(0xabc), ca.ReasonCessationOfOperation, time.Time{}); err != nil {
		t.Fatal(err)
	}
	crl := get()
	if len(crl.RevokedCertificateEntries) != 1 || crl.RevokedCertificateEntries[0].SerialNumber.Int64() != 0xabc {
		t.Errorf("served CRL after revocation lists %v", crl.RevokedCertificateEntries)
	}
}
