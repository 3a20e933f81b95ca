package service_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

const escrowProfile = `name: tender-encryption
key: {type: rsa, size: 2048, origin: server, escrow: true}
subject: {common_name: "{{.Name}}"}
key_usage: [keyEncipherment, dataEncipherment]
extended_key_usage: [emailProtection]
validity: 365d
pin_policy: {min_length: 6, max_length: 8}
`

// A profile with a server-generated, escrowed key is accepted, and an issue requested
// under it becomes a server_keygen job: the coordinator makes the key and escrows it.
func TestEscrowProfileMakesServerKeygen(t *testing.T) {
	t.Parallel()
	e := newRegisterEnv(t, sqlite(t))
	if _, err := e.s.ApplyProfiles(e.ctx, e.admin, []byte(escrowProfile)); err != nil {
		t.Fatalf("escrow profile refused: %v", err)
	}
	j, err := e.s.CreateJob(e.ctx, e.hd, e.request("tender-encryption", store.Document{}))
	if err != nil {
		t.Fatal(err)
	}
	if j.Kind != jobs.KindServerKeygen {
		t.Fatalf("an issue under an escrow profile is a %s job", j.Kind)
	}
}

// recoveryPEM makes a recovery certificate (self-signed, as an organisation's offline
// backup key often is) and returns it in PEM.
func recoveryPEM(t *testing.T, cn string, pub crypto.PublicKey, signer crypto.Signer, notAfter time.Time, ku x509.KeyUsage) string {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: notAfter.AddDate(-5, 0, 0), NotAfter: notAfter, KeyUsage: ku}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func TestRecoveryCertificates(t *testing.T) {
	t.Parallel()
	bothStores(t, func(t *testing.T, cfg store.Config) {
		e := newRegisterEnv(t, cfg)
		rk, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		later := e.now.AddDate(5, 0, 0)
		rsaPEM := recoveryPEM(t, "Clé de secours 1", &rk.PublicKey, rk, later, x509.KeyUsageKeyEncipherment)
		ecPEM := recoveryPEM(t, "Clé de secours 2", &ek.PublicKey, ek, e.now.AddDate(3, 0, 0), x509.KeyUsageKeyAgreement)

		// Only those who manage profiles add them.
		if _, err := e.s.AddRecoveryCertificate(e.ctx, e.hd, rsaPEM); !errors.Is(err, &service.Error{Code: service.CodeForbidden}) {
			t.Fatalf("help desk adds a recovery certificate: %v", err)
		}
		one, err := e.s.AddRecoveryCertificate(e.ctx, e.admin, rsaPEM)
		if err != nil {
			t.Fatal(err)
		}
		if one.CommonName != "Clé de secours 1" || !one.NotAfter.Equal(later) || one.AddedBy != "admin" || one.KeyID == "" || one.PEM() != rsaPEM {
			t.Fatalf("added %+v", one)
		}
		two, err := e.s.AddRecoveryCertificate(e.ctx, e.admin, ecPEM)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.s.AddRecoveryCertificate(e.ctx, e.admin, rsaPEM); !errors.Is(err, &service.Error{Code: service.CodeConflict}) {
			t.Fatalf("the same key twice: %v", err)
		}
		// The help desk reads them, by expiry, with CN and expiry.
		list, err := e.s.ListRecoveryCertificates(e.ctx, e.hd, false)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 2 || list[0].ID != two.ID || list[1].ID != one.ID {
			t.Fatalf("list %+v", list)
		}
		if _, err := e.s.RetireRecoveryCertificate(e.ctx, e.admin, two.ID, " "); !errors.Is(err, &service.Error{Code: service.CodeReasonRequired}) {
			t.Fatalf("retire without a reason: %v", err)
		}
		r, err := e.s.RetireRecoveryCertificate(e.ctx, e.admin, two.ID, "officer left the organisation")
		if err != nil {
			t.Fatal(err)
		}
		if r.Retired.IsZero() || r.RetiredBy != "admin" {
			t.Fatalf("retired %+v", r)
		}
		if _, err := e.s.RetireRecoveryCertificate(e.ctx, e.admin, two.ID, "again"); !errors.Is(err, &service.Error{Code: service.CodeConflict}) {
			t.Fatalf("retired twice: %v", err)
		}
		if list, _ = e.s.ListRecoveryCertificates(e.ctx, e.hd, false); len(list) != 1 || list[0].ID != one.ID {
			t.Fatalf("in use after retiring: %+v", list)
		}
		if list, _ = e.s.ListRecoveryCertificates(e.ctx, e.hd, true); len(list) != 2 {
			t.Fatalf("with retired: %+v", list)
		}
		// Both changes are audited.
		seen := map[string]bool{}
		for a, err := range e.st.AuditEntries(e.ctx, 1) {
			if err != nil {
				t.Fatal(err)
			}
			seen[a.Action] = true
		}
		if !seen[audit.ActionRecoveryCertAdded] || !seen[audit.ActionRecoveryCertRetired] {
			t.Fatalf("audit actions %v", seen)
		}
	})
}

func TestRecoveryCertificateRefusals(t *testing.T) {
	t.Parallel()
	e := newRegisterEnv(t, sqlite(t))
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p521, err := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	good := recoveryPEM(t, "ok", &rk.PublicKey, rk, e.now.AddDate(1, 0, 0), x509.KeyUsageKeyEncipherment)
	for _, tc := range []struct{ name, pem, msg string }{
		{"empty", " ", "is required"},
		{"not PEM", "MIIB...", "is not a PEM certificate"},
		{"two blocks", good + good, "more than one PEM block"},
		{"expired", recoveryPEM(t, "old", &rk.PublicKey, rk, e.now.AddDate(0, 0, -1), x509.KeyUsageKeyEncipherment), `"old" expired on 2026-03-13`},
		{"weak RSA", recoveryPEM(t, "weak", &weak.PublicKey, weak, e.now.AddDate(1, 0, 0), x509.KeyUsageKeyEncipherment), "1024-bit RSA key"},
		{"signing only", recoveryPEM(t, "sig", &rk.PublicKey, rk, e.now.AddDate(1, 0, 0), x509.KeyUsageDigitalSignature), "does not allow keyEncipherment"},
		{"P-521", recoveryPEM(t, "p521", &p521.PublicKey, p521, e.now.AddDate(1, 0, 0), x509.KeyUsageKeyAgreement), "P-521"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.s.AddRecoveryCertificate(e.ctx, e.admin, tc.pem)
			wantBadField(t, err, "certificate", tc.msg)
		})
	}
}
