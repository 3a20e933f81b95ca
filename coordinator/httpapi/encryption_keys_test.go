package httpapi_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/api"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// registerKey records a registered encryption key for holder, with a self-signed EC
// certificate valid until notAfter, as a register_certificate job's success would.
func registerKey(t *testing.T, e *env, holder, jobID, serial string, notAfter time.Time) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: holder + " encryption"},
		NotBefore: time.Now().Add(-72 * time.Hour), NotAfter: notAfter, KeyUsage: x509.KeyUsageKeyAgreement}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	u, err := e.st.GetUserByUsername(context.Background(), holder)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.st.InTx(context.Background(), func(tx store.Tx) error {
		_, err := tx.AddHolderEncryptionKey(context.Background(), store.HolderEncryptionKey{HolderID: u.ID, KeyID: protocol.KeyFingerprint(pub),
			PublicKey: pub, Certificate: der, CertificateSerial: tpl.SerialNumber.Text(16), TokenSerial: serial, Source: store.SourceRegistered,
			JobID: jobID, Created: time.Now()})
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

func TestEncryptionKeysAPI(t *testing.T) {
	t.Parallel()
	worldOnBothStores(t, func(t *testing.T, e *env) {
		const path = "/api/v1/encryption-keys"
		j1 := e.newJob(t, "hd", issue("ann", "open-client", "ws-1"))
		j2 := e.newJob(t, "hd", issue("ann", "open-client", "ws-2"))
		registerKey(t, e, "ann", j1.ID, "0042", time.Now().Add(365*24*time.Hour))
		registerKey(t, e, "ann", j2.ID, "0043", time.Now().Add(-time.Hour)) // later, but expired

		// The holder reads their own; the help desk and the auditor read them too.
		for _, who := range []string{"ann", "hd", "aud"} {
			l := ok[list[api.EncryptionKey]](t, e.as(t, who, "GET", path+"?holder=ann", nil), 200)
			if len(l.Items) != 2 || !l.Items[0].Current || l.Items[1].Current || l.Items[1].NotCurrent != "its certificate has expired" {
				t.Fatalf("%s: %+v", who, l.Items)
			}
			b, _ := pem.Decode([]byte(l.Items[0].Certificate))
			if b == nil || b.Type != "CERTIFICATE" || l.Items[0].Source != "registered" || l.Items[0].Subject != "CN=ann encryption" ||
				l.Items[0].TokenSerial != "0042" || l.Items[0].JobID != j1.ID {
				t.Fatalf("%s: first key %+v", who, l.Items[0])
			}
		}
		l := ok[list[api.EncryptionKey]](t, e.as(t, "hd", "GET", path+"?holder=ann&token_serial=0043", nil), 200)
		if len(l.Items) != 1 || l.Items[0].JobID != j2.ID {
			t.Fatalf("on 0043: %+v", l.Items)
		}

		// Another holder, an approver (who reads no certificates), no holder, an unknown
		// parameter.
		for _, who := range []string{"bob", "ap1"} {
			if r := wantErr(t, e.as(t, who, "GET", path+"?holder=ann", nil), 403, "forbidden", ""); !strings.Contains(r.Error.Message, "certificates") && !strings.Contains(r.Error.Message, "no role") {
				t.Fatalf("%s refused with %q", who, r.Error.Message)
			}
		}
		wantErr(t, e.as(t, "hd", "GET", path, nil), 400, "bad_request", "holder")
		wantErr(t, e.as(t, "hd", "GET", path+"?holder=nobody", nil), 400, "bad_request", "holder")
		wantErr(t, e.as(t, "hd", "GET", path+"?holder=ann&agent=ws-1", nil), 400, "bad_request", "-")
	})
}
