package httpapi_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/api"
)

type recoveryCert = api.RecoveryCertificate

func recoveryCertPEM(t *testing.T, cn string, notAfter time.Time) string {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: notAfter.AddDate(-3, 0, 0), NotAfter: notAfter, KeyUsage: x509.KeyUsageKeyEncipherment}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func TestRecoveryCertificatesAPI(t *testing.T) {
	t.Parallel()
	worldOnBothStores(t, func(t *testing.T, e *env) {
		const path = "/api/v1/recovery-certificates"
		expires := time.Now().UTC().AddDate(2, 0, 0).Truncate(time.Second)
		p := recoveryCertPEM(t, "Backup key A", expires)

		wantErr(t, e.as(t, "hd", "POST", path, map[string]any{"certificate": p}), 403, "forbidden", "")
		wantErr(t, e.as(t, "admin", "POST", path, map[string]any{"certificate": "not a certificate"}), 400, "bad_request", "certificate")
		c := ok[recoveryCert](t, e.as(t, "admin", "POST", path, map[string]any{"certificate": p}), 201)
		if c.CommonName != "Backup key A" || !c.NotAfter.Equal(expires) || c.Certificate != p || c.AddedBy != "admin" || c.KeyID == "" {
			t.Fatalf("added %+v", c)
		}
		wantErr(t, e.as(t, "admin", "POST", path, map[string]any{"certificate": p}), 409, "conflict", "certificate")

		// An auditor reads the list (CN and expiry); someone without read does not.
		l := ok[list[recoveryCert]](t, e.as(t, "aud", "GET", path, nil), 200)
		if len(l.Items) != 1 || l.Items[0].ID != c.ID {
			t.Fatalf("list %+v", l.Items)
		}
		wantErr(t, e.as(t, "ann", "GET", path, nil), 403, "forbidden", "")
		wantErr(t, e.as(t, "aud", "GET", path+"?all=maybe", nil), 400, "bad_request", "all")

		retire := path + "/" + c.ID + "/retire"
		wantErr(t, e.as(t, "admin", "POST", retire, map[string]any{"reason": ""}), 400, "reason_required", "reason")
		r := ok[recoveryCert](t, e.as(t, "admin", "POST", retire, map[string]any{"reason": "key ceremony 2026"}), 200)
		if r.Retired.IsZero() || r.RetiredBy != "admin" || r.RetireReason != "key ceremony 2026" {
			t.Fatalf("retired %+v", r)
		}
		wantErr(t, e.as(t, "admin", "POST", retire, map[string]any{"reason": "again"}), 409, "conflict", "")
		wantErr(t, e.as(t, "admin", "POST", path+"/nope/retire", map[string]any{"reason": "x"}), 404, "not_found", "")
		if l = ok[list[recoveryCert]](t, e.as(t, "aud", "GET", path, nil), 200); len(l.Items) != 0 {
			t.Fatalf("in use after retiring: %+v", l.Items)
		}
		if l = ok[list[recoveryCert]](t, e.as(t, "aud", "GET", path+"?all=true", nil), 200); len(l.Items) != 1 || l.Items[0].Retired.IsZero() {
			t.Fatalf("with retired: %+v", l.Items)
		}
	})
}
